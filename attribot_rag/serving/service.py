"""The citation service: ``POST /v1/attribute`` over HTTP, so that app processes (in any
language) share one attribution model on a GPU box instead of loading one each.

One model per process, behind a bounded queue: one worker thread runs the requests in arrival
order (the model is serialised anyway, and one thread keeps every score equal to a direct
call's), the event loop only admits, waits and answers: request bodies are parsed and
validated on other threads, after their document count is checked, so that one large body
cannot stall ``/healthz`` or the other clients. Secure by default: the CLI binds to loopback,
and anything else needs an API key (``check_binding``); without a key only loopback ``Host``
names are answered (DNS rebinding). Every error is a JSON object ``{"error": code, "detail":
...}`` (``ErrorBody``, as the OpenAPI document says), never a traceback. ``/docs`` is served
from the ``fastapi-offline`` package's copy of Swagger UI: no request leaves the machine.

Needs the ``serve`` extra (FastAPI, uvicorn, fastapi-offline); ``ray_application`` also the
``ray`` extra.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import os
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, cast

import h11
from fastapi import FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPBearer
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.json_schema import models_json_schema
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from uvicorn.protocols.http.h11_impl import H11Protocol

from .._version import __version__
from ..api.html import CSP as VIEW_CSP
from ..api.options import AttributionOptions
from ..api.records import AttributionRequest
from ..api.results import AttributionResult
from .service_settings import ServiceSettings, is_loopback

if TYPE_CHECKING:
    from ..api.attributor import Attributor

# Every response not an HTML view of its own: the /docs page (its inline start-up script and the
# Swagger UI files served here) may load from this server only, and nothing may frame a page.
DEFAULT_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
MAX_ISSUES = 20  # validation issues listed in a 422 (a body can hold thousands of wrong items)
# Chat messages per request: far more than any context window holds (each message costs a few
# template tokens besides its content), and few enough to validate in milliseconds (1 MB holds
# 200,000 one-byte wrong ones, whose validation held the GIL for 0.3 s).
MAX_MESSAGES = 10_000


class FieldIssue(BaseModel):
    """One reason a request body is invalid: where (``["body", "documents", 3]``) and what."""

    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    """The body of every error response. Some errors add their numbers (``too_many_documents``:
    ``documents`` and ``limit``; ``body_too_large``: ``limit``; ``invalid_request``: ``errors``,
    the count of issues of which ``detail`` lists at most 20)."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(description="a stable code: invalid_request, invalid_input, unauthorized, queue_full, ...")
    detail: str | list[FieldIssue] = Field(description="what is wrong, in words (invalid_request: the issues)")


