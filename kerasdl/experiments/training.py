"""Training-method claims: batch norm and the learning rate, optimisers, learning-rate schedules.

References:
    Ioffe & Szegedy, "Batch Normalization", ICML 2015, sec. 3.3 and 4.2. Robbins & Monro 1951
    (SGD); Polyak 1964 and Sutskever et al., ICML 2013 (momentum); Duchi, Hazan & Singer, JMLR
    2011 (AdaGrad); Tieleman & Hinton 2012 (RMSprop); Kingma & Ba, "Adam", ICLR 2015.
    Loshchilov & Hutter, "SGDR", ICLR 2017; He et al. 2016 (step decay); Goyal et al. 2017
    (warm-up).
"""

from __future__ import annotations

from typing import Any

from kerasdl.experiments.base import (
    Arm,
    Context,
    Experiment,
    Results,
    digits_recipe,
    final,
    summarize,
    test_metric,
)
from kerasdl.io import save_figure
from kerasdl.plotting import pyplot

_LRS = (0.01, 0.1, 0.5, 2.0)
_QUICK_LRS = (0.5,)


def _bn_arm(norm: str, lr: float) -> Arm:
    tag = "bn" if norm == "batch" else "no_bn"
    return Arm(
        f"{tag}_lr{lr:g}",
        {"model": {"norm": norm}, "training": {"optimizer": {"learning_rate": lr}}},
        f"{'batch norm' if norm == 'batch' else 'no normalisation'}, SGD+momentum lr {lr:g}",
    )


def _accuracy_vs_lr(ctx: Context, results: Results) -> dict[str, Any]:
    """Test accuracy against the learning rate, with and without batch norm."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    lrs = _QUICK_LRS if results.quick else _LRS
    for tag, label in (("bn", "batch norm"), ("no_bn", "no normalisation")):
        stats = [summarize(results.values(f"{tag}_lr{lr:g}")) for lr in lrs]
        means = [s["mean"] for s in stats]
        err = [[s["mean"] - s["min"] for s in stats], [s["max"] - s["mean"] for s in stats]]
        ax.errorbar(lrs, means, yerr=err, marker="o", capsize=3, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (SGD, momentum 0.9)")
    ax.set_ylabel("test accuracy")
    ax.set_title("batchnorm_lr: test accuracy against the learning rate", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, ctx.out / "accuracy_vs_lr.png")
    return {"plots": ["accuracy_vs_lr.png"]}


BATCHNORM_LR = Experiment(
    name="batchnorm_lr",
    claim="Batch normalisation lets a network train at learning rates at which the same network "
    "without it fails.",
    reference="Ioffe & Szegedy 2015, sec. 3.3",
    base=digits_recipe(
        {"name": "simple_cnn", "filters": [16, 32, 64], "dropout": 0.0},
        epochs=10,
        optimizer={"name": "momentum"},
        data={"image_size": 16},
    ),
    arms=tuple(_bn_arm(norm, lr) for lr in _LRS for norm in ("batch", "none")),
    measures=(test_metric(), final()),
    quick={"training": {"epochs": 2}},
    quick_arms=tuple(f"{t}_lr{lr:g}" for lr in _QUICK_LRS for t in ("bn", "no_bn")),
    expect=(("bn_lr0.5", "no_bn_lr0.5"), ("bn_lr2", "no_bn_lr2")),
    curves=("loss", "val_accuracy"),
    analyse=_accuracy_vs_lr,
)

_OPTIMIZERS = (
    ("sgd", {"name": "sgd", "learning_rate": 0.01}, "SGD, lr 0.01"),
    ("momentum", {"name": "momentum", "learning_rate": 0.01}, "SGD + momentum 0.9, lr 0.01"),
    ("nesterov", {"name": "nesterov", "learning_rate": 0.01}, "Nesterov momentum 0.9, lr 0.01"),
    ("adagrad", {"name": "adagrad", "learning_rate": 0.01}, "AdaGrad, lr 0.01"),
    ("rmsprop", {"name": "rmsprop", "learning_rate": 0.001}, "RMSprop, lr 0.001"),
    ("adam", {"name": "adam", "learning_rate": 0.001}, "Adam, lr 0.001"),
)

OPTIMIZERS = Experiment(
    name="optimizers",
    claim="Momentum and adaptive optimisers (AdaGrad, RMSprop, Adam) reach a lower training "
    "loss than plain SGD in the same number of steps.",
    reference="Sutskever et al. 2013; Duchi et al. 2011; Tieleman & Hinton 2012; Kingma & Ba 2015",
    base=digits_recipe(
        {"name": "mlp", "hidden_units": [128, 128], "activation": "relu"},
        epochs=15,
        monitor="loss",
    ),
    arms=tuple(Arm(n, {"training": {"optimizer": o}}, label) for n, o, label in _OPTIMIZERS),
    measures=(final(), test_metric()),
    quick={"training": {"epochs": 3}},
    quick_arms=("sgd", "adam"),
    expect=(("momentum", "sgd"), ("adam", "sgd"), ("rmsprop", "sgd"), ("adagrad", "sgd")),
    curves=("loss", "val_accuracy"),
)

_SCHEDULES = (
    ("constant", {"name": "constant"}, "constant lr 0.1"),
    ("step", {"name": "step", "step_epochs": [10, 15], "gamma": 0.1}, "x0.1 at epochs 10, 15"),
    ("cosine", {"name": "cosine"}, "cosine decay to 0"),
    ("warmup_cosine", {"name": "cosine", "warmup_epochs": 2}, "2 warm-up epochs, then cosine"),
)

SCHEDULES = Experiment(
    name="schedules",
    claim="Decaying the learning rate (steps or a cosine) ends training at a lower loss and a "
    "better test accuracy than keeping it constant.",
    reference="He et al. 2016 (step decay); Loshchilov & Hutter 2017 (cosine); Goyal et al. 2017",
    base=digits_recipe(
        {"name": "simple_cnn", "filters": [16, 32], "dropout": 0.0},
        epochs=20,
        optimizer={"name": "momentum", "learning_rate": 0.1},
        data={"image_size": 16},
        monitor="loss",
    ),
    arms=tuple(Arm(n, {"training": {"schedule": s}}, label) for n, s, label in _SCHEDULES),
    measures=(final(), test_metric()),
    quick={"training": {"epochs": 3, "schedule": {"step_epochs": [2]}}},
    quick_arms=("constant", "cosine"),
    expect=(("step", "constant"), ("cosine", "constant")),
    curves=("loss", "learning_rate"),
)

EXPERIMENTS = (BATCHNORM_LR, OPTIMIZERS, SCHEDULES)
