"""The citation service end to end: ``attribot-rag serve`` in a subprocess on loopback, the
embedded model, real HTTP. Concurrent requests must get the scores of direct calls; every
limit must answer its status with a JSON error; the server must refuse to start exposed."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from attribot_rag import AttributionOptions, Document, RemoteAttributionError, RemoteAttributor, RemoteInputError
from attribot_rag.serving.service_process import SERVE, ServiceProcess, free_port

KEY = "test-key-0123456789abcdef"

# Five distinct small requests, each sent twice, interleaved: 10 requests.
CASES = [
    (
        "Why are auroras green?",
        ["Auroras come from charged solar particles. Excited oxygen emits green light.", "Paris is in France."],
        "Excited oxygen emits green light.",
        "exact",
    ),
    (
        "Where is the Eiffel tower?",
        [Document(text="The Eiffel tower is in Paris. It is made of iron.", id="eiffel"), "Rome has the Colosseum."],
        "It is in Paris.",
        "auto",
    ),
    (
        "What do bees make?",
        [Document(sentences=["Bees make honey from nectar.", " They live in hives."]), "Cows give milk."],
        "Bees make honey.",
        "fast",
    ),
    (
        "Who wrote Hamlet?",
        ["Shakespeare wrote Hamlet around 1600.", "Goethe wrote Faust. Faust has two parts."],
        "Shakespeare wrote it.",
        "hierarchical",
    ),
    (
        "How hot is the Sun?",
        ["The Sun's surface is about 5,500 degrees Celsius.", "The Moon has no air."],
        "About 5,500 degrees Celsius.",
        "exact",
    ),
]


@pytest.fixture(scope="module")
def server():
    with ServiceProcess(
        "--api-key-env",
        "ATTRIBOT_TEST_KEY",
        "--max-body",
        "100000",
        "--max-documents",
        "6",
        env={"ATTRIBOT_TEST_KEY": KEY},
    ) as process:
        yield process


@pytest.fixture(scope="module")
def remote(server):
    with RemoteAttributor(server.url, api_key=KEY) as client:
        yield client


def comparable(result) -> dict:
    """Everything but the timings (which differ between any two runs)."""
    return result.model_dump(exclude={"timings"})


@pytest.mark.model
def test_concurrent_requests_get_the_scores_of_direct_calls(remote, attributor):
    requests = [CASES[i % len(CASES)] for i in range(2 * len(CASES))]
    with ThreadPoolExecutor(4) as pool:
        served = list(pool.map(lambda case: remote.attribute(case[0], case[1], case[2], method=case[3]), requests))
    assert len(served) == 10
    direct = {case[0]: comparable(attributor.attribute(case[0], case[1], case[2], method=case[3])) for case in CASES}
    for case, result in zip(requests, served, strict=True):
        assert comparable(result) == direct[case[0]], case[0]
    assert served[1].documents[0].doc_id == "eiffel"


@pytest.mark.model
def test_messages_form(remote, attributor):
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Context: Bees make honey.\nWhat do bees make?"},
    ]
    served = remote.attribute_messages(messages, "Honey.", ["Bees make honey."], method="exact")
    direct = attributor.attribute_messages(messages, "Honey.", ["Bees make honey."], method="exact")
    assert comparable(served) == comparable(direct)


@pytest.mark.model
def test_generate_answer_is_the_servers_models(remote, attributor):
    """``RemoteAttributor.generate_answer`` (what batch records call without an answer): the
    answer the server's model gives, as a direct call gives it."""
    question, documents = CASES[0][0], CASES[0][1]
    assert remote.generate_answer(question, documents) == attributor.generate_answer(question, documents)


@pytest.mark.model
def test_health_and_docs(server):
    health = httpx.get(f"{server.url}/healthz").json()
    assert health["status"] == "ok" and health["model"] == "SmolLM2-135M-Instruct"
    assert health["queued"] == 0 and health["running"] == 0
    schema = httpx.get(f"{server.url}/openapi.json").json()
    assert "/v1/attribute" in schema["paths"]
    assert schema["components"]["schemas"]["AttributionResult"]["properties"]["sentences"]


