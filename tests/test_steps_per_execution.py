"""``training.steps_per_execution``: the ``auto`` default and per-step learning-rate logging."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import write_recipe

from kerasdl.config import AUTO_STEPS_PER_EXECUTION, load_recipe
from kerasdl.errors import UserError


def _lr_events(log_dir: Path) -> dict[int, float]:
    out: dict[int, float] = {}
    for path in sorted((log_dir / "train").glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag == "learning_rate":
                    out[event.step] = float(tf.make_ndarray(value.tensor))
    return out


def test_auto_resolves_to_16_and_to_1_with_grad_norm_logging(tmp_path: Path) -> None:
    cfg = load_recipe(write_recipe(tmp_path / "r.yaml", tmp_path / "runs"))
    assert cfg.training.steps_per_execution == "auto"
    assert cfg.training.execution_steps() == AUTO_STEPS_PER_EXECUTION == 16
    cfg = load_recipe(tmp_path / "r.yaml", ["training.log_grad_norm=true"])
    assert cfg.training.execution_steps() == 1
    cfg = load_recipe(tmp_path / "r.yaml", ["training.steps_per_execution=3"])
    assert cfg.training.execution_steps() == 3
    with pytest.raises(UserError, match="steps_per_execution"):
        load_recipe(tmp_path / "r.yaml", ["training.steps_per_execution=0"])
    # under tf.distribute Keras's multi-step loop fails on finite datasets: auto -> 1, and an
    # explicit value above 1 is refused before anything runs
    cfg = load_recipe(tmp_path / "r.yaml", ["distribute.strategy=mirrored"])
    assert cfg.training.execution_steps(distributed=True) == 1
    with pytest.raises(UserError, match="steps_per_execution 4 is not supported"):
        load_recipe(
            tmp_path / "r.yaml",
            ["distribute.strategy=mirrored", "training.steps_per_execution=4"],
        )


def test_learning_rate_is_logged_at_every_step_with_several_steps_per_execution(
    tmp_path: Path,
) -> None:
    from kerasdl.training.runner import train

    recipe = write_recipe(
        tmp_path / "r.yaml",
        tmp_path / "runs",
        training={"epochs": 2, "steps_per_execution": 3, "log_images": 0},
    )
    result = train(load_recipe(recipe), verbose=0)
    events = _lr_events(result.run_dir / "logs")
    steps_per_epoch = len(events) // 2
    assert steps_per_epoch % 3  # several executions per epoch, the last one shorter
    assert sorted(events) == list(range(2 * steps_per_epoch))  # every step, once
    lrs = np.array([events[s] for s in sorted(events)])
    assert lrs[0] == pytest.approx(0.01, rel=1e-2)  # cosine from the base rate ...
    assert np.all(np.diff(lrs) < 0)  # ... strictly decreasing step by step


def test_method_runs_keep_exact_epochs_with_several_steps_per_execution(tmp_path: Path) -> None:
    import json

    import yaml

    from kerasdl.training.runner import method_execution_steps, train

    assert method_execution_steps(16, 80) == 16
    assert method_execution_steps(16, 79) == 1  # prime: one step per execution
    assert method_execution_steps(16, 78) == 13
    assert method_execution_steps(16, 5) == 5
    recipe = write_recipe(
        tmp_path / "r.yaml", tmp_path / "runs", training={"epochs": 2, "log_images": 0}
    )
    data = yaml.safe_load(recipe.read_text())
    data["method"] = {"name": "pseudo_label", "labels_per_class": 5}
    recipe.write_text(yaml.safe_dump(data))
    result = train(load_recipe(recipe), verbose=0)
    info = json.loads((result.run_dir / "run_info.json").read_text())
    steps = info["steps_per_epoch"]
    # a repeated dataset: Keras would round each epoch up to whole executions of 16 steps
    assert steps % 16
    assert sorted(_lr_events(result.run_dir / "logs")) == list(range(2 * steps))
