"""The foundations' claims: XOR needs a hidden layer; sigmoid gradients vanish with depth; the
initialisation's scale decides whether a deep rectifier network's signal survives.

References:
    Minsky & Papert, "Perceptrons", 1969. Rumelhart, Hinton & Williams, "Learning representations
    by back-propagating errors", Nature 1986. Hochreiter, "Untersuchungen zu dynamischen
    neuronalen Netzen", 1991; Glorot & Bengio, "Understanding the difficulty of training deep
    feedforward neural networks", AISTATS 2010. He, Zhang, Ren & Sun, "Delving Deep into
    Rectifiers", ICCV 2015.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kerasdl.experiments.base import (
    Arm,
    Context,
    Experiment,
    Results,
    digits_recipe,
    final,
    probed,
    test_metric,
)
from kerasdl.experiments.probes import (
    activation_stds_at_init,
    grad_norms_at_init,
    per_layer_plot,
    per_layer_probe,
)
from kerasdl.io import atomic_path, save_figure
from kerasdl.plotting import pyplot

XOR_POINTS = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], "float32")
XOR_LABELS = np.array([0, 1, 1, 0], "int64")


def write_xor(ctx: Context, seed: int) -> dict[str, Any]:
    """XOR as an ``npz`` source: the four points (as 1x2 one-channel images) repeated 32 times
    for training, the four points for validation and test."""
    path = ctx.data_dir / "xor.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    images = XOR_POINTS.reshape(4, 1, 2, 1)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(
            tmp,
            x_train=np.tile(images, (32, 1, 1, 1)),
            y_train=np.tile(XOR_LABELS, 32),
            x_val=images,
            y_val=XOR_LABELS,
            x_test=images,
            y_test=XOR_LABELS,
        )
    return {"xor_npz": str(path)}


def plot_xor_boundaries(ctx: Context, results: Results) -> dict[str, Any]:
    """The decision regions of each arm's first-seed model over the unit square."""
    import keras

    from kerasdl.methods import METHODS  # noqa: F401  (registers what a .keras file names)

    plt = pyplot()
    arms = results.experiment.arms_to_run(results.quick)
    fig, axes = plt.subplots(1, len(arms), figsize=(3.6 * len(arms), 3.4), squeeze=False)
    grid = np.linspace(-0.25, 1.25, 121, dtype="float32")
    gx, gy = np.meshgrid(grid, grid)
    pts = np.stack([gx.ravel(), gy.ravel()], axis=1)
    inputs = ((pts - 0.5) / 0.5).reshape(-1, 1, 2, 1)  # the recipe's standardization
    for ax, arm in zip(axes[0], arms, strict=True):
        run = results.of(arm.name)[0]
        model = keras.models.load_model(Path(run.run_dir) / "best.keras", compile=False)
        pred = np.argmax(np.asarray(model.predict(inputs, verbose=0)), axis=-1)
        ax.contourf(gx, gy, pred.reshape(gx.shape), levels=[-0.5, 0.5, 1.5], alpha=0.3)
        for label, marker in ((0, "o"), (1, "x")):
            sel = XOR_LABELS == label
            ax.scatter(*XOR_POINTS[sel].T, marker=marker, s=80, c="k", label=f"class {label}")
        acc = run.metrics.get("accuracy", float("nan"))
        ax.set_title(f"{arm.name}: {acc:.0%} of XOR", fontsize=10)
        ax.set_aspect("equal")
    axes[0][0].legend(fontsize=8, loc="center")
    fig.tight_layout()
    save_figure(fig, ctx.out / "decision_regions.png")
    worst = max(results.values("perceptron"), default=float("nan"))
    notes = [
        f"The perceptron's best test accuracy over the seeds is {worst:.2f}: a line separates "
        "at most 3 of the 4 XOR points (0.75)."
    ]
    return {"plots": ["decision_regions.png"], "notes": notes}


