"""The quickstart model: options reachable from a recipe (norm, activation, DropConnect head)."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

import kerasdl
from kerasdl.config import load_recipe
from kerasdl.layers.dropconnect import DropConnectDense


def test_dropconnect_head_from_a_recipe(tiny_recipe: Path, tmp_path: Path) -> None:
    cfg = load_recipe(tiny_recipe, ["model.dropconnect=0.5"])
    model = kerasdl.create_model(
        cfg.model.name, num_classes=10, input_shape=(8, 8, 1), **cfg.model.kwargs()
    )
    assert isinstance(model.get_layer("head"), DropConnectDense)
    x = np.random.default_rng(0).random((4, 8, 8, 1), dtype=np.float32)
    assert not np.allclose(model(x, training=True), model(x, training=True))  # masks differ
    np.testing.assert_array_equal(model(x), model(x))  # inference is deterministic
    path = tmp_path / "m.keras"
    model.save(path)
    np.testing.assert_allclose(keras.models.load_model(path)(x), model(x), atol=1e-6)


@pytest.mark.parametrize("norm", ["batch", "layer", "group", "instance", "none"])
def test_norm_choices_train(norm: str) -> None:
    model = kerasdl.create_model(
        "simple_cnn",
        num_classes=3,
        input_shape=(8, 8, 1),
        filters=[8],
        norm=norm,
        activation="swish",
    )
    x = np.random.default_rng(0).random((6, 8, 8, 1), dtype=np.float32)
    y = keras.utils.to_categorical([0, 1, 2, 0, 1, 2], 3)
    model.compile("adam", keras.losses.CategoricalCrossentropy(from_logits=True))
    history = model.fit(x, y, epochs=3, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