class ServiceError(Exception):
    """An error answered as ``{"error": code, "detail": detail, **extra}`` with ``status``."""

    def __init__(self, status: int, code: str, detail: Any, headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers, self.extra = status, code, detail, headers, extra

    def response(self) -> JSONResponse:
        return JSONResponse(
            {"error": self.code, "detail": self.detail, **self.extra}, status_code=self.status, headers=self.headers
        )


class _Worker:
    """The process's one model and the bounded queue in front of it.

    Admission, the counters and the timeout run on the event loop; the model runs on one
    thread. A request leaves the count only when its work is done or cancelled before it
    started, so a timed-out request that is still running keeps its place and the bound holds;
    one whose client hangs up while it waits is cancelled, so the dead do not fill the queue.
    """

    def __init__(self, source: Any, max_queue: int):
        self._source = source
        self.attributor: Attributor | None = None if callable(source) else source
        self.max_queue = max_queue
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="attribot-service")
        self._lock = threading.Lock()
        self.admitted = 0  # waiting or running
        self.running = 0
        self._seconds: deque[float] = deque([1.0], maxlen=32)  # recent run times, for Retry-After

    def load(self) -> Future:
        """Load the model (a factory's) on the worker thread, where it will run."""

        def load() -> None:
            if self.attributor is None:
                self.attributor = self._source()

        return self._executor.submit(load)

    def retry_after(self) -> int:
        """Seconds until the queue has likely drained, from recent run times."""
        mean = sum(self._seconds) / len(self._seconds)
        return max(1, math.ceil(mean * max(self.admitted, 1)))

    async def run(
        self, work: Callable[[Attributor], AttributionResult], timeout: float, gone: Awaitable[None]
    ) -> AttributionResult:
        """``work`` on the model within ``timeout`` seconds; ``gone`` completes when the client
        hangs up, which cancels the work if it has not started (a started one runs to its end)."""
        with self._lock:
            if self.admitted > self.max_queue:
                raise ServiceError(
                    503,
                    "queue_full",
                    f"{self.admitted} requests are queued or running, the limit is {self.max_queue + 1}; retry later",
                    headers={"Retry-After": str(self.retry_after())},
                )
            self.admitted += 1
        future = self._executor.submit(self._timed, work)
        future.add_done_callback(self._leave)
        answer: asyncio.Future[Any] = asyncio.wrap_future(future)  # cancelling it cancels the work if not started
        hangup: asyncio.Future[Any] = asyncio.ensure_future(gone)
        try:
            await asyncio.wait({answer, hangup}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if answer.done():
                return answer.result()
            answer.cancel()
            if hangup.done():  # nobody reads this answer; the status is for the access log
                raise ServiceError(499, "client_closed_request", "the client hung up before the answer")
            raise ServiceError(504, "timeout", f"not answered within {timeout:g} s (queue wait included)")
        finally:
            hangup.cancel()

    def _timed(self, work: Callable[[Attributor], AttributionResult]) -> AttributionResult:
        with self._lock:
            self.running += 1
        from ..core.scorer import AttributionOutOfMemory  # imports torch: loaded by now, not at start-up

        start = time.perf_counter()
        try:
            return work(cast("Attributor", self.attributor))  # the lifespan loaded it before any request
        except AttributionOutOfMemory as error:
            raise ServiceError(
                503, "out_of_memory", str(error), headers={"Retry-After": str(self.retry_after())}
            ) from None
        finally:
            with self._lock:
                self.running -= 1
                self._seconds.append(time.perf_counter() - start)

    def _leave(self, _: Future) -> None:
        with self._lock:
            self.admitted -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class _Guard:
    """Raw ASGI checks made before the body is read, and the security headers of every
    response. Without an API key, only a loopback ``Host`` is answered (a page on another site
    that rebinds its name to 127.0.0.1 must not reach the service); with one, the key on
    ``/v1/`` (so an unauthenticated client learns nothing about the body); then the body size,
    from ``Content-Length`` and again while the body streams in (chunked uploads have no length)."""

    def __init__(self, app: Any, settings: ServiceSettings):
        self.app = app
        self.key = settings.api_key.get_secret_value().encode() if settings.api_key else None
        self.max_body = settings.max_body

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def secured(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("x-content-type-options", "nosniff")
                headers.setdefault("referrer-policy", "no-referrer")
                headers.setdefault("content-security-policy", DEFAULT_CSP)
            await send(message)

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host")
        if self.key is None and host is not None and not is_loopback(_host_name(host)):
            detail = f"Host {host!r} is not a loopback name: this server has no API key and answers only 127.0.0.1, [::1] and localhost"
            return await ServiceError(400, "host_not_allowed", detail).response()(scope, receive, secured)
        if self.key is not None and scope["path"].startswith("/v1/"):
            scheme, _, token = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode("latin-1"), self.key):
                error = ServiceError(
                    401,
                    "unauthorized",
                    "missing or wrong API key: send 'Authorization: Bearer KEY'",
                    headers={"WWW-Authenticate": "Bearer"},
                )
                return await error.response()(scope, receive, secured)
        length = headers.get("content-length")
        if length is not None and not length.isdigit():
            return await ServiceError(400, "bad_request", f"invalid Content-Length {length!r}").response()(
                scope, receive, secured
            )
        if length is not None and int(length) > self.max_body:
            return await self._too_large(length, scope, receive, secured)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body:
                return await self._too_large(f"over {self.max_body}", scope, receive, secured)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay() -> dict:
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, secured)

    async def _too_large(self, size: str, scope: dict, receive: Callable, send: Callable) -> None:
        detail = f"the request body is {size} bytes, the limit is {self.max_body} (--max-body)"
        await ServiceError(413, "body_too_large", detail, limit=self.max_body).response()(scope, receive, send)