PERCEPTRON_XOR = Experiment(
    name="perceptron_xor",
    claim="A single perceptron cannot learn XOR; one hidden layer trained by backpropagation can.",
    reference="Minsky & Papert 1969; Rumelhart, Hinton & Williams 1986",
    base={
        "data": {"source": "npz", "path": "{xor_npz}", "mean": [0.5], "std": [0.5]},
        "training": {"epochs": 30, "batch_size": 4},
    },
    arms=(
        Arm("perceptron", {"model": {"name": "perceptron"}}, "Rosenblatt's rule, linear unit"),
        Arm(
            "mlp",
            {
                "model": {"name": "mlp", "hidden_units": [8], "activation": "tanh"},
                "training": {"optimizer": {"name": "adam", "learning_rate": 0.05}},
            },
            "8 tanh hidden units, backprop + Adam",
        ),
    ),
    measures=(test_metric("accuracy", "accuracy on the 4 XOR points"),),
    quick={"training": {"epochs": 10}},
    expect=(("mlp", "perceptron"),),
    seeds=5,
    curves=("accuracy",),
    prepare=write_xor,
    analyse=plot_xor_boundaries,
)


def _deep_mlp(activation: str, **model: Any) -> dict[str, Any]:
    return {"model": {"name": "mlp", "hidden_units": [64] * 10, "activation": activation, **model}}


VANISHING_GRADIENTS = Experiment(
    name="vanishing_gradients",
    claim="In a deep sigmoid network the gradient shrinks layer by layer towards the input; "
    "rectifiers keep it.",
    reference="Hochreiter 1991; Glorot & Bengio 2010; Glorot, Bordes & Bengio 2011",
    base=digits_recipe(epochs=20, batch_size=32, optimizer={"name": "sgd", "learning_rate": 0.1}),
    arms=(
        Arm("sigmoid", _deep_mlp("sigmoid"), "10 x 64 sigmoid, Glorot init"),
        Arm("tanh", _deep_mlp("tanh"), "10 x 64 tanh, Glorot init"),
        Arm("relu", _deep_mlp("relu"), "10 x 64 ReLU, Glorot init"),
    ),
    measures=(
        probed("grad_ratio", "gradient norm ratio, layer 1 / layer 10 (init)"),
        test_metric(),
        final(),
    ),
    quick={"training": {"epochs": 2}},
    quick_arms=("sigmoid", "relu"),
    expect=(("relu", "sigmoid"), ("tanh", "sigmoid")),
    probe=per_layer_probe(grad_norms_at_init, "grad_norms", "grad_ratio", (0, -1)),
    analyse=per_layer_plot(
        "grad_norms",
        "grad_norms.png",
        "||dL/dW|| at initialisation",
        "Gradient norm per hidden layer (10 x 64 units, digits batch of 256)",
    ),
)


INITIALIZATION = Experiment(
    name="initialization",
    claim="He initialisation keeps a deep ReLU network's activations at the input's scale; "
    "a naive fixed N(0, 0.01) lets them vanish and the network does not train.",
    reference="He et al. 2015, sec. 2.2; Glorot & Bengio 2010",
    base=digits_recipe(
        epochs=20, batch_size=32, optimizer={"name": "momentum", "learning_rate": 0.01}
    ),
    arms=(
        Arm("naive", _deep_mlp("relu", init_std=0.01), "N(0, 0.01^2) kernels"),
        Arm("glorot", _deep_mlp("relu"), "Glorot uniform (Keras default)"),
        Arm(
            "he",
            _deep_mlp("relu", init={"name": "he_normal"}),
            "He normal, fan-in",
        ),
    ),
    measures=(
        probed("act_ratio", "activation std, layer 10 / layer 1 (init)"),
        test_metric(),
        final(),
    ),
    quick={"training": {"epochs": 2}},
    quick_arms=("naive", "he"),
    expect=(("he", "naive"), ("he", "glorot")),
    probe=per_layer_probe(activation_stds_at_init, "act_stds", "act_ratio", (-1, 0)),
    analyse=per_layer_plot(
        "act_stds",
        "activation_stds.png",
        "std of the activations at initialisation",
        "Activation scale per hidden layer (10 x 64 ReLU, digits batch of 256)",
    ),
)

EXPERIMENTS = (PERCEPTRON_XOR, VANISHING_GRADIENTS, INITIALIZATION)
