"""Run the model server with uvicorn (graceful shutdown on SIGTERM / Ctrl-C).

The port is bound first, before any model loads, so a port in use is one error line at once
rather than after every model has loaded. Connections get the limits of
:mod:`kerasdl.serving.connections` (header timeout, connection limit).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
from pathlib import Path
from typing import Any

from kerasdl.errors import UserError
from kerasdl.serving.app import ServerConfig, create_app
from kerasdl.serving.repository import ModelRepository

GRACEFUL_SHUTDOWN_S = 30
_SPARE_FILES = 256  # file descriptors kept free beyond the connections (models, logs, threads)

log = logging.getLogger("kerasdl.serving")


def bind_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (not yet listening): one clear error if it cannot be.

    Raises:
        UserError: the address is in use, not available on this machine, or not permitted.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise UserError(f"Cannot serve on --host {host}: {err.strerror}.") from None
    # The protocol too (IPPROTO_TCP, not 0): asyncio turns Nagle's algorithm off only on accepted
    # sockets of that protocol; with 0 every answer waited for the client's delayed ACK (~40 ms).
    family, socktype, proto, _, address = infos[0]
    sock = socket.socket(family, socktype, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            reason = "is already in use (another server is listening there); choose another --port"
        elif err.errno == errno.EACCES:
            reason = "needs privileges (ports below 1024); choose a --port of 1024 or more"
        else:
            reason = f"cannot be bound: {err.strerror}"
        raise UserError(f"Port {port} on {host} {reason}.") from None
    sock.set_inheritable(True)
    return sock


def _raise_file_limit(needed: int) -> None:
    """Raise the soft open-files limit towards ``needed`` (each connection holds a descriptor)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft < needed:
            log.warning(
                "the open-files limit is %d, under the %d that --max-connections needs",
                soft,
                needed,
            )


def uvicorn_server(
    app: Any, host: str, port: int, config: ServerConfig, log_level: str, keep_alive: float
) -> Any:
    """A ``uvicorn.Server`` for ``app`` with kerasdl's connection limits."""
    import uvicorn

    from kerasdl.serving.connections import http_protocol

    limits = config.limits

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:  # uvicorn says this only for sockets it bound itself
                log.info("Uvicorn running on http://%s:%d (Press CTRL+C to quit)", host, port)

    uv_config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=http_protocol(limits.header_timeout, limits.max_connections),
        log_level=log_level,
        access_log=log_level == "debug",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        timeout_keep_alive=keep_alive,
        lifespan="on",
    )
    return Server(uv_config)


def serve(
    base: str | Path,
    host: str = "127.0.0.1",
    port: int = 8501,
    config: ServerConfig | None = None,
    poll_interval: float = 2.0,
    log_level: str = "info",
    keep_alive_timeout: float = 30.0,
    repository: ModelRepository | None = None,
) -> None:
    """Serve every model under ``base`` until SIGTERM/SIGINT.

    The port is bound before any model loads (a port in use is a :class:`UserError` at once).
    On SIGTERM uvicorn stops accepting connections, lets requests in flight finish (up to
    30 s), then the app stops polling and shuts its thread pool down.

    Args:
        base: the model base folder (``saved_models``) or one model's folder (not read when
            ``repository`` is given).
        host: the interface to bind (``0.0.0.0`` for every interface, e.g. in a container).
        port: the port (TF Serving's REST default is 8501).
        config: limits and batching options.
        poll_interval: seconds between scans for new versions (0: no polling).
        log_level: uvicorn/kerasdl log level.
        keep_alive_timeout: seconds an idle keep-alive connection stays open.
        repository: the model repository (default: ``ModelRepository(base, poll_interval)``
            with ``freeze_heap``: see :mod:`kerasdl.serving.heap`).
    """
    base = Path(base)
    if repository is None and not base.is_dir():
        raise UserError(
            f"Model base folder not found: {base} (export a run with 'kerasdl export')."
        )
    config = config or ServerConfig()
    sock = bind_socket(host, port)
    try:
        logging.basicConfig(
            level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        _raise_file_limit(config.limits.max_connections + _SPARE_FILES)
        repo = repository
        if repo is None:
            repo = ModelRepository(base, poll_interval=poll_interval, freeze_heap=True)
            if not repo.model_dirs():
                log.warning("no model folders under %s yet; polling for them", base)
        app = create_app(repo, config)
        server = uvicorn_server(app, host, port, config, log_level, keep_alive_timeout)
        server.run(sockets=[sock])
    finally:
        sock.close()
