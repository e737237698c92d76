"""torchvision and timm checkpoints give the reference's logits in kerasdl (issue 16, point 1).

Every reference is built by the real torchvision / timm code with telling random weights
(scripts/make_weight_fixtures.py), saved as safetensors and .pth, and run in PyTorch for the
logits; kerasdl loads the file into the matching zoo model and must give the same logits. One
representative per family and source runs in the default suite; the full-size builders are slow.
"""

from __future__ import annotations

import sys
from pathlib import Path

import keras
import numpy as np
import pytest

pytest.importorskip("torch")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

import make_weight_fixtures as mwf  # noqa: E402

from kerasdl.registry import create_model  # noqa: E402

_CACHE: dict[str, mwf.Fixture] = {}


@pytest.fixture(scope="session")
def fixture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("weight_fixtures")


def reference(name: str, out: Path) -> mwf.Fixture:
    """The fixture ``name``, made once per session."""
    if name not in _CACHE:
        _CACHE[name] = mwf.make_fixture(name, out)
    return _CACHE[name]


_MODELS: dict[str, keras.Model] = {}


def loaded(name: str, out: Path) -> tuple[mwf.Fixture, keras.Model]:
    """The fixture and its kerasdl model loaded from the safetensors file, built once."""
    f = reference(name, out)
    if name not in _MODELS:
        _MODELS[name] = create_model(f.spec.model, weights=str(f.safetensors), **f.kwargs())
    return f, _MODELS[name]


def logits(model: keras.Model, x: np.ndarray) -> np.ndarray:
    out = model(x, training=False)
    return np.asarray(out[0] if isinstance(out, (list, tuple)) else out)


def assert_close(got: np.ndarray, want: np.ndarray) -> None:
    """Relative 1e-4, with the absolute tolerance scaled to the logits' size."""
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


SOURCES = {
    "tv_resnet18": "torchvision/timm",
    "tv_resnext": "torchvision/timm",
    "tv_wide_resnet": "torchvision/timm",
    "tv_vgg11": "torchvision",
    "tv_vgg11_bn": "torchvision",
    "tv_alexnet": "torchvision",
    "tv_densenet": "torchvision/timm",
    "tv_googlenet": "torchvision",
    "tv_efficientnet_b0": "torchvision",
    "tv_vit": "torchvision",
    "timm_resnet18": "torchvision/timm",
    "timm_efficientnet_b0": "timm",
    "timm_densenet": "torchvision/timm",
    "timm_vit": "timm",
}


def test_every_fixture_is_checked() -> None:
    assert set(SOURCES) == set(mwf.SPECS)


@pytest.mark.parametrize("name", list(mwf.SPECS))
def test_safetensors_give_the_reference_logits(name: str, fixture_dir: Path) -> None:
    f, model = loaded(name, fixture_dir)
    assert_close(logits(model, f.x), f.logits)
    report = model.weights_report
    assert report.source == SOURCES[name]
    assert report.head == "loaded"
    assert report.loaded == report.total == len(model.weights)


@pytest.mark.parametrize("name", ["tv_resnet18", "tv_vit", "timm_efficientnet_b0"])
def test_pth_gives_the_reference_logits(name: str, fixture_dir: Path) -> None:
    f = reference(name, fixture_dir)
    model = create_model(f.spec.model, weights=str(f.pth), **f.kwargs())
    assert_close(logits(model, f.x), f.logits)


def test_old_torchvision_densenet_keys_are_remapped(fixture_dir: Path, tmp_path: Path) -> None:
    """Checkpoints from torchvision < 0.4 name a dense layer's norms ``norm.1`` (torchvision's
    ``_load_state_dict`` remaps them; so does kerasdl)."""
    import re

    from safetensors.numpy import load_file, save_file

    f = reference("tv_densenet", fixture_dir)
    old = {
        re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", k): v
        for k, v in load_file(str(f.safetensors)).items()
    }
    assert "features.denseblock1.denselayer1.norm.1.weight" in old
    save_file(old, str(tmp_path / "old.safetensors"))
    model = create_model(f.spec.model, weights=str(tmp_path / "old.safetensors"), **f.kwargs())
    assert_close(logits(model, f.x), f.logits)


