"""Shared test fixtures: quiet TensorFlow, a tiny digits recipe, a trained run shared by tests."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# `training.precision: auto` would pick bfloat16 on CPUs with AVX-512 BF16 / AMX: keep the
# suite's numbers independent of the machine (tests/test_auto.py tests the choice itself)
os.environ.setdefault("KERASDL_AUTO_PRECISION", "float32")

import pytest  # noqa: E402
import yaml  # noqa: E402

# first, as a user's script would: `import kerasdl` asks for TensorFlow's oneDNN kernels before
# any test module loads TensorFlow (kerasdl.onednn; TensorFlow reads the request once)
import kerasdl  # noqa: E402, F401

REPO = Path(__file__).resolve().parent.parent

TINY_RECIPE = {
    "model": {"name": "simple_cnn", "filters": [16, 32], "convs_per_stage": 1, "dropout": 0.1},
    "data": {"source": "digits", "image_size": 8, "channels": 1},
    "training": {
        "epochs": 6,
        "batch_size": 64,
        "optimizer": {"name": "adam", "learning_rate": 0.01},
        "schedule": {"name": "cosine"},
        "metrics": ["accuracy", "top5"],
        "log_images": 4,
    },
    "run": {"name": "tiny", "seed": 0},
}


def write_recipe(path: Path, output_dir: Path, **sections: dict) -> Path:
    """Write the tiny recipe (sections updated shallowly per key) with run.output_dir set."""
    recipe = {k: dict(v) for k, v in TINY_RECIPE.items()}
    for key, value in sections.items():
        recipe[key].update(value)
    recipe["run"]["output_dir"] = str(output_dir)
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture
def tiny_recipe(tmp_path: Path) -> Path:
    return write_recipe(tmp_path / "tiny.yaml", tmp_path / "runs")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory):
    """One short training run of the tiny recipe, shared by the tests that inspect a run folder."""
    from kerasdl.config import load_recipe
    from kerasdl.training.runner import train

    tmp = tmp_path_factory.mktemp("trained")
    recipe = write_recipe(tmp / "tiny.yaml", tmp / "runs")
    cfg = load_recipe(recipe)
    return train(cfg, verbose=0)
