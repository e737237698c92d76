"""Activation choice by name: relu, leaky_relu, elu, swish (with beta), gelu, sigmoid, tanh.

References:
    Nair & Hinton 2010 (ReLU); Maas et al. 2013 (leaky ReLU); Clevert et al. 2016 (ELU);
    Ramachandran et al. 2017 (Swish, x * sigmoid(beta x)); Hendrycks & Gimpel 2016 (GELU).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from kerasdl.errors import UserError

ACTIVATION_CHOICES = (
    "relu",
    "relu6",
    "leaky_relu",
    "elu",
    "swish",
    "silu",
    "gelu",
    "sigmoid",
    "tanh",
    "linear",
)


@keras.saving.register_keras_serializable(package="kerasdl")
class Swish(keras.layers.Layer):
    """Swish ``x * sigmoid(beta * x)`` (Ramachandran et al. 2017); ``beta=1`` is SiLU.

    Args:
        beta: the slope inside the sigmoid (fixed, or learned with ``trainable_beta=True``).
        trainable_beta: learn ``beta`` as a scalar weight.
    """

    def __init__(self, beta: float = 1.0, trainable_beta: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.beta = float(beta)
        self.trainable_beta = trainable_beta

    def build(self, input_shape):
        if self.trainable_beta:
            self.beta_weight = self.add_weight(
                shape=(), initializer=keras.initializers.Constant(self.beta), name="beta"
            )

    def call(self, x):
        beta = self.beta_weight if self.trainable_beta else self.beta
        return x * ops.sigmoid(ops.cast(beta, x.dtype) * x)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "beta": self.beta, "trainable_beta": self.trainable_beta}


def get_activation(
    kind: str = "relu", *, name: str | None = None, alpha: float = 0.01, beta: float = 1.0
) -> keras.layers.Layer:
    """An activation layer by name.

    Args:
        kind: one of ``ACTIVATION_CHOICES``.
        name: layer name.
        alpha: negative slope of leaky ReLU / scale of ELU.
        beta: Swish's beta (``swish`` with ``beta=1`` equals ``silu``).
    """
    if kind == "leaky_relu":
        return keras.layers.LeakyReLU(negative_slope=alpha, name=name)
    if kind == "elu":
        return keras.layers.ELU(alpha=1.0 if alpha == 0.01 else alpha, name=name)
    if kind == "swish":
        return Swish(beta=beta, name=name)
    if kind in ACTIVATION_CHOICES:
        return keras.layers.Activation(kind, name=name)
    raise UserError(
        f"Unknown activation {kind!r}. Expected one of: {', '.join(ACTIVATION_CHOICES)}."
    )
