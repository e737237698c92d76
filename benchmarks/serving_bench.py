"""Serving benchmark: requests/s and p50/p99 latency of kerasdl serve, next to model.predict.

For request batch sizes 1 and 32 it measures, on the same inputs in the same run:

* ``model.predict`` -- Keras in-process, one call per request (sequential);
* ``SavedModel signature`` -- the exported ``serving_default`` called in-process (the floor);
* ``kerasdl serve`` -- over REST (TF Serving's row JSON format) and over gRPC (TF Serving's
  ``PredictionService.Predict`` through the ``tensorflow-serving-api`` stubs, ``tensor_content``
  requests as ``tf.make_tensor_proto`` writes them), from each of ``--concurrency`` client thread
  counts, without and with server-side batching (``--batching``); one server process serves both.

Prints a Markdown table. Client and server share the machine, so on a 2-core CPU the clients'
encoding and decoding compete with the server. Every request loop is bounded by ``--requests``.

Usage::

    python benchmarks/serving_bench.py                    # SimpleCNN, 32x32x3 inputs
    python benchmarks/serving_bench.py --requests 100 --image-size 8 --channels 1
    python benchmarks/serving_bench.py --concurrency 1,8,32,64 --protocols grpc
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np


def _stats(latencies: list[float], wall: float, batch: int) -> dict[str, float]:
    lat = np.asarray(latencies) * 1000.0
    n = len(latencies)
    return {
        "rps": n / wall,
        "ips": n * batch / wall,
        "p50": float(np.percentile(lat, 50)),
        "p99": float(np.percentile(lat, 99)),
    }


def bench_local(fn, x: np.ndarray, requests: int) -> dict[str, float]:
    fn(x)  # warm up
    lat = []
    start = time.perf_counter()
    for _ in range(requests):
        t = time.perf_counter()
        fn(x)
        lat.append(time.perf_counter() - t)
    return _stats(lat, time.perf_counter() - start, len(x))


def _connect(port: int) -> http.client.HTTPConnection:
    """A keep-alive connection with TCP_NODELAY, as urllib3 (requests) and most clients open.

    ``http.client`` sends the headers and the body in two writes; without TCP_NODELAY the body
    waits for the server's delayed ACK of the headers (Nagle): ~40 ms per request on Linux.
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def bench_http(port: int, model: str, x: np.ndarray, requests: int, concurrency: int) -> dict:
    body = json.dumps({"instances": np.round(x, 4).tolist()}).encode()
    path = f"/v1/models/{model}:predict"
    lat: list[float] = []
    errors: list[str] = []
    counter = iter(range(requests))
    lock = threading.Lock()

    def send(conn: http.client.HTTPConnection) -> tuple[int, bytes]:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()

    def client() -> None:
        conn = _connect(port)
        while True:
            with lock:
                if next(counter, None) is None:
                    break
            t = time.perf_counter()
            try:
                try:
                    status, data = send(conn)
                except (ConnectionError, http.client.RemoteDisconnected):
                    # The server closed the idle keep-alive connection: reconnect once, as HTTP
                    # client libraries do for a reused connection.
                    conn.close()
                    conn = _connect(port)
                    status, data = send(conn)
            except (OSError, http.client.HTTPException) as err:
                status, data = 0, repr(err).encode()
            took = time.perf_counter() - t
            with lock:
                lat.append(took)
                if status != 200:
                    errors.append(data[:200].decode(errors="replace"))
        conn.close()

    conn = _connect(port)  # warm up
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    conn.getresponse().read()
    conn.close()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, first: {errors[0]}")
    return _stats(lat, wall, len(x))


