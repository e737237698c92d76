"""EfficientNet B0-B7 and compound scaling.

A 3x3 stride-2 stem, seven stages of :class:`~kerasdl.layers.mbconv.MBConv` blocks (Table 1 of
the paper), a 1x1 convolution to four times the last stage's width, global average pooling,
dropout and the head: torchvision's ``EfficientNet`` layer by layer and parameter by parameter.
Widths are scaled with ``make_divisible(c * width_mult, 8)`` and depths with
``ceil(n * depth_mult)``; stochastic depth grows linearly with the block index,
``0.2 * i / total_blocks``. Batch norm is PyTorch's default (momentum 0.1 = Keras 0.9, epsilon
1e-5) for B0-B4 and momentum 0.01 (Keras 0.99), epsilon 1e-3 for B5-B7, as torchvision.

Compound scaling (section 3.3): depth ``alpha^phi``, width ``beta^phi``, resolution
``gamma^phi`` with ``alpha = 1.2, beta = 1.1, gamma = 1.15`` (``alpha beta^2 gamma^2 ~ 2``, so each
step of ``phi`` about doubles the FLOPs): :func:`compound_scaling` and :func:`efficientnet_phi`.
The released B1-B7 use the (width, depth, resolution) of :data:`VARIANTS`, which the authors
rounded by hand.

Reference:
    Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks",
    ICML 2019.
"""

from __future__ import annotations

import math
from typing import Any

import keras

from kerasdl.layers.activations import get_activation
from kerasdl.layers.mbconv import MBConv, conv_kaiming_fan_out, make_divisible
from kerasdl.layers.normalization import BN_EPSILON, BN_MOMENTUM, get_norm_layer
from kerasdl.models.base import Classifier, check_num_classes
from kerasdl.registry import register_variants

# Table 1 of the paper: (expand_ratio, kernel, stride, in_channels, out_channels, layers).
B0_STAGES = [
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
]


