"""Claims about generalisation from little data: dropout, data augmentation, mixup and cutmix,
transfer learning against training from scratch.

References:
    Srivastava et al., "Dropout", JMLR 2014. Simard, Steinkraus & Platt, ICDAR 2003 and
    Krizhevsky et al. 2012 (augmentation). Zhang et al., "mixup", ICLR 2018; Yun et al.,
    "CutMix", ICCV 2019. Yosinski et al., "How transferable are features in deep neural
    networks?", NeurIPS 2014.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kerasdl.experiments.base import (
    Arm,
    Context,
    Experiment,
    arm_recipe,
    digits_recipe,
    final,
    test_metric,
    train_arm,
)
from kerasdl.io import atomic_path

# Little labelled data: 30% of the digits for training (539 images), 60% for the test.
_FEW = {"val_split": 0.1, "test_split": 0.6}

DROPOUT = Experiment(
    name="dropout",
    claim="Dropout reduces overfitting: a large network trained on little data generalises "
    "better with it.",
    reference="Srivastava et al. 2014; Hinton et al. 2012",
    # monitor loss: keep the last epoch's model (no early stopping by the back door)
    base=digits_recipe(
        {"name": "mlp", "hidden_units": [512, 512], "activation": "relu"},
        epochs=60,
        batch_size=32,
        optimizer={"name": "adam", "learning_rate": 0.001},
        data=_FEW,
        monitor="loss",
    ),
    arms=(
        Arm("no_dropout", {"model": {"dropout": 0.0}}, "2 x 512 ReLU"),
        Arm("dropout_0.5", {"model": {"dropout": 0.5}}, "2 x 512 ReLU, dropout 0.5"),
    ),
    measures=(test_metric(), test_metric("loss", "test loss"), final("val_loss", "final val loss")),
    quick={"training": {"epochs": 8}},
    expect=(("dropout_0.5", "no_dropout"),),
    curves=("val_loss", "val_accuracy"),
)

_CNN_FEW = digits_recipe(
    {"name": "simple_cnn", "filters": [16, 32], "dropout": 0.0},
    epochs=40,
    batch_size=32,
    optimizer={"name": "adam", "learning_rate": 0.003},
    data={"image_size": 16, **_FEW},
    schedule={"name": "cosine"},
    monitor="loss",
)
_GEOMETRIC = [
    {"name": "translation", "height": 0.1, "width": 0.1, "fill_mode": "constant"},
    {"name": "rotation", "degrees": 10.0, "fill_mode": "constant"},
    {"name": "zoom", "factor": 0.1, "fill_mode": "constant"},
]

AUGMENTATION = Experiment(
    name="augmentation",
    claim="Label-preserving transformations of the training images (shifts, rotations, zooms) "
    "improve test accuracy when labelled data is scarce.",
    reference="Simard et al. 2003; Krizhevsky et al. 2012",
    base=_CNN_FEW,
    arms=(
        Arm("none", {}, "no augmentation"),
        Arm("geometric", {"data": {"augment": _GEOMETRIC}}, "shift 10%, rotate 10 deg, zoom 10%"),
    ),
    measures=(test_metric(), test_metric("loss", "test loss")),
    quick={"training": {"epochs": 4}},
    expect=(("geometric", "none"),),
    curves=("loss", "val_accuracy"),
)

MIXUP = Experiment(
    name="mixup",
    claim="Training on convex combinations of image pairs and their labels (mixup) or on pasted "
    "patches (cutmix) regularises: better test accuracy and calibration on little data.",
    reference="Zhang et al. 2018; Yun et al. 2019",
    base=_CNN_FEW,
    arms=(
        Arm("none", {}, "no mixing"),
        Arm("mixup", {"data": {"augment": [{"name": "mixup", "alpha": 0.2}]}}, "mixup, alpha 0.2"),
        Arm("cutmix", {"data": {"augment": [{"name": "cutmix", "alpha": 1.0}]}}, "cutmix, alpha 1"),
    ),
    measures=(test_metric(), test_metric("loss", "test loss")),
    quick={"training": {"epochs": 4}},
    quick_arms=("none", "mixup"),
    expect=(("mixup", "none"), ("cutmix", "none")),
    curves=("val_loss", "val_accuracy"),
)

# Transfer: a CNN trained on digits 0-4 starts the learning of digits 5-9 from few labels.
_CNN = {"name": "simple_cnn", "filters": [16, 32, 64], "dropout": 0.2}
_SOURCE = {
    "model": _CNN,
    "data": {"source": "npz", "path": "{data}/source_0_4.npz", "image_size": 16},
    "training": {"epochs": 10, "optimizer": {"name": "adam", "learning_rate": 0.003}},
}
_LABELS_PER_CLASS = 5


def write_transfer_data(ctx: Context, seed: int) -> dict[str, Any]:
    """Write the source (digits 0-4, all) and target (digits 5-9, ``_LABELS_PER_CLASS`` per
    class for training, 10 per class for validation, the rest for the test) ``npz`` files, then
    train the source network; returns its run folder for the transfer arms' ``init_from``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    y = digits.target.astype("int64")
    ctx.data_dir.mkdir(parents=True, exist_ok=True)
    src = y < 5
    with atomic_path(ctx.data_dir / "source_0_4.npz", suffix=".npz") as tmp:
        np.savez(tmp, x_train=x[src], y_train=y[src])
    rng = np.random.default_rng(seed)
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for label in range(5, 10):
        idx = rng.permutation(np.nonzero(y == label)[0])
        parts["train"] += list(idx[:_LABELS_PER_CLASS])
        parts["val"] += list(idx[_LABELS_PER_CLASS : _LABELS_PER_CLASS + 10])
        parts["test"] += list(idx[_LABELS_PER_CLASS + 10 :])
    target = ctx.data_dir / f"target_5_9_seed{seed}.npz"
    arrays = {f"{k}_{s}": a[v] for s, v in parts.items() for k, a in (("x", x), ("y", y - 5))}
    with atomic_path(target, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)
    source = Arm("source_0_4", _SOURCE, "digits 0-4, all labels")
    recipe = arm_recipe(TRANSFER, source, seed, ctx, {"data": str(ctx.data_dir)})
    if ctx.quick:
        recipe["training"]["epochs"] = 3
    run, _ = train_arm(recipe, source.name, seed, ctx.out / "train.log")
    ctx.log(f"[transfer_learning] source network (digits 0-4), seed {seed}: {run.metrics}")
    return {"target": str(target), "source_run": run.run_dir}


