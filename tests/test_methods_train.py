"""Each method trains with plain fit() under mixed_bfloat16 and round-trips through .keras.

(float32 and MirroredStrategy runs are in test_methods_distributed.py.)"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from test_methods_common import SELF, SEMI, tiny_backbone, tiny_data, tiny_params

from kerasdl.methods import METHODS, build_method

EXPECTED_LOGS = {
    "fixmatch": {"loss", "loss_x", "loss_u", "mask_rate", "accuracy"},
    "pi_model": {"loss", "loss_x", "loss_u", "weight_u", "accuracy"},
    "mean_teacher": {"loss", "loss_x", "loss_u", "weight_u", "accuracy"},
    "pseudo_label": {"loss", "loss_x", "loss_u", "weight_u", "mask_rate", "accuracy"},
    "simclr": {"loss", "contrastive_accuracy"},
    "moco": {"loss", "contrastive_accuracy"},
    "mae": {"loss"},
}


@pytest.fixture
def bf16_policy():
    old = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    yield
    keras.config.set_dtype_policy(old)


def _fit(name, tmp_path=None):
    method = build_method(name, tiny_backbone(name), 3, seed=0, **tiny_params(name))
    # eager: no tracing, so the seven methods stay fast; graph mode runs in the distributed test
    method.compile(keras.optimizers.Adam(1e-2), run_eagerly=True)
    train, val = tiny_data(name)
    before = [w.copy() for w in method.backbone.get_weights()]
    hist = method.fit(train, validation_data=val, epochs=1, verbose=0).history
    assert set(hist) == EXPECTED_LOGS[name] | {f"val_{k}" for k in _val_keys(name)}
    assert all(np.isfinite(v[-1]) for v in hist.values())
    after = method.backbone.get_weights()
    assert any(not np.allclose(a, b) for a, b in zip(after, before, strict=True))
    return method


def _val_keys(name):
    return {"loss", "accuracy"} if name in SEMI else EXPECTED_LOGS[name]


def test_registry_lists_every_method():
    assert set(METHODS) == set(SEMI) | set(SELF)


@pytest.mark.parametrize("name", SEMI + SELF)
def test_method_fits_under_mixed_bfloat16_and_round_trips(name, bf16_policy, tmp_path):
    method = _fit(name)
    assert method.backbone.dtype_policy.name == "mixed_bfloat16"
    x = next(iter(tiny_data("mae")[1])).numpy()
    path = tmp_path / f"{name}.keras"
    method.save(path)
    loaded = keras.saving.load_model(path)
    inf, inf2 = method.inference_model, loaded.inference_model
    np.testing.assert_allclose(inf.predict(x, verbose=0), inf2.predict(x, verbose=0), atol=1e-5)
    inf.save(tmp_path / "backbone.keras")  # what the runner keeps
    keras.saving.load_model(tmp_path / "backbone.keras")


def test_policy_restored_after_bf16_tests():
    assert keras.config.dtype_policy().name == "float32"


@pytest.mark.parametrize("name", ["fixmatch", "mae"])
def test_runner_stage_datasets_steps_and_evaluation(name, tmp_path):
    """What the runner does for a recipe with a ``method:`` section, on 8x8 digits."""
    import tensorflow as tf
    from sklearn.datasets import load_digits

    from kerasdl.methods import evaluate_method, method_datasets, method_steps_per_epoch

    d = load_digits()
    x, y = (d.images[..., None] / 16.0).astype("float32"), d.target
    splits = {
        "train": tf.data.Dataset.from_tensor_slices((x[:96], y[:96])),
        "test": tf.data.Dataset.from_tensor_slices((x[96:160], y[96:160])),
    }
    params = {"name": name, "flip": False, "seed": 0, **tiny_params(name)}
    if name == "fixmatch":
        params["labels_per_class"] = 1
    train, val = method_datasets(params, splits, 8, 10, seed=0)
    steps = method_steps_per_epoch(params, 96, 8)
    assert steps == (96 // 16 if name == "fixmatch" else 96 // 8)
    assert sum(1 for _ in train) == steps and val is None
    net = kerasdl_backbone(name)
    method = build_method(name, net, 10, **{k: v for k, v in params.items() if k != "name"})
    method.compile(keras.optimizers.Adam(1e-2), run_eagerly=True)
    method.fit(
        train.take(3), epochs=1, verbose=0, callbacks=method.extra_callbacks(tmp_path, x[:4])
    )
    res = evaluate_method(method, params, splits, 8, 10)
    assert res["split"] == "test"
    if name == "fixmatch":
        assert 0.0 <= res["accuracy"] <= 1.0 and np.isfinite(res["loss"])
    else:
        assert res["probe_train_examples"] == 96 and 0.0 <= res["linear_probe_accuracy"] <= 1.0
        assert (tmp_path / "mae_reconstructions.png").stat().st_size > 1000


def kerasdl_backbone(name):
    import kerasdl

    classes = 10 if name in SEMI else 0
    if name == "mae":
        from test_methods_common import tiny_vit

        return tiny_vit(classes)
    return kerasdl.create_model(
        "simple_cnn", num_classes=classes, input_shape=(8, 8, 1), filters=[4, 8]
    )
