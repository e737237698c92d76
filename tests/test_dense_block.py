"""DenseNet's transition: the pool runs before the 1x1 convolution, with torchvision's function."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasdl.layers.dense_block import Transition
from kerasdl.models.macs import count_macs


@pytest.mark.parametrize("size", [8, 9])
def test_transition_pools_before_its_conv_with_torchvisions_function(size):
    """torchvision's order (norm, relu, 1x1 conv, then 2x2/2 average) in float64 NumPy, values
    and the gradients of input and kernel; kerasdl runs the pool first (fewer MACs). An odd side
    drops its last row and column either way."""
    rng = np.random.default_rng(size)
    block = Transition(5)
    x64 = rng.normal(size=(2, size, size, 6))
    x = tf.constant(x64.astype("float32"))
    block(x)
    norm = block.norm_layer
    gamma, beta = rng.uniform(0.5, 1.5, 6), rng.normal(size=6)
    mean, var = rng.normal(size=6) * 0.1, rng.uniform(0.5, 1.5, 6)
    kernel = rng.normal(size=(6, 5))
    values = [gamma, beta, mean, var, kernel[None, None]]
    variables = [norm.gamma, norm.beta, norm.moving_mean, norm.moving_variance, block.conv.kernel]
    for variable, value in zip(variables, values, strict=True):
        variable.assign(value.astype("float32"))
    gamma, beta, mean, var, kernel = (v.astype("float32").astype("float64") for v in values)
    kernel = kernel[0, 0]
    w = rng.normal(size=(2, size // 2, size // 2, 5))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = block(x, training=False)
        loss = tf.reduce_sum(y * w.astype("float32"))
    dx, dk = tape.gradient(loss, [x, block.conv.kernel])

    scale = gamma / np.sqrt(var + norm.epsilon)
    xr = np.asarray(x, "float64")
    h = np.maximum((xr - mean) * scale + beta, 0)
    conv = h @ kernel  # torchvision's conv, before its pool
    n = size // 2 * 2
    pooled = conv[:, :n, :n].reshape(2, n // 2, 2, n // 2, 2, 5).mean(axis=(2, 4))
    np.testing.assert_allclose(np.asarray(y), pooled, rtol=1e-5, atol=1e-5)
    # the reference's backward: w / 4 spread over each window, then through the conv and relu
    d_conv = np.zeros_like(conv)
    d_conv[:, :n, :n] = np.repeat(np.repeat(w, 2, axis=1), 2, axis=2) / 4
    want_dk = np.einsum("bhwc,bhwf->cf", h, d_conv)
    np.testing.assert_allclose(np.asarray(dk)[0, 0], want_dk, rtol=1e-5, atol=1e-5)
    want_dx = (d_conv @ kernel.T) * (h > 0) * scale
    np.testing.assert_allclose(np.asarray(dx), want_dx, rtol=1e-5, atol=1e-5)
    inputs = keras.Input((size, size, 6))
    model = keras.Model(inputs, Transition(5)(inputs))
    assert count_macs(model) == (size // 2) ** 2 * 6 * 5  # the conv sees the pooled pixels
