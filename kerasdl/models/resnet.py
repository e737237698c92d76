"""ResNet (v1.5), ResNeXt and Wide ResNet for ImageNet-sized inputs, layer for layer torchvision's.

Stem: 7x7/2 convolution (padding 3), norm, activation, 3x3/2 max-pool (padding 1), or with
``stem="cifar"`` a 3x3/1 convolution and no max-pool (SimCLR's CIFAR-10 ResNet-50, Chen et al.
2020 appendix B.9: 32x32 inputs keep their resolution into stage 1); four stages of
basic or bottleneck blocks with 64, 128, 256, 512 "planes", the first block of stages 2-4 strided
(on the 3x3 convolution: v1.5) with a 1x1 projection shortcut; global average pooling (so any input
size works) and a linear head.

References:
    He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition", CVPR 2016.
    Xie et al., "Aggregated Residual Transformations for Deep Neural Networks", CVPR 2017.
    Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016.
    torchvision ``models/resnet.py``.
"""

from __future__ import annotations

from typing import Any

import keras

from kerasdl.layers.activations import get_activation
from kerasdl.layers.normalization import get_norm_layer
from kerasdl.layers.residual import BasicBlock, Bottleneck, he_fan_out
from kerasdl.layers.torch_compat import PaddedConv2D, PaddedMaxPooling2D
from kerasdl.models.base import Classifier, check_num_classes
from kerasdl.registry import register_variants

BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}
STAGE_PLANES = (64, 128, 256, 512)
STEMS = {"imagenet": (7, 2), "cifar": (3, 1)}  # stem -> (kernel, stride) of conv1


@keras.saving.register_keras_serializable(package="kerasdl")
class ResNet(Classifier):
    """ResNet / ResNeXt / Wide ResNet, torchvision's layer structure (ResNet v1.5).

    Args:
        num_classes: number of output classes (logits); 0 for pooled features only.
        input_shape: ``(H, W, C)``; any size works (adaptive global pooling).
        block: ``basic`` (ResNet-18/34) or ``bottleneck`` (ResNet-50 and deeper).
        depths: blocks per stage, e.g. ``[3, 4, 6, 3]`` for ResNet-50.
        groups: groups of the bottleneck 3x3 convolution (ResNeXt cardinality).
        width_per_group: bottleneck width per group at 64 planes (64 = ResNet, 4 with 32 groups =
            ResNeXt-50 32x4d, 128 = Wide ResNet-50-2).
        norm: normalization choice (``batch``, ``layer``, ``group``, ``instance``, ``none``).
        activation: activation choice (``relu``, ``leaky_relu``, ``elu``, ``swish``, ``gelu``, ...).
        dropout: dropout rate before the head (torchvision: none).
        zero_init_residual: zero-initialize the last norm of each block (torchvision option).
        stem: ``imagenet`` (torchvision's 7x7/2 convolution and 3x3/2 max-pool) or ``cifar``
            (a 3x3/1 convolution, no max-pool: SimCLR's variant for 32x32 images).

    Example:
        >>> model = ResNet(num_classes=10, input_shape=(32, 32, 3), depths=[2, 2, 2, 2])
        >>> model.compile("sgd", keras.losses.CategoricalCrossentropy(from_logits=True))

    Reference:
        He et al., "Deep Residual Learning for Image Recognition", CVPR 2016.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        input_shape: tuple[int, int, int] | list[int] = (224, 224, 3),
        block: str = "bottleneck",
        depths: list[int] | tuple[int, ...] = (3, 4, 6, 3),
        groups: int = 1,
        width_per_group: int = 64,
        norm: str = "batch",
        activation: str = "relu",
        dropout: float = 0.0,
        zero_init_residual: bool = False,
        stem: str = "imagenet",
        **kwargs: Any,
    ) -> None:
        check_num_classes(num_classes)
        if block not in BLOCKS:
            raise ValueError(f"block must be one of {sorted(BLOCKS)}. Received: {block!r}")
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {sorted(STEMS)}. Received: {stem!r}")
        block_cls = BLOCKS[block]
        kernel, stride = STEMS[stem]
        inputs = keras.Input(shape=tuple(input_shape), name="image")
        x = PaddedConv2D(
            64,
            kernel,
            pad=kernel // 2,
            strides=stride,
            use_bias=norm == "none",
            kernel_initializer=he_fan_out(),
            name="conv1",
        )(inputs)
        x = get_norm_layer(norm, name="norm1")(x)
        x = get_activation(activation, name="act1")(x)
        if stem == "imagenet":
            x = PaddedMaxPooling2D(3, strides=2, padding=1, name="maxpool")(x)
        channels = 64
        for stage, (planes, depth) in enumerate(zip(STAGE_PLANES, depths, strict=True)):
            for i in range(depth):
                strides = 2 if stage > 0 and i == 0 else 1
                out = planes * block_cls.expansion
                needs_proj = strides != 1 or channels != out
                x = block_cls(
                    planes,
                    strides=strides,
                    shortcut="projection" if needs_proj else "identity",
                    groups=groups,
                    width_per_group=width_per_group,
                    norm=norm,
                    activation=activation,
                    zero_init_residual=zero_init_residual,
                    name=f"layer{stage + 1}_{i}",
                )(x)
                channels = out
        self._init_pooled(inputs, x, num_classes, dropout, **kwargs)

    def feature_stages(self) -> list[tuple[str, int]]:
        """``(layer, reduction)`` at the end of each stage, for ``features_only`` (timm's resnet
        ``feature_info``): the stem's activation, then the last block of each of the 4 stages."""
        ends = [f"layer{s + 1}_{depth - 1}" for s, depth in enumerate(self.depths)]
        if self.stem == "cifar":  # no stride and no pool in the stem
            return [("act1", 1), *zip(ends, (1, 2, 4, 8), strict=True)]
        return [("act1", 2), *zip(ends, (4, 8, 16, 32), strict=True)]


VARIANTS = {
    "resnet18": dict(block="basic", depths=[2, 2, 2, 2]),
    "resnet34": dict(block="basic", depths=[3, 4, 6, 3]),
    "resnet50": dict(block="bottleneck", depths=[3, 4, 6, 3]),
    "resnet101": dict(block="bottleneck", depths=[3, 4, 23, 3]),
    "resnet152": dict(block="bottleneck", depths=[3, 8, 36, 3]),
    "resnext50_32x4d": dict(block="bottleneck", depths=[3, 4, 6, 3], groups=32, width_per_group=4),
    "resnext101_32x8d": dict(
        block="bottleneck", depths=[3, 4, 23, 3], groups=32, width_per_group=8
    ),
    "wide_resnet50_2": dict(block="bottleneck", depths=[3, 4, 6, 3], width_per_group=128),
    "wide_resnet101_2": dict(block="bottleneck", depths=[3, 4, 23, 3], width_per_group=128),
}
_XIE = dict(paper="Xie et al. 2017", year=2017)
_WIDE = dict(paper="Zagoruyko & Komodakis 2016", year=2016)

register_variants(
    ResNet,
    VARIANTS,
    family="resnet",
    paper="He et al. 2016",
    year=2016,
    min_input=32,
    meta={
        "resnext50_32x4d": _XIE,
        "resnext101_32x8d": _XIE,
        "wide_resnet50_2": _WIDE,
        "wide_resnet101_2": _WIDE,
    },
)
