"""How far two ``kerasdl serve`` processes drift apart in one run: the noise band of a B/A ratio.

``serving_bench.py`` compares a plain server with a ``--batching`` one, side by side. Whether a
ratio such as 0.88 at 64 clients is a real difference needs the same measurement between two
servers that cannot differ. This script starts server A with its defaults and server B with the
arguments given (none: two identical plain servers), and measures batch-32 requests over REST
and gRPC from 8, 32 and 64 client threads, each row in two parts taken in turn with the other
rows (the order reversed the second time), with ``serving_bench.py``'s own clients and model.

Usage::

    python benchmarks/serving_twin.py              # plain against plain: the noise band
    python benchmarks/serving_twin.py --batching   # plain against --batching, same method
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import serving_bench as sb  # noqa: E402

REQUESTS, BATCH, CLIENTS = 150, 32, (8, 32, 64)


def main(extra: list[str]) -> int:
    import keras

    from kerasdl.data.preprocess import PreprocessSpec
    from kerasdl.export import export_saved_model
    from kerasdl.models.simple_cnn import SimpleCNN

    keras.utils.set_random_seed(0)
    model = SimpleCNN(num_classes=10, input_shape=(32, 32, 3), name="bench")
    spec = PreprocessSpec((32, 32), 3, [0.5] * 3, [0.25] * 3, [f"c{i}" for i in range(10)])
    x = np.random.default_rng(0).random((BATCH, 32, 32, 3), dtype=np.float32)
    load = os.getloadavg()[0]
    parts: dict[tuple[str, int, str], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        export_saved_model(model, spec, tmp, "bench")
        with sb.server(Path(tmp), []) as a, sb.server(Path(tmp), extra) as b:
            makers = {}
            for kind, (port, grpc_port, pid) in (("A", a), ("B", b)):
                makers[(kind, "REST")] = (sb.rest_client(port, "bench", x), pid)
                makers[(kind, "gRPC")] = (sb.grpc_client(grpc_port, "bench", x), pid)
            for turn in range(2):
                order = list(makers.items())[:: -1 if turn % 2 else 1]
                for c in CLIENTS:
                    for (kind, proto), (make, pid) in order:
                        run = sb.bench_clients(make, REQUESTS // 2, c, BATCH, pid)
                        parts.setdefault((proto, c, kind), []).append(run)
    print(
        f"A: kerasdl serve; B: kerasdl serve {' '.join(extra) or '(the same)'}; batch {BATCH}, "
        f"{REQUESTS} requests per row; load average {load:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end\n"
    )
    print("| protocol | clients | A req/s | B req/s | B / A | server CPU ms/req A | B |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for proto in ("REST", "gRPC"):
        for c in CLIENTS:
            ra, rb = (sb._combine(parts[(proto, c, k)]) for k in "AB")
            ratio = rb["rps"] / ra["rps"]
            print(
                f"| {proto} | {c} | {ra['rps']:.1f} | {rb['rps']:.1f} | {ratio:.3f} "
                f"| {ra['server_cpu']:.1f} | {rb['server_cpu']:.1f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
