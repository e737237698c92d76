"""``_LayerNorm``: Keras's LayerNormalization function and weights, a shorter lowering."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from layer_testing import assert_same_outputs_and_gradients

from kerasdl.layers.layer_norm import _LayerNorm


def _pair(shape=(2, 7, 16), epsilon=1e-6, **kwargs):
    x = tf.random.stateless_normal(shape, seed=(3, 4)) * 3.0 + 1.5
    ref = keras.layers.LayerNormalization(epsilon=epsilon, name="ln", **kwargs)
    fused = _LayerNorm(epsilon=epsilon, name="ln", **kwargs)
    ref.build(x.shape)
    fused.build(x.shape)
    rng = np.random.default_rng(0)
    for a, b in zip(ref.weights, fused.weights, strict=True):
        assert a.path == b.path  # same variables: checkpoints load into either
        a.assign(rng.normal(1.0, 0.5, a.shape))
        b.assign(a.numpy())
    return x, ref, fused


@pytest.mark.parametrize("training", [True, False])
def test_same_outputs_and_gradients_as_keras(training: bool) -> None:
    x, ref, fused = _pair()
    w = tf.random.stateless_normal(x.shape, seed=(5, 6))
    assert_same_outputs_and_gradients(
        ref, fused, x, lambda layer, x: layer(x, training=training), lambda y: tf.reduce_sum(y * w)
    )


@pytest.mark.parametrize("training", [True, False])
def test_small_epsilon_is_honoured(training: bool) -> None:
    # Rows with variance ~1e-6: epsilon 1e-6 and 1e-5 give very different outputs.
    x = tf.random.stateless_normal((4, 64), seed=(1, 1)) * 1e-3 + 2.0
    ln = _LayerNorm(epsilon=1e-6, name="ln")
    y = ln(x, training=training).numpy()
    x64 = x.numpy().astype("float64")
    mu, var = x64.mean(-1, keepdims=True), x64.var(-1, keepdims=True)
    np.testing.assert_allclose(y, (x64 - mu) / np.sqrt(var + 1e-6), rtol=2e-3, atol=2e-3)
    assert np.abs(y - (x64 - mu) / np.sqrt(var + 1e-5)).max() > 0.1


def test_mixed_precision_computes_in_float32() -> None:
    x, ref, fused = _pair()
    policy = keras.mixed_precision.DTypePolicy("mixed_bfloat16")
    ref.dtype_policy = fused.dtype_policy = policy
    xb = tf.cast(x, "bfloat16")
    y0, y1 = ref(xb, training=True), fused(xb, training=True)
    assert y1.dtype == y0.dtype == tf.bfloat16
    np.testing.assert_allclose(tf.cast(y1, "float32"), tf.cast(y0, "float32"), atol=2e-2)


def test_other_axes_and_options_fall_back_to_keras() -> None:
    for kwargs in ({"axis": 1}, {"center": False}, {"scale": False}, {"axis": (1, 2)}):
        x, ref, fused = _pair(**kwargs)
        for training in (True, False):
            np.testing.assert_allclose(
                fused(x, training=training), ref(x, training=training), rtol=1e-5, atol=1e-5
            )
