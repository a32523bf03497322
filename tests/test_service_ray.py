"""``attribot-rag serve --ray``: the same app as Ray Serve replicas on a local Ray, each with
its own model; every replica answers the same request with the scores of a direct call."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from attribot_rag import RemoteAttributor
from attribot_rag.serving.service_process import ServiceProcess

try:
    import ray.serve  # noqa: F401
except ImportError:
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("ray[serve] is not installed (pip install 'attribot-rag[ray]')", allow_module_level=True)

QUESTION = "Why are auroras green?"
DOCUMENTS = ["Auroras come from charged solar particles. Excited oxygen emits green light.", "Paris is in France."]
ANSWER = "Excited oxygen emits green light."


@pytest.mark.slow
def test_two_replicas_answer_with_the_scores_of_a_direct_call(attributor):
    # Patient Ray Serve health checks: the test machine has 2 busy cores.
    patient = {"RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60", "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "60"}
    with ServiceProcess("--ray", "--replicas", "2", env=patient, startup=300) as server:
        replicas, deadline = set(), time.monotonic() + 30
        while len(replicas) < 2 and time.monotonic() < deadline:
            replicas.add(httpx.get(f"{server.url}/healthz", timeout=10).json()["pid"])
        assert len(replicas) == 2  # two processes, each with its model loaded
        # Four at once: Ray's router sends each to the replica with fewer requests, so both answer.
        with RemoteAttributor(server.url, timeout=120) as remote, ThreadPoolExecutor(4) as pool:
            served = list(pool.map(lambda _: remote.attribute(QUESTION, DOCUMENTS, ANSWER, method="exact"), range(4)))
    direct = attributor.attribute(QUESTION, DOCUMENTS, ANSWER, method="exact")
    for result in served:
        # Replicas are other processes (their own torch thread count): the same scores up to
        # float32 rounding, everything else identical.
        assert result.model_dump(exclude=SCORES) == direct.model_dump(exclude=SCORES)
        for mine, theirs in zip(scores(result), scores(direct), strict=True):
            assert mine == pytest.approx(theirs, abs=1e-4)


SCORES = {"timings", "full_logprob", "context_gain", "documents", "sentences", "answer_sentences"}


def scores(result) -> list[float]:
    spans = [*result.documents, *result.sentences, *(s for a in result.answer_sentences for s in a.sentences)]
    return [result.full_logprob, result.context_gain, *(s.score for s in spans)]
