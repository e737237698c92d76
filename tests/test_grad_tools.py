"""Global gradient-norm logging: the logged value equals the norm computed by hand."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasdl.training.grad_tools import GradNormLogger, enable_grad_norm_logging

LOSS = keras.losses.CategoricalCrossentropy(from_logits=True)


def model_and_data() -> tuple[keras.Model, np.ndarray, np.ndarray]:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5,))
    x = keras.layers.Dense(7, activation="tanh")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(x))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 5)).astype("float32")
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, 16)]
    return model, x, y


def norm_by_hand(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    with tf.GradientTape() as tape:
        loss = LOSS(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    return float(np.sqrt(sum(np.sum(np.square(np.array(g, np.float64))) for g in grads)))


def read_scalars(log_dir: Path, tag: str) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir / "train"), size_guidance={"tensors": 0})
    acc.Reload()
    return {e.step: float(tf.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)}


@pytest.mark.parametrize("wrap", ["plain", "loss_scale_and_clip"])
def test_logged_grad_norm_equals_hand_computed(tmp_path: Path, wrap: str) -> None:
    model, x, y = model_and_data()
    expected = norm_by_hand(model, x, y)  # at the initial weights: the first step's gradients
    clip = expected / 4
    if wrap == "plain":
        opt = keras.optimizers.SGD(0.1)
    else:  # the loss is scaled by 2^15 and the update clipped: the norm logged is the true one
        opt = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1, global_clipnorm=clip))
    model.compile(opt, LOSS)
    before = [np.array(w) for w in model.trainable_weights]
    logger = GradNormLogger(tmp_path)
    hist = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, callbacks=[logger])
    assert [s for s, _ in logger.values] == [1, 2]
    assert logger.values[0][1] == pytest.approx(expected, rel=1e-5)
    logged = read_scalars(tmp_path, "grad_norm")
    assert logged[1] == pytest.approx(expected, rel=1e-5)
    assert logged[2] == pytest.approx(logger.values[1][1]) and logged[2] != logged[1]
    assert hist.history["grad_norm"][0] == pytest.approx(expected, rel=1e-5)
    if wrap != "plain":  # the update itself was clipped to the global norm `clip`
        step = np.sqrt(
            sum(
                np.sum((np.array(a) - b) ** 2)
                for a, b in zip(model.trainable_weights, before, strict=True)
            )
        )
        assert step < 2 * 0.1 * clip * (1 + 1e-4)


def test_enable_is_idempotent_and_custom_loop() -> None:
    model, x, y = model_and_data()
    opt = keras.optimizers.Adam(0.01)
    v1 = enable_grad_norm_logging(opt)
    assert enable_grad_norm_logging(opt) is v1
    expected = norm_by_hand(model, x, y)
    with tf.GradientTape() as tape:
        loss = LOSS(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    assert float(v1.numpy()) == pytest.approx(expected, rel=1e-5)


# Early stopping and best-checkpoint selection (the runner's training.monitor and
# training.early_stopping_patience) belong to the same "debugging and stability aids".


def test_early_stopping_stops_and_val_loss_monitor_keeps_the_minimum(tmp_path: Path) -> None:
    import csv

    from conftest import write_recipe

    from kerasdl.config import load_recipe
    from kerasdl.training.evaluation import load_trained_model
    from kerasdl.training.runner import make_datasets, train

    recipe = write_recipe(
        tmp_path / "es.yaml",
        tmp_path / "runs",
        # No batch norm and no dropout, and a learning rate of ~0 from epoch 2 on: the weights
        # then stop changing, so val_loss stops improving and early stopping must end the run.
        model={"dropout": 0.0, "norm": "none"},
        training={
            "epochs": 15,
            "batch_size": 256,
            "optimizer": {"name": "adam", "learning_rate": 0.01},
            "schedule": {"name": "step", "step_epochs": [2], "gamma": 1e-12},
            "monitor": "val_loss",
            "early_stopping_patience": 1,
            "metrics": ["accuracy"],
            "log_images": 0,
        },
    )
    cfg = load_recipe(recipe)
    result = train(cfg, verbose=0)
    rows = list(csv.DictReader((result.run_dir / "history.csv").open()))
    val = [float(r["val_loss"]) for r in rows]
    assert len(rows) < 15  # stopped early ...
    best = int(np.argmin(val))
    assert len(rows) == best + 1 + 1  # ... exactly `patience` epochs after the best one
    # best.keras is the epoch with the lowest val_loss (monitor mode "min" for a loss).
    from kerasdl.data import load_data

    model = load_trained_model(result.run_dir / "best.keras")
    model.compile(loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    ds = make_datasets(cfg, load_data(cfg.data, cfg.run.seed))["val"]
    assert model.evaluate(ds, verbose=0) == pytest.approx(min(val), rel=1e-4)