def _host_name(host: str) -> str:
    """The name of a ``Host`` header, without its port: ``[::1]:8000`` -> ``[::1]``."""
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def parse_request(body: bytes, max_documents: int) -> AttributionRequest:
    """The request of a JSON body, or a ``ServiceError``. Run off the event loop: the counts of
    documents and messages are checked on the parsed JSON before any model is built (validating
    the 249,000 one-character documents that fit in 1 MB took 3 s, pydantic holding the GIL)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as error:  # not JSON, not UTF-8, nested too deeply
        issue = {"loc": ["body"], "msg": f"invalid JSON: {error}", "type": "json_invalid"}
        raise ServiceError(422, "invalid_request", [issue], errors=1) from None
    documents = data.get("documents") if isinstance(data, dict) else None
    if isinstance(documents, list) and len(documents) > max_documents:
        detail = f"{len(documents)} documents, the limit is {max_documents} (--max-documents)"
        raise ServiceError(422, "too_many_documents", detail, documents=len(documents), limit=max_documents)
    messages = data.get("messages") if isinstance(data, dict) else None
    if isinstance(messages, list) and len(messages) > MAX_MESSAGES:
        detail = f"{len(messages)} messages, the limit is {MAX_MESSAGES}"
        raise ServiceError(422, "too_many_messages", detail, messages=len(messages), limit=MAX_MESSAGES)
    try:
        return AttributionRequest.model_validate(data)
    except ValidationError as error:
        raise ServiceError(422, "invalid_request", _issues(error.errors()), errors=error.error_count()) from None


def _issues(errors: Any) -> list[dict[str, Any]]:
    """The first ``MAX_ISSUES`` validation errors as ``FieldIssue`` dicts, located in the body."""
    return [
        {"loc": ["body", *e.get("loc", ())], "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in list(errors)[:MAX_ISSUES]
    ]


class Health(BaseModel):
    """``GET /healthz``: whether the model is loaded and how busy the queue is."""

    status: str
    model: str | None
    device: str | None
    queued: int = Field(description="requests waiting for the model")
    running: int
    max_queue: int
    pid: int = Field(description="the serving process (a replica, under Ray Serve)")
    version: str


_INDEX = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>attribot-rag {__version__}</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'">
</head><body>
<h1>attribot-rag {__version__}: citations for RAG answers</h1>
<p>POST a question (or the chat messages the LLM read), its documents and the answer:</p>
<ul>
<li><code>POST /v1/attribute</code>: the attribution as JSON (<code>AttributionResult</code>)</li>
<li><code>POST /v1/attribute/html</code>: the same, as a self-contained HTML view of the citations</li>
<li><code>GET /healthz</code>: model loaded, queue length</li>
<li><a href="/docs">/docs</a>: the OpenAPI documentation (Swagger UI served by this server, no CDN);
<a href="/openapi.json">/openapi.json</a>: the OpenAPI document</li>
</ul></body></html>
"""

# Every status an attribution endpoint answers besides 200, each with the ErrorBody.
_ERRORS = {
    400: "a Host header that is not loopback on a server without a key, or an invalid Content-Length",
    401: "missing or wrong API key (servers with a key)",
    413: "request body over --max-body",
    422: "invalid request (invalid_request: the issues), over --max-documents (too_many_documents) or 10,000 "
    "messages (too_many_messages), "
    "or input the model refuses, such as a prompt over its window (invalid_input, with the numbers)",
    501: "an option whose extra this server lacks (not_installed: what to install)",
    503: "queue full or out of memory (Retry-After says when to retry)",
    504: "not answered within --timeout (queue wait included)",
}
# The content type is explicit: FastAPI would give the HTML endpoint's errors text/html.
_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }
    for status, description in _ERRORS.items()
}
_REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AttributionRequest"}}},
    }
}


