"""VGG-11/13/16/19 (configurations A, B, D, E), with or without batch norm, as in torchvision.

Five stages of 3x3 convolutions (64, 128, 256, 512, 512 filters; padding 1; bias kept even with
batch norm, as torchvision does), each stage ending in a 2x2/2 max-pool; adaptive average pooling
to 7x7 (so any input from 32x32 up works); two 4096-unit fully connected layers, each followed by
ReLU and dropout 0.5; a linear head.

References:
    Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition",
    ICLR 2015. torchvision ``models/vgg.py`` (the ``_bn`` variants add batch norm after each
    convolution).
"""

from __future__ import annotations

from typing import Any

import keras

from kerasdl.layers.activations import get_activation
from kerasdl.layers.normalization import get_norm_layer
from kerasdl.layers.pooling import MaxPooling2D
from kerasdl.layers.residual import he_fan_out
from kerasdl.layers.torch_compat import AdaptiveAveragePooling2D
from kerasdl.models.base import Classifier, check_num_classes, classifier_head
from kerasdl.registry import register_variants

STAGE_FILTERS = (64, 128, 256, 512, 512)
DEPTHS = {
    "vgg11": [1, 1, 2, 2, 2],  # configuration A
    "vgg13": [2, 2, 2, 2, 2],  # B
    "vgg16": [2, 2, 3, 3, 3],  # D
    "vgg19": [2, 2, 4, 4, 4],  # E
}
# Each configuration without normalization (the paper) and with batch norm (torchvision's _bn).
VARIANTS = {
    f"{name}{suffix}": dict(depths=depths, norm=norm)
    for name, depths in DEPTHS.items()
    for suffix, norm in (("", "none"), ("_bn", "batch"))
}


@keras.saving.register_keras_serializable(package="kerasdl")
class VGG(Classifier):
    """VGG with torchvision's layer structure.

    Args:
        num_classes: number of output classes (logits); 0 for the pre-logits (fc7 output).
        input_shape: ``(H, W, C)``, at least 32x32.
        depths: 3x3 convolutions per stage (five stages), e.g. ``[2, 2, 3, 3, 3]`` for VGG-16.
        filters: filters per stage.
        norm: ``none`` (the paper) or a normalization after each convolution (``batch`` gives
            the ``_bn`` variants; ``layer``, ``group``, ``instance`` also work).
        activation: activation choice.
        fc_units: width of the two hidden fully connected layers.
        dropout: dropout after each hidden fully connected layer (the paper: 0.5).

    Example:
        >>> model = VGG(num_classes=10, input_shape=(32, 32, 3), depths=[1, 1, 2, 2, 2])

    Reference:
        Simonyan & Zisserman, ICLR 2015.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        input_shape: tuple[int, int, int] | list[int] = (224, 224, 3),
        depths: list[int] | tuple[int, ...] = (2, 2, 3, 3, 3),
        filters: list[int] | tuple[int, ...] = STAGE_FILTERS,
        norm: str = "none",
        activation: str = "relu",
        fc_units: int = 4096,
        dropout: float = 0.5,
        **kwargs: Any,
    ) -> None:
        check_num_classes(num_classes)
        if len(depths) != len(filters):
            raise ValueError(
                f"depths and filters must have the same length. Received: {list(depths)}, "
                f"{list(filters)}"
            )
        inputs = keras.Input(shape=tuple(input_shape), name="image")
        x = inputs
        for s, (depth, f) in enumerate(zip(depths, filters, strict=True)):
            for c in range(depth):
                x = keras.layers.Conv2D(
                    f,
                    3,
                    padding="same",
                    kernel_initializer=he_fan_out(),
                    name=f"stage{s + 1}_conv{c + 1}",
                )(x)
                if norm != "none":
                    x = get_norm_layer(norm, name=f"stage{s + 1}_norm{c + 1}")(x)
                x = get_activation(activation, name=f"stage{s + 1}_act{c + 1}")(x)
            x = MaxPooling2D(2, strides=2, name=f"stage{s + 1}_pool")(x)
        x = AdaptiveAveragePooling2D(7, name="avg_pool")(x)
        x = keras.layers.Flatten(name="flatten")(x)
        dense_init = keras.initializers.RandomNormal(stddev=0.01)
        x = keras.layers.Dense(fc_units, kernel_initializer=dense_init, name="fc6")(x)
        x = get_activation(activation, name="act6")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name="drop6")(x)
        x = keras.layers.Dense(fc_units, kernel_initializer=dense_init, name="fc7")(x)
        x = get_activation(activation, name="act7")(x)
        outputs = classifier_head(x, num_classes, dropout)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

    def feature_stages(self) -> list[tuple[str, int]]:
        """``(layer, reduction)`` for ``features_only`` (timm's vgg ``feature_info``): each
        stage's last activation, before its max-pool (strides 1 to 16), then the last max-pool."""
        n = len(self.depths)
        ends = [(f"stage{s + 1}_act{depth}", 2**s) for s, depth in enumerate(self.depths)]
        return [*ends, (f"stage{n}_pool", 2**n)]


register_variants(
    VGG, VARIANTS, family="vgg", paper="Simonyan & Zisserman 2015", year=2015, min_input=32
)
