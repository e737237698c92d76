"""Transfer learning: weight loading by name, frozen backbones, per-group learning rates,
gradual unfreezing, and the transfer-learning app."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import keras
import numpy as np
import pytest

from kerasdl.errors import UserError
from kerasdl.registry import create_model
from kerasdl.training.group_optimizer import GROUPED, with_lr_multipliers
from kerasdl.training.transfer import (
    GradualUnfreeze,
    load_matching_weights,
    prebuild_optimizer,
    setup_transfer,
    stages,
    transfer_optimizer,
    weights_snapshot,
)

REPO = Path(__file__).resolve().parent.parent


def cnn(num_classes: int, seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return create_model(
        "simple_cnn", num_classes=num_classes, input_shape=(8, 8, 1), filters=[4, 8],
        convs_per_stage=1, dropout=0.0,
    )  # fmt: skip


def dense_net(seed: int = 0) -> keras.Model:
    """Two layers: ``body`` (the backbone) and ``head``."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(6, activation="tanh", name="body")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(x))


def data(n: int = 32, k: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((n, 8, 8, 1), dtype="float32"), np.eye(k, dtype="float32")[
        rng.integers(0, k, n)
    ]


LOSS = keras.losses.CategoricalCrossentropy(from_logits=True)


def grads_of(model: keras.Model, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = LOSS(y, model(x, training=True))
    g = tape.gradient(loss, model.trainable_variables)
    return {v.path: np.array(gi) for v, gi in zip(model.trainable_variables, g, strict=True)}


def one_step(model: keras.Model, opt: keras.optimizers.Optimizer, x, y) -> dict[str, np.ndarray]:
    """Apply one optimizer step; return the change of every trainable variable."""
    import tensorflow as tf

    before = {v.path: np.array(v) for v in model.trainable_variables}
    with tf.GradientTape() as tape:
        loss = LOSS(y, model(x, training=True))
    g = tape.gradient(loss, model.trainable_variables)
    opt.apply_gradients(zip(g, model.trainable_variables, strict=True))
    return {v.path: np.array(v) - before[v.path] for v in model.trainable_variables}


def test_per_group_sgd_step_is_lr_times_multiplier_times_gradient() -> None:
    x, y = data()
    model = dense_net()
    g = grads_of(model, x, y)
    opt = with_lr_multipliers(keras.optimizers.SGD(0.5), {"head/": 1.0}, default=0.1)
    delta = one_step(model, opt, x, y)
    for path, d in delta.items():
        mult = 1.0 if path.startswith("head/") else 0.1
        np.testing.assert_allclose(d, -0.5 * mult * g[path], rtol=1e-4, atol=1e-8)
    assert any(not p.startswith("head/") and np.abs(d).max() > 0 for p, d in delta.items())


def test_per_group_adam_scales_the_step_not_the_gradient() -> None:
    # Adam's first step is lr * g / (|g| + eps): scaling g would not change it, scaling lr does.
    x, y = data()
    plain = one_step(dense_net(), keras.optimizers.Adam(0.01), x, y)
    opt = transfer_optimizer(keras.optimizers.Adam(0.01), backbone_lr_multiplier=0.25)
    assert isinstance(opt, GROUPED[keras.optimizers.Adam])
    grouped = one_step(dense_net(), opt, x, y)
    for path, d in grouped.items():
        mult = 1.0 if path.startswith("head/") else 0.25
        np.testing.assert_allclose(d, mult * plain[path], rtol=1e-4, atol=1e-9)


def test_per_group_decoupled_weight_decay_uses_group_rate() -> None:
    w = keras.Variable(np.ones(3, "float32"), name="kernel")
    opt = with_lr_multipliers(keras.optimizers.AdamW(0.1, weight_decay=0.5), {}, default=0.2)
    opt.apply_gradients([(np.zeros(3, "float32"), w)])
    np.testing.assert_allclose(np.array(w), 1.0 - 0.1 * 0.2 * 0.5, rtol=1e-6)


def test_grouped_optimizer_saves_and_loads_with_the_model(tmp_path: Path) -> None:
    x, y = data()
    model = dense_net()
    opt = with_lr_multipliers(keras.optimizers.Adam(0.01), {"head/": 1.0}, 0.1)
    model.compile(opt, LOSS, run_eagerly=True)
    model.fit(x, y, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    opt = again.optimizer
    assert type(opt).__name__ == "GroupedAdam"
    assert opt.lr_multipliers == {"head/": 1.0} and opt.default_multiplier == 0.1


def test_load_matching_weights_skips_the_new_head(tmp_path: Path) -> None:
    src = cnn(5, seed=1)
    src.save(tmp_path / "best.keras")
    dst = cnn(3, seed=2)
    report = load_matching_weights(dst, tmp_path)  # a run folder: its best.keras
    assert "head" in report.skipped and "head" not in report.loaded
    assert set(report.loaded) == {"stage0_conv0", "stage0_norm0", "stage1_conv0", "stage1_norm0"}
    for name in report.loaded:
        for a, b in zip(dst.get_layer(name).weights, src.get_layer(name).weights, strict=True):
            np.testing.assert_array_equal(np.array(a), np.array(b))
    assert "skipped head" in report.text()
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no best.keras"):
        load_matching_weights(dst, tmp_path / "empty")
    with pytest.raises(UserError, match="no such run folder"):
        load_matching_weights(dst, tmp_path / "nothing")


def test_feature_extraction_keeps_backbone_bit_identical() -> None:
    x, y = data()
    model = cnn(3)
    assert setup_transfer(model, "feature_extraction") == []
    model.compile(keras.optimizers.Adam(0.05), LOSS)
    before = weights_snapshot(model)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    after = weights_snapshot(model)
    for path, value in before.items():
        if path.startswith("head/"):
            assert not np.array_equal(value, after[path])
        else:  # kernels, BN scale/offset and moving statistics alike
            np.testing.assert_array_equal(value, after[path], err_msg=path)


def test_stages_default_grouping() -> None:
    model = cnn(3)
    names = [[layer.name for layer in g] for g in stages(model)]
    assert names == [["head"], ["stage1_conv0", "stage1_norm0"], ["stage0_conv0", "stage0_norm0"]]
    resnet = create_model("resnet20", num_classes=3, input_shape=(8, 8, 3))
    keys = [g[0].name.split("_")[0] for g in stages(resnet)]
    assert keys == ["head", "layer3", "layer2", "layer1", "norm1", "conv1"]
    assert [g[0].name for g in stages(model, ["stage0"])] == ["head", "stage0_conv0"]


def test_gradual_unfreeze_on_schedule() -> None:
    x, y = data()
    model = cnn(3)
    callbacks = setup_transfer(model, "gradual_unfreeze", unfreeze_every=2)
    model.compile(transfer_optimizer(keras.optimizers.SGD(0.1), 0.5), LOSS)
    prebuild_optimizer(model)
    snaps = [weights_snapshot(model)]

    class Snap(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            snaps.append(weights_snapshot(self.model))

    model.fit(x, y, epochs=5, batch_size=16, verbose=0, callbacks=[*callbacks, Snap()])
    unfreeze = callbacks[0]
    assert isinstance(unfreeze, GradualUnfreeze)
    assert unfreeze.history == [(0, 1), (2, 2), (4, 3)]

    def changed(epoch: int, prefix: str) -> bool:  # did `prefix` weights move during `epoch`?
        a, b = snaps[epoch], snaps[epoch + 1]
        return any(not np.array_equal(a[p], b[p]) for p in a if p.startswith(prefix))

    assert [changed(e, "head/") for e in range(5)] == [True] * 5
    assert [changed(e, "stage1_") for e in range(5)] == [False, False, True, True, True]
    assert [changed(e, "stage0_") for e in range(5)] == [False, False, False, False, True]


def test_gradual_unfreeze_without_prebuild_is_a_clear_error() -> None:
    x, y = data()
    model = cnn(3)
    callbacks = setup_transfer(model, "gradual_unfreeze", unfreeze_every=1)
    model.compile(keras.optimizers.SGD(0.1), LOSS, run_eagerly=True)
    with pytest.raises(UserError, match="prebuild_optimizer"):
        model.fit(x, y, epochs=2, verbose=0, callbacks=callbacks)


def test_transfer_learning_app_smoke(tmp_path: Path, capsys) -> None:
    # In-process (the app's main takes argv) to spare a second TensorFlow start-up.
    spec = importlib.util.spec_from_file_location(
        "transfer_app", REPO / "apps" / "transfer_learning.py"
    )
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    results = app.main(["--smoke", "--out", str(tmp_path)])
    assert set(results) == {"from_scratch", "feature_extraction", "fine_tune", "gradual_unfreeze"}
    assert (tmp_path / "pretrained_0to4.keras").is_file()
    out = capsys.readouterr().out
    assert "pretrained on digits 0-4" in out
    for strategy in ("feature_extraction", "fine_tune", "gradual_unfreeze"):
        assert f"{strategy}: test accuracy on digits 5-9" in out
    assert "skipped head" in out
