"""Learning-rate range test: exponential sweep, divergence stop, suggestion, untouched model."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasdl.training.lr_finder import find_lr, suggest


def small_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    x = keras.layers.Dense(16)(inputs)
    x = keras.layers.BatchNormalization()(x)  # moving statistics must be restored too
    x = keras.layers.Activation("relu")(x)
    return keras.Model(inputs, keras.layers.Dense(3)(x))


def dataset() -> tf.data.Dataset:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 6)).astype("float32")
    y = np.eye(3, dtype="float32")[(x[:, 0] > 0).astype(int) + (x[:, 1] > 1)]
    return tf.data.Dataset.from_tensor_slices((x, y)).shuffle(256, seed=0).batch(32)


def test_sweep_restores_model_and_optimizer_bit_identically() -> None:
    model = small_model()
    model.compile(
        keras.optimizers.SGD(0.01, momentum=0.9),
        keras.losses.CategoricalCrossentropy(from_logits=True),
        run_eagerly=True,  # 40 tiny steps: cheaper than tracing on a loaded CPU
    )
    model.optimizer.build(model.trainable_variables)
    before = [np.array(v) for v in model.variables]
    opt_before = [np.array(v) for v in model.optimizer.variables]
    result = find_lr(model, dataset(), min_lr=1e-5, max_lr=100.0, steps=40)
    for a, b in zip(before, model.variables, strict=True):
        np.testing.assert_array_equal(a, np.array(b))
    for a, b in zip(opt_before, model.optimizer.variables, strict=True):
        np.testing.assert_array_equal(a, np.array(b))
    assert float(model.optimizer.learning_rate) == pytest.approx(0.01)
    # Exponential sweep from min_lr with a constant ratio per step.
    lrs = np.array(result.lrs)
    assert lrs[0] == pytest.approx(1e-5)
    np.testing.assert_allclose(lrs[1:] / lrs[:-1], (1e7) ** (1 / 39), rtol=1e-6)
    # SGD at lr 100 diverges: the sweep stops at 4x the best smoothed loss.
    assert result.stopped_early and len(lrs) < 40
    best = min(result.smoothed[:-1])
    assert result.smoothed[-1] > 4 * best or not math.isfinite(result.smoothed[-1])
    assert all(s <= 4 * best for s in result.smoothed[:-1])
    assert 1e-5 <= result.suggestion < lrs[-1]
    assert result.min_loss_lr > result.suggestion / 100


def test_smoothing_is_bias_corrected_ema() -> None:
    model = small_model()
    model.compile(keras.optimizers.SGD(0.01), "categorical_crossentropy", run_eagerly=True)
    r = find_lr(model, dataset(), min_lr=1e-6, max_lr=1e-5, steps=8)
    avg, want = 0.0, []
    for i, loss in enumerate(r.losses, start=1):
        avg = 0.98 * avg + 0.02 * loss
        want.append(avg / (1 - 0.98**i))
    np.testing.assert_allclose(r.smoothed, want, rtol=1e-9)
    assert not r.stopped_early and len(r.losses) == 8


def test_suggestion_is_steepest_descent_before_the_minimum() -> None:
    x = np.linspace(-7, 0, 141)  # log10 of the rate
    lrs = list(10**x)
    loss = 2 - 1 / (1 + np.exp(-3 * (x + 4))) + 0.5 * np.maximum(x + 2, 0) ** 2
    steep, at_min = suggest(lrs, list(loss))
    assert math.log10(steep) == pytest.approx(-4, abs=0.06)
    assert math.log10(at_min) == pytest.approx(x[np.argmin(loss)], abs=1e-9)
    assert -2.5 < math.log10(at_min) <= -2


def test_lr_find_command(tmp_path: Path, tiny_recipe: Path, capsys) -> None:
    from kerasdl.cli import main

    out = tmp_path / "finder"
    code = main(["lr-find", str(tiny_recipe), "--steps", "12", "--max", "1", "--out", str(out)])
    assert code == 0
    rows = list(csv.DictReader((out / "lr_find.csv").open()))
    assert 5 <= len(rows) <= 12 and float(rows[0]["lr"]) == pytest.approx(1e-7)
    assert (out / "lr_find.png").read_bytes()[:4] == b"\x89PNG"
    text = capsys.readouterr().out
    assert "Suggested learning rate:" in text
    suggested = float(text.split("Suggested learning rate: ")[1].split()[0])
    assert 1e-7 <= suggested <= 1
    assert not list(tmp_path.glob(".lr_find.*"))  # the temporary folder is gone
    assert main(["lr-find", str(tiny_recipe), "--min", "1", "--max", "0.1"]) == 2
