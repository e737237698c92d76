"""A TensorFlow-Serving-compatible model server (Starlette + uvicorn, and gRPC).

See :mod:`kerasdl.serving.app` for the endpoints and docs/serving.md for a walkthrough. The
names below load on first use, so that ``kerasdl serve --help`` (which reads the limit and safety
options from :mod:`kerasdl.serving.limits` and :mod:`kerasdl.serving.safety`) does not import the
web server, TensorFlow or gRPC.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ServerConfig": "app",
    "create_app": "app",
    "ServingError": "errors",
    "ModelSpec": "model_config",
    "load_model_config": "model_config",
    "ModelRepository": "repository",
    "Servable": "servable",
    "VersionPolicy": "version_policy",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"kerasdl.serving.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'kerasdl.serving' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
