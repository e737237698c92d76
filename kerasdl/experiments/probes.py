"""Measurements an experiment takes besides its runs' metrics: gradient norms and activation
scales per layer at initialisation, and bar and line plots of per-layer figures.

The probes rebuild a run's model as the runner did (:func:`kerasdl.training.tasks.build_model`
with the run's seed, on the recipe's data and pipeline), so "at initialisation" means weights
drawn as that run's were.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from kerasdl.experiments.base import ArmRun, Context, Results, summarize
from kerasdl.io import save_figure
from kerasdl.plotting import pyplot


def initial_model_and_batch(cfg: Any, batch: int = 256) -> tuple[Any, Any, Any]:
    """The run's model at initialisation (same seed) and a training batch ``(x, one-hot y)``."""
    import keras

    from kerasdl.data import load_data
    from kerasdl.data.datasets import make_datasets
    from kerasdl.training.tasks import build_model

    keras.utils.set_random_seed(cfg.run.seed)
    bundle = load_data(cfg.data, cfg.run.seed)
    model = build_model(cfg, bundle)
    ds = make_datasets(cfg, bundle)["train"]
    x, y = next(iter(ds.unbatch().batch(batch)))
    return model, x, y


def dense_layers(model: Any) -> list[Any]:
    """The hidden ``Dense`` layers of a kerasdl MLP (``dense_0``, ``dense_1``, ...), in order."""
    return [layer for layer in model.layers if layer.name.startswith("dense_")]


def grad_norms_at_init(cfg: Any) -> list[float]:
    """The L2 norm of the loss gradient of every hidden layer's kernel, input side first."""
    import keras
    import tensorflow as tf

    model, x, y = initial_model_and_batch(cfg)
    loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True)
    kernels = [layer.kernel for layer in dense_layers(model)]
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    grads = tape.gradient(loss, kernels)
    return [float(tf.norm(g)) for g in grads]


def activation_stds_at_init(cfg: Any) -> list[float]:
    """The standard deviation of every hidden activation (``act_i``) on a batch at init."""
    import keras
    import numpy as np

    model, x, _ = initial_model_and_batch(cfg)
    acts = [layer.output for layer in model.layers if layer.name.startswith("act_")]
    values = keras.Model(model.inputs, acts)(x, training=False)
    return [float(np.std(np.asarray(v))) for v in values]


def plot_per_layer(
    results: Results, key: str, path: Path, ylabel: str, title: str, log: bool = True
) -> None:
    """A per-layer list stored by a probe (``extra[key]``), mean over seeds, one line per arm."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for arm in results.experiment.arms_to_run(results.quick):
        rows = [r.extra[key] for r in results.of(arm.name) if key in r.extra]
        if not rows:
            continue
        mean = [summarize([row[i] for row in rows])["mean"] for i in range(len(rows[0]))]
        ax.plot(range(1, len(mean) + 1), mean, marker="o", lw=1.5, label=arm.name)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("hidden layer (1 = next to the input)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def plot_bars(
    results: Results, path: Path, title: str, measure_index: int = 0, log: bool = False
) -> None:
    """A measure per arm as bars (mean over seeds, whiskers from the lowest to the highest)."""
    plt = pyplot()
    m = results.experiment.measures[measure_index]
    arms = results.experiment.arms_to_run(results.quick)
    stats = [summarize(results.values(a.name, m)) for a in arms]
    means = [s["mean"] for s in stats]
    err = [[s["mean"] - s["min"] for s in stats], [s["max"] - s["mean"] for s in stats]]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(arms) + 1.5), 3.6))
    ax.bar([a.name for a in arms], means, yerr=err, capsize=4, color="#4c72b0")
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(m.name)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def per_layer_probe(
    measure: Callable[[Any], list[float]], key: str, ratio_key: str, ratio: tuple[int, int]
) -> Callable[[Any, ArmRun], dict[str, Any]]:
    """A probe storing ``measure(cfg)`` (one figure per hidden layer) under ``key`` and the
    ratio of two of its layers (indices ``ratio``: numerator, denominator) under ``ratio_key``."""

    def probe(cfg: Any, run: ArmRun) -> dict[str, Any]:
        values = measure(cfg)
        return {key: values, ratio_key: values[ratio[0]] / values[ratio[1]]}

    return probe


def per_layer_plot(
    key: str, filename: str, ylabel: str, title: str
) -> Callable[[Context, Results], dict[str, Any]]:
    """An experiment's ``analyse`` step: :func:`plot_per_layer` of ``key`` into ``filename``."""

    def analyse(ctx: Context, results: Results) -> dict[str, Any]:
        plot_per_layer(results, key, ctx.out / filename, ylabel, title)
        return {"plots": [filename]}

    return analyse
