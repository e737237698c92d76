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
from typing import Annotated, Any, Literal

import keras
import tensorflow as tf
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kerasdl.errors import UserError
from kerasdl.methods.fixmatch import FixMatch
from kerasdl.methods.mae import MAE, MAEEncoder
from kerasdl.methods.mean_teacher import MeanTeacher
from kerasdl.methods.moco import MoCo
from kerasdl.methods.pi_model import PiModel
from kerasdl.methods.pseudo_label import PseudoLabel
from kerasdl.methods.simclr import SimCLR

Prob = Annotated[float, Field(ge=0.0, le=1.0)]
Decay = Annotated[float, Field(ge=0.0, lt=1.0)]
Pos = Annotated[int, Field(gt=0)]
NonNeg = Annotated[float, Field(ge=0.0)]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int | None = None

    # fields that configure the data pipeline / the evaluation rather than the constructor
    _data_fields: tuple[str, ...] = ()
    _eval_fields: tuple[str, ...] = ()

    def method_kwargs(self) -> dict[str, Any]:
        skip = {"name", *self._data_fields, *self._eval_fields}
        return {k: v for k, v in self.model_dump().items() if k not in skip}

    def data_kwargs(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self._data_fields}


class _SemiParams(_Params):
    labels_per_class: Pos = 10
    unlabelled: Literal["all", "rest"] = "all"
    flip: bool = True
    _data_fields = ("labels_per_class", "unlabelled", "flip")


class FixMatchParams(_SemiParams):
    """``method: {name: fixmatch, ...}`` (Sohn et al. 2020)."""

    name: Literal["fixmatch"] = "fixmatch"
    threshold: Prob = 0.95
    lambda_u: NonNeg = 1.0
    mu: Pos = 7
    ema_decay: Decay | None = 0.999
    ema_warmup: bool = True


class PiModelParams(_SemiParams):
    """``method: {name: pi_model, ...}`` (Laine & Aila 2017)."""

    name: Literal["pi_model"] = "pi_model"
    consistency_weight: NonNeg = 100.0
    rampup_steps: Annotated[int, Field(ge=0)] = 4000
    mu: Pos = 1
    _data_fields = ("labels_per_class", "unlabelled", "flip", "mu")


class MeanTeacherParams(_SemiParams):
    """``method: {name: mean_teacher, ...}`` (Tarvainen & Valpola 2017)."""

    name: Literal["mean_teacher"] = "mean_teacher"
    consistency_weight: NonNeg = 100.0
    rampup_steps: Annotated[int, Field(ge=0)] = 4000
    ema_decay: Decay = 0.999
    rampup_ema_decay: Decay = 0.99
    mu: Pos = 1
    _data_fields = ("labels_per_class", "unlabelled", "flip", "mu")


class PseudoLabelParams(_SemiParams):
    """``method: {name: pseudo_label, ...}`` (Lee 2013, thresholded)."""

    name: Literal["pseudo_label"] = "pseudo_label"
    weight: NonNeg = 3.0
    threshold: Prob = 0.95
    rampup_start: Annotated[int, Field(ge=0)] = 100
    rampup_end: Annotated[int, Field(ge=0)] = 600
    mu: Pos = 1
    _data_fields = ("labels_per_class", "unlabelled", "flip", "mu")


class _SelfParams(_Params):
    # evaluation stage after pretraining (kerasdl.methods.probes)
    probe_protocols: list[Literal["linear", "knn", "finetune"]] = ["linear", "knn"]
    probe_labels_per_class: Pos | None = None


class _ContrastiveParams(_SelfParams):
    projection_dim: Pos = 128
    hidden_dim: Pos | None = None
    crop_scale: tuple[Prob, Prob] = (0.08, 1.0)
    flip: bool = True
    jitter_strength: NonNeg = 0.5
    jitter_prob: Prob = 0.8
    grayscale_prob: Prob = 0.2
    blur_prob: Prob = 0.5
    _data_fields = (
        "crop_scale",
        "flip",
        "jitter_strength",
        "jitter_prob",
        "grayscale_prob",
        "blur_prob",
    )
    _eval_fields = ("probe_protocols", "probe_labels_per_class")