def create_app(attributor: Any, settings: ServiceSettings | None = None) -> FastAPI:
    """The service's FastAPI app. ``attributor``: a loaded ``Attributor`` (or anything with
    its methods, such as a ``RemoteAttributor``), or a function that loads one, called once on
    the worker thread at start-up (how a Ray Serve replica loads its own model)."""
    settings = settings or ServiceSettings()
    worker = _Worker(attributor, settings.max_queue)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        await asyncio.wrap_future(worker.load())
        yield
        worker.close()

    app = FastAPIOffline(
        title="attribot-rag",
        version=__version__,
        summary="Faithful leave-one-out citations for RAG answers",
        description="POST a question (or the chat messages the LLM read), its retrieved documents and the answer; "
        "get every document and sentence scored by how much the answer's log-probability drops without it. "
        "Errors are JSON objects {'error': code, 'detail': ...} (ErrorBody).",
        lifespan=lifespan,
        redoc_url=None,
        swagger_ui_parameters={"validatorUrl": None},  # Swagger UI's online validator: off
    )
    # Declared for the OpenAPI docs; _Guard checks the key before the body is read.
    bearer = [Security(HTTPBearer(auto_error=False, description="the server's API key"))] if settings.api_key else []

    async def attribution(request: Request) -> tuple[AttributionRequest, AttributionResult]:
        body = await run_in_threadpool(parse_request, await request.body(), settings.max_documents)
        capped = body.model_copy(
            update={"options": _capped(body.options or settings.options, settings.options.max_forwards)}
        )
        return body, await worker.run(capped.attribute, settings.timeout, _hangup(request))

    @app.post(
        "/v1/attribute",
        response_model=AttributionResult,
        dependencies=bearer,
        responses=_ERROR_RESPONSES,
        openapi_extra=_REQUEST_BODY,
    )
    async def attribute(request: Request) -> AttributionResult:
        """Attribute an answer to its documents: the CLI's JSON input (``question``,
        ``documents``, ``answer``; or ``messages`` instead of ``question``) with optional
        ``options`` (method, budget, ...; default: the server's). Without ``answer`` (question
        form) the server's model answers first."""
        return (await attribution(request))[1]

    @app.post(
        "/v1/attribute/html",
        response_class=HTMLResponse,
        dependencies=bearer,
        responses={200: {"content": {"text/html": {"schema": {"type": "string"}}}}, **_ERROR_RESPONSES},
        openapi_extra=_REQUEST_BODY,
    )
    async def attribute_html(request: Request) -> HTMLResponse:
        """The same attribution as ``/v1/attribute``, as the self-contained HTML view (the
        one of ``AttributionResult.to_html``; every text escaped, no network)."""
        body, result = await attribution(request)
        html = await run_in_threadpool(result.to_html, body.question)
        return HTMLResponse(html, headers={"Content-Security-Policy": f"{VIEW_CSP}; frame-ancestors 'none'"})

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        """A page for people: what this service is and where its API and views are."""
        return HTMLResponse(_INDEX, headers={"Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'"})

    @app.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        """Liveness and load: ``status`` is ``ok`` once the model is loaded."""
        model = worker.attributor
        described = model.settings(settings.options) if model is not None and hasattr(model, "settings") else None
        return Health(
            status="ok" if model is not None else "loading",
            model=described.model if described else None,
            device=described.device if described else None,
            queued=max(worker.admitted - worker.running, 0),
            running=worker.running,
            max_queue=settings.max_queue,
            pid=os.getpid(),
            version=__version__,
        )

    def openapi() -> dict[str, Any]:
        """FastAPI's document plus the schemas of the request body (the endpoints parse it
        themselves, off the event loop, so FastAPI does not see its model) and of errors."""
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
            )
            _, definitions = models_json_schema(
                [(AttributionRequest, "validation"), (ErrorBody, "serialization")],
                ref_template="#/components/schemas/{model}",
            )
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for name, schema in definitions["$defs"].items():
                if schemas.setdefault(name, schema) != schema:
                    raise RuntimeError(f"two OpenAPI schemas named {name}")
            schemas["AttributionRequest"]["properties"]["documents"]["maxItems"] = settings.max_documents
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend it
    _add_error_handlers(app)
    app.add_middleware(_Guard, settings=settings)
    return app


async def _hangup(request: Request) -> None:
    """Completes when the client disconnects: the body has been read, so uvicorn's next
    ``receive`` gives the disconnect, or nothing until the response is sent. A server whose
    ``receive`` says anything else cannot be watched: then this never completes."""
    if (await request.receive())["type"] != "http.disconnect":
        await asyncio.Event().wait()


def _capped(options: AttributionOptions, cap: int | None) -> AttributionOptions:
    """``options`` with ``max_forwards`` at most ``cap``: a request may lower the server's bound
    on its work, never raise it (a timed-out request's work still runs to its end)."""
    if cap is None or (options.max_forwards is not None and options.max_forwards <= cap):
        return options
    return options.model_copy(update={"max_forwards": cap})


