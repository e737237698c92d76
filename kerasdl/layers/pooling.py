"""Max pooling that runs TensorFlow's faster kernel for each phase: oneDNN's to train, Eigen's
to infer.

With oneDNN on (kerasdl's default on x86-64, :mod:`kerasdl.onednn`), TensorFlow rewrites every
``MaxPool`` op to oneDNN's kernel. Measured on an AVX2 CPU (2 cores, float32, GoogLeNet's pool
shapes at batch 16; benchmarks/README.md, "Max pooling"): oneDNN's forward pass alone takes
1.4-2.7x as long as Eigen's, while oneDNN's forward and backward pass together take 0.2-0.7x as
long as Eigen's. ``MaxPoolV2`` (the same op with its window and strides as inputs) is not
rewritten, so it runs Eigen's kernel. :func:`max_pool` runs ``MaxPoolV2`` when the layer is not
training and Keras's ``max_pool`` (oneDNN's kernel) when it is. Both compute the same maxima over
the same windows: values and gradients are equal.

Converters know ``MaxPool`` better: ``MaxPoolV2`` is no TFLite builtin. ``kerasdl export
--format litert|onnx`` traces inside :func:`standard_max_pool`, which emits ``MaxPool`` in every
phase; a SavedModel (TensorFlow Serving, ``kerasdl serve``) keeps ``MaxPoolV2``, a core op.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import keras
from keras import ops

_standard_depth = 0  # > 0 inside standard_max_pool()


@contextlib.contextmanager
def standard_max_pool() -> Iterator[None]:
    """While open, :func:`max_pool` traces TensorFlow's plain ``MaxPool`` op in every phase (for
    converters: ``MaxPoolV2`` is no TFLite builtin)."""
    global _standard_depth
    _standard_depth += 1
    try:
        yield
    finally:
        _standard_depth -= 1


def _inference(training: Any) -> bool:
    # None is Keras's "not training" outside fit (as in BatchNormalization); a tensor may be True
    return training is None or training is False


def max_pool(
    inputs: Any,
    pool_size: int | tuple[int, int],
    strides: int | tuple[int, int],
    padding: str = "valid",
    training: Any = None,
) -> Any:
    """``keras.ops.max_pool`` of a channels-last ``(B, H, W, C)`` tensor; outside training on
    the TensorFlow backend it runs ``MaxPoolV2`` (Eigen's kernel; the module docstring says
    why)."""
    if not _inference(training) or _standard_depth or keras.backend.backend() != "tensorflow":
        return ops.max_pool(inputs, pool_size, strides, padding=padding)
    import tensorflow as tf

    def pair(v: int | tuple[int, int]) -> list[int]:
        return [1, v, v, 1] if isinstance(v, int) else [1, *v, 1]

    return tf.raw_ops.MaxPoolV2(
        input=inputs, ksize=pair(pool_size), strides=pair(strides), padding=padding.upper()
    )


@keras.saving.register_keras_serializable(package="kerasdl")
class MaxPooling2D(keras.layers.MaxPooling2D):
    """``keras.layers.MaxPooling2D`` (same arguments, config and outputs) that runs
    :func:`max_pool`: Eigen's kernel to infer, oneDNN's to train (channels last).

    Example:
        >>> pool = MaxPooling2D(3, strides=2)
        >>> pool(keras.ops.ones((1, 7, 7, 4))).shape
        (1, 3, 3, 4)
    """

    def call(self, inputs: Any, training: Any = None) -> Any:
        if self.data_format != "channels_last":
            return super().call(inputs)
        return max_pool(inputs, self.pool_size, self.strides, self.padding, training=training)
