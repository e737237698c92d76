"""Semi- and self-supervised training methods, selectable by name.

Every method is a ``keras.Model`` subclass that wraps a backbone and overrides ``train_step`` /
``test_step`` (see :mod:`kerasdl.methods.base`). A recipe selects one with a ``method:`` section::

    method:
      name: fixmatch        # pi_model|mean_teacher|pseudo_label|fixmatch|simclr|moco|mae
      labels_per_class: 10    # semi-supervised methods: labels kept per class
      threshold: 0.95         # ... and the method's own hyper-parameters (see the params models)

:func:`validate_method` checks such a section (unknown keys and bad values are a
:class:`~kerasdl.errors.UserError`), :func:`build_method` builds the method around a backbone and
:func:`method_datasets` turns a data bundle's splits into the method's training and validation
datasets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kerasdl.errors import UserError
from kerasdl.methods.kinds import MethodData
from kerasdl.methods.params import (
    PARAMS,
    FixMatchParams,
    MAEParams,
    MeanTeacherParams,
    MoCoParams,
    PiModelParams,
    PseudoLabelParams,
    SimCLRParams,
    _Params,
    validate_method,
)

if TYPE_CHECKING:  # the method classes import Keras and TensorFlow: loaded on first use
    import keras
    import tensorflow as tf

    from kerasdl.methods.fixmatch import FixMatch
    from kerasdl.methods.kinds import MethodKind
    from kerasdl.methods.mae import MAE
    from kerasdl.methods.mean_teacher import MeanTeacher
    from kerasdl.methods.moco import MoCo
    from kerasdl.methods.pi_model import PiModel
    from kerasdl.methods.pseudo_label import PseudoLabel
    from kerasdl.methods.simclr import SimCLR


@dataclass(frozen=True)
class MethodEntry:
    """A method: its class, its params model, its kind (how it is built, fed, monitored and
    measured: :mod:`kerasdl.methods.kinds`) and the views its data has."""

    cls: type
    params: type[_Params]
    kind: MethodKind
    views: str = ""


# name -> (module, class, kind, views); the params model is PARAMS[name]
_TABLE: dict[str, tuple[str, str, str, str]] = {
    "pi_model": ("pi_model", "PiModel", "semi", "two_weak"),
    "mean_teacher": ("mean_teacher", "MeanTeacher", "semi", "two_weak"),
    "pseudo_label": ("pseudo_label", "PseudoLabel", "semi", "weak"),
    "fixmatch": ("fixmatch", "FixMatch", "semi", "weak_strong"),
    "simclr": ("simclr", "SimCLR", "contrastive", ""),
    "moco": ("moco", "MoCo", "contrastive", ""),
    "mae": ("mae", "MAE", "masked", ""),
}
_CLASSES = {cls: module for module, cls, _, _ in _TABLE.values()}


def _methods() -> dict[str, MethodEntry]:
    """The method table (imports every method class, hence Keras and TensorFlow)."""
    import importlib

    from kerasdl.methods.kinds import KINDS

    return {
        name: MethodEntry(
            getattr(importlib.import_module(f"kerasdl.methods.{module}"), cls),
            PARAMS[name],
            KINDS[kind],
            views,
        )
        for name, (module, cls, kind, views) in _TABLE.items()
    }


def __getattr__(name: str) -> Any:
    """``METHODS`` and the method classes, imported on first use (this package's import stays
    free of TensorFlow, so ``kerasdl.methods.params`` validates recipes before it is loaded)."""
    import importlib

    if name == "METHODS":
        table = _methods()
        globals()["METHODS"] = table
        return table
    if name in _CLASSES:
        return getattr(importlib.import_module(f"kerasdl.methods.{_CLASSES[name]}"), name)
    raise AttributeError(f"module 'kerasdl.methods' has no attribute {name!r}")


def _entry(name: str) -> MethodEntry:
    if name not in _TABLE:
        raise UserError(f"Unknown method {name!r}. Expected one of: {', '.join(sorted(_TABLE))}.")
    return __getattr__("METHODS")[name]


def method_entry(params: dict[str, Any] | _Params) -> tuple[MethodEntry, _Params]:
    """The table row of a recipe's ``method:`` section, and the validated section."""
    p = validate_method(params)
    return _entry(p.name), p


