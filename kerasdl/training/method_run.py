"""Recipe runs of the semi- and self-supervised methods (a recipe's ``method:`` section).

The runner builds the recipe's model as usual, then wraps it in the method
(:func:`kerasdl.methods.build_method`) and trains the method with ``fit`` (or the distributed
custom loop) on the method's own datasets (:func:`kerasdl.methods.method_datasets`). What the run
keeps is the method's ``inference_model``: the classifier (FixMatch / Mean Teacher: the EMA
weights the papers evaluate) or the pretrained backbone (SimCLR, MoCo, MAE), as ``best.keras``
and ``backbone.keras``. The final metrics are the classifier's test accuracy, or the evaluation
protocols of ``method.probe_protocols`` (linear probe, k-NN, fine-tuning; trained on
``method.probe_labels_per_class`` labels per class, all if unset) on the pretrained backbone, next
to the same protocols on the same architecture at the run's initialization (``*_random_init``),
so that a run shows what the pretraining added.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from kerasdl.config import RecipeConfig
from kerasdl.data import DataBundle


def method_kind(cfg: RecipeConfig) -> str | None:
    """``semi``, ``contrastive``, ``masked`` or None for a supervised recipe."""
    if not cfg.method:
        return None
    from kerasdl.methods import METHODS

    return METHODS[cfg.method["name"]].kind


def default_monitor(cfg: RecipeConfig, has_val: bool) -> str:
    """``training.monitor: auto``: val_accuracy for classifiers, the (validation) loss else."""
    if cfg.training.monitor != "auto":
        return cfg.training.monitor
    kind = method_kind(cfg)
    if kind in (None, "semi"):
        return "val_accuracy" if has_val else "accuracy"
    return "val_loss" if has_val else "loss"


def build_method_model(cfg: RecipeConfig, model: keras.Model, bundle: DataBundle) -> keras.Model:
    """Wrap the recipe's model in its method."""
    from kerasdl.methods import build_method

    params = {k: v for k, v in cfg.method.items() if k != "name"}
    params.setdefault("seed", cfg.run.seed)
    return build_method(cfg.method["name"], model, bundle.num_classes, **params)


def method_datasets_for(cfg: RecipeConfig, bundle: DataBundle) -> tuple[Any, Any]:
    """The method's (train, validation) datasets; train repeats (steps per epoch set by the run)."""
    from kerasdl.methods import method_datasets

    train, val = method_datasets(
        cfg.method,
        bundle.splits,
        cfg.training.batch_size,
        bundle.num_classes,
        seed=cfg.run.seed,
        mean=list(cfg.data.mean) or None,
        std=list(cfg.data.std) or None,
    )
    return train.repeat(), val


def final_metrics(
    cfg: RecipeConfig, kept: keras.Model, bundle: DataBundle, test_batches: Any
) -> dict[str, float]:
    """Test metrics of what a method run keeps (see the module docstring)."""
    if method_kind(cfg) == "semi":
        from kerasdl.training.runner import compile_model, evaluate_model

        compile_model(kept, cfg, steps_per_epoch=1)
        return evaluate_model(kept, test_batches)
    from kerasdl.methods import validate_method
    from kerasdl.methods.probes import run_probes

    params = validate_method(cfg.method)
    mean, std = np.asarray(cfg.data.mean, np.float32), np.asarray(cfg.data.std, np.float32)

    def standardize(x: np.ndarray) -> np.ndarray:
        return (x - mean) / std if mean.size else x

    split = "test" if "test" in bundle.splits else "val"

    def probes(model: keras.Model) -> dict[str, Any]:
        return run_probes(
            model,
            bundle.splits["train"],
            bundle.splits[split],
            protocols=tuple(params.probe_protocols),
            labels_per_class=params.probe_labels_per_class,
            seed=cfg.run.seed,
            num_classes=bundle.num_classes,
            standardize=standardize,
        )

    # the same probes on the same architecture at the run's initialization (same seed): what
    # the pretraining added is the difference
    from kerasdl.training.runner import build_model

    keras.utils.set_random_seed(cfg.run.seed)
    fresh = build_method_model(cfg, build_model(cfg, bundle), bundle).inference_model
    got, rnd = probes(kept), probes(fresh)
    names = {"linear": "linear_probe_accuracy", "knn": "knn_accuracy"}
    names["finetune"] = "finetune_accuracy"
    out: dict[str, float] = {}
    for protocol in params.probe_protocols:
        out[names[protocol]] = float(got[protocol])
        out[f"{names[protocol]}_random_init"] = float(rnd[protocol])
    out["probe_train_examples"] = float(got["train_examples"])
    return out
