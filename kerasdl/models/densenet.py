"""DenseNet-BC 121/169/201 with torchvision's layer structure.

Stem: 7x7/2 convolution (64 filters, padding 3), norm, activation, 3x3/2 max-pool (padding 1);
four dense blocks (growth rate 32, bottleneck factor 4) separated by transitions that halve the
channels and the resolution; a final norm and activation, global average pooling and a linear
head. Any input from 32x32 up works.

References:
    Huang, Liu, van der Maaten & Weinberger, "Densely Connected Convolutional Networks", CVPR 2017.
    torchvision ``models/densenet.py``.
"""

from __future__ import annotations

from typing import Any

import keras

from kerasdl.layers.activations import get_activation
from kerasdl.layers.dense_block import DenseBlock, Transition
from kerasdl.layers.normalization import get_norm_layer
from kerasdl.layers.torch_compat import PaddedConv2D, PaddedMaxPooling2D
from kerasdl.models.base import Classifier, check_num_classes
from kerasdl.registry import register_variants

VARIANTS = {
    "densenet121": dict(block_config=[6, 12, 24, 16]),
    "densenet169": dict(block_config=[6, 12, 32, 32]),
    "densenet201": dict(block_config=[6, 12, 48, 32]),
    "densenet161": dict(block_config=[6, 12, 36, 24], growth_rate=48, num_init_features=96),
}


@keras.saving.register_keras_serializable(package="kerasdl")
class DenseNet(Classifier):
    """DenseNet-BC.

    Args:
        num_classes: number of output classes (logits); 0 for pooled features only.
        input_shape: ``(H, W, C)``, at least 32x32.
        block_config: dense layers per block, e.g. ``[6, 12, 24, 16]`` for DenseNet-121.
        growth_rate: channels each dense layer adds (``k``).
        num_init_features: filters of the stem convolution.
        bn_size: bottleneck width factor of the dense layers.
        dropout: dropout after each dense layer (torchvision's ``drop_rate``, default 0).
        norm: normalization choice.
        activation: activation choice.
        head_dropout: dropout before the head (none in the reference).

    Example:
        >>> model = DenseNet(num_classes=10, input_shape=(32, 32, 3), block_config=[6, 12, 24, 16])

    Reference:
        Huang et al., "Densely Connected Convolutional Networks", CVPR 2017.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        input_shape: tuple[int, int, int] | list[int] = (224, 224, 3),
        block_config: list[int] | tuple[int, ...] = (6, 12, 24, 16),
        growth_rate: int = 32,
        num_init_features: int = 64,
        bn_size: int = 4,
        dropout: float = 0.0,
        norm: str = "batch",
        activation: str = "relu",
        head_dropout: float = 0.0,
        **kwargs: Any,
    ) -> None:
        check_num_classes(num_classes)
        inputs = keras.Input(shape=tuple(input_shape), name="image")
        x = PaddedConv2D(
            num_init_features,
            7,
            pad=3,
            strides=2,
            use_bias=norm == "none",
            kernel_initializer="he_normal",
            name="conv0",
        )(inputs)
        x = get_norm_layer(norm, name="norm0")(x)
        x = get_activation(activation, name="act0")(x)
        x = PaddedMaxPooling2D(3, strides=2, padding=1, name="pool0")(x)
        channels = num_init_features
        for i, num_layers in enumerate(block_config):
            x = DenseBlock(
                num_layers,
                growth_rate,
                bn_size,
                dropout,
                norm,
                activation,
                name=f"denseblock{i + 1}",
            )(x)
            channels += num_layers * growth_rate
            if i != len(block_config) - 1:
                channels //= 2
                x = Transition(channels, norm, activation, name=f"transition{i + 1}")(x)
        x = get_norm_layer(norm, name="norm5")(x)
        x = get_activation(activation, name="act5")(x)
        self._init_pooled(inputs, x, num_classes, head_dropout, **kwargs)

    def feature_stages(self) -> list[tuple[str, int]]:
        """``(layer, reduction)`` for ``features_only`` (timm's densenet ``feature_info``): the
        stem's norm + activation, each dense block but the last (before its transition), and
        the final norm + activation."""
        n = len(self.block_config)
        blocks = [(f"denseblock{i + 1}", 2 ** (i + 2)) for i in range(n - 1)]
        return [("act0", 2), *blocks, ("act5", 2 ** (n + 1))]


register_variants(
    DenseNet, VARIANTS, family="densenet", paper="Huang et al. 2017", year=2017, min_input=32
)
