"""Recipes with a ``method:`` section run through ``kerasdl train`` (the runner wiring)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import write_recipe

from kerasdl.cli import main
from kerasdl.config import load_recipe
from kerasdl.errors import UserError


def _method_recipe(tmp_path: Path, method: dict, **training) -> Path:
    path = write_recipe(
        tmp_path / "m.yaml",
        tmp_path / "runs",
        training={"epochs": 1, "batch_size": 16, **training},
        model={"filters": [8, 16]},
    )
    data = yaml.safe_load(path.read_text())
    data["method"] = method
    path.write_text(yaml.safe_dump(data))
    return path


def test_fixmatch_recipe_keeps_the_classifier(tmp_path: Path) -> None:
    from kerasdl.training.runner import train

    recipe = _method_recipe(tmp_path, {"name": "fixmatch", "labels_per_class": 5, "mu": 2})
    result = train(load_recipe(recipe), verbose=0)
    saved = json.loads((result.run_dir / "metrics.json").read_text())
    assert 0.0 <= saved["accuracy"] <= 1.0 and "loss" in saved
    history = (result.run_dir / "history.csv").read_text().splitlines()[0]
    assert "mask_rate" in history or "loss_u" in history or "unlabelled" in history
    assert main(["evaluate", str(result.run_dir)]) == 0  # best.keras is a plain classifier


def test_simclr_recipe_reports_probe_accuracy(tmp_path: Path) -> None:
    from kerasdl.training.runner import train

    method = {"name": "simclr", "probe_labels_per_class": 5, "probe_protocols": ["linear", "knn"]}
    recipe = _method_recipe(tmp_path, method, batch_size=32)
    result = train(load_recipe(recipe), verbose=0)
    m = result.metrics
    assert set(m) == {
        "linear_probe_accuracy",
        "knn_accuracy",
        "linear_probe_accuracy_random_init",
        "knn_accuracy_random_init",
        "probe_train_examples",
    }
    assert m["probe_train_examples"] == 50  # 5 labels x 10 classes
    assert m["linear_probe_accuracy"] > 0.3  # far above chance (0.1)
    # the baseline is a different network (random init), not the pretrained one again
    assert m["knn_accuracy"] != m["knn_accuracy_random_init"]
    assert (result.run_dir / "backbone.keras").is_file()


def test_bad_method_section_is_a_user_error(tmp_path: Path) -> None:
    recipe = _method_recipe(tmp_path, {"name": "fixmatch", "treshold": 0.9})
    with pytest.raises(UserError, match="method"):
        load_recipe(recipe)
    with pytest.raises(UserError, match="Unknown method 'fixmatc'"):
        load_recipe(recipe, ["method={name: fixmatc}"])
