"""``training.remat``: block rematerialisation trains exactly as without it and says so."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml
from conftest import write_recipe

from kerasdl.layers.remat import recomputing, remat_blocks, rematerialize
from kerasdl.registry import create_model


def _train(model: keras.Model, steps: int = 2) -> tuple[list[float], list[np.ndarray]]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, *model.input_shape[1:])).astype("float32")
    y = np.eye(10, dtype="float32")[rng.integers(0, 10, 16)]
    model.compile(
        keras.optimizers.SGD(0.05, momentum=0.9),
        keras.losses.CategoricalCrossentropy(from_logits=True),
    )
    hist = model.fit(x, y, batch_size=8, epochs=steps // 2, verbose=0, shuffle=False)
    return hist.history["loss"], [w.numpy() for w in model.weights]


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("resnet20", {"depth": 8, "filters": [4, 8, 8]}),  # residual blocks with batch norm
        (
            "vit_ti_16",
            {"patch_size": 4, "num_layers": 2, "hidden_dim": 12, "mlp_dim": 24},
        ),  # transformer encoder blocks
    ],
)
def test_remat_trains_exactly_as_without(name: str, kwargs: dict) -> None:
    runs = []
    for remat in (False, True):
        keras.utils.set_random_seed(0)
        model = create_model(name, num_classes=10, input_shape=[8, 8, 3], **kwargs)
        if remat:
            done = remat_blocks(model)
            assert done["blocks"] and not done["skipped"]
        runs.append(_train(model))
    (loss0, w0), (loss1, w1) = runs
    np.testing.assert_allclose(loss1, loss0, rtol=1e-5)
    # every weight, batch-norm moving statistics included (updated once per step, not twice)
    for a, b in zip(w0, w1, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


def test_the_block_is_recomputed_in_the_backward_pass() -> None:
    calls: list[bool] = []

    class Block(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.dense = keras.layers.Dense(4, activation="gelu")

        def call(self, x, training=None):
            calls.append(recomputing())
            return self.dense(x)

    block = rematerialize(Block())
    x = tf.random.normal((2, 3))
    block(x)  # build

    @tf.function
    def grads(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(block(x, training=True) ** 2)
        return tape.gradient(loss, block.trainable_variables)

    calls.clear()
    g = grads(x)
    assert calls == [False, True]  # traced once forward, once recomputed for the gradient
    with tf.GradientTape() as tape:  # the same gradient as the plain layer's, eagerly
        loss = tf.reduce_sum(block.dense(x) ** 2)
    for a, b in zip(g, tape.gradient(loss, block.dense.trainable_variables), strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5)


def test_blocks_with_random_layers_are_left_alone() -> None:
    model = create_model(
        "vit_ti_16",
        num_classes=10,
        input_shape=[16, 16, 3],
        patch_size=4,
        num_layers=2,
        dropout=0.1,
    )
    done = remat_blocks(model)
    assert len(done["skipped"]) == 2 and "rate 0.1" in done["skipped"][0]
    assert done["blocks"] == ["patch_embed"]  # no random layer in it


def test_keras_remat_scope_still_fails_on_tensorflow() -> None:
    """Why kerasdl does not use ``keras.RematScope``: remove this test (and kerasdl's own
    mechanism) once Keras passes ``training=`` through ``tf.recompute_grad`` in graph mode."""

    class Block(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.bn = keras.layers.BatchNormalization()

        def call(self, x, training=None):
            return self.bn(x, training=training)

    with pytest.raises(Exception, match="keywords arguments only when eager"):
        with keras.RematScope(mode="full"):
            Block()(keras.Input((4,)))


def test_recipe_remat_runs(tmp_path: Path) -> None:
    """``training.remat: true`` through ``kerasdl train``'s runner (equality: the tests above)."""
    from kerasdl.config import load_recipe
    from kerasdl.runfolder import RunFolder
    from kerasdl.training.runner import train

    recipe = write_recipe(
        tmp_path / "r.yaml", tmp_path / "runs", training={"epochs": 1, "remat": True}
    )
    raw = yaml.safe_load(recipe.read_text())
    raw["model"] = {"name": "resnet20", "depth": 8, "filters": [4, 8, 8]}
    raw["training"]["log_images"] = 0
    recipe.write_text(yaml.safe_dump(raw))
    result = train(load_recipe(recipe), verbose=0)
    assert np.isfinite(result.metrics["loss"])
    info = RunFolder(result.run_dir).read_run_info()
    assert len(info["remat"]["blocks"]) == 3 and info["remat"]["skipped"] == []
