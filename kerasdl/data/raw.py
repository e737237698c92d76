"""What every data source returns (:class:`RawSplits`) and the stratified split of labelled
examples that the in-memory sources and the folder source share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from kerasdl.config.schema import DataConfig
from kerasdl.errors import UserError


@dataclass
class RawSplits:
    """What a source yields: unbatched ``(image, label)`` datasets per split, the class names and
    the native image shape.

    Attributes:
        splits: ``train`` / ``val`` / ``test`` datasets of ``(image, int64 label)``: uint8
            ``(H, W, C)`` or float32 in [0, 1] when ``encoded`` is false, else encoded image
            bytes (decoded by :func:`kerasdl.data.decode.decode_split`).
        class_names: the label names, index = class id.
        image_shape: ``(H, W, C)``; ``H``/``W`` are None when the images vary in size.
        sizes: examples per split, where known without a pass over the data.
        encoded: the splits hold encoded bytes (streamed sources).
        in_memory: the source holds its examples in memory (no streaming).
        labels: ``labels(split)`` -> the split's labels in order, read without decoding images.
        skip_errors: drop examples that fail to decode while streaming (unverified folders).
    """

    splits: dict[str, tf.data.Dataset]
    class_names: list[str]
    image_shape: tuple
    sizes: dict[str, int] = field(default_factory=dict)
    encoded: bool = False
    in_memory: bool = True
    labels: Callable[[str], np.ndarray] | None = None
    skip_errors: bool = False


def stratified_split(
    labels: np.ndarray, val_split: float, test_split: float, seed: int
) -> dict[str, np.ndarray]:
    """Indices of a stratified, seeded train/val/test split (scikit-learn's splitter)."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    counts = np.bincount(labels)
    smallest = int(counts[counts > 0].min()) if len(labels) else 0
    for name, frac in (("data.test_split", test_split), ("data.val_split", val_split)):
        n_classes = int((counts > 0).sum())
        if frac > 0 and (round(frac * len(labels)) < n_classes or smallest < 3):
            raise UserError(
                f"{name} {frac}: too few images ({len(labels)}, at least {smallest} per class) "
                f"for a stratified split over {n_classes} classes; add images or lower {name}"
            )
    out: dict[str, np.ndarray] = {}
    rest = idx
    if test_split > 0:
        rest, out["test"] = train_test_split(
            idx, test_size=test_split, stratify=labels, random_state=seed
        )
    if val_split > 0:
        frac = val_split / (1.0 - test_split)
        rest, out["val"] = train_test_split(
            rest, test_size=frac, stratify=labels[rest], random_state=seed + 1
        )
    out["train"] = rest
    return out


def from_arrays(
    x: np.ndarray, y: np.ndarray, cfg: DataConfig, seed: int, class_names: list[str]
) -> RawSplits:
    """In-memory arrays split by :func:`stratified_split` (``data.val_split`` / ``test_split``)."""
    parts = stratified_split(y, cfg.val_split, cfg.test_split, seed)
    splits = {
        k: tf.data.Dataset.from_tensor_slices((x[v], y[v].astype("int64")))
        for k, v in parts.items()
    }
    sizes = {k: len(v) for k, v in parts.items()}
    labels = {k: y[v].astype("int64") for k, v in parts.items()}
    return RawSplits(splits, class_names, tuple(x.shape[1:]), sizes, labels=labels.__getitem__)
