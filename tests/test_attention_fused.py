"""``_SelfAttention``: Keras's MultiHeadAttention function and weights on a fused GEMM path."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from layer_testing import assert_same_outputs_and_gradients

from kerasdl.layers.attention import _SelfAttention


def _pair(heads: int = 3, dim: int = 12, use_bias: bool = True):
    x = tf.random.stateless_normal((2, 5, dim), seed=(1, 2))
    ref = keras.layers.MultiHeadAttention(heads, dim // heads, use_bias=use_bias, name="attn")
    fused = _SelfAttention(heads, dim // heads, use_bias=use_bias, name="attn")
    ref(x, x)
    fused(x, x)
    for a, b in zip(ref.weights, fused.weights, strict=True):
        assert a.path == b.path  # same variables: checkpoints load into either
        b.assign(a.numpy() + np.random.default_rng(0).normal(0, 0.1, a.shape))
        a.assign(b.numpy())
    return x, ref, fused


@pytest.mark.parametrize("use_bias", [True, False])
def test_same_outputs_and_gradients_as_keras(use_bias: bool) -> None:
    x, ref, fused = _pair(use_bias=use_bias)
    assert_same_outputs_and_gradients(ref, fused, x, lambda layer, x: layer(x, x, training=True))


def test_other_uses_fall_back_to_keras() -> None:
    x, ref, fused = _pair()
    mask = tf.constant(np.tril(np.ones((5, 5), bool))[None])
    for kwargs in ({"attention_mask": mask}, {"use_causal_mask": True}):
        np.testing.assert_allclose(fused(x, x, **kwargs), ref(x, x, **kwargs), rtol=1e-5)
    out, scores = fused(x, x, return_attention_scores=True)
    assert scores.shape == (2, 3, 5, 5)
    y = x[:, :3]  # cross-attention
    np.testing.assert_allclose(fused(y, x), ref(y, x), rtol=1e-5, atol=1e-6)
