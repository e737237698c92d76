"""Load a checkpoint file into a zoo model, all or nothing, and say what was done.

:func:`load_weights` reads the file (:mod:`kerasdl.weights.readers`), recognises its layout among
the family's (:mod:`kerasdl.weights.rules`), plans every variable's value
(:mod:`kerasdl.weights.mapping`) and only then assigns them. It returns a :class:`WeightsReport`
(source, tensors loaded, what happened to the classifier, the source's input preprocessing),
also kept on the model as ``model.weights_report``.

A converted model saved by :func:`save_converted` carries the report inside the ``.keras`` file
(a ``kerasdl_weights.json`` member, which Keras ignores), so a recipe or ``kerasdl export`` that
starts from it knows the preprocessing without a file beside it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from kerasdl.errors import UserError
from kerasdl.weights.mapping import pick_format, plan_assignment, unique_variables
from kerasdl.weights.readers import Checkpoint, check_exists, kind_of, read_checkpoint
from kerasdl.weights.rules import FAMILIES, Format, Preprocessing

log = logging.getLogger("kerasdl.weights")
RECORD = "kerasdl_weights.json"  # the member of a converted .keras file holding the report
KERAS = Format("keras", signature=(), torch_head=r"^head/", keras_head=r"^(head|aux\d/fc2)/")
# a name whose torchvision counterpart is another zoo name
HINTS = {"alexnet": " torchvision's alexnet is kerasdl's alexnet_owt (the one-tower variant)."}


@dataclass
class WeightsReport:
    """What :func:`load_weights` did.

    Args:
        path: the checkpoint.
        model: the registry name (or the model's class).
        source: the layout recognised: ``torchvision``, ``timm``, ``torchvision/timm`` (the
            same key names) or ``keras``.
        loaded: variables assigned from the checkpoint.
        total: variables of the model.
        head: ``loaded``, ``re-initialised (...)`` or ``dropped (...)``.
        ignored: checkpoint tensors left unused (auxiliary classifiers, a dropped head).
        notes: other conversions (position embeddings resized).
        preprocessing: the source's input preprocessing (None: unknown).
    """

    path: str
    model: str
    source: str
    loaded: int
    total: int
    head: str = "loaded"
    ignored: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    preprocessing: Preprocessing | None = None

    @property
    def head_reinitialised(self) -> bool:
        return self.head.startswith("re-initialised")

    def text(self) -> str:
        lines = [
            f"weights: {self.path} ({self.source} layout) -> {self.model}: "
            f"{self.loaded}/{self.total} variables loaded",
            f"  classifier: {self.head}",
        ]
        if self.ignored:
            lines.append(
                f"  unused checkpoint tensors: {len(self.ignored)} ({self.ignored[0]}, ...)"
            )
        lines += [f"  {n}" for n in self.notes]
        prep = self.preprocessing.text() if self.preprocessing else "unknown (keep the recipe's)"
        lines.append(f"  input preprocessing: {prep}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "model": self.model,
            "source": self.source,
            "loaded": self.loaded,
            "total": self.total,
            "head": self.head,
            "notes": self.notes,
            "preprocessing": self.preprocessing.to_json() if self.preprocessing else None,
        }


def family_of(model: keras.Model, name: str | None) -> tuple[str, str]:
    """``(registry name, family)`` of a zoo model."""
    from kerasdl.registry import get_entry, list_models

    if name is not None:
        return name, get_entry(name).family
    for candidate in list_models():
        entry = get_entry(candidate)
        if entry.builder is type(model):
            return type(model).__name__, entry.family
    return type(model).__name__, ""


def formats_for(name: str, family: str) -> tuple[Format, ...]:
    if family not in FAMILIES:
        supported = ", ".join(sorted(FAMILIES))
        raise UserError(
            f"Model {name!r} (family {family or 'unknown'}) has no torchvision or timm "
            f"counterpart: load Keras weights (.keras / .weights.h5) instead. Families with "
            f"converters: {supported}."
        )
    return FAMILIES[family]


def preprocessing_of(fmt: Format, ckpt: Checkpoint) -> tuple[str, Preprocessing]:
    """The checkpoint's source and preprocessing: timm's ``pretrained_cfg`` from a
    ``config.json`` beside it, else the layout's default."""
    cfg = (ckpt.config or {}).get("pretrained_cfg") or {}
    if cfg.get("mean") and cfg.get("std"):
        prep = Preprocessing(
            tuple(float(v) for v in cfg["mean"]),
            tuple(float(v) for v in cfg["std"]),
            str(cfg.get("interpolation", "bicubic")),
            float(cfg.get("crop_pct", 0.875)),
            f"timm pretrained_cfg of {ckpt.config.get('architecture', '?')} (config.json)",
        )
        return "timm", prep
    return fmt.source, fmt.preprocessing


def _keras_tensors(model: keras.Model, path: Path) -> tuple[dict[str, np.ndarray], dict | None]:
    """A Keras file's variables by path, and the report a converted ``.keras`` carries."""
    from kerasdl.registry import ensure_registered

    ensure_registered()
    try:
        if path.name.endswith(".weights.h5"):
            source = type(model).from_config(model.get_config())
            source.load_weights(str(path))
        else:
            source = keras.saving.load_model(str(path), compile=False)
    except Exception as err:  # noqa: BLE001 - the user's file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        extra = (
            " (.weights.h5 must match the model exactly, num_classes included: for another "
            "head start from a .keras file or the original checkpoint)"
            if path.name.endswith(".weights.h5")
            else ""
        )
        raise UserError(f"weights {path}: Keras cannot load it: {first}{extra}") from err
    return {v.path: np.asarray(v) for v in unique_variables(source)}, embedded_record(path)


