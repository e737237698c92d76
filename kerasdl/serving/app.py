"""The ASGI application (Starlette): TF Serving's REST API plus health endpoints.

Endpoints (TF Serving's, parsed with the same URL grammar as its ``http_server.cc``):

* ``GET /v1/models/NAME[/versions/N]`` -- version status;
* ``GET /v1/models/NAME[/versions/N]/metadata`` -- signature defs;
* ``POST /v1/models/NAME[/versions/N]:predict`` -- row (``instances``) or columnar (``inputs``);

and kerasdl's own: ``GET /v1/models`` (every model and version state, including load errors),
``GET /healthz`` / ``/v2/health/live`` (alive) and ``GET /readyz`` / ``/v2/health/ready`` (200 when
every model is loaded, else 503). Every error is ``{"error": "..."}`` with a 4xx/5xx status.

TensorFlow calls run in a thread pool (TF releases the GIL), so requests are served in parallel;
with ``batching`` on, concurrent requests to one signature are merged by
:class:`kerasdl.serving.batcher.Batcher`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kerasdl.serving.batcher import Batcher
from kerasdl.serving.codec import decode_predict, dumps, encode_predict, parse_json, signature_name
from kerasdl.serving.errors import ServingError, invalid, not_found
from kerasdl.serving.repository import ModelRepository

log = logging.getLogger("kerasdl.serving")

# TF Serving's URL grammar: /v1/models/<name>[/versions/<v> | /labels/<l>][/metadata | :<verb>]
_MODEL_URL = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?:(?P<metadata>/metadata)|:(?P<verb>classify|regress|predict))?/?$"
)
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
    """

    max_body_bytes: int = 16 * 1024 * 1024
    max_batch: int = 256
    batching: bool = False
    batch_size: int = 32
    batch_timeout_ms: float = 0.0
    num_threads: int = 4
    batch_threads: int = field(default_factory=lambda: os.cpu_count() or 1)


def _json(body: Any, status: int = 200) -> Response:
    return Response(dumps(body), status_code=status, media_type="application/json")


def _error(status: int, message: str) -> Response:
    return _json({"error": message}, status)


async def _read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise ServingError(
            "PAYLOAD_TOO_LARGE",
            f"Request body of {int(length)} bytes exceeds the limit of {limit} bytes "
            "(--max-body-bytes).",
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ServingError(
                "PAYLOAD_TOO_LARGE",
                f"Request body exceeds the limit of {limit} bytes (--max-body-bytes).",
            )
        chunks.append(chunk)
    return b"".join(chunks)


class ModelServer:
    """The request handlers, bound to a repository, a thread pool and an optional batcher."""

    def __init__(self, repo: ModelRepository, config: ServerConfig) -> None:
        self.repo = repo
        self.config = config
        self.executor: ThreadPoolExecutor | None = None
        self.batcher: Batcher | None = None

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

    async def model(self, request: Request) -> Response:
        m = _MODEL_URL.match(request.url.path)
        if m is None:
            raise not_found(f"Malformed request: {request.method} {request.url.path}")
        name, verb = m["name"], m["verb"]
        version = int(m["version"]) if m["version"] else None
        if m["label"]:
            raise not_found(f"Unrecognized servable version label: {m['label']} (model {name})")
        want = "POST" if verb else "GET"
        if request.method != want:
            raise ServingError(
                "METHOD_NOT_ALLOWED", f"{request.url.path} takes {want}, not {request.method}."
            )
        if verb is None:
            if m["metadata"]:
                return _json(self.repo.get(name, version).metadata())
            return _json(self.repo.status(name, version))
        if verb != "predict":
            raise invalid(
                f"':{verb}' needs a {verb} signature (method tensorflow/serving/{verb}); "
                "kerasdl exports predict signatures: use ':predict'."
            )
        return await self.predict(request, name, version)

    async def predict(self, request: Request, name: str, version: int | None) -> Response:
        servable = self.repo.get(name, version)
        body = await _read_body(request, self.config.max_body_bytes)
        big = len(body) > _INLINE_JSON_BYTES
        doc = await run_in_threadpool(parse_json, body) if big else parse_json(body)
        sig = servable.signature(signature_name(doc))
        args = (doc, sig, self.config.max_batch)
        req = await run_in_threadpool(decode_predict, *args) if big else decode_predict(*args)
        if self.batcher is not None:
            outputs = await self.batcher.submit((id(servable), sig.name), sig, req.inputs)
        else:
            loop = asyncio.get_running_loop()
            outputs = await loop.run_in_executor(self.executor, sig, req.inputs)
        return Response(
            await run_in_threadpool(encode_predict, outputs, req.format)
            if req.batch_size > 64
            else encode_predict(outputs, req.format),
            media_type="application/json",
        )


async def _serving_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServingError)
    return _error(exc.status, exc.message)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = exc.detail
    if exc.status_code == 404:
        detail = f"Malformed request: {request.method} {request.url.path}"
    return _error(exc.status_code, str(detail))


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return _error(500, f"Internal error: {type(exc).__name__}: {exc}")


def create_app(repo: ModelRepository, config: ServerConfig | None = None) -> Starlette:
    """The Starlette application serving ``repo`` (models load in the app's startup).

    Example:
        >>> app = create_app(ModelRepository("saved_models"), ServerConfig(batching=True))
        >>> uvicorn.run(app, port=8501)
    """
    server = ModelServer(repo, config or ServerConfig())
    routes = [
        Route("/v1/models", server.models, methods=["GET"]),
        Route("/v1/models/{rest:path}", server.model, methods=["GET", "POST", "PUT", "DELETE"]),
        Route("/healthz", server.live, methods=["GET"]),
        Route("/v2/health/live", server.live, methods=["GET"]),
        Route("/readyz", server.ready, methods=["GET"]),
        Route("/v2/health/ready", server.ready, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=server.lifespan,
        exception_handlers={
            ServingError: _serving_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
    )
    app.state.server = server
    return app
