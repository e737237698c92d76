"""Run the model server with uvicorn (graceful shutdown on SIGTERM / Ctrl-C)."""

from __future__ import annotations

import logging
from pathlib import Path

from kerasdl.errors import UserError
from kerasdl.serving.app import ServerConfig, create_app
from kerasdl.serving.repository import ModelRepository

GRACEFUL_SHUTDOWN_S = 30


def serve(
    base: str | Path,
    host: str = "127.0.0.1",
    port: int = 8501,
    config: ServerConfig | None = None,
    poll_interval: float = 2.0,
    log_level: str = "info",
    keep_alive_timeout: float = 30.0,
) -> None:
    """Serve every model under ``base`` until SIGTERM/SIGINT.

    On SIGTERM uvicorn stops accepting connections, lets requests in flight finish (up to
    30 s), then the app stops polling and shuts its thread pool down.

    Args:
        base: the model base folder (``saved_models``) or one model's folder.
        host: the interface to bind (``0.0.0.0`` for every interface, e.g. in a container).
        port: the port (TF Serving's REST default is 8501).
        config: limits and batching options.
        poll_interval: seconds between scans for new versions (0: no polling).
        log_level: uvicorn/kerasdl log level.
        keep_alive_timeout: seconds an idle keep-alive connection stays open.
    """
    import uvicorn

    base = Path(base)
    if not base.is_dir():
        raise UserError(
            f"Model base folder not found: {base} (export a run with 'kerasdl export')."
        )
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    repo = ModelRepository(base, poll_interval=poll_interval)
    if not repo.model_dirs():
        logging.getLogger("kerasdl.serving").warning(
            "no model folders under %s yet; polling for them", base
        )
    app = create_app(repo, config)
    uv_config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=log_level == "debug",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        timeout_keep_alive=keep_alive_timeout,
        lifespan="on",
    )
    uvicorn.Server(uv_config).run()
