"""A distributed training loop for strategies under which Keras ``fit`` fails.

Keras ``fit`` under ``MultiWorkerMirroredStrategy`` fails on TF 2.21 / Keras 3.15 ("Attempt to
convert a value (PerReplica ...)", keras-team/keras#20585). This loop replaces only fit's outer
loop: it runs the model's own ``train_step``/``test_step`` (so supervised models and every method
that overrides ``train_step`` train the same way) with ``strategy.run`` over
``strategy.experimental_distribute_dataset``, reads the metrics the steps updated, and drives the
usual Keras callbacks (backups, best checkpoint, CSV log, TensorBoard). The optimizer all-reduces
the gradients, so every worker ends with the same trainable weights.

Only the chief writes what the user sees; the runner gives the other workers only the callbacks
that must run everywhere (the backup, whose save is a collective operation), pointed at a
temporary folder.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf


def _distribute(strategy: tf.distribute.Strategy, ds: tf.data.Dataset) -> Any:
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return strategy.experimental_distribute_dataset(ds.with_options(options))


def _metrics(model: keras.Model) -> dict[str, float]:
    return {k: float(v) for k, v in model.get_metrics_result().items()}


def fit_distributed(
    model: keras.Model,
    strategy: tf.distribute.Strategy,
    train_ds: tf.data.Dataset,
    *,
    epochs: int,
    steps_per_epoch: int,
    initial_epoch: int = 0,
    validation_data: tf.data.Dataset | None = None,
    callbacks: list[keras.callbacks.Callback] | None = None,
    verbose: bool = True,
) -> list[dict[str, float]]:
    """Train ``model`` (compiled under ``strategy.scope()``) for ``epochs`` epochs.

    Args:
        model: a compiled Keras model (any ``train_step`` override works).
        strategy: the distribution strategy the model was built under.
        train_ds: batches of the **global** batch size; sharded by data across workers.
        epochs: last epoch (exclusive), as in ``fit``.
        steps_per_epoch: optimizer steps per epoch (the same on every worker).
        initial_epoch: epoch to start from (after a resume).
        validation_data: global batches evaluated with ``test_step`` after every epoch.
        callbacks: Keras callbacks, driven as ``fit`` drives them.
        verbose: print one line per epoch.

    Returns:
        The logs of every epoch run.
    """
    cb = keras.callbacks.CallbackList(callbacks or [], model=model)
    train_dist = _distribute(strategy, train_ds)
    val_dist = _distribute(strategy, validation_data) if validation_data is not None else None

    @tf.function
    def train_step(iterator: Any) -> Any:
        return strategy.run(model.train_step, args=(next(iterator),))

    @tf.function
    def test_step(batch: Any) -> Any:
        return strategy.run(model.test_step, args=(batch,))

    history: list[dict[str, float]] = []
    model.stop_training = False
    cb.on_train_begin()
    iterator = iter(train_dist)
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        cb.on_epoch_begin(epoch)
        for step in range(steps_per_epoch):
            cb.on_train_batch_begin(step)
            try:
                train_step(iterator)
            except (StopIteration, tf.errors.OutOfRangeError):
                iterator = iter(train_dist)
                train_step(iterator)
            cb.on_train_batch_end(step)
        logs = _metrics(model)
        if val_dist is not None:
            model.reset_metrics()
            for batch in val_dist:
                test_step(batch)
            logs.update({f"val_{k}": v for k, v in _metrics(model).items()})
        cb.on_epoch_end(epoch, logs)
        history.append(dict(logs))
        if verbose:
            text = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
            print(f"Epoch {epoch + 1}/{epochs} - {text}", flush=True)
        if model.stop_training:
            break
    cb.on_train_end()
    return history
