"""Residual blocks: ResNet basic and bottleneck (v1.5, ResNeXt, wide), and the pre-activation block.

Every convolution pads like PyTorch (``k // 2`` cells on each side, explicit zero padding before a
strided convolution), so the blocks compute what torchvision's do, window for window.

References:
    He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition", CVPR 2016.
    He et al., "Identity Mappings in Deep Residual Networks", ECCV 2016 (pre-activation).
    Xie et al., "Aggregated Residual Transformations for Deep Neural Networks", CVPR 2017 (ResNeXt).
    Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016.
    torchvision ``models/resnet.py`` (v1.5: the stride sits on the bottleneck's 3x3 convolution).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from kerasdl.configurable import ConfigurableLayer
from kerasdl.layers.activations import get_activation
from kerasdl.layers.base import build_chain
from kerasdl.layers.normalization import get_norm_layer
from kerasdl.layers.pointwise_conv import PointwiseConv2D
from kerasdl.layers.torch_compat import torch_conv

SHORTCUTS = ("identity", "projection", "zero_pad")


def he_fan_out() -> keras.initializers.Initializer:
    """Kaiming-normal initialization with fan-out, torchvision's choice for ResNet convolutions."""
    return keras.initializers.VarianceScaling(
        2.0, mode="fan_out", distribution="untruncated_normal"
    )


def _check_shortcut(shortcut: str) -> None:
    if shortcut not in SHORTCUTS:
        raise ValueError(f"shortcut must be one of {SHORTCUTS}. Received: {shortcut!r}")


