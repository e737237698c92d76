"""PointwiseConv2D: a strided 1x1 convolution whose values and gradients equal NumPy's."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from layer_testing import keras_file_round_trip

from kerasdl import create_model
from kerasdl.layers.darts_ops import FactorizedReduce
from kerasdl.layers.pointwise_conv import SAFE_CHANNELS, PointwiseConv2D, strided_pointwise_convs
from kerasdl.layers.residual import BasicBlock, Bottleneck, PreActBlock


def _numpy_grads(x, kernel, bias, dy, stride):
    """y = x[:, ::s, ::s] @ W + b and the gradients of sum(y * dy), in float64."""
    x, w, dy = (a.astype("float64") for a in (x, kernel[0, 0], dy))
    xs = x[:, ::stride, ::stride]
    y = np.einsum("bhwc,cd->bhwd", xs, w) + bias
    dx = np.zeros_like(x)
    dx[:, ::stride, ::stride] = np.einsum("bhwd,cd->bhwc", dy, w)
    return y, np.einsum("bhwc,bhwd->cd", xs, dy), dy.sum(axis=(0, 1, 2)), dx


@pytest.mark.parametrize(
    "channels,filters,stride,size",
    [
        (2, 8, 2, 8),  # TensorFlow's strided kernel: filter gradient 40-80% off on AVX2
        (4, 2, 2, 8),  # DARTS FactorizedReduce in the tests' tiny search network
        (4, 64, 4, 16),
        (7, 8, 2, 16),
        (4, 512, 2, 8),  # TensorFlow's strided kernel: segmentation fault on AVX2
        (8, 16, 2, 9),  # from here on TensorFlow's own strided kernel runs
        (16, 32, 2, 14),
        (20, 8, 2, 8),
    ],
)
def test_values_and_gradients_equal_numpy(channels, filters, stride, size):
    rng = np.random.default_rng(channels * 100 + filters)
    conv = PointwiseConv2D(filters, 1, strides=stride)
    x = rng.normal(size=(3, size, size, channels)).astype("float32")
    conv.build(x.shape)
    conv.kernel.assign(rng.normal(size=conv.kernel.shape).astype("float32"))
    conv.bias.assign(rng.normal(size=filters).astype("float32"))
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = conv(xt)
        dy = rng.normal(size=y.shape).astype("float32")
        loss = tf.reduce_sum(y * dy)
    got = [y, *tape.gradient(loss, [conv.kernel.value, conv.bias.value, xt])]
    want = _numpy_grads(x, conv.kernel.numpy(), conv.bias.numpy(), dy, stride)
    got[1] = got[1][0, 0]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(g), w, rtol=1e-4, atol=1e-4)


def _conv_strides(conv: keras.layers.Layer, channels: int) -> list[list[int]]:
    fn = tf.function(conv).get_concrete_function(tf.TensorSpec([1, 8, 8, channels]))
    ops_ = [op for op in fn.graph.get_operations() if op.type == "Conv2D"]
    return [list(op.get_attr("strides")) for op in ops_]


def test_narrow_inputs_run_the_stride_1_form_and_wide_ones_keras_own():
    assert _conv_strides(PointwiseConv2D(4, 1, strides=2), SAFE_CHANNELS - 1) == [[1, 1, 1, 1]]
    assert _conv_strides(PointwiseConv2D(4, 1, strides=2), SAFE_CHANNELS) == [[1, 2, 2, 1]]
    assert _conv_strides(PointwiseConv2D(4, 1), 2) == [[1, 1, 1, 1]]


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_same_function_weights_and_config_as_keras_conv2d(padding, tmp_path):
    ours = PointwiseConv2D(6, 1, strides=2, padding=padding)
    ref = keras.layers.Conv2D(6, 1, strides=2, padding=padding)
    x = np.random.default_rng(0).normal(size=(2, 9, 9, 3)).astype("float32")
    ours.build(x.shape)
    ref.build(x.shape)
    ref.set_weights(ours.get_weights())
    np.testing.assert_allclose(ours(x), ref(x), rtol=1e-6, atol=1e-6)
    assert ours.compute_output_shape(x.shape) == ref(x).shape == (2, 5, 5, 6)
    _, again = keras_file_round_trip(ours, (9, 9, 3), tmp_path, keras.layers.Conv2D)
    np.testing.assert_allclose(again(x), ref(x), rtol=1e-6, atol=1e-6)


def test_rejects_a_kernel_other_than_1x1():
    with pytest.raises(ValueError, match="1x1 kernel"):
        PointwiseConv2D(4, 3, strides=2)
    with pytest.raises(ValueError, match="dilation_rate 1"):
        PointwiseConv2D(4, 1, dilation_rate=2)


def test_the_projection_shortcuts_and_factorized_reduce_use_it():
    basic = BasicBlock(16, strides=2, shortcut="projection")
    bottleneck = Bottleneck(8, strides=2, shortcut="projection")
    preact = PreActBlock(16, strides=2, projection=True)
    reduce_ = FactorizedReduce(4)
    convs = [basic.downsample_conv, bottleneck.downsample_conv, preact.shortcut_conv]
    for layer in [*convs, reduce_.conv_1, reduce_.conv_2]:
        assert type(layer) is PointwiseConv2D and tuple(layer.strides) == (2, 2)
    model = create_model("resnet50", num_classes=3, input_shape=(32, 32, 3))
    shortcuts = strided_pointwise_convs(model)
    assert len(shortcuts) == 3 and all(type(s) is PointwiseConv2D for s in shortcuts)


def test_strided_pointwise_convs_finds_them_in_a_users_model():
    inputs = keras.Input((8, 8, 3))
    plain = keras.layers.Conv2D(4, 1, strides=2, name="plain")(inputs)
    ours = PointwiseConv2D(4, 1, strides=2, name="ours")(plain)
    out = keras.layers.Conv2D(4, 3, strides=2, padding="same")(keras.layers.Conv2D(4, 1)(ours))
    model = keras.Model(inputs, out)
    assert [layer.name for layer in strided_pointwise_convs(model)] == ["plain", "ours"]
