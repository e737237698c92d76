"""The progress bar of a run counts the steps that really ran (issue 13.6)."""

from __future__ import annotations

import re

import keras
import numpy as np
import tensorflow as tf

from kerasdl.training.callbacks import StepProgbar


def _fit(callbacks: list, capsys, known: bool = True) -> str:
    x = np.random.default_rng(0).normal(size=(20 * 8, 4)).astype("float32")
    y = np.zeros((20 * 8, 1), "float32")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)  # 20 steps per epoch
    if not known:  # as a generator or a flat_map gives it
        inner = ds
        ds = tf.data.Dataset.from_tensors(0).flat_map(lambda _: inner)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse", steps_per_execution=16)
    model.fit(ds, epochs=2, verbose=1, callbacks=callbacks, shuffle=False)
    return capsys.readouterr().out


def _counts(out: str) -> list[tuple[int, str]]:
    plain = re.sub(r"Epoch \d+/\d+", "", re.sub(r"\x1b\[[0-9;]*m", "", out))
    return [(int(a), b) for a, b in re.findall(r"(\d+)/(\d+|Unknown)", plain)]


def test_progress_bar_counts_real_steps_of_a_known_epoch(capsys) -> None:
    out = _fit([StepProgbar(20)], capsys)
    counts = _counts(out)
    assert counts and all(b == "20" and a <= 20 for a, b in counts), counts
    assert (20, "20") in counts and "ETA: -" not in out


def test_progress_bar_knows_the_epoch_when_the_data_does_not(capsys) -> None:
    counts = _counts(_fit([StepProgbar(20)], capsys, known=False))
    assert counts and all(b == "20" and a <= 20 for a, b in counts), counts


def test_keras_default_bar_miscounts_data_of_unknown_length(capsys) -> None:
    """The upstream behaviour StepProgbar corrects (if Keras fixes it, this test says so)."""
    counts = _counts(_fit([], capsys, known=False))
    assert any(b in ("Unknown", "32") for _, b in counts), counts
