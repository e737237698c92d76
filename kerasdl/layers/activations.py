"""Activation choice by name: relu, leaky_relu, elu, swish (with beta), gelu, sigmoid, tanh.

References:
    Nair & Hinton 2010 (ReLU); Maas et al. 2013 (leaky ReLU); Clevert et al. 2016 (ELU);
    Ramachandran et al. 2017 (Swish, x * sigmoid(beta x)); Hendrycks & Gimpel 2016 (GELU).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
from keras import ops

from kerasdl.configurable import ConfigurableLayer
from kerasdl.errors import UserError
from kerasdl.layers.fused_grads import SiLU


@keras.saving.register_keras_serializable(package="kerasdl")
class Swish(ConfigurableLayer):
    """Swish ``x * sigmoid(beta * x)`` (Ramachandran et al. 2017); ``beta=1`` is SiLU.

    Args:
        beta: the slope inside the sigmoid (fixed, or learned with ``trainable_beta=True``).
        trainable_beta: learn ``beta`` as a scalar weight.
    """

    def __init__(self, beta: float = 1.0, trainable_beta: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.beta = float(beta)

    def build(self, input_shape):
        if self.trainable_beta:
            self.beta_weight = self.add_weight(
                shape=(), initializer=keras.initializers.Constant(self.beta), name="beta"
            )

    def call(self, x):
        beta = self.beta_weight if self.trainable_beta else self.beta
        return x * ops.sigmoid(ops.cast(beta, x.dtype) * x)


def _keras(kind: str) -> Callable[..., keras.layers.Layer]:
    def build(name: str | None, alpha: float, beta: float) -> keras.layers.Layer:
        return keras.layers.Activation(kind, name=name)

    return build


# name -> builder(name, alpha, beta)
ACTIVATIONS: dict[str, Callable[..., keras.layers.Layer]] = {
    "relu": _keras("relu"),
    "relu6": _keras("relu6"),
    "leaky_relu": lambda name, alpha, beta: keras.layers.LeakyReLU(negative_slope=alpha, name=name),
    "elu": lambda name, alpha, beta: keras.layers.ELU(
        alpha=1.0 if alpha == 0.01 else alpha, name=name
    ),
    "swish": lambda name, alpha, beta: Swish(beta=beta, name=name),
    # Keras's SiLU with a one-kernel XLA gradient on TensorFlow (fused_grads.py)
    "silu": lambda name, alpha, beta: SiLU(name=name),
    "gelu": _keras("gelu"),
    "sigmoid": _keras("sigmoid"),
    "tanh": _keras("tanh"),
    "linear": _keras("linear"),
}
ACTIVATION_CHOICES = tuple(ACTIVATIONS)


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
    if kind not in ACTIVATIONS:
        raise UserError(
            f"Unknown activation {kind!r}. Expected one of: {', '.join(ACTIVATION_CHOICES)}."
        )
    return ACTIVATIONS[kind](name, alpha, beta)
