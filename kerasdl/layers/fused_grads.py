"""Activations whose backward pass is one XLA-compiled element-wise loop (TensorFlow, CPU).

TensorFlow differentiates ``tf.nn.silu`` with seven element-wise ops over the full tensor (the
sigmoid recomputed, ``1 - s``, three products, a sum and the product with the incoming
gradient), each a separate pass through memory. PyTorch runs ``silu_backward`` as one fused
loop. :func:`silu` computes ``x * sigmoid(x)`` (which oneDNN's remapper turns into one
``_MklSwish`` kernel, or folds into the convolution and batch norm before it in inference) and
in training gives it a gradient compiled by XLA, which fuses the whole expression
``dy * s * (1 + x * (1 - s))``, ``s = sigmoid(x)``, into one loop. Only XLA's element-wise
code is used: the convolutions around it stay on oneDNN (XLA's CPU convolutions are slower,
see ``benchmarks/README.md``).

Measured (``benchmarks/README.md``, "Second round of speed changes"): forward + backward of a
16x112x112x96 SiLU 55.6 ms against 97.8 ms with TensorFlow's gradient, the gradients equal to
float rounding (largest difference 1e-6 on values up to 5.9); EfficientNet-B0's training step
1.17-1.20x faster. :func:`gelu` does the same for the exact GELU of the ViT's MLP.

Reference:
    Elfwing et al., "Sigmoid-Weighted Linear Units for Neural Network Function Approximation in
    Reinforcement Learning", 2018; Hendrycks & Gimpel, "Gaussian Error Linear Units", 2016
    (the SiLU); Ramachandran et al., "Searching for Activation Functions", 2017 (Swish).
"""

from __future__ import annotations

from typing import Any

import keras

_GRADS: dict[str, Any] = {}
_SQRT_HALF = 0.7071067811865476  # 1 / sqrt(2)
_INV_SQRT_2PI = 0.3989422804014327  # 1 / sqrt(2 pi)


def _silu_grad_fn():
    """The XLA-compiled ``(x, dy) -> dy * d silu(x) / dx`` (made once, on first use)."""
    if "silu" not in _GRADS:
        import tensorflow as tf

        @tf.function(jit_compile=True, autograph=False, reduce_retracing=True)
        def silu_grad(x, dy):
            s = tf.sigmoid(x)
            return dy * (s * (1.0 + x * (1.0 - s)))

        _GRADS["silu"] = silu_grad
    return _GRADS["silu"]


def silu(x, training: bool = True):
    """``x * sigmoid(x)``, with a one-kernel XLA gradient when ``training``.

    Args:
        x: a floating-point tensor.
        training: when false the plain ``x * sigmoid(x)`` is returned (TensorFlow's gradient
            still applies): the form oneDNN's remapper folds, with the convolution and batch
            norm before it, into one ``_FusedConv2D`` in inference; the custom gradient's
            ``IdentityN`` would hide the pattern.

    Returns:
        ``x * sigmoid(x)``, of ``x``'s dtype and shape.
    """
    import tensorflow as tf

    if not training:
        return x * tf.sigmoid(x)
    grad_fn = _silu_grad_fn()

    @tf.custom_gradient
    def _silu(x):
        def grad(dy):
            return grad_fn(x, dy)

        return x * tf.sigmoid(x), grad

    return _silu(x)


def _gelu_grad_fn():
    """The XLA-compiled ``(x, dy) -> dy * d gelu(x) / dx`` of the exact GELU."""
    if "gelu" not in _GRADS:
        import tensorflow as tf

        @tf.function(jit_compile=True, autograph=False, reduce_retracing=True)
        def gelu_grad(x, dy):
            cdf = (tf.math.erf(x * _SQRT_HALF) + 1.0) * 0.5
            pdf = tf.exp(x * x * -0.5) * _INV_SQRT_2PI
            return dy * (cdf + x * pdf)

        _GRADS["gelu"] = gelu_grad
    return _GRADS["gelu"]


def gelu(x, training: bool = True):
    """The exact GELU ``x * Phi(x)``, written ``x * ((erf(x / sqrt 2) + 1) / 2)``, with a
    one-kernel XLA gradient ``dy * (Phi(x) + x * phi(x))`` when ``training``.

    The forward expression is the one TensorFlow's oneDNN remapper fuses with the ``MatMul``
    and ``BiasAdd`` before it into one ``_FusedMatMul`` (GeluExact) in inference; in training
    the custom gradient replaces the op-by-op derivative of ``erf`` (measured: forward +
    backward of a ViT-B MLP's first layer, 800 x 768 -> 3072, 50.3 -> 43.0 ms).

    Args:
        x: a floating-point tensor.
        training: use the compiled gradient (otherwise TensorFlow's gradient).

    Returns:
        ``GELU(x)``, of ``x``'s dtype and shape.

    Reference:
        Hendrycks & Gimpel, "Gaussian Error Linear Units (GELUs)", 2016.
    """
    import tensorflow as tf

    def forward(v):
        return v * ((tf.math.erf(v * tf.cast(_SQRT_HALF, v.dtype)) + 1.0) * 0.5)

    if not training:
        return forward(x)
    grad_fn = _gelu_grad_fn()

    @tf.custom_gradient
    def _gelu(v):
        def grad(dy):
            return grad_fn(v, dy)

        return forward(v), grad

    return _gelu(x)


@keras.saving.register_keras_serializable(package="kerasdl")
class SiLU(keras.layers.Layer):
    """SiLU / Swish-1, ``x * sigmoid(x)``, with a one-kernel gradient on TensorFlow.

    The same function as ``keras.layers.Activation("silu")``; on the TensorFlow backend the
    backward pass is one XLA-compiled element-wise loop (:func:`silu`). Other backends run
    Keras's ``silu``.

    Call arguments:
        inputs: any floating-point tensor.
        training: the XLA gradient in training; in inference the plain ``x * sigmoid(x)``
            that oneDNN fuses into the convolution before it.

    Example:
        >>> y = SiLU(name="act")(keras.ops.ones((2, 8, 8, 16)))

    Reference:
        Elfwing et al. 2018; Ramachandran et al. 2017.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.supports_masking = True
        self._build_at_init()  # no weights: built now, as Keras's own Activation is

    def call(self, inputs, training=None):
        if keras.backend.backend() != "tensorflow":
            return keras.activations.silu(inputs)
        return silu(inputs, training=bool(training))

    def compute_output_shape(self, input_shape):
        return input_shape
