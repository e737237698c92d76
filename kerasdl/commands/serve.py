"""``kerasdl serve``: a TF-Serving-compatible REST server for exported models."""

from __future__ import annotations

import argparse
import os

from kerasdl.serving.limits import add_limit_arguments, limits_from_args
from kerasdl.serving.safety import add_safety_arguments

COMMAND = "serve"
HELP = "serve exported models over TF Serving's REST API (port 8501) and gRPC API (--grpc-port)"
DESCRIPTION = """Serve every model under a base folder (saved_models/<name>/<version>/), each at its
highest version, or the models of a TF Serving model config file (--model-config-file: version
policies, version labels), over TensorFlow Serving's REST API. Version changes keep a version
serving throughout (the new one loads before the old one unloads; deleting the newest version
rolls back to the previous one). A version that fails to load is retried and reported
(GET /v1/models/NAME) while the previous one keeps serving.

Endpoints: GET /v1/models/NAME[/versions/N][/metadata], POST /v1/models/NAME[/versions/N]:predict,
GET /v1/models, /healthz, /readyz. With --grpc-port (TF Serving's --port, 8500 there), TF Serving's
gRPC API too: PredictionService (Predict, Classify, Regress, GetModelMetadata) and ModelService
(GetModelStatus, HandleReloadConfigRequest), for the tensorflow-serving-api client stubs.
SIGTERM finishes requests in flight (REST, then gRPC), then exits.

Example:
  kerasdl serve saved_models --port 8501 --batching
  kerasdl serve saved_models --port 8501 --grpc-port 8500   # as TF Serving: REST and gRPC
  kerasdl serve --model-config-file models.config --model-config-file-poll-wait-seconds 60
  curl -d '{"instances": [...]}' localhost:8501/v1/models/digits:predict
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "base", metavar="MODEL_BASE", nargs="?", help="folder of models (saved_models)"
    )
    parser.add_argument(
        "--model-config-file",
        metavar="FILE",
        help="TF Serving ModelServerConfig text file (models, base paths, version policies, "
        "version labels), instead of MODEL_BASE",
    )
    parser.add_argument(
        "--model-config-file-poll-wait-seconds",
        type=float,
        default=0.0,
        help="seconds between re-reads of --model-config-file (default 0: read once)",
    )
    parser.add_argument(
        "--max-num-load-retries",
        type=int,
        default=5,
        help="retries of a failed version load, e.g. a version seen half-copied (default 5)",
    )
    parser.add_argument(
        "--load-retry-interval-seconds",
        type=float,
        default=2.0,
        help="seconds between load retries (default 2); a version whose files change is "
        "retried at the next poll",
    )
    parser.add_argument("--port", type=int, default=8501, help="REST port (default 8501)")
    parser.add_argument(
        "--grpc-port",
        type=int,
        default=0,
        metavar="PORT",
        help="also serve TF Serving's gRPC API on PORT (TF Serving's --port, 8500 there; "
        "default 0: off)",
    )
    parser.add_argument(
        "--grpc-max-message-bytes",
        type=int,
        default=64 * 1024 * 1024,
        metavar="N",
        help="largest gRPC request or response message; larger ones get RESOURCE_EXHAUSTED "
        "(default 64 MiB)",
    )
    parser.add_argument(
        "--grpc-max-concurrent-rpcs",
        type=int,
        default=256,
        metavar="N",
        help="gRPC calls handled at once; more get RESOURCE_EXHAUSTED (default 256)",
    )
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
        "--tensorflow-intra-op-parallelism",
        type=int,
        default=0,
        metavar="N",
        help="threads one TensorFlow op may use (TF Serving's --tensorflow_intra_op_parallelism; "
        "default 0: TensorFlow's choice, the number of CPUs); 1 served batch-1 requests ~25%% "
        "faster on 2 CPUs",
    )
    parser.add_argument(
        "--tensorflow-inter-op-parallelism",
        type=int,
        default=0,
        metavar="N",
        help="ops TensorFlow runs at once (TF Serving's --tensorflow_inter_op_parallelism; "
        "default 0: TensorFlow's choice)",
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
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="server log level (default info)",
    )
    add_limit_arguments(parser)
    add_safety_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from kerasdl.errors import UserError

    try:
        from kerasdl.serving.app import ServerConfig
        from kerasdl.serving.server import serve
    except ImportError as err:
        raise UserError(
            f"kerasdl serve needs starlette and uvicorn ({err}): pip install 'kerasdl[serving]'"
        ) from err

    for flag in (
        "port",
        "max_body_bytes",
        "max_batch",
        "batch_size",
        "batch_threads",
        "threads",
        "grpc_max_message_bytes",
        "grpc_max_concurrent_rpcs",
    ):
        if getattr(args, flag) < 1:
            raise UserError(
                f"--{flag.replace('_', '-')} must be >= 1. Received: {getattr(args, flag)}"
            )
    intra, inter = args.tensorflow_intra_op_parallelism, args.tensorflow_inter_op_parallelism
    if intra < 0 or inter < 0:
        raise UserError(
            "--tensorflow-intra-op-parallelism and --tensorflow-inter-op-parallelism must be "
            f">= 0 (0: TensorFlow's choice). Received: {intra}, {inter}"
        )
    if args.batch_timeout_ms < 0 or args.poll_interval < 0 or args.keep_alive_timeout <= 0:
        raise UserError(
            "--batch-timeout-ms and --poll-interval must be >= 0, --keep-alive-timeout > 0."
        )
    if (
        args.max_num_load_retries < 0
        or args.load_retry_interval_seconds < 0
        or args.model_config_file_poll_wait_seconds < 0
    ):
        raise UserError(
            "--max-num-load-retries, --load-retry-interval-seconds and "
            "--model-config-file-poll-wait-seconds must be >= 0."
        )
    if (args.base is None) == (args.model_config_file is None):
        raise UserError("Give either MODEL_BASE or --model-config-file (exactly one of them).")
    if not 0 <= args.grpc_port <= 65535 or args.grpc_port == args.port:
        raise UserError(
            f"--grpc-port must be 0 (off) or a port other than --port {args.port}. "
            f"Received: {args.grpc_port}"
        )
    config = ServerConfig(
        max_body_bytes=args.max_body_bytes,
        max_batch=args.max_batch,
        batching=args.batching,
        batch_size=args.batch_size,
        batch_timeout_ms=args.batch_timeout_ms,
        num_threads=args.threads,
        batch_threads=args.batch_threads,
        limits=limits_from_args(args),
    )
    kwargs = dict(
        host=args.host,
        port=args.port,
        config=config,
        poll_interval=args.poll_interval,
        log_level=args.log_level,
        keep_alive_timeout=args.keep_alive_timeout,
    )
    if intra or inter:  # before TensorFlow's runtime starts (no model is loaded yet)
        import tensorflow as tf

        if intra:
            tf.config.threading.set_intra_op_parallelism_threads(intra)
        if inter:
            tf.config.threading.set_inter_op_parallelism_threads(inter)
    repo = _repository(args)
    grpc_server = _grpc_server(args, repo, config) if args.grpc_port else None
    try:
        base = args.base or os.path.dirname(os.path.abspath(args.model_config_file))
        serve(base, repository=repo, **kwargs)
    finally:
        if grpc_server is not None:
            grpc_server.stop()  # already stopped with the repository, unless startup failed
    return 0


def _grpc_server(args: argparse.Namespace, repo, config):  # noqa: ANN001, ANN202 - lazy imports
    """The gRPC server, its port taken now (before any model loads), run with the repository."""
    from kerasdl.errors import UserError

    try:
        from kerasdl.serving.grpc_server import GrpcServer
    except ImportError as err:
        raise UserError(
            f"--grpc-port needs grpcio and tensorflow-serving-api ({err}): "
            "pip install 'tensorflow-serving-api>=2.21,<2.22'"
        ) from err
    # relative base paths of a HandleReloadConfigRequest: as in --model-config-file
    root = (
        os.path.dirname(os.path.abspath(args.model_config_file)) if args.model_config_file else "."
    )
    server = GrpcServer(
        repo,
        config,
        host=args.host,
        port=args.grpc_port,
        max_message_bytes=args.grpc_max_message_bytes,
        max_concurrent_rpcs=args.grpc_max_concurrent_rpcs,
        config_root=root,
    )
    server.bind()
    server.attach(repo)
    return server


def _repository(args: argparse.Namespace):  # noqa: ANN202 - imported lazily
    """The model repository the options describe (a bad config file: one-line UserError)."""
    from kerasdl.errors import UserError
    from kerasdl.serving.repository import ModelRepository

    if args.base is not None and not os.path.isdir(args.base):
        raise UserError(
            f"Model base folder not found: {args.base} (export a run with 'kerasdl export')."
        )
    if args.model_config_file is not None and not os.path.isfile(args.model_config_file):
        raise UserError(f"Model config file not found: {args.model_config_file}")
    return ModelRepository(
        args.base,
        poll_interval=args.poll_interval,
        model_config_file=args.model_config_file,
        config_poll_interval=args.model_config_file_poll_wait_seconds,
        max_load_retries=args.max_num_load_retries,
        load_retry_interval=args.load_retry_interval_seconds,
        allow_unsafe_ops=args.allow_unsafe_ops,
        freeze_heap=True,  # a server process: keep the collector off the models' objects
    )