def bench_grpc(port: int, model: str, x: np.ndarray, requests: int, concurrency: int) -> dict:
    """Predict over gRPC from ``concurrency`` threads, each with its own channel."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(x))
    lat: list[float] = []
    errors: list[str] = []
    counter = iter(range(requests))
    lock = threading.Lock()

    def client() -> None:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            predict = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict
            predict(request, timeout=60)  # connect before timing
            while True:
                with lock:
                    if next(counter, None) is None:
                        break
                t = time.perf_counter()
                try:
                    response = predict(request, timeout=60)
                    tf.make_ndarray(response.outputs["probabilities"])
                    error = None
                except grpc.RpcError as err:
                    error = f"{err.code()}: {err.details()}"
                took = time.perf_counter() - t
                with lock:
                    lat.append(took)
                    if error:
                        errors.append(error)

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, first: {errors[0]}")
    return _stats(lat, wall, len(x))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(base: Path, extra: list[str]) -> Iterator[tuple[int, int]]:
    """``kerasdl serve`` with REST and gRPC; yields (REST port, gRPC port) once it is ready."""
    port, grpc_port = _free_port(), _free_port()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, "-m", "kerasdl", "serve", str(base), "--port", str(port)]
    cmd += ["--grpc-port", str(grpc_port)]
    cmd += ["--log-level", "warning", "--poll-interval", "0", *extra]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            with contextlib.suppress(OSError):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/readyz")
                if conn.getresponse().status == 200:
                    break
            time.sleep(0.3)
        yield port, grpc_port
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="requests per measurement")
    parser.add_argument(
        "--concurrency", default="1,8,32", help="client thread counts (default 1,8,32)"
    )
    parser.add_argument(
        "--protocols", default="rest,grpc", help="server protocols to measure (default rest,grpc)"
    )
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--batch-sizes", default="1,32")
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    from kerasdl.data.preprocess import PreprocessSpec
    from kerasdl.export import export_saved_model
    from kerasdl.models.simple_cnn import SimpleCNN

    size, ch = args.image_size, args.channels
    keras.utils.set_random_seed(0)
    model = SimpleCNN(num_classes=10, input_shape=(size, size, ch), name="bench")
    spec = PreprocessSpec((size, size), ch, [0.5] * ch, [0.25] * ch, [f"c{i}" for i in range(10)])
    batches = [int(b) for b in args.batch_sizes.split(",")]
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        version = export_saved_model(model, spec, tmp, "bench")
        sig = tf.saved_model.load(str(version)).signatures["serving_default"]
        mean, std = np.float32(0.5), np.float32(0.25)
        for b in batches:
            x = rng.random((b, size, size, ch), dtype=np.float32)
            # model.predict takes standardized inputs; the signature standardizes itself.
            xs = (x - mean) / std
            rows.append(
                (
                    "model.predict",
                    b,
                    1,
                    bench_local(lambda v: model.predict(v, verbose=0), xs, args.requests),
                )
            )
            rows.append(
                (
                    "SavedModel signature (in-process)",
                    b,
                    1,
                    bench_local(lambda v: sig(images=tf.constant(v)), x, args.requests),
                )
            )
        clients = [int(c) for c in args.concurrency.split(",")]
        protocols = [p.strip().lower() for p in args.protocols.split(",")]
        for flags, extra in (("", []), (" --batching", ["--batching"])):
            with server(Path(tmp), extra) as (port, grpc_port):
                for b in batches:
                    x = rng.random((b, size, size, ch), dtype=np.float32)
                    for proto in protocols:
                        run, at = (bench_grpc, grpc_port) if proto == "grpc" else (bench_http, port)
                        label = f"kerasdl serve{flags}, {'gRPC' if proto == 'grpc' else 'REST'}"
                        for c in clients:
                            rows.append((label, b, c, run(at, "bench", x, args.requests, c)))

    cpu = platform.processor() or platform.machine()
    print(
        f"SimpleCNN (filters 32-64-128, {size}x{size}x{ch}), {args.requests} requests per row; "
        f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, "
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}; load average at the end "
        f"{os.getloadavg()[0]:.1f} (other processes share the CPUs)\n"
    )
    print("| path | batch | clients | requests/s | images/s | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, b, c, s in rows:
        print(
            f"| {label} | {b} | {c} | {s['rps']:.1f} | {s['ips']:.0f} | {s['p50']:.2f} | "
            f"{s['p99']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
