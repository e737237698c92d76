"""Learning-rate range test (Smith 2017): sweep the learning rate, watch the loss, pick a rate.

Training runs for up to ``steps`` mini-batches while the learning rate grows exponentially from
``min_lr`` to ``max_lr``: ``lr_i = min_lr * (max_lr / min_lr) ** (i / (steps - 1))``. The loss
of every mini-batch is recorded and smoothed with a bias-corrected exponential moving average
(``beta = 0.98``: ``a_i = beta a_{i-1} + (1 - beta) loss_i``, ``smoothed_i = a_i / (1 - beta^i)``).
The sweep stops early when the smoothed loss exceeds ``diverge`` (4) times the best seen so far,
or is not finite.

Suggested rate: the rate where the smoothed loss falls fastest, i.e. the minimum of
``d smoothed / d log(lr)`` between the start of the sweep (its first 10 % skipped as noise) and
the minimum of the smoothed loss ("steepest descent", as fastai's ``lr_find``). The other common
rule, a tenth of the rate at the minimum smoothed loss ("min / 10"), is reported too.

The model's variables and its optimizer's state (slots, iteration count, learning rate) are
copied before the sweep and restored afterwards, bit for bit, so the model is as it was.

Reference:
    Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017, section 3.3
    ("how can one estimate reasonable minimum and maximum boundary values?").
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from kerasdl.errors import UserError
from kerasdl.io import save_figure, write_text


@dataclass
class LRFinderResult:
    """The sweep: rates, raw and smoothed losses, and the suggestions."""

    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    stopped_early: bool = False
    suggestion: float = float("nan")  # steepest descent of the smoothed loss
    min_loss_lr: float = float("nan")  # the rate at the minimum smoothed loss

    @property
    def min_over_10(self) -> float:
        return self.min_loss_lr / 10.0

    def save_csv(self, path: str | Path) -> None:
        """``step,lr,loss,smoothed_loss`` rows, written atomically."""
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["step", "lr", "loss", "smoothed_loss"])
        for i, row in enumerate(zip(self.lrs, self.losses, self.smoothed, strict=True)):
            w.writerow([i, *(f"{v:.8g}" for v in row)])
        write_text(path, buf.getvalue(), newline="")

    def save(
        self, folder: str | Path, title: str = "learning-rate range test"
    ) -> tuple[Path, Path]:
        """``lr_find.csv`` and ``lr_find.png`` in ``folder`` (created); returns their paths."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        csv_path, png_path = folder / "lr_find.csv", folder / "lr_find.png"
        self.plot(png_path, title)
        self.save_csv(csv_path)
        return csv_path, png_path

    def plot(self, path: str | Path, title: str = "learning-rate range test") -> None:
        """Loss against learning rate (log scale) with the suggestions marked, atomically."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path)
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(self.lrs, self.losses, color="0.75", lw=1, label="loss")
        ax.plot(self.lrs, self.smoothed, lw=1.8, label="smoothed loss")
        if math.isfinite(self.suggestion):
            ax.axvline(
                self.suggestion, color="C3", ls="--", label=f"steepest {self.suggestion:.2g}"
            )
        if math.isfinite(self.min_loss_lr):
            ax.axvline(self.min_over_10, color="C2", ls=":", label=f"min/10 {self.min_over_10:.2g}")
        ax.set_xscale("log")
        finite = [v for v in self.smoothed if math.isfinite(v)]
        if finite:
            low, high = min(finite), finite[0]
            ax.set_ylim(low - 0.1 * abs(high - low), max(high, low) + 0.5 * abs(high - low) + 1e-9)
        ax.set_xlabel("learning rate")
        ax.set_ylabel("training loss")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")
        fig.tight_layout()
        save_figure(fig, path, dpi=110)


def suggest(lrs: list[float], smoothed: list[float]) -> tuple[float, float]:
    """(steepest-descent rate, rate at the minimum) of a smoothed loss curve."""
    loss = np.asarray(smoothed, dtype=np.float64)
    lr = np.asarray(lrs, dtype=np.float64)
    finite = np.isfinite(loss)
    if finite.sum() < 3:
        raise UserError("the learning-rate sweep diverged at once: lower --min")
    loss, lr = loss[finite], lr[finite]
    i_min = int(np.argmin(loss))
    start = max(len(loss) // 10, 0)
    end = max(i_min, start + 2)
    slope = np.gradient(loss[: end + 1], np.log(lr[: end + 1]))
    i_steep = start + int(np.argmin(slope[start:end]))
    return float(lr[i_steep]), float(lr[i_min])


class _Sweep(keras.callbacks.Callback):
    def __init__(self, lrs: np.ndarray, beta: float, diverge: float) -> None:
        super().__init__()
        self.lrs, self.beta, self.diverge = lrs, beta, diverge
        self.result = LRFinderResult()
        self._avg, self._best = 0.0, math.inf

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.model.optimizer.learning_rate = float(self.lrs[epoch])

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        loss = float((logs or {}).get("loss", math.nan))  # one batch per "epoch": its loss
        r = self.result
        r.lrs.append(float(self.lrs[epoch]))
        r.losses.append(loss)
        self._avg = self.beta * self._avg + (1 - self.beta) * loss
        smooth = self._avg / (1 - self.beta ** (epoch + 1))
        r.smoothed.append(smooth)
        if not math.isfinite(smooth) or smooth > self.diverge * self._best:
            r.stopped_early = True
            self.model.stop_training = True
        self._best = min(self._best, smooth)


def find_lr(
    model: keras.Model,
    dataset: Any,
    *,
    min_lr: float = 1e-7,
    max_lr: float = 10.0,
    steps: int = 100,
    beta: float = 0.98,
    diverge: float = 4.0,
) -> LRFinderResult:
    """Run the range test on a compiled model, then restore the model and optimizer.

    Args:
        model: a compiled model whose optimizer has a plain (float) learning rate.
        dataset: batches of ``(x, y)`` (repeated as needed).
        min_lr: first rate.
        max_lr: last rate.
        steps: number of mini-batches (rates) at most.
        beta: smoothing factor of the loss.
        diverge: stop when the smoothed loss exceeds ``diverge`` x the best.

    Example:
        >>> model.compile(keras.optimizers.SGD(1e-3, momentum=0.9), loss)
        >>> result = find_lr(model, train_ds, steps=100)
        >>> result.suggestion

    Reference:
        Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017.
    """
    if not 0 < min_lr < max_lr:
        raise UserError(f"expected 0 < --min < --max. Received: {min_lr}, {max_lr}")
    if steps < 5:
        raise UserError(f"--steps: expected at least 5 steps. Received: {steps}")
    opt = model.optimizer
    if opt is None:
        raise ValueError("find_lr needs a compiled model")
    if isinstance(
        getattr(opt, "_learning_rate", None), keras.optimizers.schedules.LearningRateSchedule
    ):
        raise ValueError("find_lr needs an optimizer with a float learning rate, not a schedule")
    if not opt.built:
        opt.build(model.trainable_variables)
    saved_model = [np.array(v) for v in model.variables]
    saved_opt = [np.array(v) for v in opt.variables]
    lrs = min_lr * (max_lr / min_lr) ** (np.arange(steps) / (steps - 1))
    sweep = _Sweep(lrs, beta, diverge)
    try:
        data = dataset.repeat() if hasattr(dataset, "repeat") else dataset
        model.fit(
            data, epochs=steps, steps_per_epoch=1, callbacks=[sweep], shuffle=False, verbose=0
        )
    finally:
        for v, value in zip(model.variables, saved_model, strict=True):
            v.assign(value)
        for v, value in zip(opt.variables, saved_opt, strict=True):
            v.assign(value)
    result = sweep.result
    result.suggestion, result.min_loss_lr = suggest(result.lrs, result.smoothed)
    return result


def find_recipe_lr(
    cfg: Any, *, min_lr: float = 1e-7, max_lr: float = 10.0, steps: int = 100
) -> LRFinderResult:
    """The range test on a recipe: the model ``kerasdl train`` builds (the supervised task: data,
    model, transfer set-up, loss), swept one update per mini-batch.

    The recipe's optimizer runs at the swept rate, without its schedule, gradient accumulation or
    weight averaging; precision and seed are the recipe's.

    Args:
        cfg: a validated recipe (:class:`kerasdl.config.RecipeConfig`).
        min_lr: first rate.
        max_lr: last rate.
        steps: number of mini-batches (rates) at most.

    Example:
        >>> result = find_recipe_lr(load_recipe("configs/quickstart.yaml"), steps=100)
        >>> result.save("runs/quickstart/lr_find")
    """
    from kerasdl.data import load_data
    from kerasdl.training.optimizers import build_optimizer
    from kerasdl.training.precision import resolve_precision
    from kerasdl.training.tasks import SupervisedTask

    t = cfg.training
    keras.utils.set_random_seed(cfg.run.seed)
    keras.mixed_precision.set_global_policy(resolve_precision(t.precision))
    try:
        task = SupervisedTask(cfg, load_data(cfg.data, cfg.run.seed))
        train = task.datasets()["train"]
        model = task.build(steps_per_epoch=1, lr_factor=1.0)  # compiled with the recipe's loss
        opt_cfg = t.optimizer.model_copy(update={"gradient_accumulation_steps": None, "ema": False})
        model.compile(optimizer=build_optimizer(opt_cfg, min_lr), loss=model.loss)
        return find_lr(model, train, min_lr=min_lr, max_lr=max_lr, steps=steps)
    finally:
        keras.mixed_precision.set_global_policy("float32")
