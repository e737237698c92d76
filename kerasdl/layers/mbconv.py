"""MBConv: the inverted-residual bottleneck with depthwise convolution and squeeze-excitation.

``1x1 expand -> BN -> SiLU -> kxk depthwise (stride s) -> BN -> SiLU -> squeeze-excitation ->
1x1 project -> BN`` plus an identity shortcut (with stochastic depth on the branch) when the
stride is 1 and the channel counts match: torchvision's EfficientNet ``MBConv`` layer by layer.
Strided depthwise convolutions pad ``(k - 1) // 2`` on every side as PyTorch does (Keras
``"same"`` would pad asymmetrically), inside the kernel (:class:`PaddedDepthwiseConv2D`).

References:
    Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018.
    Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks", ICML 2019.
    Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018.
"""

from __future__ import annotations

from typing import Any

import keras

from kerasdl.configurable import ConfigurableLayer
from kerasdl.layers.activations import get_activation
from kerasdl.layers.dropconnect import DropPath
from kerasdl.layers.fused_bn import FusedBatchNormalization
from kerasdl.layers.normalization import BN_EPSILON, BN_MOMENTUM, get_norm_layer
from kerasdl.layers.squeeze_excite import SqueezeExcitation
from kerasdl.layers.torch_compat import PaddedDepthwiseConv2D


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, not going below 90% of it
    (the MobileNet/torchvision ``_make_divisible`` used for scaled channel counts)."""
    min_value = min_value or divisor
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def conv_kaiming_fan_out(groups_per_channel: int = 1) -> keras.initializers.Initializer:
    """PyTorch's ``kaiming_normal_(mode="fan_out")`` for a conv (``groups_per_channel`` = the
    channel count for a depthwise kernel, whose Keras fan-out leaves the channels out)."""
    return keras.initializers.VarianceScaling(
        2.0 / groups_per_channel, "fan_out", "untruncated_normal"
    )


@keras.saving.register_keras_serializable(package="kerasdl")
class MBConv(ConfigurableLayer):
    """Mobile inverted bottleneck with squeeze-excitation (EfficientNet's block).

    Args:
        input_channels: input channels.
        out_channels: output channels.
        expand_ratio: expansion factor of the hidden width (1 skips the expansion conv).
        kernel_size: depthwise kernel size.
        stride: depthwise stride (1 or 2).
        se_ratio: squeeze width as a fraction of ``input_channels`` (0.25; 0 disables SE).
        drop_path: stochastic-depth rate of the residual branch.
        activation: activation (SiLU in EfficientNet).
        norm: normalization choice (see ``kerasdl.layers.normalization``).
        bn_momentum: batch-norm momentum (Keras convention).
        bn_epsilon: batch-norm epsilon.

    Call arguments:
        inputs: ``(B, H, W, input_channels)``.
        training: batch-norm mode and stochastic depth.

    Example:
        >>> block = MBConv(16, 24, expand_ratio=6, kernel_size=3, stride=2)
        >>> y = block(keras.ops.ones((1, 32, 32, 16)))  # (1, 16, 16, 24)

    Reference:
        Tan & Le, "EfficientNet", ICML 2019; Sandler et al., "MobileNetV2", CVPR 2018.
    """

    def __init__(
        self,
        input_channels: int,
        out_channels: int,
        expand_ratio: float = 6,
        kernel_size: int = 3,
        stride: int = 1,
        se_ratio: float = 0.25,
        drop_path: float = 0.0,
        activation: str = "silu",
        norm: str = "batch",
        bn_momentum: float = BN_MOMENTUM,
        bn_epsilon: float = BN_EPSILON,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if stride not in (1, 2):
            raise ValueError(f"MBConv stride must be 1 or 2. Received: {stride}")
        self.input_channels = int(input_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = int(kernel_size)
        self.stride = int(stride)
        self.se_ratio = float(se_ratio)
        self.drop_path = float(drop_path)
        self.expanded = make_divisible(self.input_channels * expand_ratio, 8)
        self.use_residual = self.stride == 1 and self.input_channels == self.out_channels

        def bn(name):
            return get_norm_layer(norm, name=name, momentum=bn_momentum, epsilon=bn_epsilon)

        self.expand = None
        if self.expanded != self.input_channels:
            self.expand = keras.layers.Conv2D(
                self.expanded,
                1,
                use_bias=False,
                kernel_initializer=conv_kaiming_fan_out(),
                name="expand_conv",
            )
            self.expand_bn = bn("expand_bn")
            self.expand_act = get_activation(activation, name="expand_act")
        dw_init = conv_kaiming_fan_out(self.expanded)
        if self.stride == 2:  # PyTorch's symmetric padding, without a padded copy
            self.depthwise = PaddedDepthwiseConv2D(
                self.kernel_size,
                pad=(self.kernel_size - 1) // 2,
                strides=2,
                use_bias=False,
                depthwise_initializer=dw_init,
                name="depthwise_conv",
            )
        else:  # "same" is symmetric at stride 1 with an odd kernel
            self.depthwise = keras.layers.DepthwiseConv2D(
                self.kernel_size,
                padding="same",
                use_bias=False,
                depthwise_initializer=dw_init,
                name="depthwise_conv",
            )
        self.depthwise_bn = bn("depthwise_bn")
        self.depthwise_act = get_activation(activation, name="depthwise_act")
        self.se = None
        if self.se_ratio > 0:
            squeeze = max(1, int(self.input_channels * self.se_ratio))
            self.se = SqueezeExcitation(self.expanded, squeeze, activation=activation, name="se")
        self.project = keras.layers.Conv2D(
            self.out_channels,
            1,
            use_bias=False,
            kernel_initializer=conv_kaiming_fan_out(),
            name="project_conv",
        )
        self.project_bn = bn("project_bn")
        self.drop = DropPath(self.drop_path, name="drop_path")

    def build(self, input_shape):
        shape = tuple(input_shape)
        if self.expand is not None:
            self.expand.build(shape)
            shape = (*shape[:-1], self.expanded)
            self.expand_bn.build(shape)
        self.depthwise.build(shape)
        shape = self.depthwise.compute_output_shape(shape)
        self.depthwise_bn.build(shape)
        if self.se is not None:
            self.se.build(shape)
        self.project.build(shape)
        self.project_bn.build((*shape[:-1], self.out_channels))

    def call(self, inputs, training=None):
        x = inputs
        if self.expand is not None:
            x = self.expand_act(self.expand_bn(self.expand(x), training=training))
        if self._fold_ok(training):
            x = self.depthwise_act(self._folded_depthwise(x))
        else:
            x = self.depthwise_act(self.depthwise_bn(self.depthwise(x), training=training))
        if self.se is not None:
            x = self.se(x)
        x = self.project_bn(self.project(x), training=training)
        if self.use_residual:
            x = inputs + self.drop(x, training=training)
        return x

    def _fold_ok(self, training) -> bool:
        """Inference on TensorFlow with kerasdl's fused batch norm after the depthwise conv."""
        return (
            not training
            and keras.backend.backend() == "tensorflow"
            and isinstance(self.depthwise_bn, FusedBatchNormalization)
            and self.depthwise_bn.use_fused_kernel
            and self.depthwise_bn.axis in (-1, 3)
            # Not the stride-2 convs, which pad inside the kernel: TensorFlow 2.21 aborts on an
            # explicitly padded depthwise conv followed by a bias add (PaddedDepthwiseConv2D).
            and not getattr(self.depthwise, "pad", 0)
            and "call" not in vars(self.depthwise)  # instrumented (MAC counting): call it
        )

    def _folded_depthwise(self, x):
        """Depthwise conv and batch norm (inference) as one depthwise conv with the batch norm
        folded into its kernel and bias: the same function to float rounding, which oneDNN runs
        as one fused kernel (``_FusedDepthwiseConv2dNative`` with ``BiasAdd``) instead of a
        convolution and a separate batch-norm pass (EfficientNet-B0 inference: 12 of its 16
        depthwise convs, the stride-1 ones)."""
        import tensorflow as tf

        scale, shift = self.depthwise_bn.inference_scale_shift()  # (C,) float32
        dw = self.depthwise  # stride 1, "same"
        kernel = tf.cast(tf.cast(dw.kernel, tf.float32) * scale[:, None], x.dtype)
        y = tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], "SAME")
        return tf.nn.bias_add(y, tf.cast(shift, y.dtype))

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        if self.stride == 2:
            pad = (self.kernel_size - 1) // 2
            h = None if h is None else (h + 2 * pad - self.kernel_size) // 2 + 1
            w = None if w is None else (w + 2 * pad - self.kernel_size) // 2 + 1
        return (b, h, w, self.out_channels)
