"""Data sources: each returns raw train/val/test splits and the class names.

A source yields ``RawSplits``: unbatched ``tf.data.Dataset`` objects of ``(image, label)`` with
images uint8 ``(H, W, C)`` (or float32 in [0, 1]) and int64 labels, before any resizing. Sources
are looked up by name in ``SOURCES`` (``data.source`` in a recipe).

* ``digits``: scikit-learn's bundled handwritten digits (Alpaydin & Kaynak 1998; 1,797 8x8 images,
  16 grey levels), split train/val/test by a stratified, seeded split.
* ``tfds``: any tensorflow-datasets name from ``data_dir``; downloads only if ``download: true``.
* ``folder``: ``path/<class_name>/<image files>``; every file is decoded once before training, so
  a corrupt image is reported (and skipped, or stops the run with ``on_corrupt: error``) before the
  first epoch, never halfway through one.
* ``npz``: arrays ``x_train``, ``y_train`` (optional ``x_val``/``y_val``, ``x_test``/``y_test``).
* ``synthetic``: seeded random images and labels, for benchmarks.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf

from kerasdl.config import DataConfig
from kerasdl.errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


@dataclass
class RawSplits:
    """Unbatched (image, label) datasets per split, the class names and the native image shape."""

    splits: dict[str, tf.data.Dataset]
    class_names: list[str]
    image_shape: tuple[int, int, int]
    sizes: dict[str, int] = field(default_factory=dict)


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


def _from_arrays(
    x: np.ndarray, y: np.ndarray, cfg: DataConfig, seed: int, class_names: list[str]
) -> RawSplits:
    parts = stratified_split(y, cfg.val_split, cfg.test_split, seed)
    splits = {
        k: tf.data.Dataset.from_tensor_slices((x[v], y[v].astype("int64")))
        for k, v in parts.items()
    }
    return RawSplits(splits, class_names, tuple(x.shape[1:]), {k: len(v) for k, v in parts.items()})


def load_digits_source(cfg: DataConfig, seed: int) -> RawSplits:
    """scikit-learn's 8x8 digits as float32 in [0, 1] (16 grey levels), one channel."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    y = digits.target.astype("int64")
    return _from_arrays(x, y, cfg, seed, [str(c) for c in digits.target_names])


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
        return _from_arrays(x, y, cfg, seed, names)
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
    return RawSplits(
        datasets, names, tuple(x.shape[1:]), {k: len(a) for k, (a, _) in splits.items()}
    )


def load_synthetic_source(cfg: DataConfig, seed: int) -> RawSplits:
    """Seeded uniform random images and labels of the configured size (default 32x32x3)."""
    h, w = cfg.size_tuple() or (32, 32)
    c = cfg.channels or 3
    n, k = cfg.synthetic.num_examples, cfg.synthetic.num_classes
    rng = np.random.default_rng(seed)
    x = rng.random((n, h, w, c), dtype=np.float32)
    y = rng.integers(0, k, n).astype("int64")
    y[:k] = np.arange(k)  # every class present, so stratification works
    return _from_arrays(x, y, cfg, seed, [f"class_{i}" for i in range(k)])


def _decode_file(path: str, channels: int | None) -> np.ndarray:
    data = tf.io.read_file(path)
    image = tf.io.decode_image(data, channels=channels or 0, expand_animations=False)
    return image.numpy()


class _DecoderMessages:
    """Collects what image decoders print on file descriptor 2 while a file is decoded.

    libjpeg reports a corrupt file by printing straight to the C ``stderr`` ("Unsupported marker
    type 0x20", "Input file read error", ...) besides failing: those lines would precede and
    repeat the one warning the folder source prints. Each decode runs with fd 2 pointed at a
    temporary file; the text it wrote becomes part of that warning.
    """

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile()
        self._offset = 0

    @contextlib.contextmanager
    def capture(self) -> Iterator[list[str]]:
        """``with messages.capture() as text:`` ``text`` holds the lines printed meanwhile."""
        text: list[str] = []
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(self._file.fileno(), 2)
        try:
            yield text
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            self._file.seek(self._offset)
            new = self._file.read()
            self._offset += len(new)
            lines = new.decode(errors="replace").splitlines()
            text.extend(ln.strip() for ln in lines if ln.strip())

    def close(self) -> None:
        self._file.close()


def _op_error_reason(err: tf.errors.OpError) -> str:
    """TensorFlow's message without the op and device decoration."""
    msg = " ".join(str(getattr(err, "message", err)).split())
    msg = msg.split("}}", 1)[-1].split(" [Op:", 1)[0].strip()
    return msg or type(err).__name__


