"""Serving benchmark: requests/s and p50/p99 latency of kerasdl serve, next to the in-process call.

For request batch sizes 1 and 32 it measures, on the same inputs in the same run:

* ``model.predict`` -- Keras in-process, one call per request (sequential; ``--predict-requests``);
* ``SavedModel signature`` -- the exported ``serving_default`` called in-process (the floor);
* ``kerasdl serve`` -- over REST (TF Serving's row JSON format) and over gRPC (TF Serving's
  ``PredictionService.Predict`` through the ``tensorflow-serving-api`` stubs, ``tensor_content``
  requests as ``tf.make_tensor_proto`` writes them), from each of ``--concurrency`` client thread
  counts, without and with server-side batching (``--batching``).

Two server processes run side by side, one plain and one with ``--batching``. Each multi-client
row is measured in ``--rounds`` parts, in turn with the other rows of its batch size (the order
reversed every other round), so load from other processes affects them alike. The 1-client rows
are measured interleaved with the in-process call (one call of each in turn), so the server's
overhead over the in-process call is measured under the same load. After the table the script
prints the serving goals of issue 14 as ratios from this run, each with "met" or "not met".

The clients share the machine with the server: each REST request body and gRPC request is
encoded once, before timing (the REST client sends the same bytes again and reads the answer
without parsing it; the gRPC client decodes ``probabilities`` with ``tf.make_ndarray``). The
``client CPU`` column is what the benchmark process itself spent per request; ``server CPU`` is
the server process's (both from the kernel's per-process CPU counters, 10 ms ticks).

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
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
TOLERANCE = 0.05  # ratios within 5% below a goal are reported as "not met (within 5%)"


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def _stats(lat: list[float], wall: float, batch: int, server_cpu: float, client_cpu: float):
    ms = np.asarray(lat) * 1000.0
    n = len(lat)
    return {
        "lat": lat,
        "wall": wall,
        "batch": batch,
        "rps": n / wall,
        "ips": n * batch / wall,
        "p50": float(np.percentile(ms, 50)),
        "p99": float(np.percentile(ms, 99)),
        "server_cpu": server_cpu / n * 1000.0,
        "client_cpu": client_cpu / n * 1000.0,
    }


# --- clients: each call sends one request and raises if it failed ----------------------------


def _connect(port: int) -> http.client.HTTPConnection:
    """A keep-alive connection with TCP_NODELAY, as urllib3 (requests) and most clients open.

    ``http.client`` sends the headers and the body in two writes; without TCP_NODELAY the body
    waits for the server's delayed ACK of the headers (Nagle): ~40 ms per request on Linux.
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def rest_client(port: int, model: str, x: np.ndarray) -> Callable[[], Callable[[], None]]:
    """A factory of REST clients that send ``x`` in row format (the body is encoded once)."""
    body = json.dumps({"instances": np.round(x, 4).tolist()}).encode()
    path = f"/v1/models/{model}:predict"
    headers = {"Content-Type": "application/json"}

    def make() -> Callable[[], None]:
        conn = _connect(port)

        def send() -> None:
            nonlocal conn
            try:
                conn.request("POST", path, body=body, headers=headers)
                resp = conn.getresponse()
            except (ConnectionError, http.client.RemoteDisconnected):
                conn.close()  # the server closed the idle keep-alive connection: reconnect once
                conn = _connect(port)
                conn.request("POST", path, body=body, headers=headers)
                resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"REST {resp.status}: {data[:200]!r}")

        send()  # connect and warm up before timing
        return send

    return make


