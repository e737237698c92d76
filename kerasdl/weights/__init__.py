"""Checkpoints into the zoo: torchvision and timm ``state_dict`` files, and Keras weights.

``create_model(name, weights=PATH)`` builds the model and loads ``PATH`` into it; so does the
recipe key ``model.weights`` and ``kerasdl convert``, which writes the result as a ``.keras``
file. ``PATH`` is a torchvision or timm checkpoint of the same architecture (``.safetensors``,
read without torch; ``.pth`` / ``.pt``, read with torch when installed) or Keras weights
(``.keras``, ``.weights.h5``). Its layout is recognised from its key names
(:mod:`kerasdl.weights.rules`); another ``num_classes`` keeps the backbone and re-initialises the
classifier; any other mismatch is one error naming the tensors, and nothing is loaded.

Example:
    >>> model = kerasdl.create_model("resnet50", weights="resnet50.safetensors", num_classes=10)
    >>> print(model.weights_report.text())

References:
    torchvision ``models/``; timm ``models/_builder.py``, ``_helpers.py``; keras-hub
    ``src/utils/timm/`` (checkpoint converters).
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> submodule; imported on first use, so that ``kerasdl.weights.readers`` and the
# ``kerasdl convert`` argument checks do not load Keras (PEP 562)
_EXPORTS = {
    "WeightsReport": "loading",
    "build_with_weights": "loading",
    "checkpoint_preprocessing": "loading",
    "embedded_record": "loading",
    "load_weights": "loading",
    "report_printed": "loading",
    "save_converted": "loading",
    "read_checkpoint": "readers",
    "FAMILIES": "rules",
    "Preprocessing": "rules",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'kerasdl.weights' has no attribute {name!r}")
    return getattr(importlib.import_module(f"kerasdl.weights.{_EXPORTS[name]}"), name)