def load_weights(model: keras.Model, path: str | Path, *, name: str | None = None) -> WeightsReport:
    """Load a checkpoint into ``model`` (a zoo model) in place; all or nothing.

    Args:
        model: the model, built (for example by ``create_model(name, num_classes=...)``).
        path: ``.safetensors`` / ``.pth`` / ``.pt`` (torchvision or timm ``state_dict``),
            ``.keras`` or ``.weights.h5``.
        name: the model's registry name (default: found from its class).

    Returns:
        The :class:`WeightsReport` (also set as ``model.weights_report``).

    Raises:
        UserError: an unreadable file, another architecture, or missing / unexpected /
            differently shaped tensors (the model is left unchanged).

    Example:
        >>> model = kerasdl.create_model("resnet18", num_classes=10)
        >>> print(load_weights(model, "resnet18.safetensors").text())
    """
    path = check_exists(path)
    name, family = family_of(model, name)
    where = f"weights {path} for {name}"
    if kind_of(path) == "keras":
        tensors, record = _keras_tensors(model, path)
        fmt, source = KERAS, "keras"
        prep = Preprocessing.from_json(record["preprocessing"]) if record else None
    else:
        formats = formats_for(name, family)
        ckpt = read_checkpoint(path)
        fmt = pick_format(formats, list(ckpt.tensors), where, family)
        source, prep = preprocessing_of(fmt, ckpt)
        tensors = ckpt.tensors
    plan = plan_assignment(model, fmt, tensors, where, HINTS.get(name, ""))
    for var, value in plan.values:
        var.assign(value)
    report = WeightsReport(
        str(path),
        name,
        source,
        len(plan.values),
        len(unique_variables(model)),
        plan.head,
        plan.ignored,
        plan.notes,
        prep,
    )
    if report.head_reinitialised:
        log.warning("weights: %s classifier %s; the backbone is loaded", name, report.head)
    model.weights_report = report
    return report


@contextlib.contextmanager
def report_printed() -> Iterator[None]:
    """For callers that print the whole report: no separate log line about the classifier."""
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def build_with_weights(
    name: str, builder: Callable[..., Any], args: dict[str, Any], weights: str | Path
) -> keras.Model:
    """``builder(**args)`` with ``weights`` loaded (``create_model(name, weights=...)``)."""
    from kerasdl.registry import _build

    check_exists(weights)
    kind_of(weights)  # an unknown file type fails before the model is built
    model = _build(name, builder, args)
    load_weights(model, weights, name=name)
    return model


def checkpoint_preprocessing(path: str | Path, name: str) -> tuple[str, Preprocessing | None]:
    """``(source, preprocessing)`` of a checkpoint for model ``name``, reading only its keys
    where it can (what ``kerasdl train`` sets ``data.mean`` / ``data.std`` from)."""
    from kerasdl.registry import get_entry

    path = check_exists(path)
    if kind_of(path) == "keras":
        record = embedded_record(path)
        return "keras", Preprocessing.from_json(record["preprocessing"]) if record else None
    ckpt = read_checkpoint(path, keys_only=True)
    family = get_entry(name).family
    fmt = pick_format(formats_for(name, family), list(ckpt.tensors), f"weights {path}", family)
    return preprocessing_of(fmt, ckpt)


def embedded_record(path: str | Path) -> dict[str, Any] | None:
    """The :data:`RECORD` a converted ``.keras`` file carries (None if it has none)."""
    path = Path(path)
    if path.suffix != ".keras" or not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as z:
        if RECORD not in z.namelist():
            return None
        try:
            record = json.loads(z.read(RECORD))
        except ValueError:
            return None
    return record if isinstance(record, dict) and record.get("preprocessing") else None


def save_converted(model: keras.Model, out: str | Path, report: WeightsReport) -> None:
    """Save ``model`` as a ``.keras`` file with ``report`` inside, atomically (on an error no
    file is left, and an existing ``out`` is untouched)."""
    from kerasdl import io

    out = Path(out)
    if out.suffix != ".keras":
        raise UserError(f"--out must end in .keras. Received: {out}")
    if not out.parent.is_dir():
        raise UserError(f"--out: no such folder: {out.parent}")
    h, w, c = (int(d) for d in model.input_shape[1:])
    record = {
        **report.to_json(),
        "image_size": [h, w],
        "channels": c,
    }
    with io.atomic_path(out, suffix=".keras") as tmp:
        model.save(tmp)
        with zipfile.ZipFile(tmp, "a") as z:
            z.writestr(RECORD, json.dumps(record, indent=1))