def grpc_client(port: int, model: str, x: np.ndarray) -> Callable[[], Callable[[], None]]:
    """A factory of gRPC clients (one channel each) sending ``x`` as ``tensor_content``."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(x))

    def make() -> Callable[[], None]:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        predict = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict

        def send() -> None:
            response = predict(request, timeout=120)
            tf.make_ndarray(response.outputs["probabilities"])

        send()
        return send

    return make


def bench_clients(make, requests: int, concurrency: int, batch: int, pid: int) -> dict:
    """``requests`` calls from ``concurrency`` threads, each with its own client."""
    clients = [make() for _ in range(concurrency)]
    lat: list[float] = []
    errors: list[str] = []
    counter = iter(range(requests))
    lock = threading.Lock()

    def run(send: Callable[[], None]) -> None:
        while True:
            with lock:
                if next(counter, None) is None:
                    return
            t = time.perf_counter()
            try:
                send()
                error = None
            except Exception as err:  # noqa: BLE001 - reported below
                error = f"{type(err).__name__}: {err}"
            took = time.perf_counter() - t
            with lock:
                lat.append(took)
                if error:
                    errors.append(error)

    threads = [threading.Thread(target=run, args=(c,)) for c in clients]
    s0, c0, start = process_cpu(pid), time.process_time(), time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    s1, c1 = process_cpu(pid), time.process_time()
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, first: {errors[0]}")
    return _stats(lat, wall, batch, s1 - s0, c1 - c0)


def _combine(runs: list[dict]) -> dict:
    """One row from the parts of a row measured in turns."""
    n = sum(len(r["lat"]) for r in runs)
    lat = [t for r in runs for t in r["lat"]]
    wall = sum(r["wall"] for r in runs)
    batch = runs[0]["batch"]
    server = sum(r["server_cpu"] * len(r["lat"]) for r in runs) / 1000.0
    client = sum(r["client_cpu"] * len(r["lat"]) for r in runs) / 1000.0
    assert n == len(lat)
    return _stats(lat, wall, batch, server, client)


def bench_interleaved(calls: dict[str, tuple[Callable[[], None], int]], requests: int, batch: int):
    """One client: each call of ``calls`` in turn, ``requests`` times (the same load for all)."""
    lat = {k: [] for k in calls}
    server = dict.fromkeys(calls, 0.0)
    client = dict.fromkeys(calls, 0.0)
    for _ in range(requests):
        for key, (call, pid) in calls.items():
            s0, c0 = process_cpu(pid) if pid else 0.0, time.process_time()
            t = time.perf_counter()
            call()
            lat[key].append(time.perf_counter() - t)
            client[key] += time.process_time() - c0
            server[key] += (process_cpu(pid) - s0) if pid else 0.0
    # pid 0: an in-process call, whose CPU time is the benchmark process's own
    return {
        k: _stats(v, sum(v), batch, *((server[k], client[k]) if calls[k][1] else (client[k], 0)))
        for k, v in lat.items()
    }


def bench_local(fn, x: np.ndarray, requests: int) -> dict:
    fn(x)  # warm up
    lat = []
    c0, start = time.process_time(), time.perf_counter()
    for _ in range(requests):
        t = time.perf_counter()
        fn(x)
        lat.append(time.perf_counter() - t)
    return _stats(lat, time.perf_counter() - start, len(x), time.process_time() - c0, 0.0)


# --- the servers ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(base: Path, extra: list[str]) -> Iterator[tuple[int, int, int]]:
    """``kerasdl serve`` with REST and gRPC; yields (REST port, gRPC port, pid) once ready."""
    port, grpc_port = _free_port(), _free_port()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, "-m", "kerasdl", "serve", str(base), "--port", str(port)]
    cmd += ["--grpc-port", str(grpc_port)]
    cmd += ["--log-level", "warning", "--poll-interval", "0", *extra]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            with contextlib.suppress(OSError):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/readyz")
                if conn.getresponse().status == 200:
                    break
            time.sleep(0.3)
        yield port, grpc_port, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=60)


# --- the goals --------------------------------------------------------------------------------


def _verdict(ok: bool, near: bool) -> str:
    return "met" if ok else ("not met (within 5%)" if near else "not met")


def goals(rows: list[tuple[str, str, int, int, dict]], local: dict[int, dict]) -> list[str]:
    """Issue 14's goals as ratios of this run's rows (the plain and --batching servers)."""
    by = {(server, proto, b, c): s for server, proto, b, c, s in rows}
    out = ["| goal | measured | target | verdict |", "|---|---:|---:|---|"]
    for b, proto, target in ((32, "gRPC", 0.20), (32, "REST", 0.50), (1, "gRPC", None),
                             (1, "REST", None)):  # fmt: skip
        s = by.get(("plain", proto, b, 1))
        if s and b in local:
            ratio = (s["p50"] - local[b]["p50"]) / local[b]["p50"]
            verdict = (
                _verdict(ratio < target, ratio < target + TOLERANCE) if target else "(no goal)"
            )
            out.append(
                f"| server overhead, {proto}, batch {b}, 1 client: (server p50 {s['p50']:.1f} ms "
                f"- in-process p50 {local[b]['p50']:.1f} ms) / in-process | {ratio:+.0%} | "
                f"{f'< {target:.0%}' if target else '-'} | {verdict} |"
            )
    for proto in ("REST", "gRPC"):
        for b in (1, 32):
            base = by.get(("plain", proto, b, 8))
            for c in (32, 64):
                s = by.get(("plain", proto, b, c))
                if base and s:
                    r = s["rps"] / base["rps"]
                    out.append(
                        f"| throughput, {proto}, batch {b}: {c} / 8 clients ({s['rps']:.1f} / "
                        f"{base['rps']:.1f} req/s) | {r:.3f} | >= 1 | "
                        f"{_verdict(r >= 1.0, r >= 1.0 - TOLERANCE)} |"
                    )
    for proto in ("REST", "gRPC"):
        for b in (1, 32):
            for c in (8, 32, 64):
                plain, batched = by.get(("plain", proto, b, c)), by.get(("batching", proto, b, c))
                if plain and batched:
                    r = batched["rps"] / plain["rps"]
                    out.append(
                        f"| --batching / plain, {proto}, batch {b}, {c} clients "
                        f"({batched['rps']:.1f} / {plain['rps']:.1f} req/s) | {r:.3f} | >= 1 | "
                        f"{_verdict(r >= 1.0, r >= 1.0 - TOLERANCE)} |"
                    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="requests per measurement")
    parser.add_argument(
        "--predict-requests", type=int, default=30, help="model.predict calls (0: skip them)"
    )
    parser.add_argument(
        "--concurrency", default="1,8,32,64", help="client thread counts (default 1,8,32,64)"
    )
    parser.add_argument(
        "--protocols", default="rest,grpc", help="server protocols to measure (default rest,grpc)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="measure each multi-client row in this many parts, in turn with the others",
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

    load_start = os.getloadavg()[0]
    size, ch = args.image_size, args.channels
    keras.utils.set_random_seed(0)
    model = SimpleCNN(num_classes=10, input_shape=(size, size, ch), name="bench")
    spec = PreprocessSpec((size, size), ch, [0.5] * ch, [0.25] * ch, [f"c{i}" for i in range(10)])
    batches = [int(b) for b in args.batch_sizes.split(",")]
    clients = [int(c) for c in args.concurrency.split(",")]
    protocols = [p.strip().lower() for p in args.protocols.split(",")]
    names = {"rest": "REST", "grpc": "gRPC"}
    rng = np.random.default_rng(0)
    table: list[tuple[str, int, int, dict]] = []
    rows: list[tuple[str, str, int, int, dict]] = []
    local: dict[int, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        version = export_saved_model(model, spec, tmp, "bench")
        sig = tf.saved_model.load(str(version)).signatures["serving_default"]
        mean, std = np.float32(0.5), np.float32(0.25)
        if args.predict_requests:
            for b in batches:
                xs = (rng.random((b, size, size, ch), dtype=np.float32) - mean) / std
                run = bench_local(lambda v: model.predict(v, verbose=0), xs, args.predict_requests)
                table.append(("model.predict", b, 1, run))
        with server(Path(tmp), []) as plain, server(Path(tmp), ["--batching"]) as batching:
            servers = {"plain": plain, "batching": batching}
            flag = {"plain": "kerasdl serve", "batching": "kerasdl serve --batching"}
            for b in batches:
                x = rng.random((b, size, size, ch), dtype=np.float32)
                makers = {}
                for kind, (port, grpc_port, pid) in servers.items():
                    for proto in protocols:
                        maker = grpc_client if proto == "grpc" else rest_client
                        at = grpc_port if proto == "grpc" else port
                        makers[(kind, names[proto])] = (maker(at, "bench", x), pid)
                if 1 in clients:
                    calls = {"local": (lambda v=x: sig(images=tf.constant(v)), 0)}
                    calls |= {key: (make(), pid) for key, (make, pid) in makers.items()}
                    paired = bench_interleaved(calls, args.requests, b)
                    local[b] = paired.pop("local")
                    table.append(("SavedModel signature (in-process, interleaved)", b, 1, local[b]))
                    for (kind, proto), s in paired.items():
                        rows.append((kind, proto, b, 1, s))
                # Each row in --rounds parts, taken in turn with the other rows of this batch
                # size (in reverse order every other round), so that a change of the machine's
                # load affects them alike.
                parts: dict[tuple, list[dict]] = {}
                share = max(1, args.requests // args.rounds)
                for turn in range(args.rounds):
                    order = list(makers.items())[:: -1 if turn % 2 else 1]  # plain first, last
                    for c in (c for c in clients if c != 1):
                        for (kind, proto), (make, pid) in order:
                            run = bench_clients(make, share, c, b, pid)
                            parts.setdefault((kind, proto, b, c), []).append(run)
                for key, runs in parts.items():
                    rows.append((*key, _combine(runs)))
            for kind, proto, b, c, s in rows:
                table.append((f"{flag[kind]}, {proto}", b, c, s))

    cpu = platform.processor() or platform.machine()
    print(
        f"SimpleCNN (filters 32-64-128, {size}x{size}x{ch}), {args.requests} requests per row "
        f"({args.predict_requests} for model.predict); {os.cpu_count()} CPUs ({cpu}), Python "
        f"{platform.python_version()}, TensorFlow {tf.__version__}, Keras {keras.__version__}; "
        f"load average {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end "
        "(other processes share the CPUs)\n"
    )
    print("| path | batch | clients | requests/s | images/s | p50 ms | p99 ms | server CPU ms/req "
          "| client CPU ms/req |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    order = {"model.predict": 0, "SavedModel": 1}
    table.sort(key=lambda r: (r[1], order.get(r[0].split(" ")[0], 2), r[0], r[2]))
    for label, b, c, s in table:
        cpu_cols = (
            f"{s['server_cpu']:.1f} | {s['client_cpu']:.1f}"
            if label.startswith("kerasdl")
            else f"{s['server_cpu']:.1f} (in-process) | -"
        )
        print(
            f"| {label} | {b} | {c} | {s['rps']:.1f} | {s['ips']:.0f} | {s['p50']:.2f} | "
            f"{s['p99']:.2f} | {cpu_cols} |"
        )
    print("\nGoals (issue 14), from the rows above:\n")
    print("\n".join(goals(rows, local)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
