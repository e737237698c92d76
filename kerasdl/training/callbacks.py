"""Callbacks of a training run: crash-safe backups, best checkpoint, learning-rate and image logs.

* :class:`Backup` saves the whole training state (model and optimizer variables, the epoch, the
  best monitored value) with ``tf.train.CheckpointManager`` at the end of every epoch and keeps the
  last two. A checkpoint becomes visible only once completely written (TensorFlow writes the data
  files first and the ``checkpoint`` state file last), so ``kill -9`` at any point leaves the
  previous backup intact. :func:`restore_backup` falls back to the older backup when the newest is
  unreadable and raises a clear error when none is, never restarting from zero silently.
* :class:`BestCheckpoint` writes ``best.keras`` when the monitored metric improves, to a temporary
  file renamed into place.
* :class:`LearningRateLogger` writes the optimizer's learning rate to TensorBoard every step (or
  every ``every`` steps) and :class:`ImageLogger` a few training inputs once.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasdl.errors import UserError


class TrainingState:
    """Variables that describe where training is: epoch done and best monitored value."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        start = -math.inf if mode == "max" else math.inf
        self.best = tf.Variable(start, dtype=tf.float64, trainable=False, name="best")

    def improved(self, value: float) -> bool:
        best = float(self.best.numpy())
        return value > best if self.mode == "max" else value < best


def make_checkpoint(model: keras.Model, state: TrainingState) -> tf.train.Checkpoint:
    """A checkpoint of the model, its optimizer and the training state."""
    return tf.train.Checkpoint(
        model=model, optimizer=model.optimizer, epoch=state.epoch, best=state.best
    )


def weights_fingerprint(model: keras.Model) -> float:
    """Sum of absolute values of all model weights (to check a restore really happened)."""
    return float(sum(np.abs(np.asarray(w, dtype=np.float64)).sum() for w in model.get_weights()))


def restore_backup(model: keras.Model, state: TrainingState, backup_dir: str | Path) -> str | None:
    """Restore the newest readable backup into ``model``/``state``.

    Returns:
        The checkpoint path restored, or None when there is no backup.

    Raises:
        UserError: backups exist but none can be read.
    """
    backup_dir = str(backup_dir)
    if not os.path.isdir(backup_dir):
        return None
    ckpt_state = tf.train.get_checkpoint_state(backup_dir)
    paths = list(ckpt_state.all_model_checkpoint_paths) if ckpt_state else []
    if not paths:
        return None
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    errors = []
    for path in reversed(paths):
        if not os.path.isabs(path):
            path = os.path.join(backup_dir, path)
        try:
            status = make_checkpoint(model, state).restore(path)
            status.assert_existing_objects_matched()
            return path
        except Exception as err:  # any read failure means this backup is unusable
            errors.append(f"{os.path.basename(path)}: {type(err).__name__}")
            print(f"warning: backup {path} is unreadable, trying the previous one")
    raise UserError(
        f"every backup in {backup_dir} is unreadable ({'; '.join(errors)}); "
        "delete the run folder to start again, or pass --fresh"
    )


class Backup(keras.callbacks.Callback):
    """Save the training state at the end of every epoch (keeps the last ``max_to_keep``).

    Args:
        backup_dir: folder of the checkpoints (inside the run folder).
        state: the :class:`TrainingState` shared with :class:`BestCheckpoint`.
        max_to_keep: checkpoints kept (2: the newest and a fallback).
    """

    def __init__(self, backup_dir: str | Path, state: TrainingState, max_to_keep: int = 2) -> None:
        super().__init__()
        self.backup_dir = str(backup_dir)
        self.state = state
        self.max_to_keep = max_to_keep
        self._manager: tf.train.CheckpointManager | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        ckpt = make_checkpoint(self.model, self.state)
        self._manager = tf.train.CheckpointManager(
            ckpt, self.backup_dir, max_to_keep=self.max_to_keep
        )

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.state.epoch.assign(epoch + 1)
        assert self._manager is not None
        self._manager.save(checkpoint_number=epoch + 1)


class BestCheckpoint(keras.callbacks.Callback):
    """Save ``best.keras`` atomically whenever ``monitor`` improves.

    Args:
        path: the ``.keras`` file.
        monitor: a logged metric (``val_accuracy``, ``val_loss``, ...).
        state: the :class:`TrainingState` holding the best value across resumes (None: own).
        target: what to save (default: the trained model), e.g. a method's inference model.
    """

    def __init__(
        self,
        path: str | Path,
        monitor: str,
        state: TrainingState | None,
        target: Callable[[], keras.Model] | None = None,
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self.monitor = monitor
        self.state = state or TrainingState("min" if monitor.endswith("loss") else "max")
        self.target = target

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        if self.monitor not in logs:
            raise UserError(
                f"training.monitor: metric {self.monitor!r} is not logged. "
                f"Expected one of: {', '.join(sorted(logs))}."
            )
        value = float(logs[self.monitor])
        if self.state.improved(value) or not self.path.exists():
            self.state.best.assign(value)
            save_model_atomic(self.target() if self.target else self.model, self.path)


def save_model_atomic(model: keras.Model, path: str | Path) -> None:
    """``model.save(path)`` through a temporary file renamed into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)


def current_learning_rate(optimizer: keras.optimizers.Optimizer) -> float:
    """The optimizer's learning rate at its current step (schedules evaluated)."""
    lr = optimizer.learning_rate
    return float(np.asarray(lr))


class LearningRateLogger(keras.callbacks.Callback):
    """Write the learning rate to TensorBoard (``learning_rate`` under ``train``) per step.

    With ``steps_per_execution > 1`` Keras calls back once per execution; the logger then writes
    the schedule's value at every optimizer step of that execution (a schedule is a function of
    the step), so the curve has one point per step either way.

    Args:
        log_dir: the run's TensorBoard folder.
        every: log every ``every`` optimizer steps.
    """

    def __init__(self, log_dir: str | Path, every: int = 1) -> None:
        super().__init__()
        self.log_dir = str(log_dir)
        self.every = max(int(every), 1)
        self._writer: Any = None
        self._last = -1

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "train"))
        self._last = int(self.model.optimizer.iterations.numpy())

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        optimizer = self.model.optimizer
        step = int(optimizer.iterations.numpy())
        inner = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer
        schedule = getattr(inner, "_learning_rate", None)
        with self._writer.as_default():
            for s in range(max(self._last + 1, step - 10_000), step + 1):
                if s % self.every:
                    continue
                if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
                    value = float(np.asarray(schedule(s)))
                elif s == step:
                    value = current_learning_rate(optimizer)
                else:
                    continue  # a variable learning rate: only its current value is known
                tf.summary.scalar("learning_rate", value, step=s)
        self._last = step

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["learning_rate"] = current_learning_rate(self.model.optimizer)
        self._writer.flush()

    def on_train_end(self, logs: dict | None = None) -> None:
        self._writer.close()


def log_images(log_dir: str | Path, images: np.ndarray, name: str = "inputs") -> None:
    """Write a few training images (values in [0, 1]) to TensorBoard's image tab."""
    writer = tf.summary.create_file_writer(os.path.join(str(log_dir), "train"))
    with writer.as_default():
        tf.summary.image(name, np.clip(images, 0.0, 1.0), step=0, max_outputs=len(images))
    writer.close()