def zero_pad_shortcut(x, out_channels: int, strides: int):
    """He et al.'s option A: subsample by ``strides``, zero-pad the new channels on both sides.

    The subsampling (``x[:, ::s, ::s, :]``) runs as a 1x1 average pool with stride ``s``: the
    same values exactly (an average of one element; also for odd sizes, where both keep
    ``ceil(H / s)`` rows), but on the pooling kernel, whose gradient is a cheap scatter. On
    TensorFlow's CPU build the strided slice and its gradient (``StridedSliceGrad``) cost about
    10x more (forward + backward 3-5 ms vs 41-48 ms for a 128x32x32x16 batch, 2-core CPU).
    """
    if strides > 1:
        x = ops.average_pool(x, pool_size=1, strides=strides, padding="valid")
    extra = out_channels - x.shape[-1]
    if extra:
        x = ops.pad(x, [[0, 0], [0, 0], [0, 0], [extra // 2, extra - extra // 2]])
    return x


class _ResidualBase(ConfigurableLayer):
    """Shared arguments, shortcut and build of the post-activation residual blocks.

    The config is the constructor's arguments (:class:`~kerasdl.configurable.ConfigurableLayer`);
    ``kernel_initializer``, a Keras initializer, is stored serialised and read back through
    ``keras.initializers.get``.
    """

    expansion = 1

    def __init__(
        self,
        filters: int,
        strides: int = 1,
        shortcut: str = "identity",
        groups: int = 1,
        width_per_group: int = 64,
        norm: str = "batch",
        activation: str = "relu",
        zero_init_residual: bool = False,
        kernel_initializer: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        _check_shortcut(shortcut)
        self.filters = int(filters)
        self.strides = int(strides)
        self.groups = int(groups)
        self.width_per_group = int(width_per_group)
        self.zero_init_residual = bool(zero_init_residual)
        self.kernel_initializer = keras.initializers.get(kernel_initializer or he_fan_out())
        self.out_channels = self.filters * self.expansion
        if shortcut == "projection":
            self.downsample_conv = PointwiseConv2D(
                self.out_channels,
                1,
                strides=self.strides,
                use_bias=norm == "none",
                kernel_initializer=self.kernel_initializer,
                name="downsample_conv",
            )
            self.downsample_norm = get_norm_layer(norm, name="downsample_norm")
        self.act_out = get_activation(activation, name="act_out")

    def _conv(self, filters: int, kernel: int, strides: int, groups: int, name: str):
        return torch_conv(
            filters,
            kernel,
            strides,
            groups=groups,
            use_bias=self.norm == "none",
            kernel_initializer=self.kernel_initializer,
            name=name,
        )

    def _check_identity(self, input_shape) -> None:
        if self.shortcut == "identity" and (
            self.strides != 1 or input_shape[-1] != self.out_channels
        ):
            raise ValueError(
                f"An identity shortcut needs stride 1 and {self.out_channels} input channels. "
                f"Received: strides={self.strides}, input channels={input_shape[-1]}. Use "
                "shortcut='projection' or 'zero_pad'."
            )

    def _build_branch(self, layers: list[keras.layers.Layer], input_shape: tuple) -> None:
        """Build the residual branch ``layers`` (in call order), the shortcut and the output."""
        self._check_identity(input_shape)
        shape = build_chain(layers, input_shape)
        if self.shortcut == "projection":
            build_chain([self.downsample_conv, self.downsample_norm], input_shape)
        self.act_out.build(shape)

    def _shortcut(self, x, training):
        if self.shortcut == "projection":
            return self.downsample_norm(self.downsample_conv(x), training=training)
        if self.shortcut == "zero_pad":
            return zero_pad_shortcut(x, self.out_channels, self.strides)
        return x


@keras.saving.register_keras_serializable(package="kerasdl")
class BasicBlock(_ResidualBase):
    """ResNet basic block: ``act(x' + norm(conv3x3(act(norm(conv3x3(x))))))``, two 3x3 convs.

    Args:
        filters: output channels.
        strides: stride of the first 3x3 convolution.
        shortcut: ``identity``, ``projection`` (1x1 conv + norm, He et al.'s option B) or
            ``zero_pad`` (subsample + zero channels, option A, the paper's CIFAR networks).
        groups, width_per_group: accepted for a uniform interface; a basic block supports only
            ``groups=1`` and ``width_per_group=64`` (as torchvision).
        norm: normalization choice (``kerasdl.layers.normalization``).
        activation: activation choice (``kerasdl.layers.activations``).
        zero_init_residual: start the last norm's scale at zero (Goyal et al. 2017).
        kernel_initializer: convolution initializer (default Kaiming normal, fan-out); a name,
            a Keras initializer or its serialised config (as the config stores it).

    Call arguments:
        inputs: ``(B, H, W, C)``.
        training: batch-norm mode.

    Example:
        >>> block = BasicBlock(64)
        >>> block(keras.ops.ones((2, 8, 8, 64))).shape
        (2, 8, 8, 64)

    Reference:
        He et al., "Deep Residual Learning for Image Recognition", CVPR 2016.
    """

    expansion = 1

    def __init__(self, filters: int, **kwargs: Any) -> None:
        super().__init__(filters, **kwargs)
        if self.groups != 1 or self.width_per_group != 64:
            raise ValueError("BasicBlock only supports groups=1 and width_per_group=64.")
        self.conv1 = self._conv(self.filters, 3, self.strides, 1, "conv1")
        self.norm1 = get_norm_layer(self.norm, name="norm1")
        self.act1 = get_activation(self.activation, name="act1")
        self.conv2 = self._conv(self.filters, 3, 1, 1, "conv2")
        self.norm2 = get_norm_layer(self.norm, name="norm2", gamma_zero=self.zero_init_residual)

    def build(self, input_shape):
        self._build_branch([self.conv1, self.norm1, self.act1, self.conv2, self.norm2], input_shape)

    def call(self, inputs, training=None):
        x = self.act1(self.norm1(self.conv1(inputs), training=training))
        x = self.norm2(self.conv2(x), training=training)
        return self.act_out(x + self._shortcut(inputs, training))


@keras.saving.register_keras_serializable(package="kerasdl")
class Bottleneck(_ResidualBase):
    """ResNet v1.5 bottleneck: 1x1 reduce, 3x3 (strided, grouped), 1x1 expand by 4.

    The inner width is ``int(filters * width_per_group / 64) * groups``: ``groups=32,
    width_per_group=4`` is ResNeXt-50 32x4d, ``width_per_group=128`` is Wide ResNet-50-2.

    Args:
        filters: the block's "planes"; the output has ``4 * filters`` channels.
        strides: stride of the 3x3 convolution (v1.5; the original v1 strides the first 1x1).
        shortcut: ``identity``, ``projection`` or ``zero_pad`` (see :class:`BasicBlock`).
        groups: groups of the 3x3 convolution (ResNeXt cardinality).
        width_per_group: channels per group at ``filters=64``.
        norm, activation, zero_init_residual, kernel_initializer: as :class:`BasicBlock`.

    Call arguments:
        inputs: ``(B, H, W, C)``.
        training: batch-norm mode.

    Example:
        >>> block = Bottleneck(64, strides=2, shortcut="projection", groups=32, width_per_group=4)
        >>> block(keras.ops.ones((2, 8, 8, 256))).shape
        (2, 4, 4, 256)

    Reference:
        He et al. 2016; Xie et al. 2017 (ResNeXt); Zagoruyko & Komodakis 2016 (wide).
    """

    expansion = 4

    def __init__(self, filters: int, **kwargs: Any) -> None:
        super().__init__(filters, **kwargs)
        width = int(self.filters * (self.width_per_group / 64.0)) * self.groups
        self.width = width
        self.conv1 = self._conv(width, 1, 1, 1, "conv1")
        self.norm1 = get_norm_layer(self.norm, name="norm1")
        self.act1 = get_activation(self.activation, name="act1")
        self.conv2 = self._conv(width, 3, self.strides, self.groups, "conv2")
        self.norm2 = get_norm_layer(self.norm, name="norm2")
        self.act2 = get_activation(self.activation, name="act2")
        self.conv3 = self._conv(self.out_channels, 1, 1, 1, "conv3")
        self.norm3 = get_norm_layer(self.norm, name="norm3", gamma_zero=self.zero_init_residual)

    def build(self, input_shape):
        branch = [self.conv1, self.norm1, self.act1, self.conv2, self.norm2, self.act2]
        self._build_branch([*branch, self.conv3, self.norm3], input_shape)

    def call(self, inputs, training=None):
        x = self.act1(self.norm1(self.conv1(inputs), training=training))
        x = self.act2(self.norm2(self.conv2(x), training=training))
        x = self.norm3(self.conv3(x), training=training)
        return self.act_out(x + self._shortcut(inputs, training))


@keras.saving.register_keras_serializable(package="kerasdl")
class PreActBlock(ConfigurableLayer):
    """Pre-activation wide-ResNet block: ``x' + conv3x3(drop(act(norm(conv3x3(act(norm(x)))))))``.

    As in the FixMatch WRN-28-k (google-research/fixmatch ``libml/models.py``): both convolutions
    see the activated input; the shortcut is the raw input (a 1x1 projection when the channels
    change) unless ``activate_before_residual``, where it starts from the activated input too (the
    first block of the network).

    Args:
        filters: output channels.
        strides: stride of the first 3x3 convolution (and of the projection).
        projection: a 1x1 convolution on the shortcut (needed when channels or size change).
        activate_before_residual: feed the shortcut the activated input.
        dropout: dropout rate between the two convolutions (WRN's ``dropRate``).
        norm: normalization choice.
        activation: activation choice (FixMatch: ``leaky_relu`` with slope 0.1).
        negative_slope: leaky-ReLU slope when ``activation="leaky_relu"``.
        bn_momentum: batch-norm momentum (Keras convention; FixMatch's reference uses 0.999).
        kernel_initializer: convolution initializer (default Kaiming normal, fan-out); a name,
            a Keras initializer or its serialised config (as the config stores it).

    Call arguments:
        inputs: ``(B, H, W, C)``.
        training: batch-norm and dropout mode.

    Example:
        >>> block = PreActBlock(32, strides=2, projection=True)
        >>> block(keras.ops.ones((2, 8, 8, 16))).shape
        (2, 4, 4, 32)

    Reference:
        Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016; He et al., "Identity Mappings
        in Deep Residual Networks", ECCV 2016; Sohn et al., "FixMatch", NeurIPS 2020.
    """

    def __init__(
        self,
        filters: int,
        strides: int = 1,
        projection: bool = False,
        activate_before_residual: bool = False,
        dropout: float = 0.0,
        norm: str = "batch",
        activation: str = "leaky_relu",
        negative_slope: float = 0.1,
        bn_momentum: float = 0.9,
        kernel_initializer: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.strides = int(strides)
        self.projection = bool(projection)
        self.activate_before_residual = bool(activate_before_residual)
        self.dropout = float(dropout)
        self.negative_slope = float(negative_slope)
        self.bn_momentum = float(bn_momentum)
        self.kernel_initializer = keras.initializers.get(kernel_initializer or he_fan_out())
        act = {"alpha": self.negative_slope} if activation == "leaky_relu" else {}
        self.norm1 = get_norm_layer(norm, name="norm1", momentum=self.bn_momentum)
        self.act1 = get_activation(activation, name="act1", **act)
        conv = dict(use_bias=False, kernel_initializer=self.kernel_initializer)
        self.conv1 = torch_conv(filters, 3, strides, name="conv1", **conv)
        self.norm2 = get_norm_layer(norm, name="norm2", momentum=self.bn_momentum)
        self.act2 = get_activation(activation, name="act2", **act)
        self.drop = keras.layers.Dropout(self.dropout, name="dropout") if self.dropout else None
        self.conv2 = torch_conv(filters, 3, 1, name="conv2", **conv)
        self.shortcut_conv = None
        if projection:
            self.shortcut_conv = PointwiseConv2D(
                filters, 1, strides=strides, name="shortcut_conv", **conv
            )

    def build(self, input_shape):
        if self.shortcut_conv is None and (input_shape[-1] != self.filters or self.strides != 1):
            raise ValueError(
                f"An identity shortcut needs stride 1 and {self.filters} input channels. "
                f"Received: strides={self.strides}, input channels={input_shape[-1]}. Use "
                "projection=True."
            )
        branch = [self.norm1, self.act1, self.conv1, self.norm2, self.act2, self.drop, self.conv2]
        build_chain(branch, input_shape)
        if self.shortcut_conv is not None:
            self.shortcut_conv.build(input_shape)

    def call(self, inputs, training=None):
        h = self.act1(self.norm1(inputs, training=training))
        x = self.conv1(h)
        x = self.act2(self.norm2(x, training=training))
        if self.drop is not None:
            x = self.drop(x, training=training)
        x = self.conv2(x)
        shortcut = h if self.activate_before_residual else inputs
        if self.shortcut_conv is not None:
            shortcut = self.shortcut_conv(shortcut)
        return x + shortcut
