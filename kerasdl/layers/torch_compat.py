"""Layers with PyTorch's exact semantics, for reference-faithful ports of torchvision models.

Keras' ``padding="same"`` pads asymmetrically when the stride is above 1 (more at the end);
PyTorch pads ``padding`` cells on both sides and optionally rounds the output size up
(``ceil_mode``). The windows therefore land on different pixels. :class:`PaddedConv2D` and
:class:`PaddedMaxPooling2D` reproduce ``nn.Conv2d`` and ``nn.MaxPool2d`` exactly
(:class:`PaddedDepthwiseConv2D` ``nn.Conv2d(groups=C)``, without a padded copy);
:func:`torch_conv` picks plain ``padding="same"`` where the two agree (stride 1, odd kernel).

:class:`AdaptiveAveragePooling2D` reproduces ``nn.AdaptiveAvgPool2d``'s bins for every input size.
(``keras.layers.AdaptiveAveragePooling2D`` has the same bins but, on Keras 3.15's TensorFlow
backend, fails inside ``tf.function`` when the output is larger than the input, e.g. AlexNet's
6x6 pool on a 1x1 map.)

:class:`GroupedConv2D` is ``keras.layers.Conv2D`` whose grouped convolution (``groups > 1``) runs
TensorFlow's own grouped ``Conv2D`` kernel (oneDNN on the CPU) instead of Keras 3.15's XLA
fallback, which took minutes per ResNeXt-50 training step on the CPU.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from kerasdl.configurable import Configurable, ConfigurableLayer
from kerasdl.layers.pooling import max_pool


def _native_grouped(layer: keras.layers.Conv2D) -> bool:
    """TensorFlow's grouped kernel: on the TF backend with oneDNN, which has the CPU gradients
    (Eigen has no CPU kernel for a grouped convolution's filter gradient)."""
    if layer.groups == 1 or keras.backend.backend() != "tensorflow":
        return False
    from kerasdl import onednn

    return onednn.enabled()


@keras.saving.register_keras_serializable(package="kerasdl")
class GroupedConv2D(keras.layers.Conv2D):
    """``keras.layers.Conv2D``, the same function and weights, with a fast grouped convolution.

    Keras 3.15 routes every grouped convolution on the TensorFlow backend through an XLA-compiled
    function ("grouped convolutions are broken on CPU without XLA"). TensorFlow 2.21's own
    ``Conv2D`` with a kernel of ``C_in / groups`` input channels runs on the CPU (oneDNN), forward
    and both gradients, and agrees with the per-group convolutions to float rounding
    (tests/test_grouped_conv.py); it is 1.2x PyTorch's ``nn.Conv2d(groups=32)`` on ResNeXt-50's
    first-stage 3x3 convolution, forward and backward, where the XLA path took over a minute per
    step of the whole network. Other backends, ``groups=1`` and TensorFlow without oneDNN (whose
    Eigen kernels have no grouped filter gradient; ``import kerasdl`` turns oneDNN on, see
    :mod:`kerasdl.onednn`) keep Keras's own path.

    Example:
        >>> conv = GroupedConv2D(128, 3, padding="same", groups=32)
        >>> conv(keras.ops.ones((1, 56, 56, 128))).shape
        (1, 56, 56, 128)
    """

    def convolution_op(self, inputs, kernel):
        if not _native_grouped(self):
            return super().convolution_op(inputs, kernel)
        import tensorflow as tf

        return tf.nn.convolution(
            inputs,
            kernel,
            strides=list(self.strides),
            padding=self.padding.upper(),
            dilations=list(self.dilation_rate),
            data_format="NHWC" if self.data_format == "channels_last" else "NCHW",
        )


@keras.saving.register_keras_serializable(package="kerasdl")
class PaddedConv2D(Configurable, GroupedConv2D):
    """``keras.layers.Conv2D`` with PyTorch's symmetric zero padding (``nn.Conv2d(padding=p)``).

    Args:
        filters: output channels.
        kernel_size: kernel side.
        pad: zero cells added on each side of height and width before a valid convolution.
        **kwargs: any other ``Conv2D`` argument (``strides``, ``groups``, ``use_bias``, ...).

    Call arguments:
        inputs: ``(B, H, W, C)``.

    Example:
        >>> conv = PaddedConv2D(64, 7, pad=3, strides=2, use_bias=False)  # ResNet stem
        >>> conv(keras.ops.ones((1, 224, 224, 3))).shape
        (1, 112, 112, 64)

    Reference:
        PyTorch ``torch.nn.Conv2d`` documentation (output-size formula).
    """

    config_exclude = ("filters", "kernel_size")  # in Conv2D's config, as Keras normalises them

    def __init__(self, filters: int, kernel_size: int = 3, pad: int = 0, **kwargs: Any) -> None:
        kwargs["padding"] = "valid"
        super().__init__(filters, kernel_size, **kwargs)
        self.pad = int(pad)

    def call(self, inputs):
        if self.pad:
            p = self.pad
            inputs = ops.pad(inputs, [[0, 0], [p, p], [p, p], [0, 0]])
        return super().call(inputs)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        grow = 2 * self.pad
        return super().compute_output_shape(
            (b, None if h is None else h + grow, None if w is None else w + grow, c)
        )


@keras.saving.register_keras_serializable(package="kerasdl")
class PaddedDepthwiseConv2D(Configurable, keras.layers.DepthwiseConv2D):
    """``keras.layers.DepthwiseConv2D`` with PyTorch's symmetric zero padding.

    ``nn.Conv2d(C, C, k, stride, padding=pad, groups=C)``: ``pad`` zero cells on each side of
    height and width, then a valid depthwise convolution. On TensorFlow (channels last, no
    dilation) the padding is passed to the kernel itself (``EXPLICIT`` padding), so no padded
    copy of the input is made forward and no ``Slice`` of the gradient backward; oneDNN runs it
    forward and TensorFlow both gradients. The values equal ``ZeroPadding2D`` followed by a valid
    ``DepthwiseConv2D`` exactly (the filter gradient to float rounding, the summation order
    differs); measured forward + backward at batch 16 on the 2-core CPU: 92 -> 84 ms for
    EfficientNet-B0's stride-2 3x3 layer at 112x112x96, 54 -> 49 ms for its 5x5 at 56x56x144.
    With a bias, and on other backends, dilations and layouts, the input is padded with
    ``ops.pad`` (TensorFlow 2.21 aborts on an explicitly padded depthwise conv followed by a bias
    add in a graph, see ``_explicit_ok``). Do not add a bias to this layer's output yourself.

    Args:
        kernel_size: kernel side.
        pad: zero cells added on each side of height and width.
        **kwargs: any other ``DepthwiseConv2D`` argument (``strides``, ``use_bias``, ...).

    Call arguments:
        inputs: ``(B, H, W, C)``.

    Example:
        >>> conv = PaddedDepthwiseConv2D(5, pad=2, strides=2, use_bias=False)
        >>> conv(keras.ops.ones((1, 56, 56, 144))).shape
        (1, 28, 28, 144)

    Reference:
        PyTorch ``torch.nn.Conv2d`` documentation (``groups``, output-size formula).
    """

    config_exclude = ("kernel_size",)  # in DepthwiseConv2D's config, as Keras normalises it

    def __init__(self, kernel_size: int = 3, pad: int = 0, **kwargs: Any) -> None:
        kwargs["padding"] = "valid"
        super().__init__(kernel_size, **kwargs)
        self.pad = int(pad)

    def _explicit_ok(self) -> bool:
        # No bias: TensorFlow 2.21's remapper fuses an EXPLICIT-padded depthwise conv with a
        # following bias add (BiasAdd or AddV2) into a fused op without the paddings, and its
        # shape inference then aborts the process (a CHECK failure, tests/test_fused_grads.py).
        return (
            keras.backend.backend() == "tensorflow"
            and self.data_format == "channels_last"
            and tuple(self.dilation_rate) == (1, 1)
            and not self.use_bias
        )

    def call(self, inputs):
        if not self.pad:
            return super().call(inputs)
        p = self.pad
        if not self._explicit_ok():
            return super().call(ops.pad(inputs, [[0, 0], [p, p], [p, p], [0, 0]]))
        import tensorflow as tf

        outputs = tf.nn.depthwise_conv2d(
            inputs,
            tf.cast(self.kernel, inputs.dtype),
            strides=[1, *self.strides, 1],
            padding=[[0, 0], [p, p], [p, p], [0, 0]],
        )
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        grow = 2 * self.pad
        return super().compute_output_shape(
            (b, None if h is None else h + grow, None if w is None else w + grow, c)
        )


def torch_conv(
    filters: int, kernel_size: int, strides: int = 1, *, name: str | None = None, **kwargs: Any
) -> keras.layers.Conv2D:
    """A convolution padded like ``nn.Conv2d(..., padding=kernel_size // 2)``.

    Stride 1 with an odd kernel: ``Conv2D(padding="same")`` (identical windows); otherwise a
    :class:`PaddedConv2D`.
    """
    if strides == 1 and kernel_size % 2 == 1:
        conv = GroupedConv2D if kwargs.get("groups", 1) > 1 else keras.layers.Conv2D
        return conv(filters, kernel_size, padding="same", name=name, **kwargs)
    return PaddedConv2D(
        filters, kernel_size, pad=kernel_size // 2, strides=strides, name=name, **kwargs
    )


def pooled_size(size: int, pool_size: int, strides: int, padding: int, ceil_mode: bool) -> int:
    """Output length of PyTorch's ``MaxPool2d`` along one axis (dilation 1).

    With ``ceil_mode`` the last window may run past the input, but it must start inside the input
    or the left padding (the rule in PyTorch's ``pooling_output_shape``).
    """
    span = size + 2 * padding - pool_size
    if ceil_mode:
        out = math.ceil(span / strides) + 1
        if (out - 1) * strides >= size + padding:
            out -= 1
    else:
        out = span // strides + 1
    return out


@keras.saving.register_keras_serializable(package="kerasdl")
class PaddedMaxPooling2D(ConfigurableLayer):
    """Max pooling with PyTorch ``nn.MaxPool2d`` semantics (symmetric padding, ceil mode).

    The input is padded with ``-inf`` (padding never wins the max), ``padding`` cells on each
    side, plus the extra cells at the end that ``ceil_mode`` needs; then a valid max-pool runs.
    Where those pads are the ones TF's ``"same"`` padding would use, a ``"same"`` max-pool runs on
    the input itself: the same windows, without the padded copy.

    Args:
        pool_size: square window side.
        strides: step between windows (defaults to ``pool_size``).
        padding: cells of padding on each side of height and width.
        ceil_mode: round the output size up instead of down.

    Call arguments:
        inputs: ``(B, H, W, C)`` feature map.

    Example:
        >>> pool = PaddedMaxPooling2D(3, strides=2, padding=1)  # torchvision ResNet stem
        >>> pool(keras.ops.ones((1, 112, 112, 64))).shape
        (1, 56, 56, 64)

    Reference:
        PyTorch ``torch.nn.MaxPool2d`` documentation (output-size formula).
    """

    def __init__(
        self,
        pool_size: int = 2,
        strides: int | None = None,
        padding: int = 0,
        ceil_mode: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pool_size = int(pool_size)
        self.strides = int(strides or pool_size)
        self.padding = int(padding)
        self.ceil_mode = bool(ceil_mode)
        if self.padding * 2 > self.pool_size:
            raise ValueError(
                f"padding must be at most half the pool size. Received: padding={padding}, "
                f"pool_size={pool_size}"
            )

    def _pads(self, size: int) -> tuple[int, int]:
        out = pooled_size(size, self.pool_size, self.strides, self.padding, self.ceil_mode)
        end = (out - 1) * self.strides + self.pool_size - size - self.padding
        return self.padding, max(end, 0)

    def _same_pads(self, size: int) -> tuple[int, int] | None:
        """TF's ``"same"`` padding along an axis of ``size``, if it gives this layer's output."""
        out = -(-size // self.strides)
        if out != pooled_size(size, self.pool_size, self.strides, self.padding, self.ceil_mode):
            return None
        total = max((out - 1) * self.strides + self.pool_size - size, 0)
        return total // 2, total - total // 2

    def call(self, inputs, training=None):
        h, w = ops.shape(inputs)[1], ops.shape(inputs)[2]
        (top, bottom), (left, right) = self._pads(h), self._pads(w)
        if (top or bottom or left or right) and (
            self._same_pads(h) == (top, bottom) and self._same_pads(w) == (left, right)
        ):
            # The same windows: TF's "same" max-pool skips its padding cells, as -inf never wins,
            # and saves the padded copy and its gradient (GoogLeNet's ceil-mode pools, even sizes).
            return max_pool(inputs, self.pool_size, self.strides, "same", training=training)
        x = inputs
        if top or bottom or left or right:
            x = ops.pad(
                x, [[0, 0], [top, bottom], [left, right], [0, 0]], constant_values=float("-inf")
            )
        return max_pool(x, self.pool_size, self.strides, "valid", training=training)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape

        def size(n):
            if n is None:
                return None
            return pooled_size(n, self.pool_size, self.strides, self.padding, self.ceil_mode)

        return (b, size(h), size(w), c)


def adaptive_pool_matrix(size: int, out: int) -> list[list[float]]:
    """The ``(out, size)`` averaging matrix of PyTorch's adaptive average pooling along one axis.

    Row ``i`` averages the cells ``floor(i size / out) <= j < ceil((i + 1) size / out)``.
    """
    rows = []
    for i in range(out):
        start, end = (i * size) // out, -((-(i + 1) * size) // out)
        rows.append([1.0 / (end - start) if start <= j < end else 0.0 for j in range(size)])
    return rows


@keras.saving.register_keras_serializable(package="kerasdl")
class AdaptiveAveragePooling2D(ConfigurableLayer):
    """Average pooling to a fixed output size with PyTorch ``nn.AdaptiveAvgPool2d``'s bins.

    Bin ``i`` of an axis of length ``H`` pooled to ``out`` covers
    ``[floor(i H / out), ceil((i + 1) H / out))``; bins overlap when ``H`` does not divide evenly
    and repeat cells when ``out > H``. The pooling is two small matrix products with the
    averaging matrices of height and width (static spatial sizes are required).

    Args:
        output_size: ``int`` or ``(out_h, out_w)``.

    Call arguments:
        inputs: ``(B, H, W, C)`` with static ``H`` and ``W``.

    Example:
        >>> pool = AdaptiveAveragePooling2D(7)  # torchvision VGG's avgpool
        >>> pool(keras.ops.ones((1, 13, 13, 512))).shape
        (1, 7, 7, 512)

    Reference:
        PyTorch ``torch.nn.AdaptiveAvgPool2d`` (``aten/src/ATen/native/AdaptiveAveragePooling.cpp``
        start/end index formulas).
    """

    def __init__(self, output_size: int | tuple[int, int] | list[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(output_size, int):
            output_size = (output_size, output_size)
        self.output_size = tuple(int(s) for s in output_size)

    def build(self, input_shape):
        h, w = input_shape[1], input_shape[2]
        if h is None or w is None:
            raise ValueError(
                f"AdaptiveAveragePooling2D needs static H and W. Received: {input_shape}"
            )
        # Constant matrices, not weights: they are rebuilt from the input shape.
        self._pool_h = adaptive_pool_matrix(h, self.output_size[0])
        self._pool_w = adaptive_pool_matrix(w, self.output_size[1])
        super().build(input_shape)

    def call(self, inputs):
        if tuple(inputs.shape[1:3]) == tuple(self.output_size):
            return inputs  # one pixel per bin: the pooling matrices are identities
        ph = ops.convert_to_tensor(self._pool_h, dtype=inputs.dtype)
        pw = ops.convert_to_tensor(self._pool_w, dtype=inputs.dtype)
        return ops.einsum("ih,bhwc,jw->bijc", ph, inputs, pw)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.output_size, input_shape[-1])
