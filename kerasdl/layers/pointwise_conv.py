"""PointwiseConv2D: a strided 1x1 ``keras.layers.Conv2D`` whose filter gradient is right.

A 1x1 convolution with stride ``s`` reads only the pixels ``x[:, ::s, ::s]`` (its output has
``ceil(H / s)`` rows with ``"valid"`` and ``"same"`` padding alike), so it equals a stride-1 1x1
convolution of that subsampled input: the same products.

Why a layer for it: TensorFlow 2.21 with oneDNN on an AVX2 CPU (no AVX-512) computes the
*filter gradient* of a strided 1x1 convolution wrongly when it has fewer than 8 input channels
(the AVX2 vector width): errors of 14-180% of the gradient's scale, for strides 2 and 4, and a
segmentation fault with 512 output channels. The forward pass and the input gradient are right,
and so is every case with 8 or more input channels, every larger kernel and every stride-1
convolution (tests/test_pointwise_conv.py runs these cases against NumPy). Such a layer in DARTS's
``FactorizedReduce`` or in a narrow ResNet's projection shortcut would train silently wrong, so
with fewer than ``SAFE_CHANNELS`` input channels this layer runs the stride-1 form; otherwise it
is ``keras.layers.Conv2D`` unchanged (the strided kernel is 1.03-1.6x faster there, measured on
ResNet-50's shortcut shapes).

The weights and the config are ``keras.layers.Conv2D``'s, so checkpoints and saved models move
between the two freely.
"""

from __future__ import annotations

from typing import Any

import keras

# below this many input channels a strided 1x1 filter gradient runs the stride-1 form
SAFE_CHANNELS = 8


@keras.saving.register_keras_serializable(package="kerasdl")
class PointwiseConv2D(keras.layers.Conv2D):
    """``keras.layers.Conv2D`` with a 1x1 kernel: the same function, weights and config.

    With a stride above 1 and fewer than :data:`SAFE_CHANNELS` input channels it convolves
    ``x[:, ::s, ::s]`` with stride 1 (see the module docstring for the TensorFlow fault this
    avoids); any other case runs Keras's own convolution.

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

    def _subsamples(self, in_channels: int) -> bool:
        return tuple(self.strides) != (1, 1) and in_channels < SAFE_CHANNELS

    def convolution_op(self, inputs, kernel):
        if not self._subsamples(kernel.shape[-2] * self.groups):
            return super().convolution_op(inputs, kernel)
        sh, sw = self.strides
        if self.data_format == "channels_last":
            inputs = inputs[:, ::sh, ::sw, :]
        else:
            inputs = inputs[:, :, ::sh, ::sw]
        return keras.ops.conv(
            inputs, kernel, strides=1, padding="valid", data_format=self.data_format
        )


def strided_pointwise_convs(model: keras.layers.Layer) -> list[keras.layers.Conv2D]:
    """Every ``Conv2D`` in ``model`` (nested layers included) with a 1x1 kernel and a stride
    above 1: in kerasdl's models each is a :class:`PointwiseConv2D` (the registry smoke test
    checks it); in your own model, one of these that is not, on fewer than 8 channels, meets the
    fault above on an AVX2 CPU with oneDNN on."""
    found: list[Any] = []
    for layer in model._flatten_layers(include_self=True, recursive=True):
        if (
            isinstance(layer, keras.layers.Conv2D)
            and tuple(layer.kernel_size) == (1, 1)
            and tuple(layer.strides) != (1, 1)
        ):
            found.append(layer)
    return found
