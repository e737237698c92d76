"""kerasdl: the deep-learning canon as a runnable TensorFlow/Keras 3 suite.

``kerasdl.create_model``, ``list_models``, ``register_model`` and ``load_model`` (a ``.keras``
file kerasdl wrote, with every kerasdl class registered first) are loaded on first use, so that
``import kerasdl.config`` (recipe validation, ``kerasdl --help``) stays free of TensorFlow and
Keras.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kerasdl import onednn
from kerasdl.errors import UserError

if TYPE_CHECKING:
    from kerasdl.registry import create_model, list_models, register_model
    from kerasdl.training.evaluation import load_trained_model as load_model

__all__ = ["UserError", "create_model", "list_models", "load_model", "register_model"]
__version__ = "0.1.0"

# before anything imports TensorFlow, which reads TF_ENABLE_ONEDNN_OPTS once (kerasdl.onednn)
onednn.request()

_REGISTRY_NAMES = ("create_model", "list_models", "register_model")


def __getattr__(name: str) -> Any:
    if name in _REGISTRY_NAMES:
        from kerasdl import registry

        return getattr(registry, name)
    if name == "load_model":
        from kerasdl.training.evaluation import load_trained_model

        return load_trained_model
    raise AttributeError(f"module 'kerasdl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_REGISTRY_NAMES, "load_model"])
