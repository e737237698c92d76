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

import hashlib
import math
import os
import shutil
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


def make_checkpoint(
    model: keras.Model, state: TrainingState, rng: list | None = None
) -> tf.train.Checkpoint:
    """A checkpoint of the model, its optimizer, the training state and the random generators.

    ``rng`` are the state variables of the random generators that are not weights: the seed
    generators of the model's layers (dropout, the methods' augmentations), which Keras leaves out
    of a model's checkpoint, and the data pipeline's generators (deterministic runs). Restoring
    them makes a resumed run draw the same random numbers as an uninterrupted one.
    """
    holder = tf.Module()
    holder.variables_list = list(rng or [])
    return tf.train.Checkpoint(
        model=model, optimizer=model.optimizer, epoch=state.epoch, best=state.best, rng=holder
    )


def seed_generator_states(model: keras.Model) -> list:
    """The state variables of every ``keras.random.SeedGenerator`` in ``model`` (not weights)."""
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def weights_fingerprint(model: keras.Model) -> float:
    """Sum of absolute values of all model weights (to check a restore really happened)."""
    return float(sum(np.abs(np.asarray(w, dtype=np.float64)).sum() for w in model.get_weights()))


def weights_digest(model: keras.Model) -> str:
    """SHA-256 of every weight of ``model``: its path, dtype, shape and exact bytes."""
    digest = hashlib.sha256()
    for w in model.weights:
        value = np.ascontiguousarray(np.asarray(w))
        digest.update(f"{w.path}|{value.dtype}|{value.shape}|".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


class BackupMismatch(UserError):
    """The backup is readable but was written by a different model or optimizer."""


def remove_partial_files(backup_dir: str | Path) -> list[str]:
    """Delete what an interrupted checkpoint save leaves behind (TensorFlow's ``*_temp*``
    folders, and data/index files of checkpoints the ``checkpoint`` state file does not list).

    Returns:
        The names removed.
    """
    backup_dir = Path(backup_dir)
    if not backup_dir.is_dir():
        return []
    ckpt_state = tf.train.get_checkpoint_state(str(backup_dir.resolve()))
    listed = (
        {os.path.basename(p) for p in ckpt_state.all_model_checkpoint_paths}
        if ckpt_state
        else set()
    )
    removed = []
    for entry in sorted(backup_dir.iterdir()):
        name = entry.name
        if name == "checkpoint":
            continue
        prefix = name.split(".", 1)[0]
        if "_temp" in name or (prefix.startswith("ckpt-") and prefix not in listed):
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(name)
    return removed


def restore_backup(
    model: keras.Model, state: TrainingState, backup_dir: str | Path, rng: list | None = None
) -> str | None:
    """Restore the newest readable backup into ``model``/``state`` (and the ``rng`` states).

    A backup whose files are torn or missing is skipped for the previous one; a backup that is
    readable but holds another model (another recipe) stops the resume with what differs.

    Returns:
        The checkpoint path restored, or None when there is no backup.

    Raises:
        UserError: backups exist but none can be read, or they do not match the model.
    """
    # Absolute: get_checkpoint_state prefixes the paths it returns with the folder it is given.
    backup_dir = os.path.abspath(str(backup_dir))
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
        name = os.path.basename(path)
        reader = None
        try:
            reader = tf.train.load_checkpoint(path)
            status = make_checkpoint(model, state, rng).restore(path)
            status.assert_existing_objects_matched()
            return path
        except (AssertionError, ValueError) as err:
            if not isinstance(err, AssertionError) and "shape" not in str(err).lower():
                errors.append(f"{name}: {type(err).__name__}")
                print(f"warning: backup {name} is unreadable ({err}); trying an older one")
                continue
            raise BackupMismatch(
                f"backup {name} in {backup_dir} was written by a different model or optimizer "
                f"than this recipe builds ({_describe_difference(model, reader)}); resume with "
                "the run's own recipe (kerasdl train --resume RUN_DIR), or start a new run "
                "with --fresh"
            ) from None
        except Exception as err:  # torn, truncated or missing files: this backup is unusable
            errors.append(f"{name}: {type(err).__name__}")
            print(
                f"warning: backup {name} is unreadable ({type(err).__name__}); trying an older one"
            )
    raise UserError(
        f"no backup in {backup_dir} can be read ({'; '.join(errors)}): the files are damaged. "
        "Start a new run with --fresh (the damaged folder is left as it is)"
    )


def _describe_difference(model: keras.Model, reader: Any) -> str:
    """The model tensors of a checkpoint against the model's, in one phrase."""
    saved = reader.get_variable_to_shape_map() if reader is not None else {}
    have = [s for k, s in saved.items() if k.startswith("model/") and "OPTIMIZER_SLOT" not in k]
    want = [tuple(v.shape) for v in model.weights if not v.path.endswith("seed_generator_state")]
    n_have = sum(int(np.prod(s)) for s in have)
    n_want = sum(int(np.prod(s)) for s in want)
    return (
        f"the backup holds {len(have)} model tensors with {n_have:,} values, the recipe's model "
        f"has {len(want)} with {n_want:,}"
    )


class Backup(keras.callbacks.Callback):
    """Save the training state at the end of every epoch (keeps the last ``max_to_keep``).

    Args:
        backup_dir: folder of the checkpoints (inside the run folder).
        state: the :class:`TrainingState` shared with :class:`BestCheckpoint`.
        max_to_keep: checkpoints kept (2: the newest and a fallback).
        rng: random-generator state variables saved with the backup (see
            :func:`make_checkpoint`).
    """

    def __init__(
        self,
        backup_dir: str | Path,
        state: TrainingState,
        max_to_keep: int = 2,
        rng: list | None = None,
    ) -> None:
        super().__init__()
        self.backup_dir = str(backup_dir)
        self.state = state
        self.max_to_keep = max_to_keep
        self.rng = rng
        self._manager: tf.train.CheckpointManager | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        ckpt = make_checkpoint(self.model, self.state, self.rng)
        self._manager = tf.train.CheckpointManager(
            ckpt, self.backup_dir, max_to_keep=self.max_to_keep
        )

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.state.epoch.assign(epoch + 1)
        assert self._manager is not None
        self._manager.save(checkpoint_number=epoch + 1)


class StepProgbar(keras.callbacks.ProgbarLogger):
    """Keras's progress bar, counting the optimizer steps that really ran.

    Keras counts a bar from the batch index it reports, which with ``steps_per_execution > 1``
    is the end of an execution, and its target is unknown in the first epoch of a dataset of
    unknown length: the bar then overshoots (``32/20``, an over-long bar, a negative ETA) or
    shows ``Unknown``. This one counts the optimizer's steps within the epoch and knows the
    epoch's length.

    Args:
        steps_per_epoch: optimizer steps per epoch (None: Keras's count).
    """

    def __init__(self, steps_per_epoch: int | None = None) -> None:
        super().__init__()
        self.steps_per_epoch = steps_per_epoch
        self._epoch_start = 0

    def set_params(self, params: dict) -> None:
        super().set_params(params)
        if self.steps_per_epoch:
            self.target = self.steps_per_epoch

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch_start = int(self.model.optimizer.iterations.numpy())
        super().on_epoch_begin(epoch, logs)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        done = int(self.model.optimizer.iterations.numpy()) - self._epoch_start
        self._update_progbar(max(done - 1, 0), logs)

    def _update_progbar(self, batch: int, logs: dict | None = None) -> None:
        if self.target is not None:
            batch = min(batch, self.target - 1)
        super()._update_progbar(batch, logs)


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
        #: :func:`weights_digest` of the trained model as this process last saved it (None: not
        #: saved by this process, or a ``target`` was saved)
        self.saved_digest: str | None = None

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
            self.saved_digest = None if self.target else weights_digest(self.model)

    def holds(self, model: keras.Model) -> bool:
        """Whether the file holds exactly ``model``'s current weights: this process saved the
        trained model itself, and not one weight has changed since (same digest)."""
        return (
            self.target is None
            and self.saved_digest is not None
            and model is self.model
            and weights_digest(model) == self.saved_digest
        )


def save_model_atomic(model: keras.Model, path: str | Path) -> None:
    """``model.save(path)`` through a temporary file renamed into place (:mod:`kerasdl.io`)."""
    from kerasdl import io

    io.save_model(model, path)


def current_learning_rate(optimizer: keras.optimizers.Optimizer) -> float:
    """The optimizer's learning rate at its current step (schedules evaluated)."""
    lr = optimizer.learning_rate
    return float(np.asarray(lr))


class LearningRateLogger(keras.callbacks.Callback):
    """Write the learning rate to TensorBoard (``learning_rate`` under ``train``) per step.

    TensorBoard step ``k`` holds the rate optimizer step ``k`` used (Keras evaluates the schedule
    at ``iterations`` before incrementing it), the same curve as ``kerasdl schedule``. With
    ``steps_per_execution > 1`` Keras calls back once per execution; the logger then writes the
    schedule's value at every optimizer step of that execution (a schedule is a function of the
    step), so the curve has one point per step either way.

    Args:
        log_dir: the run's TensorBoard folder.
        every: log every ``every`` optimizer steps.
    """

    def __init__(self, log_dir: str | Path, every: int = 1) -> None:
        super().__init__()
        self.log_dir = str(log_dir)
        self.every = max(int(every), 1)
        self._writer: Any = None
        self._next = 0  # the next optimizer step to write
        self._rate_before: float | None = None

    def _schedule(self) -> Any:
        inner = getattr(self.model.optimizer, "inner_optimizer", self.model.optimizer)
        schedule = getattr(inner, "_learning_rate", None)  # LossScaleOptimizer: the inner one
        if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
            return schedule
        return None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "train"))
        self._next = int(self.model.optimizer.iterations.numpy())

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        if self._schedule() is None:  # a variable rate: only its value now is known
            self._rate_before = current_learning_rate(self.model.optimizer)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        step = int(self.model.optimizer.iterations.numpy())  # steps done
        schedule = self._schedule()
        with self._writer.as_default():
            for s in range(max(self._next, step - 10_000), step):
                if s % self.every:
                    continue
                if schedule is not None:
                    value = float(np.asarray(schedule(s)))
                elif s == step - 1 and self._rate_before is not None:
                    value = self._rate_before
                else:
                    continue
                tf.summary.scalar("learning_rate", value, step=s)
        self._next = step

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:  # the rate of the epoch's last step (history.csv)
            schedule = self._schedule()
            last = int(self.model.optimizer.iterations.numpy()) - 1
            if schedule is not None and last >= 0:
                logs["learning_rate"] = float(np.asarray(schedule(last)))
            else:
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
