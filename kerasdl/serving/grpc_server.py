"""TF Serving's gRPC API on its own port, beside the REST server, over the same repository.

:class:`GrpcServer` runs a ``grpc.server`` whose worker threads decode a call, run the signature
and encode the answer themselves (TensorFlow releases the GIL); with ``--batching`` they hand
their inputs to a :class:`~kerasdl.serving.batcher.Batcher` of their own, on an event loop in a
thread, and wait for their slice (gRPC and REST requests are batched separately). It shares the
:class:`~kerasdl.serving.repository.ModelRepository` with the REST server, so both serve the same
versions, labels and status. (A ``grpc.aio`` server measured here lost throughput from 8 to 32
clients, its one event-loop thread being the bottleneck; the thread pool did not.)

Lifetime, in one ``kerasdl serve`` process: :meth:`GrpcServer.bind` takes the port before any
model loads (a port in use is one error line at once), :meth:`GrpcServer.attach` makes the
repository's ``start()`` open the port for requests once the models are loaded and its
``stop()`` (the REST server's shutdown, after SIGTERM) stop gRPC first: no new calls, calls in
flight finish (up to ``grace`` seconds).

Limits: messages up to ``max_message_bytes`` each way (default 64 MiB; larger: RESOURCE_EXHAUSTED
from gRPC itself; TF Serving allows 2 GiB), at most ``max_concurrent_rpcs`` calls at once
(more: RESOURCE_EXHAUSTED), ``threads`` worker threads (TF Serving: ``--grpc_max_threads``), and
``max_batch`` examples per request.

Example:
    >>> grpc_server = GrpcServer(repo, ServerConfig(), port=8500)
    >>> grpc_server.bind()
    >>> grpc_server.attach(repo)  # started and stopped with the repository
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from kerasdl.errors import UserError
from kerasdl.serving.app import ServerConfig
from kerasdl.serving.batcher import Batcher
from kerasdl.serving.repository import ModelRepository
from kerasdl.serving.servable import Servable, Signature

log = logging.getLogger("kerasdl.serving")

DEFAULT_GRPC_PORT = 8500  # TF Serving's --port
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_CONCURRENT_RPCS = 256
GRACEFUL_SHUTDOWN_S = 30.0


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


class GrpcServer:
    """TF Serving's ``PredictionService`` and ``ModelService`` over gRPC.

    Args:
        repo: the model repository (started and stopped by its owner, or via :meth:`attach`).
        config: the REST server's options (threads, batching, ``max_batch``, image limits).
        host: the interface to bind (``0.0.0.0`` for every interface).
        port: the port (TF Serving's gRPC default is 8500; 0 = any free port).
        max_message_bytes: the largest request or response message.
        max_concurrent_rpcs: calls handled at once; more get RESOURCE_EXHAUSTED.
        config_root: the folder relative base paths of a HandleReloadConfigRequest are taken
            from (default: the working directory).
    """

    def __init__(
        self,
        repo: ModelRepository,
        config: ServerConfig | None = None,
        host: str = "127.0.0.1",
        port: int = DEFAULT_GRPC_PORT,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_concurrent_rpcs: int = DEFAULT_MAX_CONCURRENT_RPCS,
        config_root: str | Path | None = None,
    ) -> None:
        self.repo = repo
        self.config = config or ServerConfig()
        self.host = host
        self.port = port
        self.max_message_bytes = max_message_bytes
        self.max_concurrent_rpcs = max_concurrent_rpcs
        self.config_root = Path(config_root if config_root is not None else ".").absolute()
        self._server: Any = None
        self._workers: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the batcher's, with --batching
        self._loop_thread: threading.Thread | None = None
        self._tf_pool: ThreadPoolExecutor | None = None
        self._batcher: Batcher | None = None
        # with batching, requests that are full batches run in their worker, --threads at once
        self._direct = threading.BoundedSemaphore(self.config.num_threads)
        self._pixel_limits: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._started = False
        self._stopped = False

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def threads(self) -> int:
        """Worker threads: ``--threads``, or enough to fill the batches with ``--batching``."""
        cfg = self.config
        if not cfg.batching:
            return cfg.num_threads
        wanted = max(cfg.num_threads, cfg.batch_size * cfg.batch_threads)
        return min(wanted, self.max_concurrent_rpcs)

    def bind(self) -> int:
        """Take the port now (not answering yet); returns it. UserError if it cannot be bound."""
        if self._server is not None:
            return self.port
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        from kerasdl.serving.grpc_model_service import ModelService
        from kerasdl.serving.grpc_service import PredictionService

        options = [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.so_reuseport", 0),  # a port in use is an error, not a shared port
        ]
        self._workers = ThreadPoolExecutor(self.threads, thread_name_prefix="grpc")
        server = grpc.server(
            self._workers, options=options, maximum_concurrent_rpcs=self.max_concurrent_rpcs
        )
        limit = self._pixel_limit if _image_checks() else None
        prediction = PredictionService(
            self.repo, self._run, self.config.max_batch, self.max_message_bytes, limit
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(prediction, server)
        models = ModelService(self.repo, self.config_root)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(models, server)
        try:
            port = server.add_insecure_port(_address(self.host, self.port))
        except RuntimeError:
            port = 0
        if not port:
            server.stop(None)
            self._workers.shutdown(wait=False)
            raise UserError(
                f"gRPC port {self.port} on {self.host} cannot be bound (in use by another "
                "server?); choose another --grpc-port."
            )
        self._server, self.port = server, port
        return port

    def start(self) -> None:
        """Answer requests (binds first if :meth:`bind` was not called)."""
        self.bind()
        if self._started:
            return
        if self.config.batching:
            self._start_batcher()
        self._server.start()
        self._started = True
        log.info("gRPC API (TF Serving's PredictionService, ModelService) on %s",
                 _address(self.host, self.port))  # fmt: skip

    def stop(self, grace: float = GRACEFUL_SHUTDOWN_S) -> None:
        """Refuse new calls, let calls in flight finish (up to ``grace`` s), free the port."""
        if self._server is None or self._stopped:
            return
        self._stopped = True
        self._server.stop(grace).wait(grace + 5)
        if self._workers is not None:
            self._workers.shutdown(wait=False)
        if self._loop is not None and self._loop_thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop_thread.join(timeout=30)
        if self._tf_pool is not None:
            self._tf_pool.shutdown(wait=True)
        if self._started:
            log.info("gRPC API stopped")

    def attach(self, repo: ModelRepository) -> None:
        """Start with ``repo.start()`` (after its first load) and stop first in ``repo.stop()``.

        ``kerasdl.serving.server.serve`` starts and stops the repository in the REST app's
        lifespan, so gRPC then lives exactly as long as the loaded models, and SIGTERM (which
        ends that lifespan after the REST requests in flight) stops it cleanly too.
        """
        start, stop = repo.start, repo.stop

        def start_both() -> None:
            start()
            self.start()

        def stop_both() -> None:
            try:
                self.stop()
            finally:
                stop()

        repo.start = start_both  # type: ignore[method-assign]
        repo.stop = stop_both  # type: ignore[method-assign]

    def __enter__(self) -> GrpcServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- running signatures --------------------------------------------------------------

    def _start_batcher(self) -> None:
        cfg = self.config
        self._tf_pool = ThreadPoolExecutor(cfg.num_threads, thread_name_prefix="tf-grpc")
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(
            target=self._loop.run_forever, name="grpc-batcher", daemon=True
        )
        self._loop_thread.start()
        self._batcher = Batcher(
            self._tf_pool,
            max_batch_size=cfg.batch_size,
            batch_timeout=cfg.batch_timeout_ms / 1000.0,
            num_batch_threads=cfg.batch_threads,
        )

    def _run(
        self, servable: Servable, sig: Signature, inputs: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Run ``sig`` here, or through the batcher (this worker waits for its slice)."""
        if self._batcher is None or self._loop is None:
            return sig(inputs)
        first = next(iter(inputs.values()), None)
        # A full batch by itself has nothing to wait for: it runs here, as without batching.
        if first is not None and first.ndim and first.shape[0] >= self.config.batch_size:
            with self._direct:
                return sig(inputs)
        call = self._batcher.submit((servable, sig.name), sig, inputs)
        return asyncio.run_coroutine_threadsafe(call, self._loop).result()

    def _pixel_limit(self, servable: Servable) -> int:
        limit = self._pixel_limits.get(servable)
        if limit is None:
            from kerasdl.serving.images import model_input_hw
            from kerasdl.serving.limits import Limits, image_pixel_limit

            limits = getattr(self.config, "limits", None) or Limits()
            limit = image_pixel_limit(limits, model_input_hw(servable.signatures))
            self._pixel_limits[servable] = limit
        return limit


def _image_checks() -> bool:
    """Whether the REST server's image-size checks are available to apply to gRPC too."""
    with contextlib.suppress(ImportError):
        import kerasdl.serving.images  # noqa: F401
        import kerasdl.serving.limits  # noqa: F401

        return True
    return False


__all__ = [
    "DEFAULT_GRPC_PORT",
    "DEFAULT_MAX_CONCURRENT_RPCS",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "GrpcServer",
]
