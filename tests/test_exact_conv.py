"""kerasdl.layers.exact_conv: every Keras strided 1x1 (transposed) convolution on fewer than 8
channels gets values and gradients equal to NumPy's, in a user's own model too."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src.backend.tensorflow import nn as keras_tf_nn

from kerasdl.layers import exact_conv
from kerasdl.layers.exact_conv import SAFE_CHANNELS


def _conv_numpy(x, w, dy, stride):
    """A 1x1 stride-``s`` convolution (channels last, float64): ``y = x[:, ::s, ::s] @ W``, and
    the gradients of ``sum(y * dy)`` for ``W`` and ``x``."""
    (sh, sw), w = stride, w[0, 0].astype("float64")
    xs = x[:, ::sh, ::sw].astype("float64")
    dx = np.zeros(x.shape)
    dx[:, ::sh, ::sw] = np.einsum("bhwd,cd->bhwc", dy, w)
    return np.einsum("bhwc,cd->bhwd", xs, w), np.einsum("bhwc,bhwd->cd", xs, dy)[None, None], dx


def _conv_transpose_numpy(x, w, dy, stride):
    """A 1x1 stride-``s`` transposed convolution: ``y[:, i*s, j*s] = x[:, i, j] @ W^T`` and 0
    at every other pixel of ``dy``'s shape, and the gradients of ``sum(y * dy)``."""
    (sh, sw), h, wd = stride, x.shape[1], x.shape[2]
    w, x = w[0, 0].astype("float64"), x.astype("float64")  # w: (out, in)
    y = np.zeros(dy.shape)
    y[:, : h * sh : sh, : wd * sw : sw] = np.einsum("bhwi,oi->bhwo", x, w)
    dys = dy[:, : h * sh : sh, : wd * sw : sw]
    return y, np.einsum("bhwi,bhwo->oi", x, dys)[None, None], np.einsum("bhwo,oi->bhwi", dys, w)


def _value_and_grads(layer, x, dy):
    """``layer(x)`` and the gradients of ``sum(layer(x) * dy)`` for the kernel and ``x``."""
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = layer(xt)
        loss = tf.reduce_sum(y * dy)
    dk, dx = tape.gradient(loss, [layer.kernel.value, xt])
    return y.numpy(), dk.numpy(), dx.numpy()


def _check(got, want):
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * (np.abs(w).max() + 1))


@pytest.mark.parametrize(
    "channels,filters,stride,size,padding",
    [
        (3, 16, (2, 2), 8, "same"),  # unguarded: filter gradient 73% off on AVX2 + oneDNN
        (3, 4, (2, 2), 8, "valid"),  # unguarded: 34% off
        (1, 8, (2, 2), 32, "same"),
        (7, 16, (4, 4), 32, "valid"),
        (2, 6, (2, 3), 9, "same"),
        (8, 16, (2, 2), 8, "same"),  # TensorFlow's own strided kernel from here on
    ],
)
def test_a_plain_keras_conv2d_equals_numpy(channels, filters, stride, size, padding):
    rng = np.random.default_rng(channels * 31 + size)
    layer = keras.layers.Conv2D(filters, 1, strides=stride, padding=padding, use_bias=False)
    x = rng.normal(size=(2, size, size, channels)).astype("float32")
    layer.build(x.shape)
    w = rng.normal(size=layer.kernel.shape).astype("float32")
    layer.kernel.assign(w)
    y_shape = layer.compute_output_shape(x.shape)
    dy = rng.normal(size=y_shape).astype("float32")
    want = _conv_numpy(x, w, dy, stride)
    _check(_value_and_grads(layer, x, dy), want)


def test_a_strided_1x1_conv2d_with_512_filters_does_not_crash():
    """Unguarded, TensorFlow's kernel crashes the process here (AVX2 + oneDNN)."""
    rng = np.random.default_rng(0)
    layer = keras.layers.Conv2D(512, 1, strides=2, use_bias=False)
    x = rng.normal(size=(2, 8, 8, 4)).astype("float32")
    layer.build(x.shape)
    dy = rng.normal(size=(2, 4, 4, 512)).astype("float32")
    _check(_value_and_grads(layer, x, dy), _conv_numpy(x, layer.kernel.numpy(), dy, (2, 2)))


