"""What :func:`kerasdl.data.decode.decode_image` costs next to ``tf.io.decode_image``.

kerasdl decodes every encoded image (the ``folder`` and ``tfds`` sources without a crop window,
the exported ``serving_bytes`` signature) with one function that reaches the model's channel
count for every format (GIF, BMP and WebP cannot be asked for one channel directly). It tells the
formats apart with a ``tf.cond``; this script measures that cost on the formats that need no
conversion, in a ``tf.data`` map consumed inside the graph (no Python per image), the two sides
alternating, and prints the median images/s of each and their ratio.

    python benchmarks/decode_overhead.py [--images 1024] [--rounds 9]
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

import numpy as np
import tensorflow as tf
from PIL import Image

from kerasdl.data.decode import decode_image

CASES = [
    ("PNG", "RGB", 224, 3),
    ("JPEG", "RGB", 224, 3),
    ("PNG", "L", 32, 1),
    ("JPEG", "RGB", 32, 3),
]


def _encoded(fmt: str, mode: str, size: int, n: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        buf = io.BytesIO()
        pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).convert(mode).save(buf, fmt)
        out.append(buf.getvalue())
    return out


def _seconds(ds: tf.data.Dataset) -> float:
    start = time.perf_counter()
    total = ds.map(lambda x: tf.cast(x[0, 0, 0], tf.int64)).reduce(
        tf.constant(0, tf.int64), lambda a, b: a + b
    )
    int(total)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    print("| images | tf.io.decode_image img/s | kerasdl decode_image img/s | ratio |")
    print("|---|---:|---:|---:|")
    for fmt, mode, size, channels in CASES:
        ds = tf.data.Dataset.from_tensor_slices(_encoded(fmt, mode, size, args.images))
        sides = {
            "tf": ds.map(
                lambda d, c=channels: tf.io.decode_image(d, channels=c, expand_animations=False),
                num_parallel_calls=2,
            ),
            "kerasdl": ds.map(lambda d, c=channels: decode_image(d, c), num_parallel_calls=2),
        }
        times: dict[str, list[float]] = {k: [] for k in sides}
        for r in range(args.rounds):
            for k in sides if r % 2 == 0 else reversed(sides):
                times[k].append(_seconds(sides[k]))
        tf_s, ours = statistics.median(times["tf"]), statistics.median(times["kerasdl"])
        print(
            f"| {fmt} {mode} {size}x{size} -> {channels} ch | {args.images / tf_s:.0f} | "
            f"{args.images / ours:.0f} | {tf_s / ours:.2f}x |"
        )


if __name__ == "__main__":
    main()
