"""Normalization choice by name: batch, layer, group, instance (and none).

CNN families take ``norm="batch"`` (the default) and call :func:`get_norm_layer`; the reference
PyTorch models use batch-norm momentum 0.1 and epsilon 1e-5, which is Keras ``momentum=0.9`` and
``epsilon=1e-5`` (DESIGN.md), so those are the defaults here. Batch norm is
:class:`~kerasdl.layers.fused_bn.FusedBatchNormalization`: the Keras layer (same weights and
configuration) running TensorFlow's fused kernel, about 2x faster training on CPU.

Options that concern a whole model rather than one layer are set on the built model, explicitly:
:func:`configure_batch_norm` synchronizes its batch norms across replicas (PyTorch's
``SyncBatchNorm.convert_sync_batchnorm``) or turns the fused kernel off (the benchmark's
comparison). No module-level switch changes what :func:`get_norm_layer` builds.

References:
    Ioffe & Szegedy 2015 (batch), Ba et al. 2016 (layer), Wu & He 2018 (group),
    Ulyanov et al. 2016 (instance).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras

from kerasdl.configurable import Configurable
from kerasdl.errors import UserError
from kerasdl.layers.fused_bn import FusedBatchNormalization

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


@keras.saving.register_keras_serializable(package="kerasdl")
class FlexibleGroupNorm(Configurable, keras.layers.GroupNormalization):
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
        self.requested_groups = groups  # build sets self.groups to the count used

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


def _batch(name, groups, momentum, epsilon, gamma, **kwargs):
    return FusedBatchNormalization(
        momentum=momentum, epsilon=epsilon, gamma_initializer=gamma, name=name, **kwargs
    )


def _layer(name, groups, momentum, epsilon, gamma, **kwargs):
    return keras.layers.LayerNormalization(
        axis=-1, epsilon=epsilon, gamma_initializer=gamma, name=name, **kwargs
    )


def _group(name, groups, momentum, epsilon, gamma, **kwargs):
    return FlexibleGroupNorm(groups=groups, epsilon=epsilon, gamma_initializer=gamma, name=name)


def _instance(name, groups, momentum, epsilon, gamma, **kwargs):
    return FlexibleGroupNorm(groups=-1, epsilon=epsilon, gamma_initializer=gamma, name=name)


def _none(name, groups, momentum, epsilon, gamma, **kwargs):
    return keras.layers.Identity(name=name)


# name -> builder(name, groups, momentum, epsilon, gamma_initializer, **layer kwargs)
NORM_LAYERS: dict[str, Callable[..., keras.layers.Layer]] = {
    "batch": _batch,
    "layer": _layer,
    "group": _group,
    "instance": _instance,
    "none": _none,
}
NORM_CHOICES = tuple(NORM_LAYERS)


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
        **kwargs: passed to the Keras layer (batch and layer norm), e.g. ``synchronized=True``.
    """
    if kind not in NORM_LAYERS:
        raise UserError(
            f"Unknown normalization {kind!r}. Expected one of: {', '.join(NORM_CHOICES)}."
        )
    gamma = "zeros" if gamma_zero else "ones"
    return NORM_LAYERS[kind](name, groups, momentum, epsilon, gamma, **kwargs)


def batch_norm_layers(model: keras.layers.Layer) -> list[keras.layers.BatchNormalization]:
    """Every batch-norm layer inside ``model``, at any nesting depth."""
    layers = model._flatten_layers(include_self=True, recursive=True)
    return [layer for layer in layers if isinstance(layer, keras.layers.BatchNormalization)]


def configure_batch_norm(
    model: keras.layers.Layer, *, synchronized: bool | None = None, fused: bool | None = None
) -> keras.layers.Layer:
    """Set batch-norm options on every batch-norm layer of a built model; returns ``model``.

    Both options are read when the layers run, so set them before training starts (before the
    first ``fit`` or traced step).

    Args:
        model: a built model (or layer); nested blocks and sub-models are included.
        synchronized: compute the batch statistics over the global batch of all replicas of a
            ``tf.distribute`` strategy (one all-reduce per layer per step) instead of each
            replica's share (Peng et al. 2018, "MegDet"; Keras
            ``BatchNormalization(synchronized=True)``; saved with the model). Recipes turn it
            on with ``distribute.sync_batchnorm: true``. ``None`` leaves the layers as they are.
        fused: ``False`` runs :class:`FusedBatchNormalization` layers on Keras's own
            implementation instead of TensorFlow's fused kernel (the benchmark measures the
            kernel's gain this way); not saved. ``None`` leaves the layers as they are.

    Example:
        >>> with strategy.scope():
        ...     model = configure_batch_norm(create_model("resnet18"), synchronized=True)
    """
    for layer in batch_norm_layers(model):
        if synchronized is not None:
            if synchronized and keras.backend.backend() != "tensorflow":
                raise ValueError("synchronized batch norm needs the TensorFlow backend")
            layer.synchronized = bool(synchronized)
        if fused is not None and isinstance(layer, FusedBatchNormalization):
            layer.use_fused_kernel = bool(fused)
    return model