def load_folder_source(cfg: DataConfig, seed: int) -> RawSplits:
    """Class-per-subfolder images; every file is checked before training starts.

    A file that cannot be decoded is reported on stderr and skipped (``on_corrupt: skip``) or stops
    the run (``on_corrupt: error``). Images are resized to ``data.image_size`` (required when the
    images differ in size).
    """
    root = Path(cfg.path or "")
    if not root.is_dir():
        raise UserError(f"data.path: folder not found: {root}")
    class_names = sorted(
        d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")
    )
    if not class_names:
        raise UserError(f"data.path: {root} has no class sub-folders (expected path/<class>/*.png)")
    size = cfg.size_tuple()
    images, labels, skipped = [], [], []
    messages = _DecoderMessages()
    try:
        for label, name in enumerate(class_names):
            for f in sorted((root / name).iterdir()):
                if not f.is_file() or f.suffix.lower() not in IMAGE_EXTENSIONS:
                    continue
                try:
                    with messages.capture() as printed:
                        image = _decode_file(str(f), cfg.channels)
                except (tf.errors.InvalidArgumentError, tf.errors.OpError) as err:
                    reason = "; ".join(dict.fromkeys([_op_error_reason(err), *printed]))
                    if cfg.on_corrupt == "error":
                        raise UserError(f"corrupt or unreadable image: {f} ({reason})") from err
                    skipped.append(f"{f} ({reason})")
                    continue
                if size is not None and image.shape[:2] != size:
                    image = tf.cast(tf.image.resize(image, size, antialias=True), tf.uint8).numpy()
                images.append(image)
                labels.append(label)
    finally:
        messages.close()
    for f in skipped:
        print(f"warning: skipped corrupt or unreadable image: {f}", file=sys.stderr)
    if not images:
        raise UserError(f"data.path: no readable images under {root}")
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise UserError(
            f"data.image_size: images under {root} differ in size ({len(shapes)} shapes); "
            "set data.image_size to resize them"
        )
    x = np.stack(images)
    y = np.asarray(labels, dtype="int64")
    return _from_arrays(x, y, cfg, seed, class_names)


def load_tfds_source(cfg: DataConfig, seed: int) -> RawSplits:
    """A tensorflow-datasets dataset read from ``data_dir`` (prepared beforehand).

    Uses the dataset's own ``train``/``validation``/``test`` splits where they exist; a missing
    validation (or test) split is carved from train with ``val_split`` (``test_split``).
    """
    import tensorflow_datasets as tfds

    name = cfg.name or ""
    try:
        builder = tfds.builder(name, data_dir=cfg.data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise UserError(
            f"data.name: unknown tensorflow-datasets name {name!r} "
            f"(see tfds.list_builders(); {len(tfds.list_builders())} known)"
        ) from None
    if cfg.download:
        builder.download_and_prepare()
    where = cfg.data_dir or os.path.expanduser("~/tensorflow_datasets")
    not_prepared = UserError(
        f"tfds dataset {name!r} is not prepared in {where}; prepare it there, or set "
        "data.download: true where the network allows it"
    )
    try:  # as_dataset, not is_prepared(): it also honours tfds.testing.mock_data
        builder.as_dataset(split="train")
    except (AssertionError, FileNotFoundError, tf.errors.NotFoundError, ValueError):
        raise not_prepared from None
    info = builder.info
    image_key = next(
        (k for k, v in info.features.items() if isinstance(v, tfds.features.Image)), None
    )
    if image_key is None or "label" not in info.features:
        raise UserError(f"tfds dataset {name!r} has no image and label features")
    label_feature = info.features["label"]
    class_names = list(label_feature.names)
    available = set(info.splits.keys())
    if not available:  # no metadata (e.g. tfds.testing.mock_data): probe the usual split names
        for split in ("train", "validation", "test"):
            try:
                builder.as_dataset(split=split)
                available.add(split)
            except (AssertionError, KeyError, ValueError, tf.errors.NotFoundError):
                continue
    wanted = {"train": "train", "val": "validation", "test": "test"}
    split_names: dict[str, str] = {}
    if "train" not in available:
        raise UserError(f"tfds dataset {name!r} has no train split. Found: {sorted(available)}")
    missing = [k for k, v in wanted.items() if k != "train" and v not in available]
    train_pct = 100
    carve: dict[str, tuple[int, int]] = {}
    fractions = {"val": cfg.val_split, "test": cfg.test_split}
    for k in missing:
        pct = int(round(100 * fractions[k]))
        if pct > 0:
            carve[k] = (train_pct - pct, train_pct)
            train_pct -= pct
    split_names["train"] = f"train[:{train_pct}%]" if train_pct < 100 else "train"
    for k, v in wanted.items():
        if k == "train":
            continue
        if v in available:
            split_names[k] = v
        elif k in carve:
            a, b = carve[k]
            split_names[k] = f"train[{a}%:{b}%]"

    def fix(ds: tf.data.Dataset) -> tf.data.Dataset:
        return ds.map(lambda ex: (ex[image_key], tf.cast(ex["label"], tf.int64)))

    splits = {
        k: fix(builder.as_dataset(split=s, shuffle_files=False)) for k, s in split_names.items()
    }
    shape = info.features[image_key].shape
    try:
        sizes = {k: int(info.splits[s].num_examples) for k, s in split_names.items()}
    except (KeyError, ValueError):
        sizes = {}
    return RawSplits(splits, class_names, tuple(shape), sizes)


SOURCES: dict[str, Callable[[DataConfig, int], RawSplits]] = {
    "digits": load_digits_source,
    "tfds": load_tfds_source,
    "folder": load_folder_source,
    "npz": load_npz_source,
    "synthetic": load_synthetic_source,
}
