"""``kerasdl convert`` as a user runs it, and a recipe that starts from ``model.weights``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml

pytest.importorskip("torch")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

import make_weight_fixtures as mwf  # noqa: E402

RECIPE = REPO / "configs" / "transfer" / "resnet18_torchvision_digits.yaml"


@pytest.fixture(scope="module")
def refs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, mwf.Fixture]:
    out = tmp_path_factory.mktemp("cli_refs")
    return {n: mwf.make_fixture(n, out) for n in ("tv_resnet18", "tv_vit")}


def kerasdl(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("kerasdl") or str(Path(sys.executable).with_name("kerasdl"))
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name or p.suffix == ".keras")


def test_convert_writes_a_keras_file_with_the_reference_logits(refs: dict, tmp_path: Path) -> None:
    f = refs["tv_resnet18"]
    shutil.copy(f.pth, tmp_path / "resnet18.pth")
    done = kerasdl(
        "convert", "resnet18.pth", "--model", "resnet18", "--out", "r18.keras",
        "--input-shape", "64", "64", "3", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "resnet18.pth (torchvision/timm layout) -> resnet18: 102/102 variables" in done.stdout
    assert "classifier: loaded" in done.stdout
    assert "mean (0.485, 0.456, 0.406) std (0.229, 0.224, 0.225)" in done.stdout
    assert "wrote r18.keras" in done.stdout
    from kerasdl.registry import ensure_registered

    ensure_registered()
    model = keras.saving.load_model(tmp_path / "r18.keras", compile=False)
    np.testing.assert_allclose(model(f.x), f.logits, rtol=1e-4, atol=1e-4 * np.abs(f.logits).max())
    from kerasdl.export.source import resolve_source

    spec = resolve_source(tmp_path / "r18.keras").spec  # what kerasdl export applies
    assert spec.mean == [0.485, 0.456, 0.406] and spec.std == [0.229, 0.224, 0.225]
    assert spec.input_shape == (64, 64, 3)


def test_convert_error_is_one_line_and_leaves_no_file(
    refs: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """In process (the command's code; the subprocess test above covers the installed entry)."""
    from kerasdl.cli import main

    shutil.copy(refs["tv_resnet18"].safetensors, tmp_path / "r18.safetensors")
    monkeypatch.chdir(tmp_path)
    assert main(["convert", "r18.safetensors", "--model", "vgg11", "--out", "v.keras"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "not a vgg checkpoint" in line and "looks like a resnet" in line
    assert main(["convert", "r18.safetensors", "--model", "resnet18", "--out", "v.h5"]) == 2
    assert "--out must end in .keras" in capsys.readouterr().err
    assert leftovers(tmp_path) == []


def test_a_failed_save_leaves_no_file(
    refs: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kerasdl.registry import create_model
    from kerasdl.weights import save_converted

    f = refs["tv_vit"]
    model = create_model("vit_ti_16", weights=str(f.safetensors), input_shape=(32, 32, 3),
                         num_layers=4)  # fmt: skip

    def broken_save(self, path, *args, **kwargs):
        Path(path).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(keras.Model, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_converted(model, tmp_path / "vit.keras", model.weights_report)
    assert leftovers(tmp_path) == []


def run_shipped_recipe(
    refs: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **extra: str
) -> None:
    """``kerasdl train`` of the shipped transfer recipe from the checkpoint's folder, with a small
    ViT checkpoint in place of ResNet-18 and one short epoch (``extra``: more overrides)."""
    from kerasdl.cli import main

    shutil.copy(refs["tv_vit"].safetensors, tmp_path / "vit.safetensors")
    monkeypatch.chdir(tmp_path)
    overrides = {
        "model.name": "vit_ti_16",
        "model.num_layers": "4",
        "model.weights": "vit.safetensors",
        "training.epochs": "1",
        "training.batch_size": "256",
        "run.output_dir": "runs",
        **extra,
    }
    args = ["train", str(RECIPE)]
    for key, value in overrides.items():
        args += ["--set", f"{key}={value}"]
    assert main(args) == 0


def test_recipe_starts_from_model_weights_relative_to_the_current_folder(
    refs: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """The shipped transfer recipe, run as a user would from the checkpoint's folder, with a
    small ViT checkpoint in place of ResNet-18 (one short epoch)."""
    run_shipped_recipe(refs, tmp_path, monkeypatch)
    out = capsys.readouterr().out
    assert "model.weights: data.mean/std set from the checkpoint" in out
    assert "vit.safetensors (torchvision layout) -> vit_ti_16" in out
    assert "classifier: re-initialised (1000 classes in the checkpoint, 10 here)" in out
    (run_dir,) = [p.parent for p in (tmp_path / "runs").rglob("metrics.json")]
    assert 0.0 <= json.loads((run_dir / "metrics.json").read_text())["accuracy"] <= 1.0
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["model"]["weights"] == "vit.safetensors"
    assert cfg["data"]["mean"] == [0.485, 0.456, 0.406]
    spec = json.loads((run_dir / "preprocess.json").read_text())
    assert spec["std"] == [0.229, 0.224, 0.225]


def test_shipped_recipe_names_a_checkpoint_and_leaves_standardisation_to_it() -> None:
    from kerasdl.config import load_recipe

    cfg = load_recipe(RECIPE)
    assert cfg.model.weights == "resnet18.safetensors"
    assert cfg.data.mean == [] and cfg.data.std == []


def test_feature_extraction_from_model_weights_keeps_the_checkpoints_backbone(
    refs: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """training.transfer strategies accept model.weights: with feature_extraction only the new
    head trains, and the run's best.keras holds the checkpoint's backbone unchanged."""
    import kerasdl

    run_shipped_recipe(
        refs,
        tmp_path,
        monkeypatch,
        **{
            "training.optimizer.backbone_lr_multiplier": "1.0",
            "training.transfer.strategy": "feature_extraction",
        },
    )
    (best,) = (tmp_path / "runs").rglob("best.keras")
    trained = keras.saving.load_model(best)
    start = kerasdl.create_model(
        "vit_ti_16",
        num_layers=4,
        num_classes=10,
        input_shape=trained.input_shape[1:],
        weights="vit.safetensors",
    )
    moved = [
        w.path
        for w, v in zip(trained.weights, start.weights, strict=True)
        if not np.array_equal(np.asarray(w), np.asarray(v))
    ]
    assert moved and all(p.startswith("head/") for p in moved), moved
