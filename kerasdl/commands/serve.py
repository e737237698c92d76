"""``kerasdl serve``: a TF-Serving-compatible REST server for exported models."""

from __future__ import annotations

import argparse
import os

COMMAND = "serve"
HELP = "serve exported models over TF Serving's REST API (default port 8501)"
DESCRIPTION = """Serve every model under a base folder (saved_models/<name>/<version>/), each at its
highest version, over TensorFlow Serving's REST API. New versions are picked up while running;
a version that fails to load is reported (GET /v1/models) and the previous one keeps serving.

Endpoints: GET /v1/models/NAME[/versions/N][/metadata], POST /v1/models/NAME[/versions/N]:predict,
GET /v1/models, /healthz, /readyz. SIGTERM finishes requests in flight, then exits.

Example:
  kerasdl serve saved_models --port 8501 --batching
  curl -d '{"instances": [...]}' localhost:8501/v1/models/digits:predict
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("base", metavar="MODEL_BASE", help="folder of models (saved_models)")
    parser.add_argument("--port", type=int, default=8501, help="port (default 8501)")
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface (default 127.0.0.1; 0.0.0.0 = all)"
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=16 * 1024 * 1024,
        help="larger request bodies get 413 (default 16 MiB)",
    )
    parser.add_argument(
        "--max-batch", type=int, default=256, help="most examples per request (default 256)"
    )
    parser.add_argument(
        "--batching", action="store_true", help="merge concurrent requests into batches"
    )
    parser.add_argument(
        "--batch-size", type=int, default=32, help="server-side batch size (default 32)"
    )
    parser.add_argument(
        "--batch-timeout-ms",
        type=float,
        default=0.0,
        help="how long a batch waits for more requests once a batch thread is free (default 0: "
        "it takes what queued while the previous batch ran)",
    )
    parser.add_argument(
        "--batch-threads",
        type=int,
        default=os.cpu_count() or 1,
        help="server-side batches run at once (default: the number of CPUs, as TF Serving)",
    )
    parser.add_argument(
        "--threads", type=int, default=4, help="threads running TensorFlow (default 4)"
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=2.0,
        help="seconds between scans for new versions (0 = off; default 2)",
    )
    parser.add_argument(
        "--keep-alive-timeout",
        type=float,
        default=30.0,
        help="seconds an idle keep-alive connection stays open (default 30)",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )


def run(args: argparse.Namespace) -> int:
    from kerasdl.errors import UserError

    try:
        from kerasdl.serving.app import ServerConfig
        from kerasdl.serving.server import serve
    except ImportError as err:
        raise UserError(
            f"kerasdl serve needs starlette and uvicorn ({err}): pip install 'kerasdl[serving]'"
        ) from err

    for flag in ("port", "max_body_bytes", "max_batch", "batch_size", "batch_threads", "threads"):
        if getattr(args, flag) < 1:
            raise UserError(
                f"--{flag.replace('_', '-')} must be >= 1. Received: {getattr(args, flag)}"
            )
    if args.batch_timeout_ms < 0 or args.poll_interval < 0 or args.keep_alive_timeout <= 0:
        raise UserError(
            "--batch-timeout-ms and --poll-interval must be >= 0, --keep-alive-timeout > 0."
        )
    config = ServerConfig(
        max_body_bytes=args.max_body_bytes,
        max_batch=args.max_batch,
        batching=args.batching,
        batch_size=args.batch_size,
        batch_timeout_ms=args.batch_timeout_ms,
        num_threads=args.threads,
        batch_threads=args.batch_threads,
    )
    serve(
        args.base,
        host=args.host,
        port=args.port,
        config=config,
        poll_interval=args.poll_interval,
        log_level=args.log_level,
        keep_alive_timeout=args.keep_alive_timeout,
    )
    return 0
