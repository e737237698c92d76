"""Batch normalization on TensorFlow's fused kernel: a drop-in ``keras.layers.BatchNormalization``.

Keras 3's ``BatchNormalization`` computes the batch moments and the normalization from separate
element-wise ops on every backend. On the TensorFlow backend the fused kernel
(``FusedBatchNormV3``, oneDNN-accelerated on CPU, cuDNN on GPU) does the same work in one pass
forward and one backward; on a 2-core CPU it doubled the float32 training speed of a CIFAR
ResNet-20 (DESIGN.md, last section).

Semantics are those of Keras (checked against ``keras/src/layers/normalization/
batch_normalization.py``):

* training: normalize with the batch mean and the *biased* batch variance (divide by ``n``); move
  ``moving_mean`` and ``moving_variance`` towards the batch mean and the biased variance,
  ``moving = moving * momentum + batch * (1 - momentum)``. The fused kernel returns the variance
  with Bessel's correction (divide by ``n - 1``, as PyTorch uses for its running variance), so it
  is scaled back by ``(n - 1) / n`` here to match Keras exactly.
* inference (``training=False``, or a frozen layer): normalize with the moving statistics.
* mixed precision: the input stays in float16/bfloat16 (the kernel accumulates in float32 and
  supports both on CPU), while scale, offset and statistics stay float32, as the kernel wants.

The fused path runs for 4-D channels-last inputs on the TensorFlow backend without mask,
renormalization or cross-replica synchronization, unless ``use_fused_kernel`` is off; everything
else falls back to the Keras implementation (``keras.ops``), so the layer works on every backend
and shape.

Reference:
    Ioffe & Szegedy, "Batch Normalization: Accelerating Deep Network Training by Reducing
    Internal Covariate Shift", ICML 2015.
"""

from __future__ import annotations

from typing import Any

import keras

from kerasdl.layers.remat import recomputing


@keras.saving.register_keras_serializable(package="kerasdl")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` that runs TensorFlow's fused batch-norm kernel.

    Same constructor, weights (``gamma``, ``beta``, ``moving_mean``, ``moving_variance``), weight
    names, momentum convention and configuration as the Keras layer, so checkpoints and
    parameter counts are interchangeable; only the computation differs (see the module
    docstring for when the fused kernel is used).

    Args:
        **kwargs: the arguments of ``keras.layers.BatchNormalization`` (``axis``, ``momentum``,
            ``epsilon``, ``center``, ``scale``, initializers, regularizers, constraints, ...).

    Call arguments:
        inputs: a tensor; channels on ``axis``.
        training: ``True`` normalizes with the batch statistics and updates the moving ones.
        mask: optional mask (handled by the Keras implementation).

    Example:
        >>> bn = FusedBatchNormalization(momentum=0.9, epsilon=1e-5)
        >>> y = bn(keras.random.normal((8, 16, 16, 32)), training=True)

    Reference:
        Ioffe & Szegedy, "Batch Normalization: Accelerating Deep Network Training by Reducing
        Internal Covariate Shift", ICML 2015.
    """

    # False: always the Keras implementation (kerasdl.layers.normalization.configure_batch_norm).
    use_fused_kernel = True

    def _use_fused(self, inputs: Any, mask: Any) -> bool:
        if not self.use_fused_kernel:
            return False
        if keras.backend.backend() != "tensorflow" or mask is not None:
            return False
        if self.renorm or self.synchronized or len(inputs.shape) != 4:
            return False
        if self.axis not in (-1, 3):
            return False
        return keras.backend.standardize_dtype(inputs.dtype) in ("float32", "float16", "bfloat16")

    def call(self, inputs, training=None, mask=None):
        # Recomputed for a rematerialised block's gradient (kerasdl.layers.remat): the forward
        # pass already moved the statistics this step.
        again = bool(training) and self.trainable and recomputing()
        if not self._use_fused(inputs, mask):
            if again and not self.renorm:
                return self._batch_stats_only(inputs, mask)
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        channels = inputs.shape[-1]
        gamma = self.gamma if self.scale else tf.ones((channels,), tf.float32)
        beta = self.beta if self.center else tf.zeros((channels,), tf.float32)
        gamma = tf.cast(gamma, tf.float32)
        beta = tf.cast(beta, tf.float32)
        if training and self.trainable:
            outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                inputs, gamma, beta, epsilon=self.epsilon, data_format="NHWC", is_training=True
            )
            shape = tf.shape(inputs)
            n = tf.cast(shape[0] * shape[1] * shape[2], tf.float32)
            # The kernel's variance has Bessel's correction; Keras moves the biased one.
            variance = variance * ((n - 1.0) / tf.maximum(n, 1.0))
            if again:
                return tf.cast(outputs, self.compute_dtype)
            momentum = self.momentum
            self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
            self.moving_variance.assign(
                self.moving_variance * momentum + variance * (1.0 - momentum)
            )
        else:
            outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
                inputs,
                gamma,
                beta,
                mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32),
                epsilon=self.epsilon,
                data_format="NHWC",
                is_training=False,
            )
        return tf.cast(outputs, self.compute_dtype)

    def inference_scale_shift(self) -> tuple[Any, Any]:
        """``(scale, shift)``, float32 ``(C,)``, with ``y = x * scale + shift`` this layer's
        inference function: ``scale = gamma / sqrt(moving_variance + epsilon)``, ``shift = beta
        - moving_mean * scale``. A convolution without bias before the layer can take ``scale``
        into its kernel and ``shift`` as its bias (batch-norm folding, as inference engines do).
        """
        import tensorflow as tf

        var = tf.cast(self.moving_variance, tf.float32)
        scale = tf.math.rsqrt(var + self.epsilon)
        if self.scale:
            scale = scale * tf.cast(self.gamma, tf.float32)
        shift = -tf.cast(self.moving_mean, tf.float32) * scale
        if self.center:
            shift = shift + tf.cast(self.beta, tf.float32)
        return scale, shift

    def _batch_stats_only(self, inputs, mask):
        """Keras's training path (batch statistics) without the moving-statistics update."""
        from keras import ops

        x = ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
        mean, variance = self._moments(x, mask)
        outputs = ops.batch_normalization(
            x=x,
            mean=mean,
            variance=variance,
            axis=self.axis,
            offset=ops.cast(self.beta, x.dtype) if self.center else None,
            scale=ops.cast(self.gamma, x.dtype) if self.scale else None,
            epsilon=self.epsilon,
        )
        return ops.cast(outputs, self.compute_dtype)
