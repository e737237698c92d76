"""Small-input residual networks: the ResNet paper's CIFAR ResNets and WRN-28-k.

``CifarResNet`` is He et al. 2016, section 4.2: a 3x3 convolution with 16 filters, three stages of
``n`` basic blocks with 16, 32, 64 filters (feature maps 32, 16, 8 at a 32x32 input), global
average pooling and a linear head: ``6n + 2`` weighted layers (ResNet-20/32/44/56/110). The
shortcuts are the paper's option A (identity; when the size changes, subsample and pad the new
channels with zeros, so no extra parameters), as in the widely used PyTorch port (Idelbayev's
``resnet_cifar10``); ``shortcut="projection"`` gives option B.

``WideResNet`` is WRN-d-k (Zagoruyko & Komodakis 2016) as the semi-supervised literature uses it
(FixMatch, ``libml/models.py``): pre-activation blocks, widths ``16, 16k, 32k, 64k``,
``(d - 4) / 6`` blocks per stage, leaky ReLU with slope 0.1, a final norm + activation, global
average pooling and a linear head.

References:
    He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition", CVPR 2016, sec. 4.2.
    Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016.
    Sohn et al., "FixMatch", NeurIPS 2020 (the WRN-28-2 / 28-8 backbones).
"""

from __future__ import annotations

from typing import Any

import keras

from kerasdl.layers.activations import get_activation
from kerasdl.layers.normalization import get_norm_layer
from kerasdl.layers.residual import BasicBlock, PreActBlock
from kerasdl.layers.torch_compat import torch_conv
from kerasdl.models.base import Classifier, check_num_classes
from kerasdl.registry import register_variants

CIFAR_INIT = "he_normal"  # kaiming_normal_ (fan-in), as the reference port initializes convolutions


@keras.saving.register_keras_serializable(package="kerasdl")
class CifarResNet(Classifier):
    """The ResNet paper's CIFAR-10 network with ``6n + 2`` layers.

    Args:
        num_classes: number of output classes (logits); 0 for pooled features only.
        input_shape: ``(H, W, C)``; the paper uses 32x32x3.
        depth: ``6n + 2`` (20, 32, 44, 56, 110, 1202).
        filters: filters of the three stages (the paper: 16, 32, 64).
        shortcut: ``zero_pad`` (option A, the paper's choice for CIFAR) or ``projection``
            (option B: 1x1 conv + norm when the shape changes).
        norm: normalization choice.
        activation: activation choice.
        dropout: dropout before the head (the paper: none).
        residual: False gives the paper's "plain" counterpart (section 4.2, figure 6): the same
            convolutions, norms and activations with no shortcuts (same parameter count as the
            ``zero_pad`` network), the network whose training error grows with depth.

    Example:
        >>> model = CifarResNet(num_classes=10, depth=20)  # about 0.27M parameters
        >>> plain = CifarResNet(num_classes=10, depth=56, residual=False)  # plain-56

    Reference:
        He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, section 4.2.
    """

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] | list[int] = (32, 32, 3),
        depth: int = 20,
        filters: list[int] | tuple[int, ...] = (16, 32, 64),
        shortcut: str = "zero_pad",
        norm: str = "batch",
        activation: str = "relu",
        dropout: float = 0.0,
        residual: bool = True,
        **kwargs: Any,
    ) -> None:
        check_num_classes(num_classes)
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n + 2 with n >= 1. Received: {depth}")
        if shortcut not in ("zero_pad", "projection"):
            raise ValueError(f"shortcut must be 'zero_pad' or 'projection'. Received: {shortcut!r}")
        n = (depth - 2) // 6
        inputs = keras.Input(shape=tuple(input_shape), name="image")
        x = keras.layers.Conv2D(
            filters[0],
            3,
            padding="same",
            use_bias=norm == "none",
            kernel_initializer=CIFAR_INIT,
            name="conv1",
        )(inputs)
        x = get_norm_layer(norm, name="norm1")(x)
        x = get_activation(activation, name="act1")(x)
        channels = filters[0]
        for stage, f in enumerate(filters):
            for i in range(n):
                strides = 2 if stage > 0 and i == 0 else 1
                change = strides != 1 or channels != f
                if not residual:
                    x = _plain_block(x, f, strides, norm, activation, f"layer{stage + 1}_{i}")
                    channels = f
                    continue
                x = BasicBlock(
                    f,
                    strides=strides,
                    shortcut=shortcut if change else "identity",
                    norm=norm,
                    activation=activation,
                    kernel_initializer=CIFAR_INIT,
                    name=f"layer{stage + 1}_{i}",
                )(x)
                channels = f
        self._init_pooled(inputs, x, num_classes, dropout, **kwargs)

    def feature_stages(self) -> list[tuple[str, int]]:
        """``(layer, reduction)`` at the end of each stage, for ``features_only`` (timm's resnet
        convention): the stem's activation, then the last block of each stage (strides 1, 2, 4)."""
        last = (self.depth - 2) // 6 - 1
        suffix = "" if self.residual else "_act2"
        ends = [(f"layer{s + 1}_{last}{suffix}", 2**s) for s in range(len(self.filters))]
        return [("act1", 1), *ends]


