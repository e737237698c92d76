"""Values and gradients of the ops the zoo trains with, saved to an ``.npz``.

``python tests/onednn_ops.py OUT.npz`` run once with ``TF_ENABLE_ONEDNN_OPTS=0`` (Eigen's kernels)
and once with ``1`` (oneDNN's) gives two files that must agree to float rounding
(tests/test_onednn.py). The known disagreements, TensorFlow's filter gradients of a strided 1x1
convolution on fewer than 8 input channels and of a strided 1x1 transposed convolution with fewer
than 8 output channels with oneDNN on an AVX2 CPU, run through Keras's ``conv`` and
``conv_transpose`` as kerasdl wraps them, which avoid it (kerasdl/layers/exact_conv.py).
"""

from __future__ import annotations

import itertools
import sys

import kerasdl  # noqa: F401  (first: it asks for oneDNN before TensorFlow loads)

# isort: split
import keras
import numpy as np
import tensorflow as tf

from kerasdl.layers.exact_conv import SAFE_CHANNELS
from kerasdl.layers.torch_compat import GroupedConv2D


def main(path: str) -> None:
    out: dict[str, np.ndarray] = {}
    rng = np.random.default_rng(0)

    def normal(*shape: int) -> np.ndarray:
        return rng.normal(size=shape).astype("float32")

    def record(name: str, fn, *args: np.ndarray) -> None:
        tensors = [tf.constant(a) for a in args]
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            y = fn(*tensors)
            loss = tf.reduce_sum(y * tf.constant(normal(*y.shape)))
        out[f"{name}:y"] = y.numpy()
        for i, g in enumerate(tape.gradient(loss, tensors)):
            out[f"{name}:grad{i}"] = g.numpy()

    for c, h, s in itertools.product([1, 3, 8, 16], [7, 8], [1, 2]):
        x = normal(2, h, h, c)
        for pad in ("VALID", "SAME"):
            record(
                f"max {c} {h} {s} {pad}", lambda x, s=s, pad=pad: tf.nn.max_pool2d(x, 3, s, pad), x
            )
            record(
                f"avg {c} {h} {s} {pad}", lambda x, s=s, pad=pad: tf.nn.avg_pool2d(x, 3, s, pad), x
            )
        for co, k in itertools.product([4, 16], [1, 3, 7]):
            w = normal(k, k, c, co)
            if k == 1 and s > 1 and c < SAFE_CHANNELS:
                record(
                    f"pointwise {c} {co} {h} {s}",
                    lambda x, w, s=s: keras.ops.conv(x, w, s, "same"),
                    x,
                    w,
                )
            else:
                record(
                    f"conv {c} {co} {h} {k} {s}",
                    lambda x, w, s=s: tf.nn.conv2d(x, w, s, "SAME"),
                    x,
                    w,
                )
        record(
            f"depthwise {c} {h} {s}",
            lambda x, w, s=s: tf.nn.depthwise_conv2d(x, w, [1, s, s, 1], "SAME"),
            x,
            normal(3, 3, c, 1),
        )
        record(
            f"bn {c} {h}",
            lambda x, g, b: tf.compat.v1.nn.fused_batch_norm(x, g, b, is_training=True)[0],
            x,
            normal(c),
            normal(c),
        )
        record(f"lrn {c} {h}", lambda x: tf.nn.local_response_normalization(x, 2), x)
        record(f"concat {c} {h}", lambda x: tf.concat([x, 2 * x, x[..., :1]], -1), x)
    for co, h, s, k in itertools.product([1, 3, 8, 16], [7, 8], [1, 2], [1, 3]):
        for pad in ("valid", "same"):
            record(
                f"transpose {co} {h} {s} {k} {pad}",
                lambda x, w, s=s, pad=pad: keras.ops.conv_transpose(x, w, s, pad),
                normal(2, h, h, 16),
                normal(k, k, co, 16),
            )
    for groups, s in itertools.product([2, 4], [1, 2]):
        layer = GroupedConv2D(8, 3, strides=s, padding="same", groups=groups, use_bias=False)
        layer.build((None, 8, 8, 8))
        record(
            f"grouped {groups} {s}",
            layer.convolution_op,
            normal(2, 8, 8, 8),
            normal(3, 3, 8 // groups, 8),
        )
    for m, k, n in itertools.product([1, 16], [7, 64], [3, 128]):
        record(f"matmul {m} {k} {n}", lambda a, b: a @ b, normal(m, k), normal(k, n))
        record(
            f"batched {m} {k} {n}",
            lambda a, b: tf.einsum("bhik,bhkj->bhij", a, b),
            normal(2, 3, m, k),
            normal(2, 3, k, n),
        )
    np.savez(path, **out)


if __name__ == "__main__":
    main(sys.argv[1])
