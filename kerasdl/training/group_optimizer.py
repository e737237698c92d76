"""Per-group learning rates for any Keras optimizer (discriminative fine-tuning).

Fine-tuning a pretrained backbone with a smaller learning rate than the new head (Howard & Ruder
2018, "discriminative fine-tuning"; Yosinski et al. 2014) needs a real per-group learning rate:
scaling the *gradients* of a group does not scale its step under Adam, RMSprop or Adagrad, whose
update ``m / sqrt(v)`` is invariant to the gradient's scale. Here the learning rate itself is
scaled: every Keras optimizer class gets a subclass (``GroupedAdam``, ``GroupedSGD``, ...) whose
``update_step`` multiplies the current learning rate (schedules included) by the multiplier of the
variable's group, and whose decoupled weight decay ``w -= lr * wd * w`` uses the group's rate too
(as PyTorch parameter groups do). Clipping, gradient accumulation, the weight EMA, loss scaling and
tf.distribute are the base optimizer's, untouched.

A group is a prefix of the variable path (``"head/"`` matches ``head/kernel`` and ``head/bias``;
paths are ``<layer name>/<variable name>``); the longest matching prefix wins and unmatched
variables use ``default_multiplier``.

Example:
    >>> opt = with_lr_multipliers(keras.optimizers.Adam(1e-3), {"head/": 1.0}, default=0.1)
    >>> # backbone variables step with lr 1e-4, the head with 1e-3

Reference:
    Howard & Ruder, "Universal Language Model Fine-tuning for Text Classification", ACL 2018.
"""

from __future__ import annotations

from typing import Any

import keras

from kerasdl.training.fused_sgd import FusedSGD


class GroupLearningRateMixin:
    """Scales the learning rate (and decoupled weight decay) of each variable by its group's
    multiplier. Mixed in front of a Keras optimizer class; see :func:`with_lr_multipliers`.

    Args:
        lr_multipliers: ``{variable path prefix: multiplier}``.
        default_multiplier: multiplier of the variables no prefix matches.
        **kwargs: the base optimizer's arguments.
    """

    def __init__(
        self,
        *args: Any,
        lr_multipliers: dict[str, float] | None = None,
        default_multiplier: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.lr_multipliers = {str(k): float(v) for k, v in (lr_multipliers or {}).items()}
        self.default_multiplier = float(default_multiplier)
        for value in [*self.lr_multipliers.values(), self.default_multiplier]:
            if value < 0:
                raise ValueError(f"learning-rate multipliers must be >= 0. Received: {value}")

    def path_multiplier(self, path: str) -> float:
        """The multiplier of a variable path: the longest matching prefix, else the default."""
        best = None
        for prefix in self.lr_multipliers:
            if path.startswith(prefix) and (best is None or len(prefix) > len(best)):
                best = prefix
        return self.lr_multipliers[best] if best is not None else self.default_multiplier

    def build(self, var_list: list[keras.Variable]) -> None:
        super().build(var_list)  # type: ignore[misc]
        # update_step receives backend variables (no path), so map them by the optimizer's key.
        self._group_multipliers = {
            self._var_key(v): self.path_multiplier(v.path)  # type: ignore[attr-defined]
            for v in var_list
        }

    def multiplier(self, variable: Any) -> float:
        """The multiplier of a model variable (or of its backend variable, once built)."""
        key = self._var_key(variable)  # type: ignore[attr-defined]
        known = getattr(self, "_group_multipliers", {})
        if key in known:
            return known[key]
        path = getattr(variable, "path", None)
        return self.path_multiplier(path) if path is not None else self.default_multiplier

    def update_step(self, gradient: Any, variable: keras.Variable, learning_rate: Any) -> None:
        m = self.multiplier(variable)
        if m != 1.0:
            learning_rate = keras.ops.multiply(learning_rate, m)
        super().update_step(gradient, variable, learning_rate)  # type: ignore[misc]

    def _apply_weight_decay(self, variables: list[keras.Variable]) -> None:
        wd = self.weight_decay  # type: ignore[attr-defined]
        if wd is None:
            return
        groups: dict[float, list[keras.Variable]] = {}
        for v in variables:
            groups.setdefault(self.multiplier(v), []).append(v)
        try:
            for m, group in groups.items():
                self.weight_decay = wd * m  # read when the step is traced
                super()._apply_weight_decay(group)  # type: ignore[misc]
        finally:
            self.weight_decay = wd

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()  # type: ignore[misc]
        config["lr_multipliers"] = dict(self.lr_multipliers)
        config["default_multiplier"] = self.default_multiplier
        return config


_BASES = [
    FusedSGD,  # the recipes' sgd / momentum / nesterov
    keras.optimizers.SGD,
    keras.optimizers.Adagrad,
    keras.optimizers.RMSprop,
    keras.optimizers.Adam,
    keras.optimizers.AdamW,
    keras.optimizers.Adamax,
    keras.optimizers.Nadam,
    keras.optimizers.Lion,
]
GROUPED: dict[type, type] = {}
for _base in _BASES:
    _cls = type(f"Grouped{_base.__name__}", (GroupLearningRateMixin, _base), {})
    _cls.__module__ = __name__
    GROUPED[_base] = keras.saving.register_keras_serializable(package="kerasdl")(_cls)
    globals()[_cls.__name__] = _cls


def with_lr_multipliers(
    optimizer: keras.optimizers.Optimizer,
    lr_multipliers: dict[str, float],
    default: float = 1.0,
) -> keras.optimizers.Optimizer:
    """A copy of ``optimizer`` (same class and hyper-parameters, not yet built) with per-group
    learning rates.

    Args:
        optimizer: a Keras optimizer (SGD, Adagrad, RMSprop, Adam, AdamW, Adamax, Nadam, Lion).
        lr_multipliers: ``{variable path prefix: multiplier}``, e.g. ``{"head/": 1.0}``.
        default: multiplier of the variables no prefix matches.
    """
    base = type(optimizer)
    if isinstance(optimizer, GroupLearningRateMixin):
        base = next(b for b, g in GROUPED.items() if g is type(optimizer))
    if base not in GROUPED:
        raise ValueError(f"per-group learning rates are not available for {base.__name__}")
    config = optimizer.get_config()
    config.pop("lr_multipliers", None)
    config.pop("default_multiplier", None)
    grouped = GROUPED[base].from_config(config)
    grouped.lr_multipliers = {str(k): float(v) for k, v in lr_multipliers.items()}
    grouped.default_multiplier = float(default)
    return grouped
