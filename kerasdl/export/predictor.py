"""Load an exported SavedModel and classify encoded images with its ``serving_bytes`` signature."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kerasdl.errors import UserError
from kerasdl.export.layout import version_folders
from kerasdl.export.saved_model import (
    BYTES_INPUT,
    BYTES_SIGNATURE,
    CLASS_NAMES_ASSET,
    DEFAULT_SIGNATURE,
    IMAGES_INPUT,
)
from kerasdl.serving.errors import tensorflow_message


def resolve_version_dir(path: str | Path) -> Path:
    """A version folder as given, or a model folder's highest complete version.

    A version folder without ``saved_model.pb`` (one still being copied in) is passed over, as
    ``kerasdl serve`` passes it over.
    """
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return path
    folders = version_folders(path)
    for version in sorted(folders, reverse=True):
        if (folders[version] / "saved_model.pb").is_file():
            return folders[version]
    raise UserError(f"No SavedModel in {path}: expected saved_models/<name>[/<version>].")


def _input_channels(loaded: Any) -> int:
    """The channel count the export's images have (its ``serving_default`` input), the count
    ``serving_bytes`` decodes to; 0 (each file's own) when the export does not say."""
    try:
        spec = loaded.signatures[DEFAULT_SIGNATURE].structured_input_signature[1][IMAGES_INPUT]
        channels = spec.shape[-1]
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        return 0
    return int(channels) if channels in (1, 3, 4) else 0


class Predictor:
    """An exported classifier, used from Python.

    Args:
        model_dir: a version folder or a model folder (highest version).

    Example:
        >>> Predictor("saved_models/digits").top_k(Path("seven.png").read_bytes(), k=3)
        [('7', 0.98), ('1', 0.01), ('9', 0.004)]
    """

    def __init__(self, model_dir: str | Path) -> None:
        import tensorflow as tf

        self.path = resolve_version_dir(model_dir)
        try:
            loaded = tf.saved_model.load(str(self.path))
        except Exception as err:  # noqa: BLE001 - a broken export is the user's file
            raise UserError(f"Cannot load the SavedModel {self.path}: {err}") from err
        if BYTES_SIGNATURE not in loaded.signatures:
            raise UserError(
                f"{self.path} has no '{BYTES_SIGNATURE}' signature (not a kerasdl export)."
            )
        self._loaded = loaded
        self._fn = loaded.signatures[BYTES_SIGNATURE]
        self.channels = _input_channels(loaded)
        names_file = self.path / "assets" / CLASS_NAMES_ASSET
        self.class_names = names_file.read_text().splitlines() if names_file.is_file() else []

    def probabilities(self, data: bytes, label: str = "image") -> np.ndarray:
        """Class probabilities for one encoded image; a corrupt image raises UserError."""
        import tensorflow as tf

        from kerasdl.data.decode import decode_image

        try:  # decoded as the signature decodes it, for one clear line when it cannot be
            decode_image(data, self.channels)
            out = self._fn(**{BYTES_INPUT: tf.constant([data])})
        except tf.errors.InvalidArgumentError as err:
            reason = tensorflow_message(err.message) or "not an image"
            raise UserError(f"Cannot decode image {label}: {reason}") from err
        return out["probabilities"].numpy()[0]

    def top_k(self, data: bytes, k: int = 5, label: str = "image") -> list[tuple[str, float]]:
        """The ``k`` most probable ``(class_name, probability)`` pairs, best first."""
        probs = self.probabilities(data, label)
        order = np.argsort(-probs)[:k]
        names = self.class_names or [str(i) for i in range(len(probs))]
        return [(names[i], float(probs[i])) for i in order]
