"""SiLU with the one-kernel XLA gradient, and the depthwise convolution that pads in its kernel:
the same function and gradients as Keras's, and the graph they were made for."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasdl.bench.profile import _trace_ops
from kerasdl.layers.activations import get_activation
from kerasdl.layers.fused_grads import SiLU, gelu, silu
from kerasdl.layers.normalization import get_norm_layer
from kerasdl.layers.torch_compat import PaddedDepthwiseConv2D


def _grad(fn, x, dy):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
    return y, tape.gradient(y, x, output_gradients=dy)


def _exact_gelu(x):
    return keras.activations.gelu(x, approximate=False)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize(("fn", "keras_fn"), [(silu, keras.activations.silu), (gelu, _exact_gelu)])
def test_activation_equals_keras_in_value_and_gradient(fn, keras_fn, dtype, training) -> None:
    rng = np.random.default_rng(0)
    x = tf.cast(rng.normal(scale=4.0, size=(4, 9, 9, 5)).astype("float32"), dtype)
    dy = tf.cast(rng.normal(size=x.shape).astype("float32"), dtype)
    ref_y, ref_g = tf.function(lambda a, b: _grad(keras_fn, a, b))(x, dy)
    y, g = tf.function(lambda a, b: _grad(lambda v: fn(v, training=training), a, b))(x, dy)
    assert y.dtype == g.dtype == x.dtype
    tol = {"float32": 2e-6, "bfloat16": 3e-2, "float16": 3e-3}[dtype]
    np.testing.assert_allclose(tf.cast(y, "float32"), tf.cast(ref_y, "float32"), rtol=tol, atol=tol)
    np.testing.assert_allclose(tf.cast(g, "float32"), tf.cast(ref_g, "float32"), rtol=tol, atol=tol)


@pytest.mark.parametrize(("fn", "tf_grad_op"), [(silu, "SigmoidGrad"), (gelu, "Erf")])
def test_gradient_is_one_xla_function_in_training_only(fn, tf_grad_op) -> None:
    def gradient_graph(training: bool):
        @tf.function(autograph=False)
        def g(x):
            return _grad(lambda v: fn(v, training=training), x, tf.ones_like(x))[1]

        return g.get_concrete_function(tf.TensorSpec((2, 3))).graph

    graph = gradient_graph(True)
    jit = [op for op in graph.get_operations() if op.node_def.attr["_XlaMustCompile"].b]
    assert len(jit) == 1  # the whole gradient in one compiled call
    # TensorFlow's own gradient runs op by op (no compiled call).
    graph = gradient_graph(False)
    assert not any(op.node_def.attr["_XlaMustCompile"].b for op in graph.get_operations())
    assert tf_grad_op in {op.type for op in graph.get_operations()}


@pytest.mark.parametrize(("fn", "keras_fn"), [(silu, keras.activations.silu), (gelu, _exact_gelu)])
def test_second_derivative_is_keras(fn, keras_fn) -> None:
    x = tf.constant(np.linspace(-6.0, 6.0, 25, dtype="float32"))

    def second(fn):
        with tf.GradientTape() as outer:
            outer.watch(x)
            with tf.GradientTape() as inner:
                inner.watch(x)
                y = fn(x)
            g = inner.gradient(y, x)
        return outer.gradient(g, x)

    np.testing.assert_allclose(second(fn), second(keras_fn), atol=1e-6)


def test_silu_is_the_registry_activation_and_round_trips(tmp_path: Path) -> None:
    layer = get_activation("silu", name="act")
    assert isinstance(layer, SiLU)
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1)(layer(inputs)))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    x = np.random.default_rng(1).normal(size=(2, 4, 4, 3)).astype("float32")
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)


def _kernel_ops(fn, x, logdir: Path) -> set[str]:
    fn(x)
    tf.profiler.experimental.start(str(logdir))
    try:
        fn(x).numpy()
    finally:
        tf.profiler.experimental.stop()
    return {op for _, op, _ in _trace_ops(logdir)}


def test_inference_silu_folds_into_the_convolution(tmp_path: Path) -> None:
    """Conv - batch norm - SiLU in inference runs as one oneDNN convolution: no separate swish
    or sigmoid kernel (with ``tf.nn.silu``'s form a separate ``_MklSwish`` remains)."""
    from tensorflow.python.util import _pywrap_util_port

    if not _pywrap_util_port.IsMklEnabled():
        pytest.skip("TensorFlow built without oneDNN")
    inputs = keras.Input((16, 16, 8))
    x = keras.layers.Conv2D(16, 1, use_bias=False)(inputs)
    x = get_norm_layer("batch")(x)  # kerasdl's fused batch norm, as every model has it
    model = keras.Model(inputs, SiLU()(x))
    fn = tf.function(lambda a: model(a, training=False))
    ops = _kernel_ops(fn, tf.ones((2, 16, 16, 8)), tmp_path)
    assert not {"_MklSwish", "Sigmoid", "Mul"} & ops, ops
    assert any("FusedConv2D" in op for op in ops), ops


def test_inference_vit_mlp_is_two_fused_gemms(tmp_path: Path) -> None:
    """In inference the MLP's GELU stays the form oneDNN fuses into the first ``MatMul``: no
    separate ``Erf`` kernel runs."""
    from tensorflow.python.util import _pywrap_util_port

    from kerasdl.layers.transformer import TransformerMLP

    if not _pywrap_util_port.IsMklEnabled():
        pytest.skip("TensorFlow built without oneDNN")
    mlp = TransformerMLP(64, name="mlp")
    x = tf.random.stateless_normal((2, 5, 16), seed=(1, 2))
    mlp(x)
    ops = _kernel_ops(tf.function(lambda a: mlp(a, training=False)), x, tmp_path)
    assert "Erf" not in ops, ops
    assert sum("FusedMatMul" in op for op in ops) >= 1, ops


@pytest.mark.parametrize(
    ("kernel", "pad", "stride", "size"), [(3, 1, 2, 12), (5, 2, 2, 13), (3, 1, 1, 7), (3, 2, 2, 9)]
)
def test_padded_depthwise_equals_pad_then_valid(kernel, pad, stride, size) -> None:
    rng = np.random.default_rng(2)
    x = tf.constant(rng.normal(size=(2, size, size, 6)).astype("float32"))
    layer = PaddedDepthwiseConv2D(kernel, pad=pad, strides=stride, use_bias=True)
    ref = keras.Sequential(
        [
            keras.layers.ZeroPadding2D(pad),
            keras.layers.DepthwiseConv2D(kernel, strides=stride, use_bias=True),
        ]
    )
    layer.build(x.shape)
    ref.build(x.shape)
    layer.set_weights([rng.normal(size=w.shape).astype("float32") for w in layer.weights])
    ref.set_weights(layer.get_weights())

    def run(m):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = m(x)
            loss = tf.reduce_sum(y * tf.sin(y))
        return [y, *tape.gradient(loss, [x, *m.trainable_weights])]

    got, want = run(layer), run(ref)
    assert got[0].shape == tuple(layer.compute_output_shape(x.shape))
    np.testing.assert_array_equal(got[0], want[0])
    for g, w in zip(got[1:], want[1:], strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-4)


def test_padded_depthwise_pads_inside_the_kernel() -> None:
    layer = PaddedDepthwiseConv2D(5, pad=2, strides=2, use_bias=False)
    layer.build((2, 16, 16, 4))

    @tf.function(autograph=False)
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.square(layer(x)))
        return tape.gradient(loss, [x, layer.kernel])

    graph = step.get_concrete_function(tf.TensorSpec((2, 16, 16, 4))).graph
    types = {op.type for op in graph.get_operations()}
    assert not {"Pad", "PadV2", "MirrorPad", "Slice"} & types, types
    assert "DepthwiseConv2dNativeBackpropFilter" in types
