"""Layer normalization with Keras's weights and function in fewer full-size kernels (TensorFlow).

Keras 3 lowers ``LayerNormalization`` on TensorFlow as ``inv = rsqrt(var + eps) * gamma``,
``res = beta - mean * inv``, ``y = x * inv + res``: after the moments, five element-wise passes
over the ``(B, N, D)`` tensor (``gamma`` is folded into a full-size scale, and the shift is built
full-size too), and their gradients with broadcast reductions. :class:`_LayerNorm` computes the
same function as ``beta + (x - mean) * (rsqrt(var + eps) * gamma)``: the centred tensor is made
once and used for the variance and the output, one pass fewer forward and fewer reductions
backward (ViT-B/32 training step about 5 % faster on the CPU; inference unchanged).

Only the float rounding differs (the centred form is, if anything, the more accurate one); the
epsilon, the biased variance over the last axis and the float32-or-wider computation are
Keras's. Other cases (other axes, ``rms_scaling``, float64, other backends) run Keras's code.

Tried and not kept (ViT-B/32, 2-core CPU): ``FusedBatchNormV3`` in training mode on a
``(1, M, D, 1)`` NCHW view (``tf.keras`` 2's lowering; the raw op honours epsilon 1e-6): one
kernel forward and one backward, but oneDNN's kernel on that layout made the step slower; a
hand-written gradient (``tf.custom_gradient``): no faster than TensorFlow's own, and 1.01x
(within noise) with the whole gradient compiled by XLA as one function (2026-11-27; XLA does pay
off for the GELU and SiLU gradients, ``fused_grads.py``); the oneDNN
remapper's ``_MklLayerNorm`` pattern did not trigger on this form or on the variants tried.

Reference:
    Ba et al., "Layer Normalization", 2016.
"""

from __future__ import annotations

import keras


class _LayerNorm(keras.layers.LayerNormalization):
    """``keras.layers.LayerNormalization`` with a shorter TensorFlow lowering (last axis).

    Same arguments, weights (``gamma``, ``beta``) and outputs as
    ``keras.layers.LayerNormalization``. Private and not registered for serialization: the
    blocks that use it make it in ``__init__``, so a saved model holds its weights, not its class.

    Call arguments:
        inputs: ``(..., D)`` tensor normalised over its last axis.

    Example:
        >>> ln = _LayerNorm(epsilon=1e-6, name="ln")
        >>> y = ln(keras.ops.ones((2, 50, 768)))
    """

    def call(self, inputs):
        if not self._short_ok(inputs):
            return super().call(inputs)
        import tensorflow as tf

        dtype = keras.backend.result_type(inputs.dtype, "float32")
        x = tf.cast(inputs, dtype)
        gamma = None if self.gamma is None else tf.cast(self.gamma, dtype)
        beta = None if self.beta is None else tf.cast(self.beta, dtype)
        y = _layer_norm_ops(x, gamma, beta, self.epsilon)
        return tf.cast(y, self.compute_dtype)

    def _short_ok(self, inputs) -> bool:
        if keras.backend.backend() != "tensorflow" or self.rms_scaling:
            return False
        rank = len(inputs.shape)
        axes = [self.axis] if isinstance(self.axis, int) else list(self.axis)
        if rank < 2 or [a % rank for a in axes] != [rank - 1] or inputs.shape[-1] is None:
            return False
        dtype = keras.backend.result_type(inputs.dtype, "float32")
        return dtype == "float32"  # float64 runs Keras's code


def _layer_norm_ops(x, gamma, beta, epsilon: float):
    """``beta + (x - mean) * (rsqrt(var + epsilon) * gamma)`` over the last axis of ``x``."""
    import tensorflow as tf

    mean = tf.reduce_mean(x, axis=-1, keepdims=True)  # (..., 1)
    centered = x - mean
    var = tf.reduce_mean(tf.square(centered), axis=-1, keepdims=True)  # (..., 1)
    scale = tf.math.rsqrt(var + epsilon)
    if gamma is not None:
        scale = scale * gamma  # (..., D)
    y = centered * scale
    return y if beta is None else beta + y
