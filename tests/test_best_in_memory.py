"""metrics.json evaluates the trained model itself when it holds exactly best.keras's weights.

The runner skips reloading ``best.keras`` only when :meth:`BestCheckpoint.holds` proves the
trained model has every weight it saved (same digest); otherwise it reloads the file. Either
way the test metrics must be exactly those of ``best.keras`` reloaded and evaluated.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
from conftest import write_recipe


class _Perturb(keras.callbacks.Callback):
    """Changes one weight after the last save: the trained model no longer is best.keras."""

    def on_train_end(self, logs=None) -> None:
        w = self.model.trainable_weights[0]
        w.assign(w + 0.5)


def _run(tmp_path: Path, monkeypatch, callbacks=(), **sections) -> tuple:
    from kerasdl.config import load_recipe
    from kerasdl.training.runner import train

    training = {"epochs": 1, "log_images": 0, **sections.pop("training", {})}
    cfg = load_recipe(
        write_recipe(tmp_path / "r.yaml", tmp_path / "runs", training=training, **sections)
    )
    loads = []
    real = keras.models.load_model
    monkeypatch.setattr(
        keras.models, "load_model", lambda *a, **k: loads.append(a) or real(*a, **k)
    )
    result = train(cfg, verbose=0, callbacks=list(callbacks))
    monkeypatch.setattr(keras.models, "load_model", real)
    return cfg, result, loads


def _reloaded_metrics(cfg, run_dir: Path) -> dict:
    """What metrics.json held before the shortcut: best.keras reloaded, then evaluated."""
    from kerasdl.data import load_data
    from kerasdl.training.tasks import SupervisedTask

    keras.utils.set_random_seed(cfg.run.seed)
    task = SupervisedTask(cfg, load_data(cfg.data, cfg.run.seed))
    best = keras.models.load_model(run_dir / "best.keras", compile=False)
    return {"split": task.eval_split, **task.classifier_metrics(best)}


def test_metrics_of_the_trained_model_equal_a_reload_of_best_keras(
    tmp_path: Path, monkeypatch
) -> None:
    """One epoch: its save is the last thing that touched the weights (with EMA, the swapped-in
    average stays in the model), so best.keras is not reloaded and the metrics are the same.
    (EMA is the case with a swap; without it the save is simply the last write.)"""
    training = {"optimizer": {"name": "adam", "learning_rate": 0.01, "ema": True}}
    cfg, result, loads = _run(tmp_path, monkeypatch, training=training)
    assert loads == []  # the trained model itself was evaluated
    saved = json.loads((result.run_dir / "metrics.json").read_text())
    assert saved == _reloaded_metrics(cfg, result.run_dir)


def test_a_weight_changed_after_the_save_makes_the_run_reload_best_keras(
    tmp_path: Path, monkeypatch
) -> None:
    perturb = _Perturb()
    cfg, result, loads = _run(tmp_path, monkeypatch, callbacks=[perturb])
    assert [Path(a[0]).name for a in loads] == ["best.keras"]
    saved = json.loads((result.run_dir / "metrics.json").read_text())
    assert saved == _reloaded_metrics(cfg, result.run_dir)
    from kerasdl.data import load_data
    from kerasdl.training.tasks import SupervisedTask

    task = SupervisedTask(cfg, load_data(cfg.data, cfg.run.seed))
    perturbed = task.classifier_metrics(perturb.model)  # what skipping the reload would give
    assert not np.isclose(perturbed["loss"], saved["loss"])


def test_test_metrics_build_only_the_evaluated_split(tmp_path: Path, monkeypatch) -> None:
    """The test metrics evaluate the split exactly as ``make_datasets`` builds it, without
    building the training pipeline (its augmentation, pca_color's statistics)."""
    import kerasdl.data.augment as augment
    from kerasdl.config import load_recipe
    from kerasdl.data import load_data
    from kerasdl.data.datasets import make_datasets
    from kerasdl.training.tasks import SupervisedTask, build_model, compile_model, evaluate_model

    data = {"augment": [{"name": "flip"}, {"name": "pca_color"}]}
    cfg = load_recipe(write_recipe(tmp_path / "r.yaml", tmp_path / "runs", data=data))
    keras.utils.set_random_seed(cfg.run.seed)
    bundle = load_data(cfg.data, cfg.run.seed)
    task = SupervisedTask(cfg, bundle)
    model = build_model(cfg, bundle)
    compile_model(model, cfg, steps_per_epoch=1)
    before = evaluate_model(model, make_datasets(cfg, bundle)[task.eval_split])

    built = []
    for name in ("build_augment", "compute_pca_stats"):
        monkeypatch.setattr(augment, name, lambda *a, _n=name, **k: built.append(_n))
    assert task.classifier_metrics(model) == before
    assert built == []
