"""The recipes shipped in configs/ validate, and the method recipes run with ``kerasdl train``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kerasdl.cli import main
from kerasdl.config import load_recipe

REPO = Path(__file__).resolve().parent.parent
RECIPES = sorted((REPO / "configs").rglob("*.yaml"))
METHOD_RECIPES = sorted((REPO / "configs" / "ssl").glob("*.yaml"))


def test_there_is_a_recipe_per_method() -> None:
    from kerasdl.methods import METHODS

    named = {load_recipe(p).method["name"] for p in METHOD_RECIPES}
    assert named == set(METHODS)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_recipe_validates(path: Path) -> None:
    if "search" in path.stem:  # a DARTS search recipe (kerasdl search)
        from kerasdl.nas.config import load_search_recipe

        assert load_search_recipe(path)
    else:
        assert load_recipe(path).run.name


# Depth shrinks (only through ``--set``, the recipe file is what a user runs): one transformer
# block instead of four in the ViT encoder and MAE's decoder. Tracing the blocks was most of each
# run (moco_digits ~38 s -> ~14 s on an idle 2-core CPU); every other value stays the recipe's.
SHRINK: dict[str, list[str]] = {
    "vit_ti_16": ["model.num_layers=1"],
    "mae": ["method.decoder_depth=1"],
}


@pytest.mark.parametrize("path", METHOD_RECIPES, ids=lambda p: p.stem)
def test_method_recipe_runs_one_epoch(path: Path, tmp_path: Path) -> None:
    """As a user would run it (``kerasdl train RECIPE``), cut to one short epoch (and to one
    transformer block where the recipe's network has several: ``SHRINK``)."""
    cfg = load_recipe(path)
    args = ["train", str(path), "--set", f"run.output_dir={tmp_path}", "--set", "training.epochs=1"]
    for key in (cfg.model.name, cfg.method["name"]):
        for assignment in SHRINK.get(key, []):
            args += ["--set", assignment]
    assert main(args) == 0
    (run_dir,) = [p.parent for p in tmp_path.rglob("metrics.json")]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    if "labels_per_class" in cfg.method:  # semi-supervised: the classifier's test accuracy
        # (one epoch is too short to judge it: Mean Teacher's teacher still lags at chance)
        assert 0.0 <= metrics["accuracy"] <= 1.0
        assert "loss_u" in (run_dir / "history.csv").read_text().splitlines()[0]
    else:  # self-supervised: probes of the pretrained backbone and of the random init
        assert "linear_probe_accuracy" in metrics
        assert "linear_probe_accuracy_random_init" in metrics
    assert list((run_dir / "logs" / "train").glob("events.out.tfevents.*"))
