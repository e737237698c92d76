"""TensorFlow's two max-pool kernels on GoogLeNet's pool shapes: the table behind
kerasdl/layers/pooling.py.

``MaxPool`` runs oneDNN's kernel when oneDNN is on (TensorFlow rewrites it); ``MaxPoolV2`` (the
same op with its window as an input) is not rewritten and runs Eigen's. For each shape (batch 16,
float32) the script times a forward pass and a forward + backward pass of each, median of
``--repeats`` calls of a ``tf.function``, and checks that values and gradients are equal.

    python benchmarks/max_pool_kernels.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import time

import kerasdl  # noqa: F401  (first: it asks for oneDNN before TensorFlow loads)

# isort: split
import numpy as np
import tensorflow as tf

from kerasdl import onednn

# (input shape, window, stride): GoogLeNet's pools at 224x224 (plus ResNet's stem: the first)
SHAPES = [
    ((16, 112, 112, 64), 3, 2),
    ((16, 56, 56, 192), 3, 2),
    ((16, 28, 28, 256), 3, 1),
    ((16, 28, 28, 480), 3, 2),
    ((16, 14, 14, 512), 3, 1),
    ((16, 14, 14, 832), 2, 2),
    ((16, 7, 7, 832), 3, 1),
]


def _median_ms(fn, x: tf.Tensor, repeats: int) -> float:
    for _ in range(2):
        [t.numpy() for t in fn(x)]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        [t.numpy() for t in fn(x)]
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _fns(pool):
    forward = tf.function(lambda x: (pool(x),))

    @tf.function
    def train(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = pool(x)
        return y, tape.gradient(y, x, output_gradients=y)

    return forward, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    print(f"oneDNN {'on' if onednn.enabled() else 'off'}; ms per call, median of {args.repeats}")
    print()
    print("| input | window/stride | forward MaxPool | forward MaxPoolV2 | ratio "
          "| train MaxPool | train MaxPoolV2 | ratio |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    totals = np.zeros(4)
    for shape, k, s in SHAPES:
        x = tf.constant(np.random.default_rng(0).normal(size=shape).astype("float32"))
        pad = "SAME" if s == 1 else "VALID"
        v1 = _fns(lambda x, k=k, s=s, pad=pad: tf.nn.max_pool2d(x, k, s, pad))
        v2 = _fns(
            lambda x, k=k, s=s, pad=pad: tf.raw_ops.MaxPoolV2(
                input=x, ksize=[1, k, k, 1], strides=[1, s, s, 1], padding=pad
            )
        )
        for a, b in zip(v1[1](x), v2[1](x), strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
        ms = np.array([_median_ms(f, x, args.repeats) for f in (v1[0], v2[0], v1[1], v2[1])])
        totals += ms
        name = "x".join(map(str, shape))
        fwd, train = f"{ms[0] / ms[1]:.2f}x", f"{ms[2] / ms[3]:.2f}x"
        print(f"| {name} | {k}/{s} | {ms[0]:.2f} | {ms[1]:.2f} | {fwd} | {ms[2]:.2f} | "
              f"{ms[3]:.2f} | {train} |")  # fmt: skip
    t = totals
    print(f"| all | | {t[0]:.1f} | {t[1]:.1f} | {t[0] / t[1]:.2f}x | {t[2]:.1f} | {t[3]:.1f} | "
          f"{t[2] / t[3]:.2f}x |")  # fmt: skip


if __name__ == "__main__":
    main()
