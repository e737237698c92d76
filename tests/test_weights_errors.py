"""Checkpoints that do not fit: one clear error naming the tensors, nothing loaded; a new
classifier keeps the backbone; the file formats (wrapped .pth, bfloat16, Keras files)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

pytest.importorskip("torch")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

import make_weight_fixtures as mwf  # noqa: E402

from kerasdl.errors import UserError  # noqa: E402
from kerasdl.models.base import feature_extractor  # noqa: E402
from kerasdl.registry import create_model  # noqa: E402
from kerasdl.weights import load_weights, save_converted  # noqa: E402

VIT = dict(input_shape=(32, 32, 3), num_layers=4)  # the tv_vit / timm_vit fixtures' model


@pytest.fixture(scope="module")
def refs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, mwf.Fixture]:
    out = tmp_path_factory.mktemp("refs")
    return {n: mwf.make_fixture(n, out) for n in ("tv_vit", "timm_vit", "tv_alexnet")}


def state_of(f: mwf.Fixture) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(f.safetensors))


def save(state: dict[str, np.ndarray], path: Path) -> str:
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(path))
    return str(path)


def features(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return np.asarray(feature_extractor(model)([x], training=False))


def snapshot(model: keras.Model) -> list[np.ndarray]:
    return [np.array(v) for v in model.weights]


def test_pth_without_torch_says_to_install_it_or_use_safetensors(
    refs: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    with pytest.raises(UserError, match=r"pip install 'kerasdl\[torch\]'.*\.safetensors"):
        create_model("vit_ti_16", weights=str(refs["tv_vit"].pth), **VIT)


def test_another_architecture_is_named(refs: dict) -> None:
    with pytest.raises(UserError) as err:
        create_model("resnet18", weights=str(refs["tv_vit"].safetensors))
    msg = str(err.value)
    assert "not a resnet checkpoint in torchvision/timm layout" in msg
    assert "looks like a vit (torchvision) checkpoint" in msg and "class_token" in msg
    assert "\n" not in msg


def test_missing_unexpected_and_misshapen_tensors_are_named(refs: dict, tmp_path: Path) -> None:
    state = state_of(refs["tv_vit"])
    del state["encoder.layers.encoder_layer_3.ln_2.weight"]
    state["encoder.layers.encoder_layer_9.ln_2.weight"] = np.ones(192, "float32")
    state["conv_proj.bias"] = np.ones(10, "float32")
    path = save(state, tmp_path / "bad.safetensors")
    model = create_model("vit_ti_16", **VIT)
    before = snapshot(model)
    with pytest.raises(UserError) as err:
        load_weights(model, path)
    msg = str(err.value)
    assert (
        "1 missing: encoder.layers.encoder_layer_3.ln_2.weight (for encoder_layer_3/ln_2/gamma)"
        in msg
    )
    assert "1 unexpected: encoder.layers.encoder_layer_9.ln_2.weight" in msg
    assert "1 of another shape: conv_proj.bias (10,) for patch_embed/conv_proj/bias (192,)" in msg
    assert "\n" not in msg
    for a, b in zip(before, snapshot(model), strict=True):  # all or nothing
        np.testing.assert_array_equal(a, b)


def test_a_deeper_model_lists_the_first_missing_tensors_and_the_count(refs: dict) -> None:
    with pytest.raises(
        UserError, match=r"32 missing: encoder\.layers\.encoder_layer_4\..*\(32 in all\)"
    ):
        create_model("vit_ti_16", weights=str(refs["tv_vit"].safetensors), input_shape=(32, 32, 3),
                     num_layers=6)  # fmt: skip


def test_another_width_is_a_shape_mismatch(refs: dict) -> None:
    with pytest.raises(UserError, match=r"of another shape: class_token \(1, 1, 192\) for "):
        create_model("vit_s_16", weights=str(refs["tv_vit"].safetensors), **VIT)


def test_torchvision_alexnet_points_to_alexnet_owt(refs: dict) -> None:
    with pytest.raises(UserError, match="kerasdl's alexnet_owt"):
        create_model("alexnet", weights=str(refs["tv_alexnet"].safetensors),
                     input_shape=(64, 64, 3), fc_units=256)  # fmt: skip


def test_a_family_without_counterpart_says_so(refs: dict) -> None:
    with pytest.raises(UserError, match="resnet_cifar.*no torchvision or timm counterpart"):
        create_model("resnet20", weights=str(refs["tv_vit"].safetensors))


def test_unreadable_files(tmp_path: Path) -> None:
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="not a readable safetensors file"):
        create_model("vit_ti_16", weights=str(bad), **VIT)
    with pytest.raises(UserError, match="unknown file type"):
        create_model("vit_ti_16", weights=__file__, **VIT)
    with pytest.raises(UserError, match="no such file: nope.pth"):
        create_model("vit_ti_16", weights="nope.pth", **VIT)


def test_new_num_classes_keeps_the_backbone_and_says_so(
    refs: dict, caplog: pytest.LogCaptureFixture
) -> None:
    f = refs["tv_vit"]
    full = create_model("vit_ti_16", weights=str(f.safetensors), **VIT)
    keras.utils.set_random_seed(1)
    fresh = create_model("vit_ti_16", num_classes=10, **VIT)
    keras.utils.set_random_seed(1)
    with caplog.at_level(logging.WARNING, logger="kerasdl.weights"):
        tuned = create_model("vit_ti_16", weights=str(f.safetensors), num_classes=10, **VIT)
    report = tuned.weights_report
    assert report.head_reinitialised and "1000 classes in the checkpoint, 10 here" in report.head
    assert report.loaded == report.total - 2
    assert "classifier re-initialised" in caplog.text
    assert "re-initialised" in report.text()
    pooled = features(full, f.x)
    np.testing.assert_allclose(features(tuned, f.x), pooled, rtol=1e-6)
    np.testing.assert_array_equal(tuned.get_layer("head").kernel, fresh.get_layer("head").kernel)
    headless = create_model("vit_ti_16", weights=str(f.safetensors), num_classes=0, **VIT)
    assert headless.weights_report.head.startswith("dropped")
    np.testing.assert_allclose(headless(f.x, training=False), pooled, rtol=1e-6)


def test_wrapped_training_checkpoint_with_dataparallel_prefix(refs: dict, tmp_path: Path) -> None:
    import torch

    state = {f"module.{k}": torch.from_numpy(v) for k, v in state_of(refs["tv_vit"]).items()}
    torch.save({"epoch": 3, "state_dict": state, "optimizer": {}}, tmp_path / "ckpt.pt")
    model = create_model("vit_ti_16", weights=str(tmp_path / "ckpt.pt"), **VIT)
    np.testing.assert_allclose(model(refs["tv_vit"].x), refs["tv_vit"].logits, rtol=1e-4, atol=1e-5)


def test_pth_that_is_not_a_state_dict(tmp_path: Path) -> None:
    import torch

    torch.save({"epoch": 3}, tmp_path / "x.pth")
    with pytest.raises(UserError, match="not a state_dict"):
        create_model("vit_ti_16", weights=str(tmp_path / "x.pth"), **VIT)


def test_bfloat16_safetensors_are_widened(refs: dict, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    state = {k: torch.from_numpy(v).to(torch.bfloat16) for k, v in state_of(refs["tv_vit"]).items()}
    save_file(state, str(tmp_path / "bf16.safetensors"))
    model = create_model("vit_ti_16", weights=str(tmp_path / "bf16.safetensors"), **VIT)
    want = state["conv_proj.weight"].float().numpy().transpose(2, 3, 1, 0)
    (kernel,) = [v for v in model.weights if v.path == "patch_embed/conv_proj/kernel"]
    np.testing.assert_array_equal(kernel, want)


def test_converted_keras_file_starts_another_head(refs: dict, tmp_path: Path) -> None:
    f = refs["tv_vit"]
    full = create_model("vit_ti_16", weights=str(f.safetensors), **VIT)
    out = tmp_path / "vit.keras"
    save_converted(full, out, full.weights_report)
    tuned = create_model("vit_ti_16", weights=str(out), num_classes=3, **VIT)
    report = tuned.weights_report
    assert report.source == "keras" and report.head_reinitialised
    assert report.preprocessing == full.weights_report.preprocessing
    np.testing.assert_allclose(features(tuned, f.x), features(full, f.x), rtol=1e-6)
    same = create_model("vit_ti_16", weights=str(out), **VIT)
    np.testing.assert_allclose(same(f.x), f.logits, rtol=1e-4, atol=1e-5)


def test_keras_weights_h5_must_match_exactly(refs: dict, tmp_path: Path) -> None:
    f = refs["tv_vit"]
    full = create_model("vit_ti_16", weights=str(f.safetensors), **VIT)
    full.save_weights(tmp_path / "vit.weights.h5")
    same = create_model("vit_ti_16", weights=str(tmp_path / "vit.weights.h5"), **VIT)
    assert same.weights_report.preprocessing is None  # a weights file records none
    np.testing.assert_allclose(same(f.x), f.logits, rtol=1e-4, atol=1e-5)
    with pytest.raises(UserError, match=r"Keras cannot load it.*must match the model exactly"):
        create_model("vit_ti_16", weights=str(tmp_path / "vit.weights.h5"), num_classes=3, **VIT)


def test_older_torchvision_key_names_load(refs: dict, tmp_path: Path) -> None:
    """torchvision < 0.13 ViT checkpoints name the MLP ``linear_1`` / ``linear_2``."""
    f = refs["tv_vit"]
    old = {
        k.replace(".mlp.0.", ".mlp.linear_1.").replace(".mlp.3.", ".mlp.linear_2."): v
        for k, v in state_of(f).items()
    }
    model = create_model("vit_ti_16", weights=save(old, tmp_path / "old.safetensors"), **VIT)
    np.testing.assert_allclose(model(f.x), f.logits, rtol=1e-4, atol=1e-5)


def test_a_checkpoint_without_classifier_keeps_the_fresh_head(refs: dict, tmp_path: Path) -> None:
    """timm's ``num_classes=0`` exports and feature checkpoints have no head tensors."""
    state = {k: v for k, v in state_of(refs["tv_vit"]).items() if not k.startswith("heads.")}
    model = create_model("vit_ti_16", weights=save(state, tmp_path / "nohead.safetensors"), **VIT)
    assert model.weights_report.head == "re-initialised: the checkpoint has no classifier"


def test_converted_timm_vit_exports_with_its_source_preprocessing(
    refs: dict, tmp_path: Path
) -> None:
    from kerasdl.export.source import resolve_source

    model = create_model("vit_ti_16", weights=str(refs["timm_vit"].safetensors), **VIT)
    save_converted(model, tmp_path / "vit.keras", model.weights_report)
    spec = resolve_source(tmp_path / "vit.keras").spec  # what kerasdl export applies
    assert spec.mean == spec.std == [0.5, 0.5, 0.5]
    assert spec.interpolation == "bicubic" and spec.input_shape == (32, 32, 3)