def build_method(
    name: str, backbone: keras.Model | None, num_classes: int, **params: Any
) -> keras.Model:
    """Build method ``name`` around ``backbone`` with validated ``params``.

    ``num_classes`` is used by the semi-supervised methods; MAE's backbone must be a registry
    Vision Transformer (its encoder). Data-pipeline keys (``labels_per_class``, views options)
    are accepted and ignored here.

    Example:
        >>> net = kerasdl.create_model("simple_cnn", num_classes=10, input_shape=(16, 16, 1))
        >>> method = build_method("fixmatch", net, 10, threshold=0.9)
    """
    entry, p = method_entry({"name": name, **params})
    return entry.kind.build(entry.cls, backbone, num_classes, p.method_kwargs())


def method_datasets(
    params: dict[str, Any] | _Params,
    splits: dict[str, tf.data.Dataset],
    batch_size: int,
    num_classes: int,
    seed: int = 0,
    mean: list[float] | None = None,
    std: list[float] | None = None,
) -> tuple[tf.data.Dataset, tf.data.Dataset | None]:
    """The method's ``(train, validation)`` datasets from unbatched ``(image, label)`` splits.

    Semi-supervised: ``labels_per_class`` labels from ``train`` plus the unlabelled stream, and
    plain ``(x, y_onehot)`` validation batches. Contrastive: two views of every image (labels
    dropped), validation on two views of ``val``. MAE: augmented images, validation on plain
    images.
    """
    entry, p = method_entry(params)
    n_train = int(splits["train"].cardinality())
    need = batch_size * (p.mu if entry.kind.uses_mu else 1)
    if 0 <= n_train < need:
        also = " or method.mu" if need > batch_size else ""
        raise UserError(
            f"method {p.name}: the training split has {n_train} images, fewer than one batch "
            f"({need}); lower training.batch_size{also}."
        )
    data = MethodData(splits, batch_size, num_classes, seed, mean, std)
    return entry.kind.datasets(p, entry.views, data)


def method_steps_per_epoch(
    params: dict[str, Any] | _Params, train_size: int, batch_size: int
) -> int:
    """Steps in one epoch of :func:`method_datasets`' training set (full batches only)."""
    entry, p = method_entry(params)
    return entry.kind.steps_per_epoch(p, train_size, batch_size)


def evaluate_method(
    method: keras.Model,
    params: dict[str, Any] | _Params,
    splits: dict[str, tf.data.Dataset],
    batch_size: int,
    num_classes: int,
    seed: int = 0,
    mean: list[float] | None = None,
    std: list[float] | None = None,
) -> dict[str, Any]:
    """Final metrics of a trained method on the test split (val if none).

    Semi-supervised: ``loss`` and ``accuracy`` of the evaluation model. Self-supervised: the
    ``probe_protocols`` (``linear_probe_accuracy``, ``knn_accuracy``, ``finetune_accuracy``) on
    the frozen :attr:`inference_model`, trained on ``probe_labels_per_class`` labels per class
    (all if unset), and ``probe_train_examples``.
    """
    entry, p = method_entry(params)
    data = MethodData(splits, batch_size, num_classes, seed, mean, std)
    return {"split": data.eval_split, **entry.kind.evaluate(method, p, data)}


__all__ = [
    "PARAMS",
    "FixMatchParams",
    "MAEParams",
    "MeanTeacherParams",
    "MoCoParams",
    "PiModelParams",
    "PseudoLabelParams",
    "SimCLRParams",
    "FixMatch",
    "MAE",
    "METHODS",
    "MeanTeacher",
    "MoCo",
    "PiModel",
    "PseudoLabel",
    "SimCLR",
    "build_method",
    "method_entry",
    "evaluate_method",
    "method_steps_per_epoch",
    "method_datasets",
    "validate_method",
]
