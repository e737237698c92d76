"""A small VGG-style CNN for small images: the quickstart model.

Two or more stages of ``[conv3x3-BN-act] x convs_per_stage`` then 2x2 max-pooling, then global
average pooling, dropout and a linear head. It is the kind of network LeCun et al. (1998) and
Simonyan & Zisserman (2015) describe, sized for 8x8 to 32x32 inputs so that it trains in a minute on
a CPU.

References:
    Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition",
    ICLR 2015. Ioffe & Szegedy, "Batch Normalization", ICML 2015.
"""

from __future__ import annotations

from typing import Any

import keras

from kerasdl.layers.activations import get_activation
from kerasdl.layers.normalization import get_norm_layer
from kerasdl.models.base import Classifier, check_num_classes
from kerasdl.registry import register_variants


@keras.saving.register_keras_serializable(package="kerasdl")
class SimpleCNN(Classifier):
    """A small VGG-style CNN.

    Args:
        num_classes: number of output classes (logits); 0 for features only.
        input_shape: ``(H, W, C)``.
        filters: output channels per stage; each stage but the last ends in 2x2 max-pooling.
        convs_per_stage: convolutions per stage.
        kernel_size: side of every convolution (3, as VGG; 5 with ``convs_per_stage=1`` gives
            the single-5x5 counterpart of two 3x3 layers, Simonyan & Zisserman 2015 sec. 2.3).
        norm: normalization choice (``batch``, ``layer``, ``group``, ``instance``, ``none``).
        activation: activation choice (see ``kerasdl.layers.activations``).
        dropout: dropout rate before the head.
        dropconnect: DropConnect rate on the head's weights (Wan et al. 2013).

    Example:
        >>> model = SimpleCNN(num_classes=10, input_shape=(16, 16, 1))
        >>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    """

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] | list[int] = (32, 32, 3),
        filters: list[int] | tuple[int, ...] = (32, 64, 128),
        convs_per_stage: int = 2,
        norm: str = "batch",
        activation: str = "relu",
        dropout: float = 0.2,
        dropconnect: float = 0.0,
        kernel_size: int = 3,
        **kwargs: Any,
    ) -> None:
        check_num_classes(num_classes)
        inputs = keras.Input(shape=tuple(input_shape), name="image")
        x = inputs
        for s, f in enumerate(filters):
            for c in range(convs_per_stage):
                x = keras.layers.Conv2D(
                    f,
                    kernel_size,
                    padding="same",
                    use_bias=norm == "none",
                    name=f"stage{s}_conv{c}",
                )(x)
                x = get_norm_layer(norm, name=f"stage{s}_norm{c}")(x)
                x = get_activation(activation, name=f"stage{s}_act{c}")(x)
            if s < len(filters) - 1:
                x = keras.layers.MaxPooling2D(2, padding="same", name=f"stage{s}_pool")(x)
        self._init_pooled(inputs, x, num_classes, dropout, dropconnect, **kwargs)

    def feature_stages(self) -> list[tuple[str, int]]:
        """``(layer, reduction)`` for ``features_only``: each stage's last activation, before
        its max-pool (timm's vgg rule)."""
        last = self.convs_per_stage - 1
        return [(f"stage{s}_act{last}", 2**s) for s in range(len(self.filters))]


VARIANTS = {"simple_cnn": {}}

register_variants(
    SimpleCNN,
    VARIANTS,
    family="simple_cnn",
    paper="Simonyan & Zisserman 2015 (VGG-style, small)",
    year=2015,
    default_input=(32, 32, 3),
    min_input=8,
)