_TARGET = {
    "model": _CNN,
    "data": {"source": "npz", "path": "{target}", "image_size": 16},
    "training": {
        "epochs": 40,
        "batch_size": 16,
        "optimizer": {"name": "adam", "learning_rate": 0.001},
    },
}

TRANSFER = Experiment(
    name="transfer_learning",
    claim="With few labels, a network started from features learnt on a related task beats the "
    "same network trained from scratch.",
    reference="Yosinski et al. 2014",
    base=_TARGET,
    arms=(
        Arm("scratch", {}, f"digits 5-9, {_LABELS_PER_CLASS} labels per class, random init"),
        Arm(
            "fine_tune",
            {"model": {"init_from": "{source_run}"}},
            "started from the digits 0-4 network, all layers trained",
        ),
        Arm(
            "linear_probe",
            {
                "model": {"init_from": "{source_run}"},
                "training": {
                    "transfer": {"strategy": "feature_extraction"},
                    "optimizer": {"learning_rate": 0.01},
                },
            },
            "digits 0-4 features frozen, new head trained",
        ),
    ),
    measures=(test_metric(), test_metric("loss", "test loss")),
    quick={"training": {"epochs": 8}},
    quick_arms=("scratch", "fine_tune"),
    expect=(("fine_tune", "scratch"), ("linear_probe", "scratch")),
    curves=("loss", "val_accuracy"),
    prepare=write_transfer_data,
)

EXPERIMENTS = (DROPOUT, AUGMENTATION, MIXUP, TRANSFER)
