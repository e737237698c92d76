"""The ASGI application (Starlette): TF Serving's REST API plus health endpoints.

Endpoints (TF Serving's, parsed like its ``http_rest_api_util.cc``: case-insensitive patterns,
any other ``/v1/`` URL or method is a 400 "Malformed request", versions are int64):

* ``GET /v1/models/NAME[/versions/N]`` -- version status;
* ``GET /v1/models/NAME[/versions/N]/metadata`` -- the SavedModel's signature defs;
* ``POST /v1/models/NAME[/versions/N]:predict`` -- row (``instances``) or columnar (``inputs``);

and kerasdl's own: ``GET /v1/models`` (every model and version state, including load errors),
``GET /healthz`` / ``/v2/health/live`` (alive) and ``GET /readyz`` / ``/v2/health/ready`` (200 when
every model is loaded, else 503). Every error is ``{"error": "..."}`` with a 4xx/5xx status.

A predict request is parsed, run and encoded in one thread of a pool (TF releases the GIL), so
requests are served in parallel with one hand-off each; with ``batching`` on, concurrent requests
to one signature are merged by :class:`kerasdl.serving.batcher.Batcher`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kerasdl.serving import heap
from kerasdl.serving.batcher import Batcher
from kerasdl.serving.codec import (
    PredictRequest,
    decode_predict,
    dumps,
    encode_predict,
    parse_json,
    signature_name,
)
from kerasdl.serving.errors import ServingError, invalid, not_found
from kerasdl.serving.fast_json import fast_decode
from kerasdl.serving.images import check_image_inputs, model_input_hw
from kerasdl.serving.limits import Limits, image_pixel_limit
from kerasdl.serving.metadata import model_metadata
from kerasdl.serving.repository import ModelRepository

log = logging.getLogger("kerasdl.serving")

# TF Serving's URL grammar (http_rest_api_util.cc, RE2 full matches; (?i): case-insensitive).
_API_URL = re.compile(r"/v1/.*", re.I | re.S)
_PREDICT_URL = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?"
    r":(classify|regress|predict)",
    re.I,
)
_STATUS_URL = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.I,
)
_INT64_MAX = 2**63 - 1
_ORIGIN = re.compile(r"https?://")
_INLINE_JSON_BYTES = 32 * 1024  # smaller bodies are parsed on the event loop


@dataclass
class ServerConfig:
    """Server limits and batching options.

    Args:
        max_body_bytes: request bodies above this get 413 before they are parsed.
        max_batch: the most examples one request may hold (more: 400).
        batching: merge concurrent requests into batches.
        batch_size: the most examples in one server-side batch.
        batch_timeout_ms: how long a batch waits for more requests once a batch thread is free.
        num_threads: threads running TensorFlow calls.
        batch_threads: how many server-side batches may run at once (TF Serving's default:
            the number of CPUs).
        limits: image size, header and body time, connection limits (:class:`Limits`).
    """

    max_body_bytes: int = 16 * 1024 * 1024
    max_batch: int = 256
    batching: bool = False
    batch_size: int = 32
    batch_timeout_ms: float = 0.0
    num_threads: int = 4
    batch_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    limits: Limits = field(default_factory=Limits)


def _json(body: Any, status: int = 200) -> Response:
    return Response(dumps(body), status_code=status, media_type="application/json")


def _error(status: int, message: str) -> Response:
    return _json({"error": message}, status)


class ClientGone(Exception):
    """The client closed its connection before its request body was complete."""


async def _read_body(request: Request, limit: int, timeout: float) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise ServingError(
            "PAYLOAD_TOO_LARGE",
            f"Request body of {int(length)} bytes exceeds the limit of {limit} bytes "
            "(--max-body-bytes).",
        )
    chunks, size = [], 0

    async def read() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ServingError(
                    "PAYLOAD_TOO_LARGE",
                    f"Request body exceeds the limit of {limit} bytes (--max-body-bytes).",
                )
            chunks.append(chunk)

    try:
        await asyncio.wait_for(read(), timeout)
    except ClientDisconnect:
        expected = f" of {length}" if length is not None else ""
        client = request.client
        log.info(
            "client %s hung up after %d%s body bytes: %s %s",
            f"{client.host}:{client.port}" if client else "?",
            size,
            expected,
            request.method,
            request.url.path,
        )
        raise ClientGone() from None
    except TimeoutError:
        raise ServingError(
            "REQUEST_TIMEOUT",
            f"Request body not received within {timeout:g} s ({size} bytes arrived; "
            "--body-timeout).",
        ) from None
    return b"".join(chunks)


class ModelServer:
    """The request handlers, bound to a repository, a thread pool and an optional batcher."""

    def __init__(self, repo: ModelRepository, config: ServerConfig) -> None:
        self.repo = repo
        self.config = config
        self.executor: ThreadPoolExecutor | None = None
        self.batcher: Batcher | None = None
        self._pixel_limits: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> Any:
        self.executor = ThreadPoolExecutor(self.config.num_threads, thread_name_prefix="tf")
        if self.config.batching:
            self.batcher = Batcher(
                self.executor,
                max_batch_size=self.config.batch_size,
                batch_timeout=self.config.batch_timeout_ms / 1000.0,
                num_batch_threads=self.config.batch_threads,
            )
        await run_in_threadpool(self.repo.start)
        try:
            yield
        finally:
            self.repo.stop()
            self.executor.shutdown(wait=True)

    async def models(self, request: Request) -> Response:
        return _json(self.repo.summary())

    async def live(self, request: Request) -> Response:
        return _json({"status": "alive"})

    async def ready(self, request: Request) -> Response:
        ok, detail = self.repo.ready()
        if ok:
            return _json({"status": "ready", "detail": detail})
        return _error(503, f"not ready: {detail}")

    async def api(self, request: Request) -> Response:
        """Every other URL: TF Serving's ``/v1/`` API, routed the way TF Serving routes it."""
        raw = request.scope.get("raw_path") or request.url.path.encode("utf-8")
        path, method = raw.decode("latin-1"), request.method
        if not _API_URL.fullmatch(path):
            raise not_found(f"Malformed request: {method} {path}")
        if method == "OPTIONS":  # a CORS preflight
            if _ORIGIN.search(request.headers.get("origin", "")):
                return Response(b"", media_type="application/json")
            raise ServingError("FAILED_PRECONDITION", "Origin header is missing in CORS preflight")
        pattern = {"POST": _PREDICT_URL, "GET": _STATUS_URL}.get(method)
        m = pattern.fullmatch(path) if pattern is not None else None
        if m is None:
            raise invalid(f"Malformed request: {method} {path}")
        name, version_text, label, last = m.groups()
        name = unquote(name or "")
        version = None
        if version_text:
            version = int(version_text)
            if version > _INT64_MAX:
                raise invalid(f"Failed to convert version: {version_text} to numeric.")
        if method == "GET" and not name:
            raise invalid("Missing model name in request.")
        if label:
            version = self._label_version(name, unquote(label))
        if method == "GET":
            if last == "metadata":  # TF Serving compares the sub-resource case-sensitively
                return _json(model_metadata(self.repo.get(name, version)))
            return _json(self.repo.status(name, version))
        if last == "predict":
            return await self.predict(request, name, version)
        if last in ("classify", "regress"):
            self.repo.get(name, version)  # an unknown model or version: 404, as for :predict
            raise invalid(
                f"':{last}' needs a {last} signature (method tensorflow/serving/{last}); "
                "kerasdl exports predict signatures: use ':predict'."
            )
        raise invalid(f"Malformed request: {method} {path}")  # e.g. ':PREDICT', as TF Serving

    def _label_version(self, name: str, label: str) -> int:
        resolve = getattr(self.repo, "version_for_label", None)
        version = resolve(name, label) if resolve is not None else None
        if version is None:
            raise invalid(f"Unrecognized servable version label: {label}")
        return int(version)

    def _pixel_limit(self, servable: Any) -> int:
        limit = self._pixel_limits.get(servable)
        if limit is None:
            limit = image_pixel_limit(self.config.limits, model_input_hw(servable.signatures))
            self._pixel_limits[servable] = limit
        return limit

    def _decode(self, doc: dict[str, Any], sig: Any, servable: Any) -> PredictRequest:
        req = decode_predict(doc, sig, self.config.max_batch)
        strings = [k for k, info in sig.inputs.items() if info.is_string]
        if strings:  # encoded images are measured before the graph decodes them
            check_image_inputs(req.inputs, strings, self._pixel_limit(servable))
        return req

    def _parse(self, body: bytes, servable: Any) -> tuple[Any, PredictRequest]:
        """The signature and the decoded inputs, with garbage collection paused meanwhile.

        (The parsed JSON's lists, ~33,000 for 32 32x32x3 images, are all alive until the
        arrays are made and freed by reference counting on return: collections in between
        walk them for nothing; they took a third of the parse's CPU time.)
        """
        fast = fast_decode(body, servable.signature, self.config.max_batch)
        if fast is not None:  # one float input as a JSON array: no Python objects per number
            return fast
        with heap.paused():
            doc = parse_json(body)
            sig = servable.signature(signature_name(doc))
            req = self._decode(doc, sig, servable)
            del doc
        return sig, req

    def _predict(self, body: bytes, servable: Any) -> bytes:
        """Parse, run and encode in one worker thread (one hand-off per request)."""
        return self._run_encode(*self._parse(body, servable))

    def _parse_or_run(self, body: bytes, servable: Any) -> tuple[Any, PredictRequest] | bytes:
        """With batching: the parsed request, or the answer of one that is a full batch itself.

        (A request of ``--batch-size`` examples or more has nothing to wait for: it runs here,
        as without batching, instead of through the batcher's extra thread hand-offs.)
        """
        sig, req = self._parse(body, servable)
        if req.batch_size < self.config.batch_size:
            return sig, req
        return self._run_encode(sig, req)

    @staticmethod
    def _run_encode(sig: Any, req: PredictRequest) -> bytes:
        return encode_predict(sig(req.inputs), req.format)

    async def predict(self, request: Request, name: str, version: int | None) -> Response:
        servable = self.repo.get(name, version)
        limits = self.config.limits
        try:
            body = await _read_body(request, self.config.max_body_bytes, limits.body_timeout)
        except ClientGone:
            return Response(b"", status_code=400)  # nobody reads it; uvicorn drops it
        loop = asyncio.get_running_loop()
        if self.batcher is None:
            answer = await loop.run_in_executor(self.executor, self._predict, body, servable)
            return Response(answer, media_type="application/json")
        if len(body) > _INLINE_JSON_BYTES:
            parsed = await loop.run_in_executor(self.executor, self._parse_or_run, body, servable)
        else:
            parsed = self._parse(body, servable)
            if parsed[1].batch_size >= self.config.batch_size:
                parsed = await loop.run_in_executor(self.executor, self._run_encode, *parsed)
        if isinstance(parsed, bytes):
            return Response(parsed, media_type="application/json")
        sig, req = parsed
        outputs = await self.batcher.submit((servable, sig.name), sig, req.inputs)
        return Response(
            await loop.run_in_executor(self.executor, encode_predict, outputs, req.format)
            if req.batch_size > 64
            else encode_predict(outputs, req.format),
            media_type="application/json",
        )


