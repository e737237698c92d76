"""GroupedConv2D: TensorFlow's native grouped convolution, the function of keras.layers.Conv2D."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasdl import create_model, onednn
from kerasdl.layers.torch_compat import GroupedConv2D, PaddedConv2D, torch_conv


def _per_group(x, kernel, bias, groups, strides, padding, dilation):
    """The definition: each group of input channels convolved with its own filters."""
    xs = tf.split(x, groups, axis=-1)
    ks = tf.split(kernel, groups, axis=-1)
    if dilation == 1:
        out = [tf.nn.conv2d(a, k, strides, padding.upper()) for a, k in zip(xs, ks, strict=True)]
    else:  # space-to-batch form: Eigen (oneDNN off) has no dilated conv gradient
        assert strides == 1
        out = [
            tf.nn.atrous_conv2d(a, k, dilation, padding.upper())
            for a, k in zip(xs, ks, strict=True)
        ]
    return tf.concat(out, -1) + bias


@pytest.mark.parametrize(
    "groups,strides,padding,dilation",
    [(4, 1, "same", 1), (2, 2, "valid", 1), (8, 1, "same", 2), (16, 2, "same", 1)],
)
def test_matches_per_group_convolutions_with_gradients(groups, strides, padding, dilation):
    keras.utils.set_random_seed(0)
    conv = GroupedConv2D(
        32, 3, strides=strides, padding=padding, dilation_rate=dilation, groups=groups
    )
    x = tf.random.normal([2, 11, 11, 16])
    conv.build(x.shape)
    conv.bias.assign(tf.random.normal([32]))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        got = conv(x)
        want = _per_group(x, conv.kernel, conv.bias, groups, strides, padding, dilation)
        loss_got = tf.reduce_sum(got * got)
        loss_want = tf.reduce_sum(want * want)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    for a, b in zip(
        tape.gradient(loss_got, [x, conv.kernel, conv.bias]),
        tape.gradient(loss_want, [x, conv.kernel, conv.bias]),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def _op_types(fn, x) -> set[str]:
    graph = tf.function(fn).get_concrete_function(x).graph
    return {op.type for op in graph.get_operations()}


def test_runs_tensorflows_kernel_not_the_xla_fallback():
    """keras.layers.Conv2D(groups>1) calls an XLA-compiled function; GroupedConv2D a Conv2D op
    when TensorFlow runs oneDNN (the default ``import kerasdl`` asks for), Keras's path if not."""
    x = tf.TensorSpec([1, 8, 8, 8])
    ours = GroupedConv2D(8, 3, padding="same", groups=4)
    keras_own = keras.layers.Conv2D(8, 3, padding="same", groups=4)
    assert ("Conv2D" in _op_types(ours, x)) == onednn.enabled()
    assert "Conv2D" not in _op_types(keras_own, x)  # the fallback this layer replaces
    plain = GroupedConv2D(8, 3, padding="same")  # groups=1 stays on Keras's own path
    assert "Conv2D" in _op_types(plain, x)


def test_same_weights_same_outputs_as_keras_conv2d():
    keras.utils.set_random_seed(1)
    ours = GroupedConv2D(12, 3, padding="same", groups=3)
    ref = keras.layers.Conv2D(12, 3, padding="same", groups=3)
    x = tf.random.normal([2, 7, 7, 6])
    ours.build(x.shape)
    ref.build(x.shape)
    ref.set_weights(ours.get_weights())
    np.testing.assert_allclose(ours(x), ref(x), rtol=1e-5, atol=1e-5)


def test_torch_conv_and_padded_conv_use_the_native_path():
    assert type(torch_conv(8, 3, 1, groups=2)) is GroupedConv2D
    assert type(torch_conv(8, 3, 1)) is keras.layers.Conv2D
    strided = torch_conv(8, 3, 2, groups=2)
    assert isinstance(strided, PaddedConv2D) and isinstance(strided, GroupedConv2D)
    assert ("Conv2D" in _op_types(strided, tf.TensorSpec([1, 8, 8, 8]))) == onednn.enabled()


def test_resnext_grouped_convs_run_natively_and_round_trip(tmp_path):
    model = create_model("resnext50_32x4d", num_classes=5, input_shape=(32, 32, 3))
    grouped = [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, keras.layers.Conv2D) and layer.groups > 1
    ]
    assert len(grouped) == 16 and all(isinstance(g, GroupedConv2D) for g in grouped)
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    path = tmp_path / "m.keras"
    model.save(path)
    again = keras.saving.load_model(path)
    np.testing.assert_allclose(again(x, training=False), model(x, training=False), atol=1e-6)


def test_alexnet_two_towers_uses_it():
    model = create_model("alexnet", num_classes=3, groups=2, input_shape=(67, 67, 3))
    assert isinstance(model.get_layer("conv2"), GroupedConv2D)
    assert type(create_model("alexnet", num_classes=3).get_layer("conv2")) is keras.layers.Conv2D
