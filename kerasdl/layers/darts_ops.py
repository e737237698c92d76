"""The DARTS candidate operations, after the reference code (quark0/darts, ``operations.py``).

Every operation maps ``C`` channels to ``C`` channels at stride 1 (normal cell) or 2 (edges from
the cell inputs of a reduction cell). Convolutions use the reference's ReLU-Conv-BN ordering,
without biases; ``affine=False`` gives batch norm without scale and offset (used during the search,
where the architecture weights alpha must not be rescaled by learned BN parameters).

* ``sep_conv_kxk`` (:class:`SepConv`): two stacked ReLU - depthwise kxk - pointwise 1x1 - BN.
* ``dil_conv_kxk`` (:class:`DilConv`): ReLU - depthwise kxk with dilation 2 - pointwise 1x1 - BN.
* ``max_pool_3x3`` / ``avg_pool_3x3`` (:class:`Pool3x3`): padding 1; the average excludes the
  padding from the count (PyTorch ``count_include_pad=False``).
* ``skip_connect``: identity at stride 1, :class:`FactorizedReduce` at stride 2.
* ``none`` (:class:`Zero`): zeros of the output shape.

Strided operations pad symmetrically like the PyTorch reference (Keras ``"same"`` padding would pad
only bottom/right at stride 2 and shift the sampling grid by one pixel).

Reference:
    Liu, Simonyan & Yang, "DARTS: Differentiable Architecture Search", ICLR 2019,
    https://github.com/quark0/darts (``cnn/operations.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import ops

from kerasdl.configurable import ConfigurableLayer
from kerasdl.layers.base import build_chain
from kerasdl.layers.normalization import get_norm_layer
from kerasdl.layers.pointwise_conv import PointwiseConv2D
from kerasdl.layers.pooling import max_pool
from kerasdl.layers.torch_compat import PaddedDepthwiseConv2D

PRIMITIVES = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)


def _bn(affine: bool, name: str) -> keras.layers.Layer:
    """Batch norm with PyTorch's momentum/epsilon; ``affine=False`` drops gamma and beta."""
    return get_norm_layer("batch", name=name, center=affine, scale=affine)


