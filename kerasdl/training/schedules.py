"""Learning-rate schedules by name, with optional linear warm-up in front of any of them.

All schedules are per optimizer step; a recipe gives epochs, converted with the steps per epoch.

* ``constant``: lr.
* ``step``: lr * gamma^k after the k-th epoch boundary in ``step_epochs`` (He et al. 2016).
* ``exponential``: lr * decay_rate^(t / decay_steps).
* ``cosine``: lr_min + (lr - lr_min) (1 + cos(pi t / T)) / 2 (Loshchilov & Hutter 2017, SGDR
  without restarts).
* ``cosine_restarts``: SGDR with first period ``restart_epochs``, period multiplier ``t_mul`` and
  peak multiplier ``m_mul``: period ``i`` decays from ``lr m_mul^i`` to ``lr_min`` (Loshchilov &
  Hutter 2017, eq. 5, with ``eta_max^i = lr m_mul^i`` and a constant ``eta_min``).
* warm-up: lr * (t + 1) / W for the first W steps (Goyal et al. 2017), then the schedule restarted
  at t - W, so the decay spans the remaining steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import keras
from keras import ops

from kerasdl.config import ScheduleConfig
from kerasdl.configurable import Configurable
from kerasdl.errors import UserError

Schedules = keras.optimizers.schedules


class _Schedule(Configurable, Schedules.LearningRateSchedule):
    """A learning-rate schedule whose config is its constructor's arguments (``Configurable``;
    a schedule among them, such as ``after``, serialised)."""

    def get_config(self) -> dict[str, Any]:
        return self.constructor_config


@keras.saving.register_keras_serializable(package="kerasdl")
class LinearWarmup(_Schedule):
    """Linear warm-up to ``after(0)`` over ``warmup_steps``, then ``after(step - warmup_steps)``.

    Args:
        after: the schedule that follows the warm-up.
        warmup_steps: number of warm-up steps (0 disables warm-up).

    Reference:
        Goyal et al., "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour", 2017.
    """

    def __init__(self, after: Schedules.LearningRateSchedule, warmup_steps: int) -> None:
        self.after = after
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step: Any) -> Any:
        step = ops.cast(step, "float32")
        w = float(self.warmup_steps)
        target = ops.cast(self.after(0), "float32")
        warm = target * (step + 1.0) / max(w, 1.0)
        rest = ops.cast(self.after(ops.maximum(step - w, 0.0)), "float32")
        return ops.where(step < w, warm, rest)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LinearWarmup:
        config = dict(config)
        config["after"] = keras.saving.deserialize_keras_object(config["after"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="kerasdl")
class Constant(_Schedule):
    """A constant learning rate as a schedule (so warm-up can wrap it)."""

    def __init__(self, learning_rate: float) -> None:
        self.learning_rate = float(learning_rate)

    def __call__(self, step: Any) -> Any:
        return ops.cast(self.learning_rate, "float32") + 0.0 * ops.cast(step, "float32")


@keras.saving.register_keras_serializable(package="kerasdl")
class CosineRestarts(_Schedule):
    """SGDR: cosine annealing with warm restarts, periods ``T_0 t_mul^i``, peaks ``lr m_mul^i``.

    In period ``i``, ``lr_t = lr_min + (peak_i - lr_min) (1 + cos(pi T_cur / T_i)) / 2`` with
    ``peak_i = max(lr m_mul^i, lr_min)`` and ``lr_min = alpha lr``: every period starts at its
    peak and ends at the same floor. This is what Keras documents for ``CosineDecayRestarts``
    (``m_mul`` derives "the initial learning rate of the i-th period", ``alpha`` is the minimum
    "as a fraction of the initial learning rate"); Keras's code scales only the cosine part by
    ``m_mul^i``, so with ``alpha > 0`` its peaks are ``lr (alpha + (1 - alpha) m_mul^i)``.

    Args:
        initial_learning_rate: ``lr``, the first peak.
        first_decay_steps: ``T_0`` in optimizer steps.
        t_mul: period multiplier.
        m_mul: peak multiplier.
        alpha: ``lr_min / lr``.

    Reference:
        Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts", ICLR 2017,
        equation 5.
    """

    def __init__(
        self,
        initial_learning_rate: float,
        first_decay_steps: int,
        t_mul: float = 2.0,
        m_mul: float = 1.0,
        alpha: float = 0.0,
    ) -> None:
        if first_decay_steps <= 0:
            raise ValueError(f"first_decay_steps must be > 0. Received: {first_decay_steps}")
        self.initial_learning_rate = float(initial_learning_rate)
        self.first_decay_steps = int(first_decay_steps)
        self.t_mul = float(t_mul)
        self.m_mul = float(m_mul)
        self.alpha = float(alpha)

    def _period(self, step: Any) -> tuple[Any, Any]:
        """``(i, completed fraction of period i)`` at ``step``."""
        t0, tm = float(self.first_decay_steps), self.t_mul
        if tm == 1.0:
            i = ops.floor(step / t0)
            return i, step / t0 - i
        # start of period i: t0 (tm^i - 1) / (tm - 1); the log (and in float32 the power) can
        # land one period off at a restart, hence float64 and the two corrections
        i = ops.floor(ops.log(1.0 + step * (tm - 1.0) / t0) / math.log(tm))
        i = ops.maximum(i, 0.0)

        def start(j: Any) -> Any:
            return t0 * (ops.power(tm, j) - 1.0) / (tm - 1.0)

        i = ops.where(step < start(i), i - 1.0, i)
        i = ops.where(step >= start(i + 1.0), i + 1.0, i)
        return i, (step - start(i)) / (t0 * ops.power(tm, i))

    def __call__(self, step: Any) -> Any:
        step = ops.cast(step, "float64")
        i, frac = self._period(step)
        lr_min = self.alpha * self.initial_learning_rate
        peak = ops.maximum(self.initial_learning_rate * ops.power(self.m_mul, i), lr_min)
        lr = lr_min + (peak - lr_min) * 0.5 * (1.0 + ops.cos(math.pi * frac))
        return ops.cast(lr, "float32")


def _constant(cfg: ScheduleConfig, lr: float, spe: int, warmup: int, total: int) -> Any:
    return Constant(lr)


def _step(cfg: ScheduleConfig, lr: float, spe: int, warmup: int, total: int) -> Any:
    # The optimizer evaluates the schedule at its step count before the update and
    # PiecewiseConstantDecay keeps the old value at step == boundary: the boundary is the last
    # step of the previous epoch.
    bounds = [e * spe - warmup - 1 for e in sorted(cfg.step_epochs)]
    values = [lr * cfg.gamma**i for i in range(len(bounds) + 1)]
    return Schedules.PiecewiseConstantDecay(bounds, values) if bounds else Constant(lr)


def _exponential(cfg: ScheduleConfig, lr: float, spe: int, warmup: int, total: int) -> Any:
    return Schedules.ExponentialDecay(lr, max(int(cfg.decay_epochs * spe), 1), cfg.decay_rate)


def _cosine(cfg: ScheduleConfig, lr: float, spe: int, warmup: int, total: int) -> Any:
    return Schedules.CosineDecay(lr, total, alpha=cfg.min_lr_ratio)


def _fixmatch_cosine(cfg: ScheduleConfig, lr: float, spe: int, warmup: int, total: int) -> Any:
    from kerasdl.methods.fixmatch import FixMatchCosine

    return FixMatchCosine(lr, total)


def _cosine_restarts(cfg: ScheduleConfig, lr: float, spe: int, warmup: int, total: int) -> Any:
    return CosineRestarts(
        lr,
        max(int(cfg.restart_epochs * spe), 1),
        t_mul=cfg.t_mul,
        m_mul=cfg.m_mul,
        alpha=cfg.min_lr_ratio,
    )


# name -> builder(cfg, base lr, steps per epoch, warm-up steps, steps after the warm-up)
SCHEDULES: dict[str, Callable[..., Schedules.LearningRateSchedule]] = {
    "constant": _constant,
    "step": _step,
    "exponential": _exponential,
    "cosine": _cosine,
    "cosine_restarts": _cosine_restarts,
    "fixmatch_cosine": _fixmatch_cosine,
}


def build_schedule(
    cfg: ScheduleConfig, base_lr: float, steps_per_epoch: int, epochs: int
) -> Schedules.LearningRateSchedule:
    """The schedule of a recipe, in optimizer steps.

    Args:
        cfg: the ``training.schedule`` section.
        base_lr: the optimizer's learning rate (the peak after warm-up).
        steps_per_epoch: optimizer steps per epoch.
        epochs: planned epochs.
    """
    if cfg.name not in SCHEDULES:
        raise UserError(f"Unknown schedule {cfg.name!r}. Expected one of: {', '.join(SCHEDULES)}.")
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    total = max(epochs * steps_per_epoch - warmup, 1)
    inner = SCHEDULES[cfg.name](cfg, base_lr, steps_per_epoch, warmup, total)
    return LinearWarmup(inner, warmup) if warmup > 0 else inner
