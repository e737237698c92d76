"""What every data source returns (:class:`RawSplits`) and the stratified split of labelled
examples that the in-memory sources and the folder source share."""

from __future__ import annotations

import math
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
    """Indices of a stratified, seeded train/val/test split (scikit-learn's splitter).

    Raises:
        UserError: a split would hold fewer images than there are classes (each class needs one
            in every split), or a class has too few images to be in every split; the message
            names the split to change and which way.
    """
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    check_split_sizes(labels, val_split, test_split)
    out: dict[str, np.ndarray] = {}
    rest = idx
    try:
        if test_split > 0:
            rest, out["test"] = train_test_split(
                idx, test_size=test_split, stratify=labels, random_state=seed
            )
        if val_split > 0:
            frac = val_split / (1.0 - test_split)
            rest, out["val"] = train_test_split(
                rest, test_size=frac, stratify=labels[rest], random_state=(seed + 1) % 2**32
            )
    except ValueError as err:  # a case the sizes checked above do not foresee
        raise UserError(
            f"data.val_split {val_split}, data.test_split {test_split}: cannot split "
            f"{len(labels)} images stratified by class: {' '.join(str(err).split())}"
        ) from None
    out["train"] = rest
    return out


def split_sizes(n: int, val_split: float, test_split: float) -> dict[str, int]:
    """The number of examples in each split of :func:`stratified_split` (scikit-learn's rule: a
    split of fraction ``f`` of ``n`` holds ``ceil(f * n)``; val is split from what test leaves)."""
    n_test = math.ceil(test_split * n) if test_split > 0 else 0
    rest = n - n_test
    n_val = math.ceil(val_split / (1.0 - test_split) * rest) if val_split > 0 and rest else 0
    return {"train": rest - n_val, "val": n_val, "test": n_test}


def check_split_sizes(labels: np.ndarray, val_split: float, test_split: float) -> None:
    """Raise a one-line :class:`UserError` when :func:`stratified_split` cannot split ``labels``.

    Each split needs at least one image per class: a split too small is to be raised, a train
    split too small (what val and test leave) needs val or test lowered, and a class with fewer
    images than there are splits needs images (or fewer splits).
    """
    n = len(labels)
    if val_split <= 0 and test_split <= 0:
        return
    counts = np.bincount(labels) if n else np.zeros(0, dtype=int)
    n_classes = int((counts > 0).sum())
    smallest = int(counts[counts > 0].min()) if n else 0
    pairs = (("data.val_split", val_split), ("data.test_split", test_split))
    held_out = [(k, f) for k, f in pairs if f > 0]
    splits = ", ".join(f"{k} {f}" for k, f in held_out)
    sizes = split_sizes(n, val_split, test_split)
    if n == 0:
        raise UserError(f"{splits}: no images to split")
    if smallest < 1 + len(held_out):
        raise UserError(
            f"{splits}: too few images ({n}; the smallest of the {n_classes} classes has "
            f"{smallest}) for a stratified split, which needs one image per class in each of the "
            f"{1 + len(held_out)} splits; add images or set {' or '.join(k for k, _ in held_out)} "
            "to 0"
        )
    for key, frac in reversed(held_out):  # test, then val: the order they are split off
        split = key.removeprefix("data.").removesuffix("_split")
        if sizes[split] < n_classes:
            least = math.ceil(n_classes / n * 1e4) / 1e4
            raise UserError(
                f"{key} {frac}: the {split} split would hold {sizes[split]} of the {n} images, "
                f"too few for a stratified split over {n_classes} classes (one image per class); "
                f"raise {key} (to about {least} or more) or set it to 0"
            )
    if sizes["train"] < n_classes:
        raise UserError(
            f"{splits}: training would keep {sizes['train']} of the {n} images, too few for a "
            f"stratified split over {n_classes} classes (one image per class); lower "
            f"{' or '.join(k for k, _ in held_out)}"
        )


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