class SimCLRParams(_ContrastiveParams):
    """``method: {name: simclr, ...}`` (Chen et al. 2020)."""

    name: Literal["simclr"] = "simclr"
    temperature: Annotated[float, Field(gt=0.0)] = 0.5


class MoCoParams(_ContrastiveParams):
    """``method: {name: moco, ...}`` (He et al. 2020; Chen et al. 2020, MoCo v2)."""

    name: Literal["moco"] = "moco"
    queue_size: Pos = 65536
    momentum: Decay = 0.999
    temperature: Annotated[float, Field(gt=0.0)] = 0.2
    head_batch_norm: bool = False  # MoCo v3's BN head (Chen, Xie & He 2021), for ViTs


class MAEParams(_SelfParams):
    """``method: {name: mae, ...}`` (He et al. 2022). The encoder is built from these values."""

    name: Literal["mae"] = "mae"
    patch_size: Pos = 16
    dim: Pos = 768
    depth: Pos = 12
    num_heads: Pos = 12
    mlp_ratio: Annotated[float, Field(gt=0.0)] = 4.0
    pool: Literal["cls", "mean"] = "cls"
    decoder_dim: Pos = 512
    decoder_depth: Pos = 8
    decoder_heads: Pos = 16
    mask_ratio: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.75
    norm_pix_loss: bool = False
    crop_scale: tuple[Prob, Prob] = (0.2, 1.0)
    flip: bool = True
    _data_fields = ("crop_scale", "flip")
    _eval_fields = ("probe_protocols", "probe_labels_per_class")


@dataclass(frozen=True)
class MethodEntry:
    """A method: its class, its params model and the data it trains on."""

    cls: type
    params: type[_Params]
    kind: Literal["semi", "contrastive", "masked"]
    views: str = ""


METHODS: dict[str, MethodEntry] = {
    "pi_model": MethodEntry(PiModel, PiModelParams, "semi", "two_weak"),
    "mean_teacher": MethodEntry(MeanTeacher, MeanTeacherParams, "semi", "two_weak"),
    "pseudo_label": MethodEntry(PseudoLabel, PseudoLabelParams, "semi", "weak"),
    "fixmatch": MethodEntry(FixMatch, FixMatchParams, "semi", "weak_strong"),
    "simclr": MethodEntry(SimCLR, SimCLRParams, "contrastive"),
    "moco": MethodEntry(MoCo, MoCoParams, "contrastive"),
    "mae": MethodEntry(MAE, MAEParams, "masked"),
}


def _entry(name: str) -> MethodEntry:
    if name not in METHODS:
        raise UserError(f"Unknown method {name!r}. Expected one of: {', '.join(sorted(METHODS))}.")
    return METHODS[name]


def validate_method(section: dict[str, Any] | _Params) -> _Params:
    """Validate a recipe's ``method:`` section (``{"name": ..., **params}``).

    Raises:
        UserError: unknown method, unknown key or bad value, naming the key.
    """
    if isinstance(section, _Params):
        return section
    if not isinstance(section, dict) or "name" not in section:
        raise UserError(
            f"method: expected a mapping with a 'name' ({', '.join(sorted(METHODS))}). "
            f"Received: {section!r}"
        )
    entry = _entry(section["name"])
    try:
        return entry.params(**section)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise UserError(f"method.{key}: {first['msg']}. Received: {first.get('input')!r}") from None


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
    entry = METHODS[name]
    kw = p.method_kwargs()
    if entry.kind == "semi":
        return entry.cls(backbone, num_classes, **kw)
    if entry.kind == "masked":
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
    entry = METHODS[p.name]
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
    if METHODS[p.name].kind == "semi":
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
    if METHODS[p.name].kind == "semi":
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
