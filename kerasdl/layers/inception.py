"""Inception v1 (GoogLeNet) blocks: conv-norm-act unit, the four-branch module, the auxiliary head.

References:
    Szegedy et al., "Going Deeper with Convolutions", CVPR 2015.
    torchvision ``models/googlenet.py`` (batch norm after every convolution, epsilon 1e-3; its
    "5x5" branch uses a 3x3 kernel, a known difference kept for weight compatibility).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from kerasdl.configurable import ConfigurableLayer
from kerasdl.layers.activations import get_activation
from kerasdl.layers.base import build_chain
from kerasdl.layers.normalization import get_norm_layer
from kerasdl.layers.pooling import MaxPooling2D
from kerasdl.layers.torch_compat import AdaptiveAveragePooling2D, torch_conv

INCEPTION_EPSILON = 1e-3  # torchvision's BasicConv2d uses BatchNorm2d(eps=0.001)


def googlenet_init() -> keras.initializers.Initializer:
    """torchvision GoogLeNet's initializer: normal, std 0.01 (its truncation at +-2 never acts)."""
    return keras.initializers.RandomNormal(stddev=0.01)


@keras.saving.register_keras_serializable(package="kerasdl")
class ConvNormAct(ConfigurableLayer):
    """Convolution (no bias, PyTorch padding ``kernel // 2``), normalization, activation.

    torchvision's ``BasicConv2d``.

    Args:
        filters: output channels.
        kernel_size: kernel side.
        strides: convolution stride.
        norm: normalization choice.
        activation: activation choice.
        epsilon: normalization epsilon (torchvision's GoogLeNet: 1e-3).

    Call arguments:
        inputs: ``(B, H, W, C)``.
        training: batch-norm mode.

    Example:
        >>> ConvNormAct(64, 7, strides=2)(keras.ops.ones((1, 32, 32, 3))).shape
        (1, 16, 16, 64)

    Reference:
        Szegedy et al., CVPR 2015; Ioffe & Szegedy, ICML 2015.
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int = 1,
        strides: int = 1,
        norm: str = "batch",
        activation: str = "relu",
        epsilon: float = INCEPTION_EPSILON,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.epsilon = float(epsilon)
        self.conv = torch_conv(
            filters,
            kernel_size,
            strides,
            use_bias=norm == "none",
            kernel_initializer=googlenet_init(),
            name="conv",
        )
        self.norm_layer = get_norm_layer(norm, name="norm", epsilon=epsilon)
        self.act = get_activation(activation, name="act")

    def build(self, input_shape):
        build_chain([self.conv, self.norm_layer, self.act], input_shape)

    def call(self, inputs, training=None):
        return self.act(self.norm_layer(self.conv(inputs), training=training))


@keras.saving.register_keras_serializable(package="kerasdl")
class InceptionModule(ConfigurableLayer):
    """The Inception v1 module: four parallel branches concatenated on channels.

    Branches: 1x1; 1x1 reduce -> 3x3; 1x1 reduce -> "5x5"; 3x3/1 max-pool -> 1x1 projection. The
    output has ``ch1x1 + ch3x3 + ch5x5 + pool_proj`` channels.

    Args:
        ch1x1: filters of the 1x1 branch.
        ch3x3red, ch3x3: reduce and output filters of the 3x3 branch.
        ch5x5red, ch5x5: reduce and output filters of the 5x5 branch.
        pool_proj: filters of the projection after the max-pool.
        branch3_kernel: kernel of the "5x5" branch: 3 as torchvision (the default, whose
            parameter counts this reproduces) or 5 as the paper.
        norm: normalization choice.
        activation: activation choice.

    Call arguments:
        inputs: ``(B, H, W, C)``.
        training: batch-norm mode.

    Example:
        >>> block = InceptionModule(64, 96, 128, 16, 32, 32)  # inception (3a)
        >>> block(keras.ops.ones((1, 28, 28, 192))).shape
        (1, 28, 28, 256)

    Reference:
        Szegedy et al., "Going Deeper with Convolutions", CVPR 2015, table 1.
    """

    def __init__(
        self,
        ch1x1: int,
        ch3x3red: int,
        ch3x3: int,
        ch5x5red: int,
        ch5x5: int,
        pool_proj: int,
        branch3_kernel: int = 3,
        norm: str = "batch",
        activation: str = "relu",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.ch1x1, self.ch3x3red, self.ch3x3 = int(ch1x1), int(ch3x3red), int(ch3x3)
        self.ch5x5red, self.ch5x5, self.pool_proj = int(ch5x5red), int(ch5x5), int(pool_proj)
        self.branch3_kernel = int(branch3_kernel)

        def unit(filters, kernel, name):
            return ConvNormAct(filters, kernel, norm=norm, activation=activation, name=name)

        self.branch1 = unit(ch1x1, 1, "branch1")
        self.branch2 = [unit(ch3x3red, 1, "branch2_reduce"), unit(ch3x3, 3, "branch2_conv")]
        self.branch3 = [
            unit(ch5x5red, 1, "branch3_reduce"),
            unit(ch5x5, self.branch3_kernel, "branch3_conv"),
        ]
        self.pool = MaxPooling2D(3, strides=1, padding="same", name="branch4_pool")
        self.branch4 = unit(pool_proj, 1, "branch4_proj")

    def build(self, input_shape):
        for branch in ([self.branch1], self.branch2, self.branch3, [self.pool, self.branch4]):
            build_chain(branch, input_shape)

    def call(self, inputs, training=None):
        b1 = self.branch1(inputs, training=training)
        b2 = self.branch2[1](self.branch2[0](inputs, training=training), training=training)
        b3 = self.branch3[1](self.branch3[0](inputs, training=training), training=training)
        b4 = self.branch4(self.pool(inputs), training=training)
        return ops.concatenate([b1, b2, b3, b4], axis=-1)


@keras.saving.register_keras_serializable(package="kerasdl")
class InceptionAux(ConfigurableLayer):
    """GoogLeNet's auxiliary classifier (torchvision layout).

    Adaptive average pool to 4x4, 1x1 conv-norm-act with 128 filters, flatten, a 1024-unit fully
    connected layer with activation, dropout 0.7, and a linear layer to float32 logits.

    Args:
        num_classes: number of classes.
        dropout: dropout before the last layer (torchvision: 0.7).
        norm: normalization choice.
        activation: activation choice.

    Call arguments:
        inputs: ``(B, H, W, C)`` (the outputs of inception 4a and 4d).
        training: batch-norm and dropout mode.

    Example:
        >>> InceptionAux(10)(keras.ops.ones((2, 14, 14, 512))).shape
        (2, 10)

    Reference:
        Szegedy et al., "Going Deeper with Convolutions", CVPR 2015, section 5.
    """

    def __init__(
        self,
        num_classes: int,
        dropout: float = 0.7,
        norm: str = "batch",
        activation: str = "relu",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.dropout = float(dropout)
        self.pool = AdaptiveAveragePooling2D(4, name="pool")
        self.conv = ConvNormAct(128, 1, norm=norm, activation=activation, name="conv")
        self.flatten = keras.layers.Flatten(name="flatten")
        self.fc1 = keras.layers.Dense(1024, kernel_initializer=googlenet_init(), name="fc1")
        self.act = get_activation(activation, name="act")
        self.drop = keras.layers.Dropout(self.dropout, name="dropout")
        self.fc2 = keras.layers.Dense(
            num_classes, kernel_initializer=googlenet_init(), dtype="float32", name="fc2"
        )

    def build(self, input_shape):
        layers = [self.pool, self.conv, self.flatten, self.fc1, self.act, self.drop, self.fc2]
        build_chain(layers, input_shape)

    def call(self, inputs, training=None):
        x = self.conv(self.pool(inputs), training=training)
        x = self.act(self.fc1(self.flatten(x)))
        return self.fc2(self.drop(x, training=training))
