"""Normalization choice by name: batch, layer, group, instance (and none).

CNN families take ``norm="batch"`` (the default) and call :func:`get_norm_layer`; the reference
PyTorch models use batch-norm momentum 0.1 and epsilon 1e-5, which is Keras ``momentum=0.9`` and
``epsilon=1e-5`` (DESIGN.md), so those are the defaults here. Batch norm is
:class:`~kerasdl.layers.fused_bn.FusedBatchNormalization`: the Keras layer (same weights and
configuration) running TensorFlow's fused kernel, about 2x faster training on CPU.

References:
    Ioffe & Szegedy 2015 (batch), Ba et al. 2016 (layer), Wu & He 2018 (group),
    Ulyanov et al. 2016 (instance).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import keras

from kerasdl.errors import UserError
from kerasdl.layers.fused_bn import FusedBatchNormalization

NORM_CHOICES = ("batch", "layer", "group", "instance", "none")
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
_FUSED_BN = {"enabled": True}


def set_fused_batch_norm(enabled: bool) -> None:
    """Choose the class behind ``get_norm_layer("batch")`` for layers built from now on.

    ``True`` (the default): :class:`FusedBatchNormalization`; ``False``: Keras's own
    ``BatchNormalization`` (same weights and configuration; used by the benchmark to measure the
    fused kernel's gain, and available for debugging).
    """
    _FUSED_BN["enabled"] = bool(enabled)


_SYNC_BN = {"enabled": False}


@contextlib.contextmanager
def sync_batch_norm(enabled: bool = True) -> Iterator[None]:
    """Within this context, ``get_norm_layer("batch")`` makes synchronized batch norm.

    Synchronized batch norm computes the batch statistics over the global batch of all replicas of
    a ``tf.distribute`` strategy (one all-reduce per layer per step) instead of each replica's
    share (Peng et al. 2018, "MegDet"; Keras ``BatchNormalization(synchronized=True)``). Recipes
    turn it on with ``distribute.sync_batchnorm: true``.
    """
    previous = _SYNC_BN["enabled"]
    _SYNC_BN["enabled"] = enabled
    try:
        yield
    finally:
        _SYNC_BN["enabled"] = previous


def get_norm_layer(
    kind: str = "batch",
    *,
    name: str | None = None,
    groups: int = 32,
    momentum: float = BN_MOMENTUM,
    epsilon: float = BN_EPSILON,
    gamma_zero: bool = False,
    **kwargs: Any,
) -> keras.layers.Layer:
    """A normalization layer for channels-last feature maps.

    Args:
        kind: one of ``batch``, ``layer``, ``group``, ``instance``, ``none``.
        name: layer name.
        groups: number of groups for group norm (reduced to a divisor of the channel count when
            the layer is built on fewer channels).
        momentum: batch-norm moving-average momentum (Keras convention).
        epsilon: added to the variance.
        gamma_zero: start the scale at zero (zero-init of the last norm in a residual branch).
        **kwargs: passed to the Keras layer.
    """
    gamma = "zeros" if gamma_zero else "ones"
    if kind == "batch":
        cls = FusedBatchNormalization if _FUSED_BN["enabled"] else keras.layers.BatchNormalization
        if _SYNC_BN["enabled"]:
            kwargs.setdefault("synchronized", True)
        return cls(momentum=momentum, epsilon=epsilon, gamma_initializer=gamma, name=name, **kwargs)
    if kind == "layer":
        return keras.layers.LayerNormalization(
            axis=-1, epsilon=epsilon, gamma_initializer=gamma, name=name, **kwargs
        )
    if kind == "group":
        return FlexibleGroupNorm(groups=groups, epsilon=epsilon, gamma_initializer=gamma, name=name)
    if kind == "instance":
        return FlexibleGroupNorm(groups=-1, epsilon=epsilon, gamma_initializer=gamma, name=name)
    if kind == "none":
        return keras.layers.Identity(name=name)
    raise UserError(f"Unknown normalization {kind!r}. Expected one of: {', '.join(NORM_CHOICES)}.")


@keras.saving.register_keras_serializable(package="kerasdl")
class FlexibleGroupNorm(keras.layers.GroupNormalization):
    """Group normalization whose group count adapts to the channel count.

    ``groups=-1`` gives instance normalization (one group per channel, Ulyanov et al. 2016); a
    positive ``groups`` that does not divide the channels is reduced to the largest divisor, so the
    same ``norm="group"`` choice works in every stage of a network (Wu & He 2018 use 32).

    Args:
        groups: requested group count, or -1 for one group per channel.
        **kwargs: passed to ``keras.layers.GroupNormalization``.
    """

    def __init__(self, groups: int = 32, **kwargs: Any) -> None:
        super().__init__(groups=groups, **kwargs)
        self.requested_groups = groups

    def build(self, input_shape):
        channels = int(input_shape[-1])
        if self.requested_groups == -1:
            self.groups = channels
        else:
            g = min(self.requested_groups, channels)
            while channels % g:
                g -= 1
            self.groups = g
        super().build(input_shape)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["groups"] = self.requested_groups
        return config
