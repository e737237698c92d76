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

from kerasdl.weights.loading import (
    WeightsReport,
    build_with_weights,
    checkpoint_preprocessing,
    embedded_record,
    load_weights,
    report_printed,
    save_converted,
)
from kerasdl.weights.readers import read_checkpoint
from kerasdl.weights.rules import FAMILIES, Preprocessing

__all__ = [
    "FAMILIES",
    "Preprocessing",
    "WeightsReport",
    "build_with_weights",
    "checkpoint_preprocessing",
    "embedded_record",
    "load_weights",
    "read_checkpoint",
    "report_printed",
    "save_converted",
]
