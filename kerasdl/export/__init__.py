"""Export a trained model: a TF-Serving SavedModel (:mod:`kerasdl.export.saved_model`), or one
ONNX / LiteRT file with the same preprocessing (:mod:`kerasdl.export.formats`).

Names are loaded on first use (PEP 562), so importing a light submodule (``layout``, the zoo cases
of ``parity``) does not import TensorFlow: the backend-portability tests run them under JAX and
PyTorch.
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "atomic_version_dir": "layout",
    "free_version": "layout",
    "list_versions": "layout",
    "next_version": "layout",
    "BYTES_INPUT": "saved_model",
    "BYTES_SIGNATURE": "saved_model",
    "DEFAULT_SIGNATURE": "saved_model",
    "IMAGES_INPUT": "saved_model",
    "build_archive": "saved_model",
    "export_run": "saved_model",
    "export_saved_model": "saved_model",
    "ExportSource": "source",
    "resolve_source": "source",
    "FORMATS": "formats",
    "export": "formats",
    "export_file": "formats",
    "load_exported": "formats",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        module = importlib.import_module(f"kerasdl.export.{_NAMES[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'kerasdl.export' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_NAMES])