class _Sequence(ConfigurableLayer):
    """A layer that applies ``self.chain`` in order (the sub-layers are made by subclasses)."""

    chain: list[keras.layers.Layer]

    def build(self, input_shape):
        build_chain(self.chain, input_shape)

    def call(self, x, training=None):
        for layer in self.chain:
            x = layer(x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.chain:
            shape = tuple(layer.compute_output_shape(shape))
        return shape


def _depthwise(kernel: int, stride: int, padding: int, dilation: int, name: str) -> list:
    """A depthwise convolution with PyTorch's symmetric padding.

    At stride 1 ``"same"`` padding is symmetric for odd kernels. At stride 2 the kernel pads
    (:class:`PaddedDepthwiseConv2D`). With dilation 2 as well (which Keras convolutions do not
    combine with strides) the input is padded explicitly: a stride-2 dilation-2 convolution
    equals a stride-1 undilated convolution on the padded input subsampled by 2 (every tap of a
    dilation-2 kernel at an even position reads an even position).
    """
    if stride == 1:
        return [
            keras.layers.DepthwiseConv2D(
                kernel, padding="same", dilation_rate=dilation, use_bias=False, name=name
            )
        ]
    if dilation == 1:
        conv = PaddedDepthwiseConv2D(kernel, pad=padding, strides=stride, use_bias=False, name=name)
        return [conv]
    pad = keras.layers.ZeroPadding2D(padding, name=f"{name}_pad")
    if dilation != stride:
        raise ValueError(f"dilation {dilation} with stride {stride} is not supported")
    sub = keras.layers.MaxPooling2D(1, strides=stride, name=f"{name}_subsample")
    conv = keras.layers.DepthwiseConv2D(kernel, padding="valid", use_bias=False, name=name)
    return [pad, sub, conv]


@keras.saving.register_keras_serializable(package="kerasdl")
class ReLUConvBN(_Sequence):
    """ReLU - kxk convolution (no bias) - batch norm: the DARTS cell preprocessing.

    Args:
        channels: output channels.
        kernel_size: convolution size (the cells use 1).
        stride: convolution stride.
        affine: learn BN scale and offset.

    Call arguments:
        x: ``(B, H, W, C_in)``.
        training: batch statistics when true.

    Example:
        >>> y = ReLUConvBN(16)(keras.ops.ones((2, 8, 8, 48)))

    Reference:
        Liu et al., DARTS, ICLR 2019 (``ReLUConvBN`` in ``operations.py``).
    """

    def __init__(
        self, channels: int, kernel_size: int = 1, stride: int = 1, affine: bool = True, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.chain = [
            keras.layers.ReLU(name="relu"),
            keras.layers.Conv2D(
                channels, kernel_size, strides=stride, padding="same", use_bias=False, name="conv"
            ),
            _bn(affine, "bn"),
        ]


@keras.saving.register_keras_serializable(package="kerasdl")
class DilConv(_Sequence):
    """ReLU - dilated depthwise kxk - pointwise 1x1 - BN (``dil_conv_3x3``: k=3, d=2, pad 2).

    Args:
        channels: input and output channels.
        kernel_size: depthwise kernel size.
        stride: 1 or 2.
        dilation: dilation of the depthwise kernel.
        affine: learn BN scale and offset.

    Call arguments:
        x: ``(B, H, W, channels)``.
        training: batch statistics when true.

    Example:
        >>> y = DilConv(16, 3)(keras.ops.ones((2, 8, 8, 16)))

    Reference:
        Liu et al., DARTS, ICLR 2019 (``DilConv`` in ``operations.py``).
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 2,
        affine: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        padding = dilation * (kernel_size - 1) // 2
        self.chain = [
            keras.layers.ReLU(name="relu"),
            *_depthwise(kernel_size, stride, padding, dilation, "depthwise"),
            keras.layers.Conv2D(channels, 1, use_bias=False, name="pointwise"),
            _bn(affine, "bn"),
        ]


@keras.saving.register_keras_serializable(package="kerasdl")
class SepConv(_Sequence):
    """Two stacked ReLU - depthwise kxk - pointwise 1x1 - BN; only the first is strided.

    Args:
        channels: input and output channels.
        kernel_size: depthwise kernel size (3 or 5 in the search space).
        stride: stride of the first depthwise convolution.
        affine: learn BN scale and offset.

    Call arguments:
        x: ``(B, H, W, channels)``.
        training: batch statistics when true.

    Example:
        >>> y = SepConv(16, 5, stride=2)(keras.ops.ones((2, 8, 8, 16)))  # (2, 4, 4, 16)

    Reference:
        Liu et al., DARTS, ICLR 2019 (``SepConv`` in ``operations.py``).
    """

    def __init__(
        self, channels: int, kernel_size: int = 3, stride: int = 1, affine: bool = True, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        padding = (kernel_size - 1) // 2
        self.chain = [
            keras.layers.ReLU(name="relu1"),
            *_depthwise(kernel_size, stride, padding, 1, "depthwise1"),
            keras.layers.Conv2D(channels, 1, use_bias=False, name="pointwise1"),
            _bn(affine, "bn1"),
            keras.layers.ReLU(name="relu2"),
            *_depthwise(kernel_size, 1, padding, 1, "depthwise2"),
            keras.layers.Conv2D(channels, 1, use_bias=False, name="pointwise2"),
            _bn(affine, "bn2"),
        ]


@keras.saving.register_keras_serializable(package="kerasdl")
class FactorizedReduce(ConfigurableLayer):
    """Halve the resolution with two offset 1x1 stride-2 convolutions, concatenated, then BN.

    ReLU, then ``conv_1(x)`` and ``conv_2(x[:, 1:, 1:])`` with ``channels // 2`` filters each, so
    that both pixel phases are seen. Odd inputs are zero-padded at the bottom/right of the shifted
    branch so that both halves have ``ceil(H / 2)`` rows (even inputs are unaffected).

    Args:
        channels: output channels (even).
        affine: learn BN scale and offset.

    Call arguments:
        x: ``(B, H, W, C_in)``.
        training: batch statistics when true.

    Example:
        >>> y = FactorizedReduce(32)(keras.ops.ones((2, 8, 8, 16)))  # (2, 4, 4, 32)

    Reference:
        Liu et al., DARTS, ICLR 2019 (``FactorizedReduce`` in ``operations.py``); Zoph et al.,
        "Learning Transferable Architectures for Scalable Image Recognition", CVPR 2018.
    """

    def __init__(self, channels: int, affine: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        if channels % 2:
            raise ValueError(f"FactorizedReduce needs an even channel count. Received: {channels}")
        self.relu = keras.layers.ReLU(name="relu")
        # stride-2 1x1 convolutions: on fewer than 8 input channels their filter gradient is
        # right on an AVX2 CPU with oneDNN only in kerasdl/layers/exact_conv.py's form
        conv = dict(strides=2, use_bias=False)
        self.conv_1 = PointwiseConv2D(channels // 2, 1, name="conv_1", **conv)
        self.conv_2 = PointwiseConv2D(channels // 2, 1, name="conv_2", **conv)
        self.bn = _bn(affine, "bn")

    def build(self, input_shape):
        self.conv_1.build(input_shape)
        self.conv_2.build(input_shape)
        self.bn.build(self.compute_output_shape(input_shape))

    def call(self, x, training=None):
        x = self.relu(x)
        shifted = ops.pad(x[:, 1:, 1:, :], [[0, 0], [0, 1], [0, 1], [0, 0]])
        out = ops.concatenate([self.conv_1(x), self.conv_2(shifted)], axis=-1)
        return self.bn(out, training=training)

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        half = lambda n: None if n is None else (n + 1) // 2  # noqa: E731
        return (b, half(h), half(w), self.channels)


@keras.saving.register_keras_serializable(package="kerasdl")
class Pool3x3(ConfigurableLayer):
    """3x3 max or average pooling with PyTorch's symmetric padding 1.

    Max pooling pads with -inf and average pooling divides by the number of real pixels in each
    window (PyTorch ``count_include_pad=False``), at stride 1 and 2.

    Args:
        mode: ``"max"`` or ``"avg"``.
        stride: 1 or 2.

    Call arguments:
        x: ``(B, H, W, C)``.

    Example:
        >>> y = Pool3x3("avg", stride=2)(keras.ops.ones((2, 8, 8, 16)))  # (2, 4, 4, 16)

    Reference:
        Liu et al., DARTS, ICLR 2019 (``OPS`` in ``operations.py``).
    """

    def __init__(self, mode: str = "max", stride: int = 1, **kwargs) -> None:
        super().__init__(**kwargs)
        if mode not in ("max", "avg"):
            raise ValueError(f"mode must be 'max' or 'avg'. Received: {mode!r}")

    def call(self, x, training=None):
        if self.stride == 1:  # "same" at stride 1 is symmetric and already excludes the padding
            if self.mode == "max":
                return max_pool(x, 3, 1, "same", training=training)
            return ops.average_pool(x, 3, 1, padding="same")
        pads = [[0, 0], [1, 1], [1, 1], [0, 0]]
        if self.mode == "max":
            padded = ops.pad(x, pads, constant_values=float("-inf"))
            return max_pool(padded, 3, self.stride, "valid", training=training)
        total = ops.average_pool(ops.pad(x, pads), 3, self.stride, "valid")
        count = ops.average_pool(ops.pad(ops.ones_like(x[..., :1]), pads), 3, self.stride, "valid")
        return total / count

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        if self.stride == 1:
            return tuple(input_shape)
        out = lambda n: None if n is None else (n - 1) // self.stride + 1  # noqa: E731
        return (b, out(h), out(w), c)


@keras.saving.register_keras_serializable(package="kerasdl")
class Zero(ConfigurableLayer):
    """The ``none`` operation: zeros with the output shape (``x[:, ::stride, ::stride] * 0``).

    Args:
        stride: 1 or 2.

    Call arguments:
        x: ``(B, H, W, C)``.

    Example:
        >>> y = Zero(2)(keras.ops.ones((2, 8, 8, 16)))  # zeros (2, 4, 4, 16)

    Reference:
        Liu et al., DARTS, ICLR 2019 (``Zero`` in ``operations.py``).
    """

    def __init__(self, stride: int = 1, **kwargs) -> None:
        super().__init__(**kwargs)

    def call(self, x):
        return ops.zeros_like(x[:, :: self.stride, :: self.stride, :])

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        out = lambda n: None if n is None else (n - 1) // self.stride + 1  # noqa: E731
        return (b, out(h), out(w), c)


OpBuilder = Callable[[int, int, bool, str], keras.layers.Layer]

OPS: dict[str, OpBuilder] = {
    "none": lambda c, s, a, n: Zero(s, name=n),
    "max_pool_3x3": lambda c, s, a, n: Pool3x3("max", s, name=n),
    "avg_pool_3x3": lambda c, s, a, n: Pool3x3("avg", s, name=n),
    "skip_connect": lambda c, s, a, n: (
        keras.layers.Identity(name=n) if s == 1 else FactorizedReduce(c, a, name=n)
    ),
    "sep_conv_3x3": lambda c, s, a, n: SepConv(c, 3, s, a, name=n),
    "sep_conv_5x5": lambda c, s, a, n: SepConv(c, 5, s, a, name=n),
    "dil_conv_3x3": lambda c, s, a, n: DilConv(c, 3, s, 2, a, name=n),
    "dil_conv_5x5": lambda c, s, a, n: DilConv(c, 5, s, 2, a, name=n),
}


def make_op(
    op_name: str, channels: int, stride: int, affine: bool, name: str | None = None
) -> keras.layers.Layer:
    """The candidate operation ``op_name`` (one of :data:`PRIMITIVES`) on ``channels`` channels.

    Args:
        op_name: operation name.
        channels: input = output channels.
        stride: 1 or 2.
        affine: learn BN scale and offset (False in the search network).
        name: layer name.
    """
    if op_name not in OPS:
        raise ValueError(f"Unknown DARTS operation {op_name!r}. Expected one of: {', '.join(OPS)}")
    return OPS[op_name](channels, stride, affine, name)