@keras.saving.register_keras_serializable(package="kerasdl")
class EfficientNet(Classifier):
    """EfficientNet (torchvision ``EfficientNet`` with ``MBConvConfig`` stages).

    Args:
        num_classes: output classes (logits); 0 for the pooled features only.
        input_shape: ``(H, W, C)``.
        width_mult: channel multiplier.
        depth_mult: layers-per-stage multiplier.
        dropout: dropout before the head.
        stochastic_depth: final stochastic-depth rate (linear over blocks).
        activation: activation (SiLU in the paper).
        norm: normalization choice.
        bn_momentum: batch-norm momentum (Keras convention; 0.9 = PyTorch's 0.1).
        bn_epsilon: batch-norm epsilon.

    Example:
        >>> model = EfficientNet(num_classes=10, input_shape=(64, 64, 3))

    Reference:
        Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks",
        ICML 2019.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        input_shape: tuple[int, int, int] | list[int] = (224, 224, 3),
        width_mult: float = 1.0,
        depth_mult: float = 1.0,
        dropout: float = 0.2,
        stochastic_depth: float = 0.2,
        activation: str = "silu",
        norm: str = "batch",
        bn_momentum: float = BN_MOMENTUM,
        bn_epsilon: float = BN_EPSILON,
        **kwargs: Any,
    ) -> None:
        check_num_classes(num_classes)

        def bn(name):
            return get_norm_layer(norm, name=name, momentum=bn_momentum, epsilon=bn_epsilon)

        stages = efficientnet_stages(width_mult, depth_mult)
        total_blocks = sum(st[-1] for st in stages)
        inputs = keras.Input(shape=tuple(input_shape), name="image")
        x = keras.layers.ZeroPadding2D(1, name="stem_pad")(inputs)
        x = keras.layers.Conv2D(
            stages[0][3],
            3,
            strides=2,
            use_bias=False,
            kernel_initializer=conv_kaiming_fan_out(),
            name="stem_conv",
        )(x)
        x = bn("stem_bn")(x)
        x = get_activation(activation, name="stem_act")(x)
        block_id = 0
        for s, (expand, kernel, stride, cin, cout, layers) in enumerate(stages):
            for j in range(layers):
                x = MBConv(
                    cin if j == 0 else cout,
                    cout,
                    expand_ratio=expand,
                    kernel_size=kernel,
                    stride=stride if j == 0 else 1,
                    drop_path=stochastic_depth * block_id / total_blocks,
                    activation=activation,
                    norm=norm,
                    bn_momentum=bn_momentum,
                    bn_epsilon=bn_epsilon,
                    name=f"stage{s + 1}_block{j}",
                )(x)
                block_id += 1
        x = keras.layers.Conv2D(
            4 * stages[-1][4],
            1,
            use_bias=False,
            kernel_initializer=conv_kaiming_fan_out(),
            name="top_conv",
        )(x)
        x = bn("top_bn")(x)
        x = get_activation(activation, name="top_act")(x)
        self._init_pooled(inputs, x, num_classes, dropout, **kwargs)

    def feature_stages(self) -> list[tuple[str, int]]:
        """``(layer, reduction)`` for ``features_only`` (timm's efficientnet ``feature_info``):
        the last block of each stage followed by a strided one, and of the last stage (stages
        1, 2, 3, 5, 7 of B0; strides 2 to 32). The 1x1 ``top_conv`` is not a stage (as timm)."""
        stages = efficientnet_stages(self.width_mult, self.depth_mult)
        out, reduction = [], 2  # the stem's stride
        for s, (_, _, stride, _, _, layers) in enumerate(stages):
            reduction *= stride
            if s == len(stages) - 1 or stages[s + 1][2] > 1:
                out.append((f"stage{s + 1}_block{layers - 1}", reduction))
        return out


def efficientnet_stages(width_mult: float = 1.0, depth_mult: float = 1.0) -> list[tuple]:
    """The scaled stage table: ``(expand, kernel, stride, in_ch, out_ch, layers)`` per stage."""
    return [
        (
            e,
            k,
            s,
            make_divisible(i * width_mult),
            make_divisible(o * width_mult),
            int(math.ceil(n * depth_mult)),
        )
        for e, k, s, i, o, n in B0_STAGES
    ]


def efficientnet_param_count(
    num_classes: int = 1000,
    width_mult: float = 1.0,
    depth_mult: float = 1.0,
    input_shape: tuple[int, int, int] | list[int] = (224, 224, 3),
    **_: Any,
) -> int:
    """Trainable parameters of an :class:`EfficientNet` (batch norm: scale and offset only),
    computed from its configuration without building it."""
    stages = efficientnet_stages(width_mult, depth_mult)
    c0 = stages[0][3]
    n = 9 * input_shape[-1] * c0 + 2 * c0  # stem conv + BN
    for expand, k, _, cin, cout, layers in stages:
        for j in range(layers):
            i = cin if j == 0 else cout
            e = make_divisible(i * expand, 8)
            sq = max(1, i // 4)
            n += (i * e + 2 * e) if e != i else 0  # expand conv + BN
            n += k * k * e + 2 * e  # depthwise + BN
            n += e * sq + sq + sq * e + e  # squeeze-excitation (1x1 convs with bias)
            n += e * cout + 2 * cout  # project + BN
    top = 4 * stages[-1][4]
    n += stages[-1][4] * top + 2 * top
    if num_classes:
        n += top * num_classes + num_classes
    return n


def compound_scaling(
    phi: float,
    alpha: float = 1.2,
    beta: float = 1.1,
    gamma: float = 1.15,
    base_resolution: int = 224,
) -> tuple[float, float, int]:
    """The compound-scaling multipliers of EfficientNet for coefficient ``phi`` (equation 3).

    Returns:
        ``(width_mult, depth_mult, resolution)`` = ``(beta^phi, alpha^phi,
        round(base_resolution * gamma^phi))``.

    Example:
        >>> compound_scaling(1)  # (1.1, 1.2, 258)
    """
    return beta**phi, alpha**phi, int(round(base_resolution * gamma**phi))


def efficientnet_phi(
    phi: float, num_classes: int = 1000, channels: int = 3, **kwargs: Any
) -> EfficientNet:
    """EfficientNet-B0 scaled by the compound coefficient ``phi`` (Tan & Le 2019, section 3.3).

    Example:
        >>> model = efficientnet_phi(0.5, num_classes=10)
    """
    width, depth, resolution = compound_scaling(phi)
    return EfficientNet(
        num_classes=num_classes,
        input_shape=(resolution, resolution, channels),
        width_mult=width,
        depth_mult=depth,
        **kwargs,
    )


# torchvision builds B5-B7 with BatchNorm2d(eps=1e-3, momentum=0.01) (weights ported from TF).
_TF_BN = dict(bn_momentum=0.99, bn_epsilon=1e-3)
# width, depth, dropout and resolution: torchvision / Tan & Le 2019 Table 2.
VARIANTS = {
    "efficientnet_b0": dict(width_mult=1.0, depth_mult=1.0, dropout=0.2, input_shape=[224, 224, 3]),
    "efficientnet_b1": dict(width_mult=1.0, depth_mult=1.1, dropout=0.2, input_shape=[240, 240, 3]),
    "efficientnet_b2": dict(width_mult=1.1, depth_mult=1.2, dropout=0.3, input_shape=[260, 260, 3]),
    "efficientnet_b3": dict(width_mult=1.2, depth_mult=1.4, dropout=0.3, input_shape=[300, 300, 3]),
    "efficientnet_b4": dict(width_mult=1.4, depth_mult=1.8, dropout=0.4, input_shape=[380, 380, 3]),
    "efficientnet_b5": dict(
        width_mult=1.6, depth_mult=2.2, dropout=0.4, input_shape=[456, 456, 3], **_TF_BN
    ),
    "efficientnet_b6": dict(
        width_mult=1.8, depth_mult=2.6, dropout=0.5, input_shape=[528, 528, 3], **_TF_BN
    ),
    "efficientnet_b7": dict(
        width_mult=2.0, depth_mult=3.1, dropout=0.5, input_shape=[600, 600, 3], **_TF_BN
    ),
}

register_variants(
    EfficientNet, VARIANTS, family="efficientnet", paper="Tan & Le 2019", year=2019, min_input=32
)
