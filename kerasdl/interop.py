"""Importing torchvision and timm beside the CPU build of PyTorch (the optional ``torch`` extra).

PyPI's torchvision wheels carry compiled operators built for PyPI's CUDA build of torch; beside
the CPU build that the ``torch`` extra installs, ``import torchvision`` fails with "operator
torchvision::nms does not exist" while registering fake kernels for its detection operators.
Its model definitions are pure Python: declaring the two operator schemas first (the way its C
extension would) lets them import, and the models build and run unchanged. Nothing else of
torchvision's compiled code is used by kerasdl (the reference models only).

Example:
    >>> torchvision = import_torchvision()
    >>> net = torchvision.models.resnet18()
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from kerasdl.errors import UserError

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_LIBRARY: Any = None  # kept alive: a torch.library.Library unregisters its schemas when collected


def _declare_schemas() -> None:
    global _LIBRARY
    import torch

    if _LIBRARY is not None:
        return
    try:
        lib = torch.library.Library("torchvision", "DEF")
        for schema in _SCHEMAS:
            lib.define(schema)
    except RuntimeError:  # already defined (torchvision's own extension loaded): nothing to do
        return
    _LIBRARY = lib


def import_torch() -> ModuleType:
    """``torch``, or a :class:`UserError` saying how to install it."""
    try:
        import torch
    except ImportError as err:
        raise UserError(
            "This needs PyTorch, which is not installed: pip install 'kerasdl[torch]'."
        ) from err
    return torch


def import_torchvision() -> ModuleType:
    """``torchvision``, importable beside the CPU build of torch (see the module docstring)."""
    import sys

    import_torch()
    if "torchvision" not in sys.modules:
        _declare_schemas()
    try:
        import torchvision
    except (ImportError, RuntimeError) as err:
        raise UserError(
            f"torchvision does not import ({err}): pip install 'kerasdl[torch]'."
        ) from err
    return torchvision


def import_timm() -> ModuleType:
    """``timm`` (which imports torchvision; see :func:`import_torchvision`)."""
    import_torchvision()
    try:
        import timm
    except ImportError as err:
        raise UserError(f"timm does not import ({err}): pip install 'kerasdl[torch]'.") from err
    return timm
