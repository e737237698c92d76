"""A TensorFlow-Serving-compatible model server (Starlette + uvicorn).

See :mod:`kerasdl.serving.app` for the endpoints and docs/serving.md for a walkthrough.
"""

from kerasdl.serving.app import ServerConfig, create_app
from kerasdl.serving.errors import ServingError
from kerasdl.serving.model_config import ModelSpec, load_model_config
from kerasdl.serving.repository import ModelRepository
from kerasdl.serving.servable import Servable
from kerasdl.serving.version_policy import VersionPolicy

__all__ = [
    "ModelRepository",
    "ModelSpec",
    "Servable",
    "ServerConfig",
    "ServingError",
    "VersionPolicy",
    "create_app",
    "load_model_config",
]
