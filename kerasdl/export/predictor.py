"""Load an exported SavedModel and classify encoded images with its ``serving_bytes`` signature."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from kerasdl.errors import UserError
from kerasdl.export.layout import version_folders
from kerasdl.export.saved_model import BYTES_INPUT, BYTES_SIGNATURE, CLASS_NAMES_ASSET


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
        names_file = self.path / "assets" / CLASS_NAMES_ASSET
        self.class_names = names_file.read_text().splitlines() if names_file.is_file() else []

    def probabilities(self, data: bytes, label: str = "image") -> np.ndarray:
        """Class probabilities for one encoded image; a corrupt image raises UserError."""
        import tensorflow as tf

        try:
            tf.io.decode_image(data, expand_animations=False)
        except tf.errors.InvalidArgumentError as err:
            reason = re.sub(r"\{\{.*?\}\}|\[Op:.*?\]", "", err.message).strip()
            raise UserError(f"Cannot decode image {label}: {reason or 'not an image'}") from err
        out = self._fn(**{BYTES_INPUT: tf.constant([data])})
        return out["probabilities"].numpy()[0]

    def top_k(self, data: bytes, k: int = 5, label: str = "image") -> list[tuple[str, float]]:
        """The ``k`` most probable ``(class_name, probability)`` pairs, best first."""
        probs = self.probabilities(data, label)
        order = np.argsort(-probs)[:k]
        names = self.class_names or [str(i) for i in range(len(probs))]
        return [(names[i], float(probs[i])) for i in order]
