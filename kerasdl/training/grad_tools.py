"""Gradient-norm logging: the global gradient norm of every step, in TensorBoard.

The global norm ``||g|| = sqrt(sum_i ||g_i||^2)`` over all trainable variables is the quantity
that gradient clipping by global norm bounds (Pascanu et al. 2013); watching it per step shows
exploding or vanishing gradients, a too-high learning rate (spikes) or dead layers (near zero).

How it works, without subclassing the model: :func:`enable_grad_norm_logging` wraps the
``apply`` method of the model's compiled optimizer *instance* (Keras's ``train_step`` calls
``optimizer.apply_gradients`` -> ``apply`` with the gradients of the step). The wrapper stores the
global norm in a non-trainable variable and then applies the gradients unchanged, so it works for
functional models, for kerasdl's ``train_step`` overrides (the methods in ``kerasdl.methods``) and
for custom loops alike. Under mixed precision with loss scaling the wrapper sits on the inner
optimizer, so the norm is that of the unscaled gradients; it is measured before clipping (so it
can be compared with ``clipnorm``/``global_clipnorm``). With gradient accumulation it is the norm
of each micro-batch's gradients; under ``tf.distribute`` that of the first replica's. Steps whose
gradients are not finite (skipped by the loss-scale optimizer) leave the previous value.

:class:`GradNormLogger` writes the variable to TensorBoard as ``grad_norm`` in the run's
``train`` folder at every step (or every ``every`` steps), next to the learning rate, and adds the
epoch's mean to the epoch logs (so ``history.csv`` has a ``grad_norm`` column).

Example:
    >>> model.compile(optimizer="adam", loss=...)
    >>> model.fit(ds, callbacks=[GradNormLogger("runs/x/logs")])   # enables it on train begin

Reference:
    Pascanu, Mikolov & Bengio, "On the difficulty of training recurrent neural networks",
    ICML 2013.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

_ATTR = "_kerasdl_grad_norm"


def global_norm(grads: list[Any]) -> Any:
    """``sqrt(sum of squares)`` over all (non-None) gradient tensors, in float32."""
    squares = [keras.ops.sum(keras.ops.square(keras.ops.cast(g, "float32"))) for g in grads]
    squares = [s for s, g in zip(squares, grads, strict=True) if g is not None]
    return keras.ops.sqrt(keras.ops.sum(keras.ops.stack(squares)))


def enable_grad_norm_logging(
    model_or_optimizer: keras.Model | keras.optimizers.Optimizer,
) -> keras.Variable:
    """Record the global gradient norm of every optimizer step in a variable.

    Args:
        model_or_optimizer: a compiled model (its optimizer is used) or an optimizer.

    Returns:
        The float32 variable holding the norm of the last step (idempotent: the same variable
        is returned when called again).
    """
    opt = getattr(model_or_optimizer, "optimizer", model_or_optimizer)
    if not isinstance(opt, keras.optimizers.Optimizer):
        raise ValueError("enable_grad_norm_logging needs a compiled model or an optimizer")
    inner = getattr(opt, "inner_optimizer", opt)  # LossScaleOptimizer: unscaled gradients
    existing = inner.__dict__.get(_ATTR)
    if existing is not None:
        return existing
    norm = keras.Variable(
        0.0, dtype="float32", trainable=False, name="grad_norm", aggregation="only_first_replica"
    )
    original = inner.apply

    def apply(grads: Any, trainable_variables: Any = None) -> Any:
        grads = list(grads)
        norm.assign(global_norm(grads))
        return original(grads, trainable_variables)

    # Plain instance attributes: not tracked, so checkpoints of the optimizer are unchanged.
    object.__setattr__(inner, "apply", apply)
    object.__setattr__(inner, _ATTR, norm)
    return norm


class GradNormLogger(keras.callbacks.Callback):
    """Write the global gradient norm to TensorBoard (``grad_norm`` under ``train``) per step.

    Args:
        log_dir: the run's TensorBoard folder.
        every: log every ``every`` optimizer steps.

    Example:
        >>> model.fit(ds, epochs=3, callbacks=[GradNormLogger("logs")])
    """

    def __init__(self, log_dir: str | Path, every: int = 1) -> None:
        super().__init__()
        self.log_dir = str(log_dir)
        self.every = max(int(every), 1)
        self.values: list[tuple[int, float]] = []  # (step, norm) of this fit
        self._writer: Any = None
        self._norm: keras.Variable | None = None
        self._epoch: list[float] = []

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._norm = enable_grad_norm_logging(self.model)
        # The wrapper is part of the traced step: trace again if fit already traced one.
        self.model.make_train_function(force=True)
        self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "train"))

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        assert self._norm is not None
        # optimizer._iterations counts every step (iterations skips micro-batches).
        opt = self.model.optimizer
        opt = getattr(opt, "inner_optimizer", opt)
        step = int(np.asarray(getattr(opt, "_iterations", opt.iterations)))
        value = float(np.asarray(self._norm))
        self._epoch.append(value)
        if step % self.every == 0:
            self.values.append((step, value))
            with self._writer.as_default():
                tf.summary.scalar("grad_norm", value, step=step)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None and self._epoch:
            logs["grad_norm"] = float(np.mean(self._epoch))
        self._epoch = []
        self._writer.flush()

    def on_train_end(self, logs: dict | None = None) -> None:
        self._writer.close()