def test_googlenet_aux_classifiers_load_when_the_model_has_them(fixture_dir: Path) -> None:
    f = reference("tv_googlenet", fixture_dir)
    model = create_model("googlenet", weights=str(f.safetensors), aux_logits=True, **f.kwargs())
    assert model.weights_report.ignored == []
    every_output = keras.Model(model.inputs, model.outputs)
    main, aux1, aux2 = every_output({"image": f.x}, training=False)
    assert_close(np.asarray(main), f.logits)
    assert_close(np.asarray(aux1), f.aux["aux1"])
    assert_close(np.asarray(aux2), f.aux["aux2"])


def test_googlenet_without_aux_ignores_them_as_torchvision_does(fixture_dir: Path) -> None:
    _, model = loaded("tv_googlenet", fixture_dir)
    ignored = model.weights_report.ignored
    assert ignored and all(k.startswith(("aux1.", "aux2.")) for k in ignored)


def test_torchvision_googlenet_records_transform_input_standardisation(fixture_dir: Path) -> None:
    _, model = loaded("tv_googlenet", fixture_dir)
    prep = model.weights_report.preprocessing
    assert prep.mean == prep.std == (0.5, 0.5, 0.5)


@pytest.mark.parametrize(
    "name,mean,interpolation",
    [
        ("tv_resnet18", (0.485, 0.456, 0.406), "bilinear"),
        ("tv_efficientnet_b0", (0.485, 0.456, 0.406), "bicubic"),
        ("timm_efficientnet_b0", (0.485, 0.456, 0.406), "bicubic"),
        ("timm_vit", (0.5, 0.5, 0.5), "bicubic"),
    ],
)
def test_the_source_preprocessing_is_recorded(
    name: str, mean: tuple, interpolation: str, fixture_dir: Path
) -> None:
    from kerasdl.weights import checkpoint_preprocessing

    f, model = loaded(name, fixture_dir)
    prep = model.weights_report.preprocessing
    assert prep.mean == pytest.approx(mean)
    assert prep.interpolation == interpolation
    _, cheap = checkpoint_preprocessing(f.safetensors, f.spec.model)  # keys only
    assert cheap == prep


def test_timm_pretrained_cfg_beside_the_checkpoint_wins(fixture_dir: Path, tmp_path: Path) -> None:
    """timm's Hugging Face layout: model.safetensors + config.json with its pretrained_cfg."""
    import json
    import shutil

    f = reference("timm_resnet18", fixture_dir)
    shutil.copy(f.safetensors, tmp_path / "model.safetensors")
    cfg = {"architecture": "resnet18", "pretrained_cfg": {
        "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2], "interpolation": "bicubic",
        "crop_pct": 0.95}}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    model = create_model("resnet18", weights=str(tmp_path / "model.safetensors"), **f.kwargs())
    report = model.weights_report
    assert report.source == "timm"
    assert report.preprocessing.mean == (0.5, 0.4, 0.3)
    assert report.preprocessing.crop_pct == 0.95


def test_vit_position_embeddings_are_resized_as_timm_does(tmp_path: Path) -> None:
    """A 64x64 checkpoint (4x4 patches) into a 32x32 model: timm's own loader resamples the
    position embeddings (checkpoint_filter_fn); kerasdl must give that model's logits."""
    import torch
    from safetensors.torch import save_file

    timm = mwf._timm()
    from timm.models.vision_transformer import checkpoint_filter_fn

    torch.manual_seed(0)
    big = mwf.telling_(timm.create_model("vit_tiny_patch16_224", img_size=64, depth=2)).eval()
    state = {k: v.contiguous() for k, v in big.state_dict().items()}
    save_file(state, str(tmp_path / "vit64.safetensors"))
    small = timm.create_model("vit_tiny_patch16_224", img_size=32, depth=2).eval()
    small.load_state_dict(checkpoint_filter_fn(state, small))
    x = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype("float32")
    with torch.no_grad():
        want = small(torch.from_numpy(x)).numpy()
    model = create_model(
        "vit_ti_16", weights=str(tmp_path / "vit64.safetensors"), input_shape=(32, 32, 3),
        num_layers=2,
    )  # fmt: skip
    assert any("resized 17 -> 5" in n for n in model.weights_report.notes)
    np.testing.assert_allclose(logits(model, x.transpose(0, 2, 3, 1)), want, rtol=1e-3, atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(mwf.SLOW))
def test_full_size_reference_models(name: str, fixture_dir: Path) -> None:
    f = reference(name, fixture_dir)
    model = create_model(f.spec.model, weights=str(f.safetensors), **f.kwargs())
    assert_close(logits(model, f.x), f.logits)
