"""Optimizers by name, built from a recipe's ``training.optimizer`` section.

Every optimizer is Keras's own (``sgd``/``momentum``/``nesterov``: :class:`FusedSGD`, Keras's SGD
with the same arithmetic in one TensorFlow kernel per variable); this module maps the canon's
names to them:

=========  ==========================================  =====================================
name       update                                       reference
=========  ==========================================  =====================================
sgd        w -= lr g                                    Robbins & Monro 1951
momentum   v = m v - lr g;  w += v                      Polyak 1964
nesterov   v = m v - lr g;  w += m v - lr g             Nesterov 1983; Sutskever et al. 2013
adagrad    a += g^2;  w -= lr g / sqrt(a + eps)         Duchi et al. 2011
rmsprop    a = rho a + (1-rho) g^2;  w -= lr g / sqrt(a + eps)   Tieleman & Hinton 2012
           (with momentum m: v = m v + lr g / sqrt(a + eps); w -= v)
adam       bias-corrected first/second moments          Kingma & Ba 2015
adamw      adam + decoupled weight decay w -= lr wd w   Loshchilov & Hutter 2019
lars       per-kernel trust ratio, momentum (lars.py)   You, Gitman & Ginsburg 2017
=========  ==========================================  =====================================

``momentum`` left unset is 0.9 for ``momentum``/``nesterov`` and 0 (none) for ``rmsprop``, whose
momentum form is TensorFlow's and PyTorch's (EfficientNet's and MobileNet's RMSProp, momentum 0.9).
``weight_decay`` on ``sgd``/``momentum``/``nesterov``/``rmsprop``/``adam`` is Keras's decoupled
decay too (``w -= lr * wd * w``); for the classic coupled L2 penalty use ``training.l2``.
``decay_exclude`` lists variables the decay skips (:func:`exclude_from_decay`): ``bias``,
``norm`` (normalisation layers' scales and offsets) and ``embedding`` (the ViT's class token and
position embedding), as timm's parameter groups (``ndim <= 1`` or ``no_weight_decay()``) and
torchvision's ``--norm-weight-decay 0 --bias-weight-decay 0 --transformer-embedding-decay 0``.
Clipping (``clipnorm``: per variable, ``global_clipnorm``: over all gradients, Pascanu et al. 2013),
gradient accumulation and a weight EMA (evaluation with the averaged weights) are Keras optimizer
options exposed as recipe keys.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import keras

from kerasdl.config import OptimizerConfig
from kerasdl.errors import UserError
from kerasdl.training.fused_sgd import FusedSGD
from kerasdl.training.lars import LARS

DEFAULT_MOMENTUM = 0.9  # SGD with momentum when training.optimizer.momentum is unset


def _sgd(cfg: OptimizerConfig, wd: float | None, common: dict[str, Any]) -> Any:
    return FusedSGD(momentum=0.0, weight_decay=wd, **common)


def _momentum(
    cfg: OptimizerConfig, wd: float | None, common: dict[str, Any], nesterov: bool = False
) -> Any:
    momentum = DEFAULT_MOMENTUM if cfg.momentum is None else cfg.momentum
    return FusedSGD(momentum=momentum, nesterov=nesterov, weight_decay=wd, **common)


def _adagrad(cfg: OptimizerConfig, wd: float | None, common: dict[str, Any]) -> Any:
    return keras.optimizers.Adagrad(
        initial_accumulator_value=cfg.initial_accumulator_value,
        epsilon=cfg.epsilon,
        weight_decay=wd,
        **common,
    )


def _rmsprop(cfg: OptimizerConfig, wd: float | None, common: dict[str, Any]) -> Any:
    return keras.optimizers.RMSprop(
        rho=cfg.rho, momentum=cfg.momentum or 0.0, epsilon=cfg.epsilon, weight_decay=wd, **common
    )


def _adam(cfg: OptimizerConfig, wd: float | None, common: dict[str, Any]) -> Any:
    return keras.optimizers.Adam(
        beta_1=cfg.beta_1, beta_2=cfg.beta_2, epsilon=cfg.epsilon, weight_decay=wd, **common
    )


def _adamw(cfg: OptimizerConfig, wd: float | None, common: dict[str, Any]) -> Any:
    # Keras's AdamW default decay is 0.004; the recipe's value (0 means none) wins.
    return keras.optimizers.AdamW(
        beta_1=cfg.beta_1,
        beta_2=cfg.beta_2,
        epsilon=cfg.epsilon,
        weight_decay=cfg.weight_decay,
        **common,
    )


def _lars(cfg: OptimizerConfig, wd: float | None, common: dict[str, Any]) -> Any:
    # LARS's decay is its own coupled term inside the adaptation (kerasdl.training.lars)
    momentum = DEFAULT_MOMENTUM if cfg.momentum is None else cfg.momentum
    return LARS(
        momentum=momentum,
        weight_decay=cfg.weight_decay,
        trust_coefficient=cfg.trust_coefficient,
        **common,
    )


# name -> builder(cfg, weight decay or None, Keras options common to all)
OPTIMIZERS: dict[str, Callable[..., keras.optimizers.Optimizer]] = {
    "sgd": _sgd,
    "momentum": _momentum,
    "nesterov": functools.partial(_momentum, nesterov=True),
    "adagrad": _adagrad,
    "rmsprop": _rmsprop,
    "adam": _adam,
    "adamw": _adamw,
    "lars": _lars,
}


NORM_LAYERS: tuple[type, ...] = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
)
EMBEDDING_NAMES = ("class_token", "pos_embedding")  # kerasdl.layers.patch_embed


def decay_excluded(model: keras.Model, exclude: list[str] | tuple[str, ...]) -> list[Any]:
    """The variables of ``model`` (trainable or frozen) that weight decay skips under
    ``exclude`` (``bias``, ``norm``, ``embedding``)."""
    if not exclude:
        return []
    out: dict[int, Any] = {}
    for layer in model._flatten_layers(include_self=False, recursive=True):
        own = [w for w in layer._trainable_variables + layer._non_trainable_variables]
        if "norm" in exclude and isinstance(layer, NORM_LAYERS):
            out.update((id(w), w) for w in own)
        for w in own:
            name = w.path.rsplit("/", 1)[-1]
            if ("bias" in exclude and name == "bias") or (
                "embedding" in exclude and name in EMBEDDING_NAMES
            ):
                out[id(w)] = w
    return list(out.values())


def exclude_from_decay(
    optimizer: keras.optimizers.Optimizer, model: keras.Model, exclude: list[str]
) -> list[str]:
    """Make ``optimizer`` (not yet built) skip weight decay for ``model``'s variables named by
    ``exclude``; returns their paths.

    Example:
        >>> opt = keras.optimizers.AdamW(1e-3, weight_decay=0.05)
        >>> skipped = exclude_from_decay(opt, model, ["bias", "norm", "embedding"])
    """
    variables = decay_excluded(model, exclude)
    if variables:
        optimizer.exclude_from_weight_decay(var_list=variables)
    return [v.path for v in variables]


def build_optimizer(
    cfg: OptimizerConfig, learning_rate: float | keras.optimizers.schedules.LearningRateSchedule
) -> keras.optimizers.Optimizer:
    """A Keras optimizer for ``cfg`` with the given learning rate (a float or a schedule)."""
    if cfg.name not in OPTIMIZERS:
        raise UserError(
            f"Unknown optimizer {cfg.name!r}. Expected one of: {', '.join(OPTIMIZERS)}."
        )
    common: dict[str, Any] = {
        "learning_rate": learning_rate,
        "clipnorm": cfg.clipnorm,
        "global_clipnorm": cfg.global_clipnorm,
        "clipvalue": cfg.clipvalue,
        "use_ema": cfg.ema,
        "ema_momentum": cfg.ema_momentum,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
    }
    return OPTIMIZERS[cfg.name](cfg, cfg.weight_decay or None, common)