def _add_error_handlers(app: FastAPI) -> None:
    """Every error as ``{"error", "detail"}``; the core's refusal of bad input is a 422 with
    its message (which has the numbers: "prompt and answer are N tokens, M more than ...")."""

    @app.exception_handler(ServiceError)
    async def service_error(_: Request, error: ServiceError) -> JSONResponse:
        return error.response()

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        issues = list(error.errors())
        return ServiceError(422, "invalid_request", _issues(issues), errors=len(issues)).response()

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, error: HTTPException) -> JSONResponse:
        code = str(error.detail).lower().replace(" ", "_")
        return ServiceError(error.status_code, code, error.detail, headers=getattr(error, "headers", None)).response()

    @app.exception_handler(ValueError)
    @app.exception_handler(TypeError)
    async def invalid_input(_: Request, error: Exception) -> JSONResponse:
        return ServiceError(422, "invalid_input", str(error)).response()

    @app.exception_handler(ImportError)
    async def not_installed(_: Request, error: ImportError) -> JSONResponse:
        # an option whose extra this server lacks: "keep_similar needs bm25s: pip install ..."
        return ServiceError(501, "not_installed", str(error)).response()

    @app.exception_handler(Exception)
    async def internal(_: Request, error: Exception) -> JSONResponse:  # Starlette logs the traceback
        return ServiceError(500, "internal_error", f"{type(error).__name__}; the server log has the details").response()


def bounded_protocol(settings: ServiceSettings) -> type[H11Protocol]:
    """uvicorn's h11 protocol with the bounds uvicorn lacks: at most ``max_connections`` open
    (one past it gets a 503 and is closed at once, so slow clients cannot hold every file
    descriptor), and each request's headers and body received within ``receive_timeout`` of the
    connection opening or of the previous response (else 408 and close: a slowloris client
    that sends a byte at a time is cut off). Idle keep-alive stays uvicorn's 5 s; malformed
    HTTP gets the JSON error body too."""

    class BoundedH11Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > settings.max_connections:
                detail = f"{settings.max_connections} connections are open, the limit (--max-connections); retry later"
                self._refuse(HTTPStatus.SERVICE_UNAVAILABLE, "too_many_connections", detail)
            else:
                self._arm()

        def handle_events(self) -> None:
            super().handle_events()
            if self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):  # the request is in
                self._disarm()

        def on_response_complete(self) -> None:
            self._arm()  # before: a pipelined request that is complete disarms it again
            super().on_response_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def send_400_response(self, msg: str) -> None:
            """A request h11 cannot parse (a bad Content-Length, a malformed header): the
            service's JSON error, not uvicorn's plain text."""
            self._refuse(HTTPStatus.BAD_REQUEST, "bad_request", f"{msg} (malformed HTTP)")

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(settings.receive_timeout, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            if self.transport.is_closing() or self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):
                return
            if self.cycle is not None and self.cycle.response_started:  # idle keep-alive, or answered early
                self.transport.close()
                return
            if self.cycle is not None:  # the app waits for the body: it gets a disconnect
                self.cycle.disconnected = True
                self.cycle.message_event.set()
            detail = f"the request was not received within {settings.receive_timeout:g} s (--receive-timeout)"
            self._refuse(HTTPStatus.REQUEST_TIMEOUT, "receive_timeout", detail)

        def _refuse(self, status: HTTPStatus, code: str, detail: str) -> None:
            """Answer and close outside h11's state machine (no request, or one half received)."""
            body = json.dumps({"error": code, "detail": detail}).encode()
            head = (
                f"HTTP/1.1 {status.value} {status.phrase}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nx-content-type-options: nosniff\r\nconnection: close\r\n\r\n"
            )
            self.transport.write(head.encode() + body)
            self.transport.close()

    return BoundedH11Protocol


def serve(app: FastAPI, host: str, port: int, settings: ServiceSettings) -> None:
    """Run ``app`` under uvicorn with the service's connection bounds (``bounded_protocol``)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, http=bounded_protocol(settings), log_level="info")


def ray_application(
    model: dict[str, Any],
    settings: ServiceSettings,
    replicas: int = 1,
    gpus_per_replica: float = 0,
    cpus_per_replica: float = 1,
) -> Any:
    """The same app as a Ray Serve deployment (``serve.ingress`` with a builder, evaluated on
    each replica): each of ``replicas`` loads its own model (``Attributor(**model)``) with its
    own queue and worker, so a cluster scales the service out. Returns the bound application
    for ``serve.run``."""
    from ray import serve

    def build() -> FastAPI:
        from ..api.attributor import Attributor

        return create_app(lambda: Attributor(**model), settings)

    @serve.deployment(
        name="attribot-rag",
        num_replicas=replicas,
        ray_actor_options={"num_gpus": gpus_per_replica, "num_cpus": cpus_per_replica},
        # Above the app's own bound, so that overload gets its 503 rather than a proxy queue.
        max_ongoing_requests=settings.max_queue + 8,
    )
    @serve.ingress(build)
    class AttributionService:
        """One replica: its app and model come from ``build``."""

    return AttributionService.bind()  # type: ignore[attr-defined]  # added by serve.deployment