class _API:
    """The catch-all route as a plain ASGI app, so that it takes every method."""

    def __init__(self, server: ModelServer) -> None:
        self.server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.server.api(Request(scope, receive))
        await response(scope, receive, send)


class _InternalErrors:
    """Answer unexpected exceptions with 500 ``{"error": ...}`` and log each one once.

    (Starlette's handler for ``Exception`` re-raises after answering, so uvicorn logged a second
    traceback of every internal error.)
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except RecursionError:  # a structure nested too deeply for some recursive step
            log.warning("request nested too deeply: %s %s", scope["method"], scope["path"])
            if not started:
                await _error(400, "The request is nested too deeply.")(scope, receive, send)
        except Exception as exc:  # noqa: BLE001 - the one place that answers the unexpected
            log.error("internal error on %s %s", scope["method"], scope["path"], exc_info=exc)
            if not started:
                response = _error(500, f"Internal error: {type(exc).__name__}: {exc}")
                await response(scope, receive, send)


_UNREAD_BODY = ("PAYLOAD_TOO_LARGE", "REQUEST_TIMEOUT")  # the rest of the body is never read


async def _serving_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServingError)
    response = _error(exc.status, exc.message)
    if exc.code in _UNREAD_BODY:
        response.headers["connection"] = "close"
    return response


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = exc.detail
    if exc.status_code == 404:
        detail = f"Malformed request: {request.method} {request.url.path}"
    return _error(exc.status_code, str(detail))


def create_app(repo: ModelRepository, config: ServerConfig | None = None) -> Starlette:
    """The Starlette application serving ``repo`` (models load in the app's startup).

    Example:
        >>> app = create_app(ModelRepository("saved_models"), ServerConfig(batching=True))
        >>> uvicorn.run(app, port=8501)
    """
    server = ModelServer(repo, config or ServerConfig())
    routes = [
        Route("/v1/models", server.models, methods=["GET"]),
        Route("/healthz", server.live, methods=["GET"]),
        Route("/v2/health/live", server.live, methods=["GET"]),
        Route("/readyz", server.ready, methods=["GET"]),
        Route("/v2/health/ready", server.ready, methods=["GET"]),
        Route("/{rest:path}", _API(server)),
    ]
    app = Starlette(
        routes=routes,
        lifespan=server.lifespan,
        middleware=[Middleware(_InternalErrors)],
        exception_handlers={ServingError: _serving_error, HTTPException: _http_error},
    )
    app.state.server = server
    return app
