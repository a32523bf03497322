"""The citation service: ``POST /v1/attribute`` over HTTP, so that app processes (in any
language) share one attribution model on a GPU box instead of loading one each.

One model per process, behind a bounded queue: one worker thread runs the requests in arrival
order (the model is serialised anyway, and one thread keeps every score equal to a direct
call's), the event loop only admits, waits and answers. Secure by default: the CLI binds to
loopback, and anything else needs an API key (``check_binding``). Every error is a JSON
object ``{"error": code, "detail": ...}``, never a traceback.

Needs the ``serve`` extra (FastAPI, uvicorn); ``ray_application`` also the ``ray`` extra.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import math
import os
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, cast

from fastapi import FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from starlette.exceptions import HTTPException

from ._version import __version__
from .options import AttributionOptions
from .records import AttributionRequest
from .results import AttributionResult

if TYPE_CHECKING:
    from .attributor import Attributor


class ServiceSettings(BaseModel):
    """The limits and defaults of one service process (the ``serve`` command's flags)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    options: AttributionOptions = Field(
        default_factory=AttributionOptions,
        description="for requests without 'options'; its max_forwards also caps every request's",
    )
    api_key: SecretStr | None = Field(None, description="clients send 'Authorization: Bearer KEY'; None: no key")
    max_queue: int = Field(16, ge=0, description="requests waiting behind the one the model runs; past it 503")
    timeout: float = Field(300.0, gt=0, description="seconds from arrival to answer, queue included; past it 504")
    max_documents: int = Field(100, ge=1, description="documents per request; past it 422")
    max_body: int = Field(1_000_000, ge=1, description="request body bytes; past it 413")


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` keeps the service on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_binding(host: str, settings: ServiceSettings) -> None:
    """Refuse to serve off loopback without an API key: attribution costs GPU time and the
    requests carry the app's documents."""
    if not is_loopback(host) and settings.api_key is None:
        raise ValueError(
            f"binding to {host} exposes the service beyond this machine: set an API key (--api-key-env NAME) or bind to 127.0.0.1"
        )


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
    started, so a timed-out request that is still running keeps its place and the bound holds.
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

    async def run(self, work: Callable[[Attributor], AttributionResult], timeout: float) -> AttributionResult:
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
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except asyncio.TimeoutError:  # cancels the work if it has not started
            raise ServiceError(504, "timeout", f"not answered within {timeout:g} s (queue wait included)") from None

    def _timed(self, work: Callable[[Attributor], AttributionResult]) -> AttributionResult:
        with self._lock:
            self.running += 1
        from .scorer import AttributionOutOfMemory  # imports torch: loaded by now, not at start-up

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
    """Raw ASGI checks made before the body is read: the API key on ``/v1/`` (so an
    unauthenticated client learns nothing about the body), then the body size, from
    ``Content-Length`` and again while the body streams in (chunked uploads have no length)."""

    def __init__(self, app: Any, settings: ServiceSettings):
        self.app = app
        self.key = settings.api_key.get_secret_value().encode() if settings.api_key else None
        self.max_body = settings.max_body

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.key is not None and scope["path"].startswith("/v1/"):
            scheme, _, token = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.key):
                error = ServiceError(
                    401,
                    "unauthorized",
                    "missing or wrong API key: send 'Authorization: Bearer KEY'",
                    headers={"WWW-Authenticate": "Bearer"},
                )
                return await error.response()(scope, receive, send)
        length = headers.get("content-length")
        if length is not None and not length.isdigit():
            return await ServiceError(400, "bad_request", f"invalid Content-Length {length!r}").response()(
                scope, receive, send
            )
        if length is not None and int(length) > self.max_body:
            return await self._too_large(length, scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body:
                return await self._too_large(f"over {self.max_body}", scope, receive, send)
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

        return await self.app(scope, replay, send)

    async def _too_large(self, size: str, scope: dict, receive: Callable, send: Callable) -> None:
        detail = f"the request body is {size} bytes, the limit is {self.max_body} (--max-body)"
        await ServiceError(413, "body_too_large", detail, limit=self.max_body).response()(scope, receive, send)


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
<li><a href="/docs">/docs</a>: the OpenAPI documentation</li>
</ul></body></html>
"""


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

    app = FastAPI(
        title="attribot-rag",
        version=__version__,
        summary="Faithful leave-one-out citations for RAG answers",
        description="POST a question (or the chat messages the LLM read), its retrieved documents and the answer; "
        "get every document and sentence scored by how much the answer's log-probability drops without it. "
        "Errors are JSON objects {'error': code, 'detail': ...}.",
        lifespan=lifespan,
    )
    # Declared for the OpenAPI docs; _Guard checks the key before the body is read.
    bearer = [Security(HTTPBearer(auto_error=False, description="the server's API key"))] if settings.api_key else []

    @app.post(
        "/v1/attribute",
        response_model=AttributionResult,
        dependencies=bearer,
        responses={
            401: {"description": "missing or wrong API key"},
            413: {"description": "request body over --max-body"},
            422: {
                "description": "invalid request, too many documents, or a prompt over the model's window (with the numbers)"
            },
            503: {"description": "queue full (Retry-After says when to retry) or out of memory"},
            504: {"description": "not answered within --timeout"},
        },
    )
    async def attribute(body: AttributionRequest) -> AttributionResult:
        """Attribute an answer to its documents: the CLI's JSON input (``question``,
        ``documents``, ``answer``; or ``messages`` instead of ``question``) with optional
        ``options`` (method, budget, ...; default: the server's)."""
        count = len(body.documents)
        if count > settings.max_documents:
            detail = f"{count} documents, the limit is {settings.max_documents} (--max-documents)"
            raise ServiceError(422, "too_many_documents", detail, documents=count, limit=settings.max_documents)
        request = body.model_copy(
            update={"options": _capped(body.options or settings.options, settings.options.max_forwards)}
        )
        return await worker.run(request.attribute, settings.timeout)

    @app.post("/v1/attribute/html", response_class=HTMLResponse, dependencies=bearer)
    async def attribute_html(body: AttributionRequest) -> HTMLResponse:
        """The same attribution as ``/v1/attribute``, as the self-contained HTML view (the
        one of ``AttributionResult.to_html``; every text escaped, no network)."""
        result = await attribute(body)
        return HTMLResponse(result.to_html(body.question))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        """A page for people: what this service is and where its API and views are."""
        return HTMLResponse(_INDEX)

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

    _add_error_handlers(app)
    app.add_middleware(_Guard, settings=settings)
    return app


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
        detail = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in error.errors()
        ]
        return ServiceError(422, "invalid_request", detail).response()

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
        from .attributor import Attributor

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
