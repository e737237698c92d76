"""Find what to export: a run folder (best.keras + preprocess.json) or a bare .keras file.

A run folder written by ``kerasdl train`` holds ``best.keras`` (the best model, logits output),
``preprocess.json`` (:class:`kerasdl.data.preprocess.PreprocessSpec`) and ``config.yaml``. A bare
``.keras`` file is accepted when a ``preprocess.json`` sits beside it, or when it was written by
``kerasdl convert`` (which records its checkpoint's preprocessing inside the file).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kerasdl.config.names import check_name as check_names_rule
from kerasdl.data.preprocess import PreprocessSpec
from kerasdl.errors import UserError
from kerasdl.runfolder import CONFIG_FILE, MODEL_FILE, SPEC_FILE


@dataclass
class ExportSource:
    """The model file, its preprocessing spec and a default export name.

    Args:
        model_path: the ``.keras`` file.
        spec: the preprocessing the model was trained with.
        default_name: the name to export under when the user gives none.
    """

    model_path: Path
    spec: PreprocessSpec
    default_name: str

    def load_model(self) -> Any:
        """Load the Keras model (kerasdl's registered layers and models are imported first)."""
        import keras

        from kerasdl.training.evaluation import register_classes

        register_classes()
        try:
            return keras.saving.load_model(self.model_path, compile=False)
        except Exception as err:  # noqa: BLE001 - any load failure is the user's file
            raise UserError(f"Cannot load the model {self.model_path}: {err}") from err


def converted_spec(model_path: Path) -> PreprocessSpec | None:
    """The preprocessing a ``kerasdl convert`` output carries inside (its checkpoint's mean/std
    and resize filter at the model's input size; no class names), or None."""
    import json
    import zipfile

    if model_path.suffix != ".keras" or not zipfile.is_zipfile(model_path):
        return None
    with zipfile.ZipFile(model_path) as z:
        if "kerasdl_weights.json" not in z.namelist():
            return None
        try:
            record = json.loads(z.read("kerasdl_weights.json"))
            prep = record["preprocessing"]
            interpolation = prep.get("interpolation")
            return PreprocessSpec(
                image_size=tuple(int(v) for v in record["image_size"]),
                channels=int(record["channels"]),
                mean=[float(v) for v in prep["mean"]],
                std=[float(v) for v in prep["std"]],
                interpolation=interpolation if interpolation == "bicubic" else "bilinear",
            )
        except (ValueError, TypeError, KeyError):
            return None


def check_name(name: str) -> str:
    """A model name usable as a folder and in a URL (:func:`kerasdl.config.names.check_name`)."""
    return check_names_rule(name, "model name")


def _name_from_config(run_dir: Path) -> str | None:
    cfg_path = run_dir / CONFIG_FILE
    if not cfg_path.is_file():
        return None
    import yaml

    try:
        cfg = yaml.safe_load(cfg_path.read_text()) or {}
    except yaml.YAMLError:
        return None
    for section in ("run", "model"):
        value = cfg.get(section) if isinstance(cfg, dict) else None
        if isinstance(value, dict) and isinstance(value.get("name"), str):
            return value["name"]
    return None


def _sanitize(name: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.-")
    return name or "model"


def resolve_source(path: str | Path) -> ExportSource:
    """Resolve ``RUN_DIR`` or ``MODEL.keras`` into an :class:`ExportSource`.

    The default name is the recipe's ``run.name`` (else ``model.name``) from ``config.yaml``;
    without a config it is the run folder's name, or its parent's when the folder is a
    timestamp (``runs/<name>/<timestamp>/``).
    """
    path = Path(path)
    if path.is_dir():
        model_path = path / MODEL_FILE
        run_dir = path
        if not model_path.is_file():
            raise UserError(f"No {MODEL_FILE} in run folder {path}: is training finished?")
    elif path.is_file():
        if path.suffix != ".keras":
            raise UserError(f"Expected a run folder or a .keras file. Received: {path}")
        model_path, run_dir = path, path.parent
    else:
        raise UserError(f"No such run folder or .keras file: {path}")
    spec_path = run_dir / SPEC_FILE
    if spec_path.is_file():
        try:
            spec = PreprocessSpec.load(spec_path)
        except (ValueError, TypeError, KeyError) as err:
            raise UserError(f"Invalid {spec_path}: {err}") from err
    else:
        spec = converted_spec(model_path)
        if spec is None:
            raise UserError(
                f"No {SPEC_FILE} beside {model_path}: it records the input preprocessing."
            )
    name = _name_from_config(run_dir)
    if name is None:
        folder = run_dir.resolve()
        name = folder.parent.name if folder.name[:1].isdigit() else folder.name
        if path.is_file() and path.name != MODEL_FILE:
            name = path.stem
    return ExportSource(model_path=model_path, spec=spec, default_name=_sanitize(name))
