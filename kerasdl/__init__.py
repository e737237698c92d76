"""kerasdl: the deep-learning canon as a runnable TensorFlow/Keras 3 suite."""

from kerasdl.errors import UserError
from kerasdl.registry import create_model, list_models, register_model

__all__ = ["UserError", "create_model", "list_models", "register_model"]
__version__ = "0.1.0"