def _plain_block(
    x: keras.KerasTensor, filters: int, strides: int, norm: str, activation: str, name: str
) -> keras.KerasTensor:
    """A :class:`BasicBlock` without its shortcut: ``act(norm(conv(act(norm(conv(x))))))``,
    padded like it (PyTorch's), with the same initializer (He et al. 2016's plain network)."""
    for j, s in enumerate((strides, 1)):
        x = torch_conv(
            filters,
            3,
            s,
            use_bias=norm == "none",
            kernel_initializer=CIFAR_INIT,
            name=f"{name}_conv{j + 1}",
        )(x)
        x = get_norm_layer(norm, name=f"{name}_norm{j + 1}")(x)
        x = get_activation(activation, name=f"{name}_act{j + 1}")(x)
    return x


@keras.saving.register_keras_serializable(package="kerasdl")
class WideResNet(Classifier):
    """WRN-d-k with pre-activation blocks, as FixMatch and the semi-supervised literature use it.

    Args:
        num_classes: number of output classes (logits); 0 for pooled features only.
        input_shape: ``(H, W, C)``; 32x32x3 in the literature.
        depth: ``6n + 4`` (28 gives 4 blocks per stage).
        widen_factor: ``k``; stage widths are ``16k, 32k, 64k``.
        dropout: dropout between the two convolutions of each block (WRN's ``dropRate``).
        norm: normalization choice.
        activation: activation choice (default leaky ReLU).
        negative_slope: leaky-ReLU slope (FixMatch: 0.1).
        bn_momentum: batch-norm momentum, Keras convention. 0.9 (PyTorch's default 0.1) suits
            short CPU runs; FixMatch's reference uses 0.999 (PyTorch ``momentum=0.001``).
        head_dropout: dropout before the head (none in the reference).

    Example:
        >>> model = WideResNet(num_classes=10, depth=28, widen_factor=2)  # 1,467,610 parameters

    Reference:
        Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016; Sohn et al., "FixMatch",
        NeurIPS 2020.
    """

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] | list[int] = (32, 32, 3),
        depth: int = 28,
        widen_factor: int = 2,
        dropout: float = 0.0,
        norm: str = "batch",
        activation: str = "leaky_relu",
        negative_slope: float = 0.1,
        bn_momentum: float = 0.9,
        head_dropout: float = 0.0,
        **kwargs: Any,
    ) -> None:
        check_num_classes(num_classes)
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"depth must be 6n + 4 with n >= 1. Received: {depth}")
        n = (depth - 4) // 6
        widths = [16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        inputs = keras.Input(shape=tuple(input_shape), name="image")
        x = keras.layers.Conv2D(
            16, 3, padding="same", use_bias=False, kernel_initializer="he_normal", name="conv1"
        )(inputs)
        channels = 16
        for stage, width in enumerate(widths):
            for i in range(n):
                strides = 2 if stage > 0 and i == 0 else 1
                x = PreActBlock(
                    width,
                    strides=strides,
                    projection=strides != 1 or channels != width,
                    activate_before_residual=stage == 0 and i == 0,
                    dropout=dropout,
                    norm=norm,
                    activation=activation,
                    negative_slope=negative_slope,
                    bn_momentum=bn_momentum,
                    name=f"block{stage + 1}_{i}",
                )(x)
                channels = width
        x = get_norm_layer(norm, name="norm_final", momentum=bn_momentum)(x)
        act = {"alpha": negative_slope} if activation == "leaky_relu" else {}
        x = get_activation(activation, name="act_final", **act)(x)
        self._init_pooled(inputs, x, num_classes, head_dropout, **kwargs)

    def feature_stages(self) -> list[tuple[str, int]]:
        """``(layer, reduction)`` at the end of each stage, for ``features_only``: the stem
        convolution, then the last block of each stage, before the final norm (timm's
        pre-activation ResNetV2 ``feature_info``)."""
        last = (self.depth - 4) // 6 - 1
        return [("conv1", 1), *((f"block{s + 1}_{last}", 2**s) for s in range(3))]


_CIFAR10 = dict(num_classes=10, input_shape=[32, 32, 3])
VARIANTS = {f"resnet{d}": dict(depth=d, **_CIFAR10) for d in (20, 32, 44, 56, 110)}
WRN_VARIANTS = {f"wrn_28_{k}": dict(depth=28, widen_factor=k, **_CIFAR10) for k in (2, 8, 10)}

register_variants(
    CifarResNet, VARIANTS, family="resnet_cifar", paper="He et al. 2016", year=2016, min_input=8
)
register_variants(
    WideResNet,
    WRN_VARIANTS,
    family="wide_resnet",
    paper="Zagoruyko & Komodakis 2016",
    year=2016,
    min_input=8,
)
