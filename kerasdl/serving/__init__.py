"""A TensorFlow-Serving-compatible model server (Starlette + uvicorn).

See :mod:`kerasdl.serving.app` for the endpoints and docs/serving.md for a walkthrough.
"""

from kerasdl.serving.app import ServerConfig, create_app
from kerasdl.serving.errors import ServingError
from kerasdl.serving.repository import ModelRepository
from kerasdl.serving.servable import Servable

__all__ = ["ModelRepository", "Servable", "ServerConfig", "ServingError", "create_app"]