@pytest.mark.parametrize(
    "filters,stride,size,padding,output_padding",
    [
        (3, (2, 2), 8, "same", None),
        (3, (2, 2), 8, "valid", 1),
        (1, (2, 2), 7, "valid", None),  # unguarded: wrong filter gradient on AVX2 + oneDNN
        (4, (2, 3), 5, "same", (1, 2)),
        (7, (4, 4), 4, "same", None),
        (8, (2, 2), 8, "valid", 1),  # TensorFlow's own kernel from here on
    ],
)
def test_a_plain_keras_conv2d_transpose_equals_numpy(
    filters, stride, size, padding, output_padding
):
    rng = np.random.default_rng(filters * 17 + size)
    layer = keras.layers.Conv2DTranspose(
        filters, 1, strides=stride, padding=padding, output_padding=output_padding,
        use_bias=False,
    )  # fmt: skip
    x = rng.normal(size=(2, size, size + 1, 5)).astype("float32")
    layer.build(x.shape)
    w = rng.normal(size=layer.kernel.shape).astype("float32")
    layer.kernel.assign(w)
    y_shape = layer.compute_output_shape(x.shape)
    dy = rng.normal(size=y_shape).astype("float32")
    want = _conv_transpose_numpy(x, w, dy, stride)
    _check(_value_and_grads(layer, x, dy), want)


def _op_types(layer: keras.layers.Layer, shape: tuple[int, ...]) -> list[tuple[str, list]]:
    fn = tf.function(layer).get_concrete_function(tf.TensorSpec(shape))
    return [
        (op.type, list(op.get_attr("strides")) if op.type.startswith("Conv2D") else [])
        for op in fn.graph.get_operations()
        if op.type.startswith("Conv2D") or op.type in ("Einsum", "BatchMatMulV2", "MatMul")
    ]


def test_only_narrow_strided_1x1_convolutions_change_form():
    narrow, wide = SAFE_CHANNELS - 1, SAFE_CHANNELS
    conv = keras.layers.Conv2D
    assert _op_types(conv(4, 1, strides=2), (1, 8, 8, narrow)) == [("Conv2D", [1, 1, 1, 1])]
    assert _op_types(conv(4, 1, strides=2), (1, 8, 8, wide)) == [("Conv2D", [1, 2, 2, 1])]
    assert _op_types(conv(4, 3, strides=2), (1, 8, 8, narrow)) == [("Conv2D", [1, 2, 2, 1])]
    transpose = keras.layers.Conv2DTranspose
    assert [t for t, _ in _op_types(transpose(narrow, 1, strides=2), (1, 4, 4, 16))] == ["Einsum"]
    assert _op_types(transpose(wide, 1, strides=2), (1, 4, 4, 16)) == [
        ("Conv2DBackpropInput", [1, 2, 2, 1])
    ]
    assert _op_types(transpose(narrow, 3, strides=2), (1, 4, 4, 16)) == [
        ("Conv2DBackpropInput", [1, 2, 2, 1])
    ]


def test_installed_once_and_keeps_kerass_signature():
    assert exact_conv.installed(keras_tf_nn)
    before = keras_tf_nn.conv, keras_tf_nn.conv_transpose
    exact_conv.install(keras_tf_nn)
    assert (keras_tf_nn.conv, keras_tf_nn.conv_transpose) == before
    original = getattr(keras_tf_nn.conv, exact_conv.GUARD)
    assert not hasattr(original, exact_conv.GUARD) and original.__name__ == "conv"


USER_SCRIPT = """
import json
{first}
import keras
import numpy as np
import tensorflow as tf
from keras.src.backend.tensorflow import nn
from kerasdl import onednn
from kerasdl.layers import exact_conv

# a user's own model: a plain strided 1x1 convolution on RGB input, trained one step
model = keras.Sequential([
    keras.Input((32, 32, 3)),
    keras.layers.Conv2D(64, 1, strides=2, use_bias=False),
    keras.layers.GlobalAveragePooling2D(),
    keras.layers.Dense(1),
])
x = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype("float32")
with tf.GradientTape() as tape:
    loss = tf.reduce_sum(model(x))
dk = tape.gradient(loss, model.layers[0].kernel)[0, 0].numpy()
# d loss / d W[c, d] = sum over pixels of x[::2, ::2, c] * dense[d] / 256
dense = model.layers[2].kernel.numpy()[:, 0]
want = np.einsum("bhwc,d->cd", x[:, ::2, ::2].astype("float64"), dense) / 256
print(json.dumps({{"installed": exact_conv.installed(nn), "onednn": onednn.enabled(),
                   "error": float(np.abs(dk - want).max() / np.abs(want).max())}}))
"""


@pytest.mark.parametrize(
    "first,setting",
    [
        ("import kerasdl", None),
        ("import keras\nimport kerasdl", None),
        ("import tensorflow\nimport kerasdl", None),
        ("import kerasdl", "0"),
    ],
)
def test_a_users_script_gets_right_gradients_whatever_the_import_order(first, setting):
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    if setting is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = setting
    done = subprocess.run(
        [sys.executable, "-c", USER_SCRIPT.format(first=first)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["installed"] is True
    assert out["error"] < 1e-4, out
