"""AlexNet: the 2012 paper's network (single tower) and torchvision's "one weird trick" variant.

Both share torchvision's skeleton: an 11x11/4 convolution (padding 2, so a 224x224 input gives the
paper's 55x55 maps), 3x3/2 max-pools after convolutions 1, 2 and 5, 5x5 and 3x3 convolutions with
PyTorch padding, an adaptive average pool to 6x6 (any input from 63x63 up works), and two
4096-unit fully connected layers with dropout 0.5.

* ``alexnet`` (``style="paper"``): the paper's 96-256-384-384-256 filters, local response
  normalization (k=2, n=5, alpha=1e-4, beta=0.75) after the first two ReLUs, dropout on the outputs
  of the two hidden fully connected layers. The paper splits the convolutions over two GPUs
  (convolutions 2, 4, 5 see only their own tower's half of the channels); this is the single-tower
  network without that grouping: 62,378,344 parameters at 1000 classes (``groups=2`` restores
  the split: 60,965,224).
* ``alexnet_owt`` (``style="torchvision"``): Krizhevsky 2014's 64-192-384-256-256 filters, no LRN,
  dropout before the two hidden fully connected layers: 61,100,840 parameters.

References:
    Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep Convolutional Neural
    Networks", NeurIPS 2012. Krizhevsky, "One weird trick for parallelizing convolutional neural
    networks", arXiv:1404.5997, 2014. torchvision ``models/alexnet.py``.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from kerasdl.configurable import ConfigurableLayer
from kerasdl.layers.activations import get_activation
from kerasdl.layers.pooling import MaxPooling2D
from kerasdl.layers.torch_compat import AdaptiveAveragePooling2D, GroupedConv2D, PaddedConv2D
from kerasdl.models.base import Classifier, check_num_classes, classifier_head
from kerasdl.registry import register_variants

STYLES = ("paper", "torchvision")


@keras.saving.register_keras_serializable(package="kerasdl")
class LocalResponseNormalization(ConfigurableLayer):
    """Local response normalization across channels (AlexNet, section 3.3).

    ``b[c] = a[c] / (k + alpha * sum_{c' in [c - n//2, c + n//2]} a[c']^2) ** beta``, the sum
    clipped to the existing channels. (PyTorch's ``nn.LocalResponseNorm`` divides ``alpha`` by
    ``n``; this layer follows the paper, like ``tf.nn.local_response_normalization``.)

    Args:
        size: ``n``, the number of adjacent channels summed (odd).
        alpha: scale of the sum of squares.
        beta: exponent.
        k: additive constant.

    Call arguments:
        inputs: ``(B, H, W, C)``.

    Example:
        >>> lrn = LocalResponseNormalization()
        >>> lrn(keras.ops.ones((1, 4, 4, 8))).shape
        (1, 4, 4, 8)

    Reference:
        Krizhevsky, Sutskever & Hinton, NeurIPS 2012, section 3.3 (k=2, n=5, alpha=1e-4,
        beta=0.75).
    """

    def __init__(
        self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if size < 1 or size % 2 == 0:
            raise ValueError(f"size must be a positive odd number. Received: {size}")
        self.size = int(size)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.k = float(k)

    def call(self, inputs):
        channels = inputs.shape[-1]
        r = self.size // 2
        sq = ops.pad(ops.square(inputs), [[0, 0], [0, 0], [0, 0], [r, r]])
        total = sq[..., 0:channels]
        for i in range(1, self.size):
            total = total + sq[..., i : i + channels]
        return inputs / ops.power(self.k + self.alpha * total, self.beta)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="kerasdl")
class AlexNet(Classifier):
    """AlexNet with torchvision's layout and the paper's or torchvision's details.

    Args:
        num_classes: number of output classes (logits); 0 for the 4096 pre-logits.
        input_shape: ``(H, W, C)``, at least 63x63.
        filters: the five convolutions' filters (paper 96-256-384-384-256, torchvision
            64-192-384-256-256).
        style: ``paper`` (LRN after convolutions 1 and 2; dropout after fc6 and fc7) or
            ``torchvision`` (no LRN; dropout before fc6 and fc7).
        fc_units: width of the two hidden fully connected layers.
        activation: activation choice.
        dropout: dropout rate of the fully connected layers (the paper: 0.5).
        groups: 2 reproduces the paper's two-GPU split of convolutions 2, 4 and 5 (each tower
            sees only its own half of the channels; 60,965,224 parameters); 1 (default) is the
            single-tower network.

    Example:
        >>> model = AlexNet(num_classes=10, input_shape=(64, 64, 3))

    Reference:
        Krizhevsky, Sutskever & Hinton, NeurIPS 2012.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        input_shape: tuple[int, int, int] | list[int] = (224, 224, 3),
        filters: list[int] | tuple[int, ...] = (96, 256, 384, 384, 256),
        style: str = "paper",
        fc_units: int = 4096,
        activation: str = "relu",
        dropout: float = 0.5,
        groups: int = 1,
        **kwargs: Any,
    ) -> None:
        check_num_classes(num_classes)
        if style not in STYLES:
            raise ValueError(f"style must be one of {STYLES}. Received: {style!r}")
        if len(filters) != 5:
            raise ValueError(f"filters must list 5 convolutions. Received: {list(filters)}")
        lrn = style == "paper"
        inputs = keras.Input(shape=tuple(input_shape), name="image")
        x = PaddedConv2D(filters[0], 11, pad=2, strides=4, name="conv1")(inputs)
        x = get_activation(activation, name="act1")(x)
        if lrn:
            x = LocalResponseNormalization(name="lrn1")(x)
        x = MaxPooling2D(3, strides=2, name="pool1")(x)
        conv = GroupedConv2D if groups > 1 else keras.layers.Conv2D
        x = conv(filters[1], 5, padding="same", groups=groups, name="conv2")(x)
        x = get_activation(activation, name="act2")(x)
        if lrn:
            x = LocalResponseNormalization(name="lrn2")(x)
        x = MaxPooling2D(3, strides=2, name="pool2")(x)
        for i in (2, 3, 4):
            g = 1 if i == 2 else groups  # conv3 sees both towers in the paper
            x = conv(filters[i], 3, padding="same", groups=g, name=f"conv{i + 1}")(x)
            x = get_activation(activation, name=f"act{i + 1}")(x)
        x = MaxPooling2D(3, strides=2, name="pool5")(x)
        x = AdaptiveAveragePooling2D(6, name="avg_pool")(x)
        x = keras.layers.Flatten(name="flatten")(x)
        for i in (6, 7):
            if style == "torchvision" and dropout:
                x = keras.layers.Dropout(dropout, name=f"drop{i}")(x)
            x = keras.layers.Dense(fc_units, name=f"fc{i}")(x)
            x = get_activation(activation, name=f"act{i}")(x)
            if style == "paper" and dropout and i == 6:
                x = keras.layers.Dropout(dropout, name=f"drop{i}")(x)
        head_dropout = dropout if style == "paper" else 0.0
        outputs = classifier_head(x, num_classes, head_dropout)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

    def feature_stages(self) -> list[tuple[str, int]]:
        """``(layer, reduction)`` for ``features_only`` (timm has no AlexNet; its vgg rule): the
        last layer before each max-pool (convolutions 1, 2, 5; after the LRN in the paper style),
        then the last max-pool. The reductions are nominal: the unpadded pools give maps one
        smaller (27, 13, 6 for a 224 input, where 224 / 8 = 28)."""
        norm = "lrn" if self.style == "paper" else "act"
        return [(f"{norm}1", 4), (f"{norm}2", 8), ("act5", 16), ("pool5", 32)]


VARIANTS = {
    "alexnet": dict(filters=[96, 256, 384, 384, 256], style="paper"),
    "alexnet_owt": dict(filters=[64, 192, 384, 256, 256], style="torchvision"),
}

register_variants(
    AlexNet,
    VARIANTS,
    family="alexnet",
    paper="Krizhevsky et al. 2012",
    year=2012,
    min_input=63,
    meta={"alexnet_owt": dict(paper="Krizhevsky 2014 (torchvision)", year=2014)},
)
