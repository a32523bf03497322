"""``RemoteAttributor``: the ``Attributor`` interface over HTTP, answered by ``attribot-rag
serve``, so that an app (or either integration, given ``attributor=RemoteAttributor(url)``)
gets citations without loading a model. Needs httpx (the ``serve`` extra)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import httpx

from ..api.options import AttributionOptions
from ..api.protocol import KeywordForms
from ..api.results import AttributionResult
from ..core.messages import Messages
from ..core.spans import Document


class RemoteAttributionError(RuntimeError):
    """The service could not be reached, failed or refused the request. ``status`` is the HTTP
    status (``None``: no answer), ``code`` the service's error code (``"queue_full"``, ...)."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


class RemoteInputError(RemoteAttributionError, ValueError):
    """The service refused the input (HTTP 413 or 422), as a local ``Attributor`` raises
    ``ValueError``: too many documents, a prompt over the window, a body over the limit."""


def _document(document: Document | str) -> str | dict[str, Any]:
    """The JSON of one document (its metadata stays here: attribution does not read it)."""
    if isinstance(document, str):
        return document
    if not isinstance(document, Document):
        raise TypeError(f"a document must be a Document or str, not {type(document).__name__}")
    record: dict[str, Any] = {"text": document.text, "id": document.id, "title": document.title}
    if document.sentences is not None:
        record["sentences"] = document.sentences
    return record


class RemoteAttributor(KeywordForms):
    """Attribution by a service at ``url`` (``attribot-rag serve``), with the methods of
    ``Attributor`` that the integrations and batch records call. ``api_key``: the server's
    key, sent as a bearer token. ``timeout``: seconds one call may take in all, retries and
    their waits included (attribution of a long prompt on a CPU takes a while). A full queue
    (503) is retried ``retries`` times after the server's ``Retry-After``, if that wait fits in
    what is left of ``timeout``; otherwise the 503 is raised at once. Failures raise
    ``RemoteAttributionError`` (``RemoteInputError``, a ``ValueError``, for refused input).
    Safe to share between threads."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 300.0, retries: int = 2):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=self.url, headers=headers)

    def __repr__(self) -> str:
        return f"RemoteAttributor({self.url!r})"

    def __enter__(self) -> RemoteAttributor:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def attribute_with(
        self, question: str, documents: Sequence[Document | str], answer: str, options: AttributionOptions
    ) -> AttributionResult:
        """``Attributor.attribute_with``, computed by the service."""
        return self._post({"question": question, "documents": documents, "answer": answer, "options": options})

    def attribute_messages_with(
        self,
        messages: Messages,
        answer: str,
        documents: Sequence[Document | str],
        options: AttributionOptions,
    ) -> AttributionResult:
        """``Attributor.attribute_messages_with``, computed by the service."""
        messages = messages if isinstance(messages, str) else [dict(m) for m in messages]
        return self._post({"messages": messages, "documents": documents, "answer": answer, "options": options})

    def generate_answer(self, question: str, documents: Sequence[Document | str], max_new_tokens: int = 48) -> str:
        """``Attributor.generate_answer`` by the service's model: the service has no endpoint for
        generation alone, so this sends a question-only request (the server answers, then
        attributes with the cheapest method, ``fast``) and returns its answer. The server
        generates 48 new tokens at most; another ``max_new_tokens`` is refused."""
        if max_new_tokens != 48:
            raise ValueError(
                f"the service generates at most 48 new tokens; max_new_tokens={max_new_tokens} is not offered"
            )
        return self._post(
            {"question": question, "documents": documents, "options": AttributionOptions(method="fast")}
        ).answer

    def _post(self, fields: dict[str, Any]) -> AttributionResult:
        if isinstance(fields["documents"], (str, Document)) or not isinstance(fields["documents"], Sequence):
            raise TypeError("documents must be a list of Document objects or strings")
        body = {
            **fields,
            "documents": [_document(d) for d in fields["documents"]],
            "options": fields["options"].model_dump(),
        }
        deadline = time.monotonic() + self.timeout
        for attempt in range(self.retries + 1):
            left = deadline - time.monotonic()
            try:
                response = self._client.post(
                    "/v1/attribute", json=body, timeout=httpx.Timeout(left, connect=min(left, 10.0))
                )
            except httpx.HTTPError as error:
                raise RemoteAttributionError(
                    f"attribution service at {self.url}: {type(error).__name__}: {error}"
                ) from error
            wait = response.headers.get("retry-after", "")
            if response.status_code != 503 or attempt == self.retries or not wait.isdigit():
                break
            if int(wait) >= deadline - time.monotonic():
                raise _error(
                    self.url, response, f" (Retry-After {wait} s is past the client's timeout={self.timeout:g} s)"
                )
            time.sleep(int(wait))
        if response.is_success:
            return AttributionResult.model_validate_json(response.content)
        raise _error(self.url, response)


def _error(url: str, response: httpx.Response, note: str = "") -> RemoteAttributionError:
    """The service's ``{"error", "detail"}`` (or whatever a proxy in between sent) as an exception."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        code, detail = payload.get("error"), payload.get("detail", payload)
    else:
        code, detail = None, response.text[:200]
    message = (
        f"attribution service at {url}: HTTP {response.status_code}"
        + (f" {code}" if code else "")
        + f": {detail}{note}"
    )
    kind = RemoteInputError if response.status_code in (413, 422) else RemoteAttributionError
    return kind(message, status=response.status_code, code=code)
