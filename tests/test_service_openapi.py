"""The service's OpenAPI document describes the API: every error body validates against the
published ``ErrorBody`` on both attribution endpoints, the schema and the server agree on which
bodies are valid (question xor messages, non-blank strings), and a bounded schemathesis run
against a live server (the embedded model) finds no undocumented status, content type or
body, no 500, and no schema-invalid body accepted."""

from __future__ import annotations

import json
import socket

import httpx
import jsonschema
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi import checks

from attribot_rag.serving.service_process import ServiceProcess

KEY = "openapi-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
ENDPOINTS = ("/v1/attribute", "/v1/attribute/html")


@pytest.fixture(scope="module")
def server():
    # Small limits keep the generated requests cheap: 3 documents, 20 forwards at most.
    with ServiceProcess(
        "--api-key-env",
        "ATTRIBOT_OPENAPI_KEY",
        "--max-documents",
        "3",
        "--max-body",
        "20000",
        "--max-forwards",
        "20",
        "--timeout",
        "30",
        env={"ATTRIBOT_OPENAPI_KEY": KEY},
    ) as process:
        yield process


@pytest.fixture(scope="module")
def document(server) -> dict:
    return httpx.get(f"{server.url}/openapi.json").json()


def validator(document: dict, ref: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({"$ref": ref, "components": document["components"]})


def error_schema(document: dict, path: str, status: int) -> jsonschema.Draft202012Validator:
    schema = document["paths"][path]["post"]["responses"][str(status)]["content"]["application/json"]["schema"]
    return validator(document, schema["$ref"])


def raw_post(server: ServiceProcess, path: str, headers: bytes) -> httpx.Response:
    """A request httpx refuses to send (an invalid Content-Length), over a plain socket."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n".encode() + headers + b"\r\n"
        )
        head, _, body = sock.recv(65536).partition(b"\r\n\r\n")
    return httpx.Response(int(head.split()[1]), content=body)


@pytest.mark.model
@pytest.mark.parametrize("path", ENDPOINTS)
def test_real_error_bodies_validate_against_the_published_schema(server, document, path):
    responses = document["paths"][path]["post"]["responses"]
    assert {"400", "401", "413", "422", "501", "503", "504"} <= set(responses)
    assert "HTTPValidationError" not in json.dumps(document)
    url = f"{server.url}{path}"
    errors = {
        401: httpx.post(url, json={}),
        400: raw_post(server, path, b"Content-Length: x\r\n"),
        413: httpx.post(url, json={"documents": ["a" * 30_000]}, headers=AUTH),
        422: httpx.post(url, json={"question": "q?", "documents": ["a"] * 4, "answer": "A."}, headers=AUTH),
    }
    invalid = [
        {"question": " ", "documents": ["A."], "answer": "A."},
        {"documents": "abc"},
        b"{not json",
        {"question": "q?", "documents": ["A."], "answer": "A.", "options": {"method": "pruned"}},  # no target
    ]
    for body in invalid:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = httpx.post(url, content=content, headers={**AUTH, "Content-Type": "application/json"}, timeout=60)
        assert response.status_code == 422, body
        errors.setdefault(422, response)
        error_schema(document, path, 422).validate(response.json())
    for status, response in errors.items():
        assert response.status_code == status, response.text
        error_schema(document, path, status).validate(response.json())


BODIES = [
    ({"question": "What do bees make?", "documents": ["Bees make honey."], "answer": "Honey."}, True),
    ({"question": "What do bees make?", "documents": [{"text": "Bees make honey."}], "messages": None}, True),
    (
        {
            "messages": [{"role": "user", "content": "Bees make honey. What?"}],
            "documents": ["Bees make honey."],
            "answer": "Honey.",
        },
        True,
    ),
    ({"question": "q?", "messages": "Bees make honey.", "documents": ["Bees make honey."], "answer": "Honey."}, False),
    ({"documents": ["Bees make honey."], "answer": "Honey."}, False),
    ({"question": None, "messages": None, "documents": ["Bees make honey."], "answer": "Honey."}, False),
    ({"messages": "Bees make honey.", "documents": ["Bees make honey."]}, False),  # messages need the answer
    ({"question": "  ", "documents": ["Bees make honey."], "answer": "Honey."}, False),
    ({"question": "q?", "documents": ["Bees make honey."], "answer": "\n"}, False),
    ({"question": "q?", "documents": [" "], "answer": "Honey."}, False),
    ({"question": "q?", "documents": [{"text": "\t"}], "answer": "Honey."}, False),
    ({"question": "q?", "documents": ["a", "b", "c", "d"], "answer": "Honey."}, False),  # over --max-documents 3
]


@pytest.mark.model
@pytest.mark.parametrize(("body", "valid"), BODIES)
def test_the_schema_and_the_server_agree_on_valid_bodies(server, document, body, valid):
    assert validator(document, "#/components/schemas/AttributionRequest").is_valid(body) == valid
    response = httpx.post(f"{server.url}/v1/attribute", json=body, headers=AUTH, timeout=120)
    assert (response.status_code == 200) == valid, response.text


CHECKS = [
    schemathesis.checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.negative_data_rejection,
]


@pytest.mark.model
@pytest.mark.parametrize("mode", [GenerationMode.NEGATIVE, GenerationMode.POSITIVE])
def test_schemathesis_finds_the_api_as_documented(server, mode):
    """Every operation, schema-valid and schema-invalid requests (12 of each per operation:
    the valid ones run the model). Through schemathesis's Python API: its pytest plugin fails
    on this pytest (no ``Function._nodeid``)."""
    for result in schemathesis.openapi.from_url(f"{server.url}/openapi.json").get_all_operations():
        operation = result.ok()
        if mode == GenerationMode.NEGATIVE and operation.method.upper() == "GET":
            continue  # /healthz takes nothing: no request can be invalid

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=12,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def conforms(case) -> None:
            case.call_and_validate(headers=AUTH, checks=CHECKS, timeout=60)

        conforms()
