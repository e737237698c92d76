"""Dropping weights and dropping paths: DropConnect and stochastic depth.

* :class:`DropConnectDense` is DropConnect (Wan et al. 2013): during training a random binary mask
  is applied to the *weights* of a fully connected layer (each connection is kept with probability
  ``1 - rate``), where dropout (Srivastava et al. 2014) would zero *activations*.
* :class:`DropPath` is stochastic depth (Huang et al. 2016): during training the whole residual
  branch of a sample is dropped with probability ``rate``. EfficientNet's reference code calls this
  "drop connect", but it drops paths, not connections; torchvision calls it ``StochasticDepth``.

References:
    Wan, Zeiler, Zhang, LeCun & Fergus, "Regularization of Neural Networks using DropConnect",
    ICML 2013. Huang, Sun, Liu, Sedra & Weinberger, "Deep Networks with Stochastic Depth",
    ECCV 2016.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from kerasdl.configurable import Configurable, ConfigurableLayer


def _check_rate(rate: float) -> float:
    rate = float(rate)
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"rate must be in [0, 1). Received: rate={rate}")
    return rate


@keras.saving.register_keras_serializable(package="kerasdl")
class DropConnectDense(Configurable, keras.layers.Dense):
    """A fully connected layer with DropConnect on its weights (Wan et al. 2013).

    In training, each entry of the kernel (and of the bias, as in the paper, where the bias is a
    column of the weight matrix) is kept with probability ``1 - rate`` and zeroed otherwise; the
    kept weights are divided by ``1 - rate`` so that the expected pre-activation equals the
    inference-time one. One mask is drawn per call (per mini-batch), a common simplification of
    the paper's per-example masks that keeps the cost of one matrix product. At inference the layer
    is a plain ``Dense`` with the full weights (the paper's mean-network approximation; its
    Gaussian moment-matching inference is not implemented).

    Args:
        units: output dimension.
        rate: probability of dropping each weight, in ``[0, 1)``.
        seed: seed of the mask generator.
        **kwargs: passed to ``keras.layers.Dense`` (activation, use_bias, initializers, ...).

    Call arguments:
        inputs: ``(..., in_features)`` tensor.
        training: apply the weight mask when true.

    Example:
        >>> layer = DropConnectDense(64, rate=0.5, activation="relu")
        >>> y = layer(keras.ops.ones((8, 32)), training=True)

    Reference:
        Wan et al., "Regularization of Neural Networks using DropConnect", ICML 2013.
    """

    def __init__(self, units: int, rate: float = 0.5, seed: int | None = None, **kwargs: Any):
        super().__init__(units, **kwargs)
        self.rate = _check_rate(rate)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if not training or self.rate == 0.0:
            return super().call(inputs)
        keep = 1.0 - self.rate
        kernel = ops.convert_to_tensor(self.kernel)
        mask = keras.random.uniform(ops.shape(kernel), seed=self.seed_generator) < keep
        kernel = ops.where(mask, kernel / keep, ops.zeros_like(kernel))
        x = ops.matmul(inputs, ops.cast(kernel, inputs.dtype))
        if self.use_bias:
            bias = ops.convert_to_tensor(self.bias)
            bmask = keras.random.uniform(ops.shape(bias), seed=self.seed_generator) < keep
            x = x + ops.cast(ops.where(bmask, bias / keep, ops.zeros_like(bias)), x.dtype)
        if self.activation is not None:
            x = self.activation(x)
        return x


@keras.saving.register_keras_serializable(package="kerasdl")
class DropPath(ConfigurableLayer):
    """Stochastic depth: drop a residual branch per sample (Huang et al. 2016).

    In training each sample's input is zeroed with probability ``rate`` and otherwise divided by
    ``1 - rate``; at inference it is the identity. Apply it to the residual branch before the
    addition (``x + DropPath(rate)(f(x))``). This is torchvision's ``StochasticDepth(p, "row")``
    and timm's ``DropPath``.

    Args:
        rate: probability of dropping the branch, in ``[0, 1)``.
        seed: seed of the random generator.

    Call arguments:
        inputs: ``(B, ...)`` tensor, the residual branch.
        training: drop when true.

    Example:
        >>> y = x + DropPath(0.1)(branch(x), training=True)

    Reference:
        Huang et al., "Deep Networks with Stochastic Depth", ECCV 2016.
    """

    def __init__(self, rate: float = 0.0, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rate = _check_rate(rate)
        self.seed_generator = keras.random.SeedGenerator(seed)
        # no weights: built now, as Keras's own Dropout is (a model of these is then built
        # whole, and its optimizer can be created before the first trace)
        self._build_at_init()

    def call(self, inputs, training=None):
        if not training or self.rate == 0.0:
            return inputs
        keep = 1.0 - self.rate
        shape = (ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)
        mask = keras.random.uniform(shape, seed=self.seed_generator) < keep
        return ops.where(mask, inputs / ops.cast(keep, inputs.dtype), ops.zeros_like(inputs))

    def compute_output_shape(self, input_shape):
        return input_shape
