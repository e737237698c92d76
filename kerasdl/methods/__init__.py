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
from typing import TYPE_CHECKING, Any, Literal

from kerasdl.errors import UserError
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
    from kerasdl.methods.mae import MAE, MAEEncoder
    from kerasdl.methods.mean_teacher import MeanTeacher
    from kerasdl.methods.moco import MoCo
    from kerasdl.methods.pi_model import PiModel
    from kerasdl.methods.pseudo_label import PseudoLabel
    from kerasdl.methods.simclr import SimCLR


@dataclass(frozen=True)
class MethodEntry:
    """A method: its class, its params model and the data it trains on."""

    cls: type
    params: type[_Params]
    kind: Literal["semi", "contrastive", "masked"]
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
_CLASSES = {cls: module for module, cls, _, _ in _TABLE.values()} | {"MAEEncoder": "mae"}


def _methods() -> dict[str, MethodEntry]:
    """The method table (imports every method class, hence Keras and TensorFlow)."""
    import importlib

    return {
        name: MethodEntry(
            getattr(importlib.import_module(f"kerasdl.methods.{module}"), cls),
            PARAMS[name],
            kind,  # type: ignore[arg-type]
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


def build_method(
    name: str, backbone: keras.Model | None, num_classes: int, **params: Any
) -> keras.Model:
    """Build method ``name`` around ``backbone`` with validated ``params``.

    ``num_classes`` is used by the semi-supervised methods; MAE builds its own ViT encoder
    (:class:`~kerasdl.methods.mae.MAEEncoder`) for the backbone's input shape unless
    ``backbone`` already is one. Data-pipeline keys (``labels_per_class``, views options) are
    accepted and ignored here.

    Example:
        >>> net = kerasdl.create_model("simple_cnn", num_classes=10, input_shape=(16, 16, 1))
        >>> method = build_method("fixmatch", net, 10, threshold=0.9)
    """
    p = validate_method({"name": name, **params})
    entry = _entry(name)
    kw = p.method_kwargs()
    if entry.kind == "semi":
        return entry.cls(backbone, num_classes, **kw)
    if entry.kind == "masked":
        from kerasdl.methods.mae import MAE, MAEEncoder

        if isinstance(backbone, MAEEncoder):  # the encoder arguments come from the backbone
            return MAE(backbone, **kw)
        if backbone is None:
            raise UserError("method mae: needs a backbone (for its input shape) or an encoder.")
        return MAE(None, input_shape=tuple(backbone.input_shape[1:]), **kw)
    return entry.cls(backbone, **kw)


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
    from kerasdl.data import ssl

    p = validate_method(params)
    entry = _entry(p.name)
    d = p.data_kwargs()
    val = splits.get("val")
    if val is not None and 0 <= int(val.cardinality()) < batch_size and entry.kind != "semi":
        val = None  # too small for one full batch of views
    n_train = int(splits["train"].cardinality())
    need = batch_size * getattr(p, "mu", 1)
    if 0 <= n_train < need:
        raise UserError(
            f"method {p.name}: the training split has {n_train} images, fewer than one batch "
            f"({need}); lower training.batch_size"
            + (" or method.mu." if entry.kind == "semi" else ".")
        )
    if entry.kind == "semi":
        labelled, unlabelled = ssl.split_labelled(
            splits["train"], d["labels_per_class"], seed, d["unlabelled"]
        )
        train = ssl.semi_supervised_dataset(
            labelled,
            unlabelled,
            batch_size,
            num_classes,
            mu=p.mu,
            views=entry.views,
            seed=seed,
            mean=mean,
            std=std,
            flip=d["flip"],
        )
        val_ds = None
        if val is not None:
            val_ds = ssl.labelled_batches(val, batch_size, num_classes, mean, std)
        return train, val_ds
    if entry.kind == "contrastive":
        train = ssl.contrastive_dataset(splits["train"], batch_size, seed, mean, std, **d)
        val_ds = None
        if val is not None:
            val_ds = ssl.contrastive_dataset(val, batch_size, seed + 1, mean, std, **d)
        return train, val_ds
    train = ssl.masked_image_dataset(splits["train"], batch_size, seed, mean, std, **d)
    val_ds = None
    if val is not None:
        val_ds = ssl.masked_image_dataset(
            val, batch_size, seed + 1, mean, std, crop_scale=(1.0, 1.0), flip=False
        )
    return train, val_ds


def method_steps_per_epoch(
    params: dict[str, Any] | _Params, train_size: int, batch_size: int
) -> int:
    """Steps in one epoch of :func:`method_datasets`' training set (full batches only)."""
    p = validate_method(params)
    if _entry(p.name).kind == "semi":
        return train_size // (batch_size * p.mu)
    return train_size // batch_size


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
    ``probe_protocols`` (linear / k-NN / fine-tuning accuracy) on the frozen
    :attr:`inference_model`, trained on ``probe_labels_per_class`` labels per class (all if unset).
    """
    import numpy as np

    from kerasdl.data import ssl
    from kerasdl.methods.probes import run_probes

    p = validate_method(params)
    split = "test" if "test" in splits else "val"
    if _entry(p.name).kind == "semi":
        ds = ssl.labelled_batches(splits[split], batch_size, num_classes, mean, std)
        out = method.evaluate(ds, verbose=0, return_dict=True)
        return {"split": split, **{k: float(v) for k, v in out.items()}}

    def standardize(x):
        return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32) if mean else x

    res = run_probes(
        method.inference_model,
        splits["train"],
        splits[split],
        tuple(p.probe_protocols),
        p.probe_labels_per_class,
        seed,
        num_classes,
        standardize,
    )
    return {"split": split, **res}


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
    "MAEEncoder",
    "METHODS",
    "MeanTeacher",
    "MoCo",
    "PiModel",
    "PseudoLabel",
    "SimCLR",
    "build_method",
    "evaluate_method",
    "method_steps_per_epoch",
    "method_datasets",
    "validate_method",
]