def post(server, body, key: str | None = KEY, **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{server.url}/v1/attribute", json=body, headers=headers, timeout=120, **kwargs)


@pytest.mark.model
def test_html_view_and_index_page(server):
    body = {
        "question": "What do <b>bees</b> make?",
        "documents": ["Bees make honey. <script>x=1</script>"],
        "answer": "Honey.",
    }
    page = httpx.post(
        f"{server.url}/v1/attribute/html", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=120
    )
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "Bees make honey." in page.text and "&lt;script&gt;x=1&lt;/script&gt;" in page.text
    assert "<script>x=1" not in page.text and "<b>bees</b>" not in page.text
    assert httpx.post(f"{server.url}/v1/attribute/html", json=body, timeout=120).status_code == 401
    index = httpx.get(f"{server.url}/")
    assert index.status_code == 200 and "/v1/attribute/html" in index.text


@pytest.mark.model
def test_the_key_is_required(server):
    body = {"question": "q?", "documents": ["Bees make honey."], "answer": "Honey."}
    for key in (None, "wrong-key-0123456789abcdef", KEY[:-1]):
        response = post(server, body, key=key)
        assert response.status_code == 401, key
        assert response.json()["error"] == "unauthorized" and response.headers["www-authenticate"] == "Bearer"
    with (
        RemoteAttributor(server.url) as keyless,
        pytest.raises(RemoteAttributionError, match="401 unauthorized") as error,
    ):
        keyless.attribute("q?", ["Bees make honey."], "Honey.")
    assert error.value.status == 401


@pytest.mark.model
def test_oversized_body_413(server):
    body = json.dumps({"question": "q?", "documents": ["word " * 30_000], "answer": "A."}).encode()
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    declared = httpx.post(f"{server.url}/v1/attribute", content=body, headers=headers)
    streamed = httpx.post(
        f"{server.url}/v1/attribute",
        content=iter([body[i : i + 8192] for i in range(0, len(body), 8192)]),
        headers=headers,
    )
    assert streamed.request.headers["transfer-encoding"] == "chunked"  # no Content-Length to trust
    for response in (declared, streamed):
        assert response.status_code == 413
        assert response.json()["error"] == "body_too_large" and response.json()["limit"] == 100_000


@pytest.mark.model
def test_prompt_over_the_window_422_with_the_numbers(remote):
    document = " ".join(f"Fact {i} is that the number {i} follows {i - 1}." for i in range(900))  # ~12k tokens, 49 kB
    with pytest.raises(
        RemoteInputError,
        match=r"422 invalid_input: prompt and answer are \d+ tokens, \d+ more than .*context window of 8192",
    ):
        remote.attribute("Which number follows 5?", [document], "6 follows 5.")


@pytest.mark.model
def test_too_many_documents_422_with_the_numbers(server):
    response = post(server, {"question": "q?", "documents": ["A fact."] * 7, "answer": "A."})
    assert response.status_code == 422
    assert response.json() == {
        "error": "too_many_documents",
        "detail": "7 documents, the limit is 6 (--max-documents)",
        "documents": 7,
        "limit": 6,
    }


@pytest.mark.model
@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"question": "q?", "answer": "A."}, "invalid_request"),  # no documents
        ({"question": "q?", "documents": "abc", "answer": "A."}, "invalid_request"),
        ({"question": "q?", "documents": ["A."], "answer": "A.", "options": {"method": "fastest"}}, "invalid_request"),
        (
            {"question": "q?", "documents": ["A."], "answer": "A.", "options": {"method": "pruned"}},
            "invalid_input",
        ),  # no target
        (
            {"question": "q?", "documents": ["A.\ud800"], "answer": "A."},
            "invalid_request",
        ),  # a lone surrogate, escaped in JSON
    ],
)
def test_bad_requests_get_json_errors_without_traceback(server, body, code):
    content = json.dumps(body).encode()
    response = httpx.post(
        f"{server.url}/v1/attribute",
        content=content,
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["error"] == code
    assert "Traceback" not in response.text and 'File "' not in response.text


@pytest.mark.model
def test_options_reach_the_server(remote):
    result = remote.attribute_with(
        "q?", ["Bees make honey. They live in hives."], "Honey.", AttributionOptions(method="auto", budget="fast")
    )
    assert result.method == "fast" and result.settings.budget == "fast"


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "example.com"])
def test_refuses_to_start_exposed_without_a_key(host):
    done = subprocess.run(
        [*SERVE, "--host", host, "--port", "1"], check=False, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert f"binding to {host} exposes the service" in done.stderr and "--api-key-env" in done.stderr
    assert "Traceback" not in done.stderr


def test_refuses_a_short_or_missing_key():
    done = subprocess.run(
        [*SERVE, "--host", "0.0.0.0", "--api-key-env", "ATTRIBOT_UNSET_VARIABLE"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "ATTRIBOT_UNSET_VARIABLE" in done.stderr


# A request that takes seconds: 10 full forwards (method naive), about 5 s of CPU here.
SLOW = {
    "question": "Which fact is about 7?",
    "documents": [" ".join(f"Fact {i}: the number {i} is odd or even." for i in range(8))],
    "answer": "Fact 7.",
    "options": {"method": "naive"},
}
QUICK = {
    "question": "What do bees make?",
    "documents": ["Bees make honey."],
    "answer": "Honey.",
    "options": {"method": "fast"},
}


@pytest.mark.model
def test_queue_bound_503_and_timeout_504():
    """One model, no waiting room (--max-queue 0): a second request while one runs is a 503
    with Retry-After; the running one times out (504) yet keeps its place until it is done,
    and then the server admits requests again."""
    with ServiceProcess("--max-queue", "0", "--timeout", "1") as server:
        slow: dict = {}
        thread = threading.Thread(target=lambda: slow.update(response=post(server, SLOW, key=None)))
        thread.start()
        deadline = time.monotonic() + 30
        while httpx.get(f"{server.url}/healthz").json()["running"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        rejected = post(server, QUICK, key=None)
        assert rejected.status_code == 503 and rejected.json()["error"] == "queue_full"
        assert int(rejected.headers["retry-after"]) >= 1
        thread.join()
        assert slow["response"].status_code == 504 and slow["response"].json()["error"] == "timeout"
        while httpx.get(f"{server.url}/healthz").json()["running"] and time.monotonic() < deadline + 60:
            time.sleep(0.1)
        health = httpx.get(f"{server.url}/healthz").json()
        assert health["queued"] == 0 and health["running"] == 0
        # Admitted again (on a loaded machine even the quick one may take over 1 s: a 504).
        assert post(server, QUICK, key=None).status_code in (200, 504)


@pytest.mark.model
def test_an_option_whose_extra_the_server_lacks_is_a_501_that_says_what_to_install(tmp_path):
    """``keep_similar`` needs bm25s: on a server without it (here a ``bm25s`` that fails to
    import, first on the path) the request is refused with the install line, no traceback,
    and the server goes on serving."""
    (tmp_path / "bm25s").mkdir()
    (tmp_path / "bm25s" / "__init__.py").write_text("raise ImportError(\"No module named 'bm25s'\")\n")
    with ServiceProcess(env={"PYTHONPATH": str(tmp_path)}) as server:
        body = dict(QUICK, options={"method": "hierarchical", "keep_documents": 1, "keep_similar": 1})
        response = post(server, body, key=None)
        assert response.status_code == 501, response.text
        assert response.json()["error"] == "not_installed"
        assert "pip install 'attribot-rag[similarity]'" in response.json()["detail"]
        assert "Traceback" not in response.text
        assert post(server, QUICK, key=None).status_code == 200


def test_remote_errors_are_clear():
    with (
        RemoteAttributor(f"http://127.0.0.1:{free_port()}", timeout=5) as remote,
        pytest.raises(RemoteAttributionError, match="ConnectError") as error,
    ):
        remote.attribute("q?", ["A."], "A.")
    assert error.value.status is None
