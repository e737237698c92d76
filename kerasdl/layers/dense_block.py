"""DenseNet blocks: the BN-ReLU-Conv bottleneck layer, the dense block and the transition.

References:
    Huang, Liu, van der Maaten & Weinberger, "Densely Connected Convolutional Networks", CVPR 2017
    (DenseNet-BC: 1x1 bottleneck of ``bn_size * growth_rate`` channels, compression 0.5).
    torchvision ``models/densenet.py``.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from kerasdl.configurable import ConfigurableLayer
from kerasdl.layers.activations import get_activation
from kerasdl.layers.base import build_chain
from kerasdl.layers.normalization import get_norm_layer

_CONV = dict(use_bias=False, kernel_initializer="he_normal")  # torchvision: kaiming_normal_


@keras.saving.register_keras_serializable(package="kerasdl")
class DenseLayer(ConfigurableLayer):
    """One DenseNet-BC layer: norm-act-conv1x1 (``bn_size * growth_rate``), norm-act-conv3x3.

    It returns only the ``growth_rate`` new channels; :class:`DenseBlock` concatenates them.

    Args:
        growth_rate: new channels per layer (``k``).
        bn_size: bottleneck width factor (the 1x1 conv has ``bn_size * k`` filters).
        dropout: dropout on the new channels (torchvision's ``drop_rate``).
        norm: normalization choice.
        activation: activation choice.

    Call arguments:
        inputs: ``(B, H, W, C)``, the concatenation of all previous features.
        training: batch-norm and dropout mode.

    Example:
        >>> DenseLayer(32)(keras.ops.ones((2, 8, 8, 64))).shape
        (2, 8, 8, 32)

    Reference:
        Huang et al., "Densely Connected Convolutional Networks", CVPR 2017.
    """

    def __init__(
        self,
        growth_rate: int = 32,
        bn_size: int = 4,
        dropout: float = 0.0,
        norm: str = "batch",
        activation: str = "relu",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.growth_rate = int(growth_rate)
        self.bn_size = int(bn_size)
        self.dropout = float(dropout)
        self.norm1 = get_norm_layer(norm, name="norm1")
        self.act1 = get_activation(activation, name="act1")
        self.conv1 = keras.layers.Conv2D(bn_size * growth_rate, 1, name="conv1", **_CONV)
        self.norm2 = get_norm_layer(norm, name="norm2")
        self.act2 = get_activation(activation, name="act2")
        self.conv2 = keras.layers.Conv2D(growth_rate, 3, padding="same", name="conv2", **_CONV)
        self.drop = keras.layers.Dropout(self.dropout, name="dropout") if self.dropout else None

    def build(self, input_shape):
        layers = [self.norm1, self.act1, self.conv1, self.norm2, self.act2, self.conv2, self.drop]
        build_chain(layers, input_shape)

    def call(self, inputs, training=None):
        x = self.conv1(self.act1(self.norm1(inputs, training=training)))
        x = self.conv2(self.act2(self.norm2(x, training=training)))
        if self.drop is not None:
            x = self.drop(x, training=training)
        return x


@keras.saving.register_keras_serializable(package="kerasdl")
class DenseBlock(ConfigurableLayer):
    """A dense block: ``num_layers`` :class:`DenseLayer` s, each fed every earlier output.

    The output has ``C + num_layers * growth_rate`` channels (input first, then the new ones in
    order, as torchvision concatenates).

    Args:
        num_layers: dense layers in the block.
        growth_rate, bn_size, dropout, norm, activation: as :class:`DenseLayer`.

    Call arguments:
        inputs: ``(B, H, W, C)``.
        training: batch-norm and dropout mode.

    Example:
        >>> DenseBlock(6, growth_rate=32)(keras.ops.ones((2, 8, 8, 64))).shape
        (2, 8, 8, 256)

    Reference:
        Huang et al., "Densely Connected Convolutional Networks", CVPR 2017.
    """

    def __init__(
        self,
        num_layers: int,
        growth_rate: int = 32,
        bn_size: int = 4,
        dropout: float = 0.0,
        norm: str = "batch",
        activation: str = "relu",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_layers = int(num_layers)
        self.growth_rate = int(growth_rate)
        self.bn_size = int(bn_size)
        self.dropout = float(dropout)
        self.dense_layers = [
            DenseLayer(growth_rate, bn_size, dropout, norm, activation, name=f"denselayer{i + 1}")
            for i in range(self.num_layers)
        ]

    def build(self, input_shape):
        *rest, channels = input_shape
        for i, layer in enumerate(self.dense_layers):
            layer.build((*rest, channels + i * self.growth_rate))

    def call(self, inputs, training=None):
        features = inputs
        for layer in self.dense_layers:
            features = ops.concatenate([features, layer(features, training=training)], axis=-1)
        return features


@keras.saving.register_keras_serializable(package="kerasdl")
class Transition(ConfigurableLayer):
    """DenseNet transition: norm, activation, 1x1 convolution to ``filters``, 2x2/2 average pool.

    The pool runs before the convolution. Both are linear maps that commute exactly: the 1x1
    convolution maps each pixel's channels alone, and the 2x2 average mixes each channel's
    pixels alone, so ``conv(avg_pool(x)) == avg_pool(conv(x))`` up to float rounding (and the
    kernel, the weights and the outputs are torchvision's). Pooling first gives the convolution
    a quarter of the pixels: DenseNet-121's three transitions do 77M multiply-accumulates in
    place of 308M, measured 9% of its inference time and 5% of its training step (2-core AVX2,
    batch 16 at 224; benchmarks/README.md, "DenseNet transitions").

    Args:
        filters: output channels (DenseNet-BC: half the input, compression 0.5).
        norm: normalization choice.
        activation: activation choice.

    Call arguments:
        inputs: ``(B, H, W, C)``.
        training: batch-norm mode.

    Example:
        >>> Transition(128)(keras.ops.ones((2, 8, 8, 256))).shape
        (2, 4, 4, 128)

    Reference:
        Huang et al., "Densely Connected Convolutional Networks", CVPR 2017.
    """

    def __init__(
        self, filters: int, norm: str = "batch", activation: str = "relu", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.norm_layer = get_norm_layer(norm, name="norm")
        self.act = get_activation(activation, name="act")
        self.conv = keras.layers.Conv2D(filters, 1, name="conv", **_CONV)
        self.pool = keras.layers.AveragePooling2D(2, strides=2, name="pool")

    def build(self, input_shape):
        build_chain([self.norm_layer, self.act, self.pool, self.conv], input_shape)

    def call(self, inputs, training=None):
        return self.conv(self.pool(self.act(self.norm_layer(inputs, training=training))))
