"""``kerasdl schedule RECIPE --out lr.png [--set key=value ...]``: plot a recipe's LR schedule."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from kerasdl.commands._args import add_recipe_arguments, load_recipe_arguments
from kerasdl.io import save_figure
from kerasdl.plotting import check_output_image

COMMAND = "schedule"
HELP = "plot a recipe's learning-rate schedule over its planned steps"
DESCRIPTION = """Plot the learning rate a recipe's optimizer will use at every step of the run.

The steps per epoch come from the recipe's data (training examples / batch size), so the plot is
exactly what `kerasdl train` will follow (the same schedule is logged to TensorBoard per step):
  kerasdl schedule configs/quickstart.yaml --out lr.png
  kerasdl schedule configs/quickstart.yaml --out lr.png \\
      --set training.schedule.name=cosine_restarts --set training.schedule.restart_epochs=3"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="image file to write (.png, .jpg, .pdf, .svg)")
    add_recipe_arguments(parser, example="training.schedule.name=step")


def schedule_values(schedule: Callable[[Any], Any], total_steps: int) -> np.ndarray:
    """A ``LearningRateSchedule`` evaluated at every optimizer step ``0 .. total_steps - 1``."""
    steps = np.arange(total_steps, dtype="float32")
    return np.asarray(schedule(steps), dtype="float64").reshape(total_steps)


def plot_schedule(
    values: np.ndarray, steps_per_epoch: int, out: Path, title: str, warmup_steps: int = 0
) -> None:
    """Save the learning rate against the step (epoch ticks on top), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(np.arange(len(values)), values, lw=1.5)
    if warmup_steps:
        ax.axvline(warmup_steps, color="gray", ls=":", lw=1, label="end of warm-up")
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    top = ax.secondary_xaxis(
        "top", functions=(lambda s: s / steps_per_epoch, lambda e: e * steps_per_epoch)
    )
    top.set_xlabel("epoch")
    fig.tight_layout()
    save_figure(fig, out, dpi=110)


def run(args: argparse.Namespace) -> int:
    out = check_output_image(args.out)

    cfg = load_recipe_arguments(args)
    from kerasdl.data import load_data
    from kerasdl.training.distribute import lr_factor
    from kerasdl.training.schedules import build_schedule

    t = cfg.training
    bundle = load_data(cfg.data, cfg.run.seed)
    train_size = bundle.sizes.get("train") or int(
        bundle.splits["train"].reduce(0, lambda n, _: n + 1)
    )
    steps_per_epoch = max(math.ceil(train_size / t.batch_size), 1)
    total = steps_per_epoch * t.epochs
    # as `kerasdl train` scales it for the global batch (training.lr_scaling)
    factor = lr_factor(t.lr_scaling.rule, t.batch_size, t.lr_scaling.base_batch_size)
    peak = t.optimizer.learning_rate * factor
    schedule = build_schedule(t.schedule, peak, steps_per_epoch, t.epochs)
    values = schedule_values(schedule, total)
    warmup = int(round(t.schedule.warmup_epochs * steps_per_epoch))
    title = (
        f"{cfg.run.name}: {t.schedule.name}"
        + (f" with {warmup_phrase(t.schedule.warmup_epochs)}" if warmup else "")
        + f", peak {peak:g}"
        + (
            f" ({t.optimizer.learning_rate:g} x{factor:g}, {t.lr_scaling.rule} scaling)"
            if factor != 1
            else ""
        )
    )
    plot_schedule(values, steps_per_epoch, out, title, warmup)
    print(
        f"{t.schedule.name} schedule: {t.epochs} epochs x {steps_per_epoch} steps "
        f"({train_size} training examples, batch {t.batch_size}) = {total} steps"
    )
    marks = sorted({0, max(warmup - 1, 0), warmup, total // 4, total // 2, 3 * total // 4})
    marks = [s for s in marks if s < total] + [total - 1]
    for s in dict.fromkeys(marks):
        print(f"  step {s:>6} (epoch {s / steps_per_epoch:6.2f}): lr {values[s]:.6g}")
    print(f"Saved the schedule plot to {out}")
    return 0


def warmup_phrase(epochs: float) -> str:
    """``1 warm-up epoch``, ``2 warm-up epochs``, ``0.5 warm-up epochs``."""
    return f"{epochs:g} warm-up epoch" + ("" if epochs == 1 else "s")
