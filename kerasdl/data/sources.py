"""Data sources: each returns raw train/val/test splits and the class names.

A source yields :class:`~kerasdl.data.raw.RawSplits`: unbatched ``tf.data.Dataset`` objects of
``(image, label)`` before any resizing. Sources are looked up by name in ``SOURCES``
(``data.source`` in a recipe).

* ``digits``: scikit-learn's bundled handwritten digits (Alpaydin & Kaynak 1998; 1,797 8x8 images,
  16 grey levels), split train/val/test by a stratified, seeded split.
* ``tfds``: any tensorflow-datasets name from ``data_dir``, streamed from its TFRecords
  (:mod:`kerasdl.data.tfds_source`); downloads only if ``download: true``.
* ``folder``: ``path/<class_name>/<image files>``, streamed from the file paths
  (:mod:`kerasdl.data.folder`); corrupt files are found before the first epoch.
* ``npz``: arrays ``x_train``, ``y_train`` (optional ``x_val``/``y_val``, ``x_test``/``y_test``).
* ``synthetic``: seeded random images and labels, for benchmarks.

The in-memory sources (digits, npz, synthetic) hold their arrays; the streamed ones (tfds,
folder) yield encoded bytes that :func:`kerasdl.data.load_data` decodes in parallel.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf

from kerasdl.config.schema import DataConfig
from kerasdl.data.folder import IMAGE_EXTENSIONS, load_folder_source
from kerasdl.data.raw import RawSplits, from_arrays, stratified_split
from kerasdl.data.tfds_source import load_tfds_source
from kerasdl.errors import UserError


def load_digits_source(cfg: DataConfig, seed: int) -> RawSplits:
    """scikit-learn's 8x8 digits as float32 in [0, 1] (16 grey levels), one channel."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    y = digits.target.astype("int64")
    return from_arrays(x, y, cfg, seed, [str(c) for c in digits.target_names])


def load_npz_source(cfg: DataConfig, seed: int) -> RawSplits:
    """Arrays from an ``.npz`` file: ``x_train``/``y_train`` and optional val/test pairs."""
    path = Path(cfg.path or "")
    if not path.is_file():
        raise UserError(f"data.path: npz file not found: {path}")
    try:
        arrays = dict(np.load(path, allow_pickle=False))
    except (OSError, ValueError) as err:
        raise UserError(f"data.path: cannot read {path} as .npz: {err}") from None
    if "x_train" not in arrays or "y_train" not in arrays:
        raise UserError(
            f"data.path: {path} must hold arrays x_train and y_train. Found: {sorted(arrays)}"
        )
    x = arrays["x_train"]
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise UserError(f"data.path: x_train must be (N, H, W[, C]). Received shape {x.shape}")
    y = arrays["y_train"].reshape(-1).astype("int64")
    names = [str(n) for n in arrays["class_names"]] if "class_names" in arrays else None
    num_classes = int(max(y.max(), *(arrays[k].max() for k in arrays if k.startswith("y_")))) + 1
    names = names or [str(i) for i in range(num_classes)]
    if "x_test" not in arrays and "x_val" not in arrays:
        return from_arrays(x, y, cfg, seed, names)
    splits = {"train": (x, y)}
    for split in ("val", "test"):
        if f"x_{split}" in arrays:
            xs = arrays[f"x_{split}"]
            splits[split] = (xs[..., None] if xs.ndim == 3 else xs, arrays[f"y_{split}"])
    if "val" not in splits and cfg.val_split > 0:
        parts = stratified_split(y, cfg.val_split, 0.0, seed)
        splits["train"] = (x[parts["train"]], y[parts["train"]])
        splits["val"] = (x[parts["val"]], y[parts["val"]])
    datasets = {
        k: tf.data.Dataset.from_tensor_slices((a, b.reshape(-1).astype("int64")))
        for k, (a, b) in splits.items()
    }
    labels = {k: b.reshape(-1).astype("int64") for k, (_, b) in splits.items()}
    sizes = {k: len(a) for k, (a, _) in splits.items()}
    return RawSplits(datasets, names, tuple(x.shape[1:]), sizes, labels=labels.__getitem__)


def load_synthetic_source(cfg: DataConfig, seed: int) -> RawSplits:
    """Seeded uniform random images and labels of the configured size (default 32x32x3)."""
    h, w = cfg.size_tuple() or (32, 32)
    c = cfg.channels or 3
    n, k = cfg.synthetic.num_examples, cfg.synthetic.num_classes
    rng = np.random.default_rng(seed)
    x = rng.random((n, h, w, c), dtype=np.float32)
    y = rng.integers(0, k, n).astype("int64")
    y[:k] = np.arange(k)  # every class present, so stratification works
    return from_arrays(x, y, cfg, seed, [f"class_{i}" for i in range(k)])


SOURCES: dict[str, Callable[[DataConfig, int], RawSplits]] = {
    "digits": load_digits_source,
    "tfds": load_tfds_source,
    "folder": load_folder_source,
    "npz": load_npz_source,
    "synthetic": load_synthetic_source,
}

__all__ = ["IMAGE_EXTENSIONS", "SOURCES", "RawSplits", "stratified_split"]
