"""Squeeze-and-excitation: channel attention from globally pooled features.

``y = x * sigmoid(W2 act(W1 avgpool(x) + b1) + b2)`` with 1x1 convolutions ``W1`` (to
``squeeze_channels``) and ``W2`` (back to the input channels), torchvision's
``ops.SqueezeExcitation`` layer by layer.

Reference:
    Hu, Shen & Sun, "Squeeze-and-Excitation Networks", CVPR 2018.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from kerasdl.configurable import ConfigurableLayer
from kerasdl.layers.activations import get_activation


@keras.saving.register_keras_serializable(package="kerasdl")
class SqueezeExcitation(ConfigurableLayer):
    """Squeeze-and-excitation block (Hu et al. 2018).

    Args:
        input_channels: channels of the input (and output).
        squeeze_channels: width of the bottleneck (``C / 16`` in SENet; in EfficientNet a quarter
            of the MBConv block's *input* channels).
        activation: bottleneck activation (``relu`` in SENet, ``silu`` in EfficientNet).
        scale_activation: gate activation (sigmoid).

    Call arguments:
        inputs: ``(B, H, W, C)`` feature map.

    Example:
        >>> y = SqueezeExcitation(96, 4, activation="silu")(keras.ops.ones((2, 8, 8, 96)))

    Reference:
        Hu, Shen & Sun, "Squeeze-and-Excitation Networks", CVPR 2018, equations (2)-(4).
    """

    def __init__(
        self,
        input_channels: int,
        squeeze_channels: int,
        activation: str = "relu",
        scale_activation: str = "sigmoid",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.input_channels = int(input_channels)
        self.squeeze_channels = int(squeeze_channels)
        self.fc1 = keras.layers.Conv2D(self.squeeze_channels, 1, name="fc1")
        self.act = get_activation(activation, name="act")
        self.fc2 = keras.layers.Conv2D(self.input_channels, 1, name="fc2")
        self.gate = get_activation(scale_activation, name="gate")

    def build(self, input_shape):
        if input_shape[-1] != self.input_channels:
            raise ValueError(
                f"SqueezeExcitation expects {self.input_channels} channels. Received: "
                f"{input_shape[-1]}"
            )
        self.fc1.build((None, 1, 1, self.input_channels))
        self.fc2.build((None, 1, 1, self.squeeze_channels))

    def call(self, inputs):
        s = ops.mean(inputs, axis=(1, 2), keepdims=True)  # (B, 1, 1, C)
        s = self.act(self.fc1(s))  # (B, 1, 1, squeeze)
        s = self.gate(self.fc2(s))  # (B, 1, 1, C)
        return inputs * ops.cast(s, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape
