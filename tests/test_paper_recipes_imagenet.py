"""The ImageNet paper recipes of configs/imagenet end to end on ``tfds.testing.mock_data``.

The other half of tests/test_paper_recipes.py's end-to-end runs (the shrinking overrides, the
helpers and the checks are that file's), in a file of its own so that ``pytest -n 2 --dist
loadfile`` runs the two halves on both workers.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import test_paper_recipes
from test_paper_recipes import END_TO_END, REPO, _check_run, _run

IMAGENET = [p for p in END_TO_END if p.id.startswith("imagenet/")]

# the same module-scoped fixture, one instance per module: tfds.testing.mock_data's folder
mock_tfds = test_paper_recipes.mock_tfds


@pytest.mark.parametrize("path", IMAGENET)
def test_recipe_runs_end_to_end_on_mock_tfds(path: Path, mock_tfds: Path, tmp_path: Path) -> None:
    _check_run(path, _run(path, mock_tfds, tmp_path))


def test_mae_then_linear_probe(mock_tfds: Path, tmp_path: Path) -> None:
    """The linear-probe recipe starts from the pre-training recipe's backbone.keras."""
    imagenet = REPO / "configs" / "imagenet"
    pre = _run(imagenet / "mae_vit_b16.yaml", mock_tfds, tmp_path / "pre")
    probe_dir = tmp_path / "probe"
    probe_dir.mkdir()
    shutil.copy(pre / "backbone.keras", probe_dir / "backbone.keras")
    run_dir = _run(imagenet / "mae_vit_b16_linear_probe.yaml", mock_tfds, probe_dir)
    _check_run(imagenet / "mae_vit_b16_linear_probe.yaml", run_dir)
