"""Evaluating a trained model: metrics, confusion matrix, and its picture.

``evaluate_target`` is what ``kerasdl evaluate`` calls: it reloads ``best.keras`` from a run folder
(or a given ``.keras`` file), rebuilds the recipe's data exactly as training did (same seed, same
split, same preprocessing) and reports loss, accuracy, top-5 accuracy (more than five classes) and
the confusion matrix (rows: true class, columns: predicted class).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from kerasdl.config import load_run_recipe
from kerasdl.errors import UserError
from kerasdl.io import save_figure, write_json
from kerasdl.plotting import pyplot
from kerasdl.runfolder import RunFolder


@dataclass
class EvaluationReport:
    """Metrics and confusion matrix of one evaluation."""

    split: str
    metrics: dict[str, float]
    confusion: np.ndarray
    class_names: list[str]
    png: Path | None = None
    extra: dict[str, float] = field(default_factory=dict)

    def text(self) -> str:
        """A printable report."""
        lines = [f"Evaluation on {self.split} ({int(self.confusion.sum())} images)"]
        for k, v in self.metrics.items():
            lines.append(f"  {k:<10} {v:.4f}")
        names = [n[:6] for n in self.class_names]
        width = max(6, max(len(str(int(self.confusion.max()))), 1) + 1)
        lines.append("Confusion matrix (rows: true, columns: predicted)")
        lines.append(" " * 8 + "".join(f"{n:>{width}}" for n in names))
        for name, row in zip(names, self.confusion, strict=True):
            lines.append(f"{name:>7} " + "".join(f"{int(c):>{width}}" for c in row))
        return "\n".join(lines)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts ``C[i, j]`` of examples of true class ``i`` predicted as ``j``."""
    c = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(c, (y_true, y_pred), 1)
    return c


def plot_confusion(c: np.ndarray, class_names: list[str], path: Path, title: str) -> None:
    """Save the confusion matrix as a PNG (written to a temporary file, then renamed)."""
    plt = pyplot()
    n = len(class_names)
    size = min(4 + 0.4 * n, 16)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(c, cmap="Blues")
    ax.set_xticks(range(n), class_names, rotation=90 if n > 10 else 0)
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 30:
        thresh = c.max() / 2 if c.size else 0
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    str(c[i, j]),
                    ha="center",
                    va="center",
                    color="white" if c[i, j] > thresh else "black",
                    fontsize=8,
                )
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def register_classes() -> None:
    """Import every module that registers a class a kerasdl ``.keras`` file may name: the model
    families and their layers, the features model, the training methods (a saved method model),
    the optimizers (LARS, the per-group wrapper) and the schedules."""
    import kerasdl.methods  # noqa: F401
    import kerasdl.models.features  # noqa: F401
    import kerasdl.training.group_optimizer  # noqa: F401
    import kerasdl.training.lars  # noqa: F401
    import kerasdl.training.schedules  # noqa: F401
    from kerasdl.registry import ensure_registered

    ensure_registered()


def load_trained_model(path: str | Path, compile: bool = False) -> keras.Model:
    """Load a ``.keras`` file that kerasdl wrote (a run's ``best.keras``, ``kerasdl convert``'s
    output, a features model), with a clear error if it is missing or unreadable; also
    ``kerasdl.load_model``.

    ``keras.saving.load_model`` alone does not know kerasdl's classes until their modules are
    imported; this registers them all first (:func:`register_classes`).

    Example:
        >>> model = kerasdl.load_model("resnet50.keras")
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file not found: {path}")
    register_classes()
    try:
        return keras.models.load_model(path, compile=compile)
    except Exception as err:  # corrupt zip, unknown layer, ...: one clear line for the user
        raise UserError(f"cannot load {path}: {type(err).__name__}: {err}") from None


def check_input_fits(model: Any, batch_shape: Any) -> None:
    """One clear error when the data's images do not fit the model's input (size or channels),
    instead of Keras's traceback from inside ``evaluate``."""
    want = tuple(model.input_shape[1:]) if not isinstance(model.input_shape, list) else None
    got = tuple(batch_shape[1:]) if batch_shape.rank is not None else None
    if want is None or got is None:
        return
    if len(want) != len(got) or any(
        w is not None and g is not None and w != g for w, g in zip(want, got, strict=True)
    ):
        raise UserError(
            f"the model takes {_dims(want)} images but the data gives {_dims(got)} "
            "(data.image_size and data.channels of the recipe)"
        )


def _dims(shape: tuple) -> str:
    return "x".join("?" if d is None else str(d) for d in shape)


def evaluate_target(
    target: Path,
    *,
    split: str = "test",
    recipe: str | None = None,
    overrides: list[str] | None = None,
    batch_size: int | None = None,
    label: str | None = None,
) -> EvaluationReport:
    """Evaluate a run folder's ``best.keras`` (or a ``.keras`` file) on a split of its data.

    ``label`` names the output files (``confusion_<label>.png``; default: the split).
    """
    from kerasdl.data import load_data
    from kerasdl.data.datasets import eval_dataset
    from kerasdl.training.tasks import classifier_loss, classifier_metrics

    target = Path(target)
    model_path = RunFolder(target).best if target.is_dir() else target
    cfg = load_run_recipe(target, recipe, overrides)
    model = load_trained_model(model_path)
    bundle = load_data(cfg.data, cfg.run.seed)
    if split not in bundle.splits:
        raise UserError(f"--split {split}: the data has no such split ({', '.join(bundle.splits)})")
    k = bundle.num_classes
    out_dim = model.output_shape[-1]
    if out_dim != k:
        raise UserError(f"the model predicts {out_dim} classes but the data has {k}")
    ds = eval_dataset(cfg, bundle, split, batch_size)
    check_input_fits(model, ds.element_spec[0].shape)
    model.compile(
        loss=classifier_loss(cfg),
        metrics=classifier_metrics(["accuracy", "top5"] if k > 5 else ["accuracy"]),
    )
    values = {n: float(v) for n, v in model.evaluate(ds, verbose=0, return_dict=True).items()}
    y_true, y_pred = [], []
    for x, y in ds:
        y_true.append(np.argmax(y, axis=-1))
        y_pred.append(np.argmax(model.predict_on_batch(x), axis=-1))
    c = confusion_matrix(np.concatenate(y_true), np.concatenate(y_pred), k)
    png = None
    if target.is_dir():
        label = label or split
        png = target / f"confusion_{label}.png"
        plot_confusion(c, bundle.class_names, png, f"{cfg.run.name}: {label}")
        write_json(
            target / f"evaluation_{label}.json",
            {"split": label, **values, "confusion_matrix": c.tolist()},
            sort_keys=True,
        )
    return EvaluationReport(label or split, values, c, bundle.class_names, png)
