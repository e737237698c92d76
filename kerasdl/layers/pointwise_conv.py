"""PointwiseConv2D: ``keras.layers.Conv2D`` with a 1x1 kernel, for strided 1x1 convolutions.

A 1x1 convolution with stride ``s`` reads only the pixels ``x[:, ::s, ::s]`` (its output has
``ceil(H / s)`` rows with ``"valid"`` and ``"same"`` padding alike), so it equals a stride-1 1x1
convolution of that subsampled input: the same products.

Why it matters: TensorFlow 2.21 with oneDNN on an AVX2 CPU (no AVX-512) computes the *filter
gradient* of a strided 1x1 convolution wrongly when it has fewer than 8 input channels (errors of
14-180% of the gradient's scale, and crashes with many filters). :mod:`kerasdl.layers.exact_conv`
(installed into Keras by ``import kerasdl``) runs the stride-1 form of the subsampled input in
exactly that case, for every Keras convolution; otherwise Keras's own strided kernel runs (1.03-
1.6x faster on ResNet-50's shortcut shapes). kerasdl's projection shortcuts and DARTS's
``FactorizedReduce`` are this layer, which states their 1x1 kernel and lets
:func:`strided_pointwise_convs` and the registry smoke test find them.

The weights and the config are ``keras.layers.Conv2D``'s, so checkpoints and saved models move
between the two freely.
"""

from __future__ import annotations

from typing import Any

import keras

from kerasdl.layers.exact_conv import SAFE_CHANNELS

__all__ = ["SAFE_CHANNELS", "PointwiseConv2D", "strided_pointwise_convs"]


@keras.saving.register_keras_serializable(package="kerasdl")
class PointwiseConv2D(keras.layers.Conv2D):
    """``keras.layers.Conv2D`` with a 1x1 kernel: the same function, weights and config.

    With a stride above 1 and fewer than :data:`SAFE_CHANNELS` input channels Keras's
    convolution (as :mod:`kerasdl.layers.exact_conv` wraps it) convolves ``x[:, ::s, ::s]``
    with stride 1; any other case runs TensorFlow's strided kernel.

    Example:
        >>> conv = PointwiseConv2D(8, 1, strides=2, use_bias=False)
        >>> conv(keras.ops.ones((2, 9, 9, 4))).shape
        (2, 5, 5, 8)
    """

    def __init__(self, filters: int, kernel_size: int | tuple[int, int] = 1, **kwargs) -> None:
        super().__init__(filters, kernel_size, **kwargs)
        if tuple(self.kernel_size) != (1, 1):
            raise ValueError(f"PointwiseConv2D needs a 1x1 kernel. Received: {self.kernel_size}")
        if tuple(self.dilation_rate) != (1, 1):
            raise ValueError(
                f"PointwiseConv2D needs dilation_rate 1 (a 1x1 kernel has nothing to dilate). "
                f"Received: {self.dilation_rate}"
            )


def strided_pointwise_convs(model: keras.layers.Layer) -> list[keras.layers.Conv2D]:
    """Every ``Conv2D`` in ``model`` (nested layers included) with a 1x1 kernel and a stride
    above 1: in kerasdl's models each is a :class:`PointwiseConv2D` (the registry smoke test
    checks it). Every one of them, in your model too, gets the exact form of
    :mod:`kerasdl.layers.exact_conv` on fewer than 8 channels."""
    found: list[Any] = []
    for layer in model._flatten_layers(include_self=True, recursive=True):
        if (
            isinstance(layer, keras.layers.Conv2D)
            and tuple(layer.kernel_size) == (1, 1)
            and tuple(layer.strides) != (1, 1)
        ):
            found.append(layer)
    return found
