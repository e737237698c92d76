"""The ``folder`` source: ``path/<class_name>/<image files>``, streamed from the file paths.

The files are listed (sorted, so the order is the same on every machine), split by a stratified,
seeded split of their labels, and read and decoded in parallel as training consumes them
(:func:`kerasdl.data.decode.decode_split`); nothing is decoded into memory beforehand.

Corrupt files: with ``data.verify_images: true`` (the default) every file is decoded once before
training, in parallel and keeping nothing, so that a corrupt one is reported (and skipped, or
stops the run with ``on_corrupt: error``) before the first epoch, never halfway through one; what
the decoders print on file descriptor 2 becomes part of the one warning line. With
``verify_images: false`` nothing is read beforehand but one file (for the channel count), and a
file that fails while streaming is dropped (``skip``) or stops the run (``error``).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tensorflow as tf

from kerasdl.config.schema import DataConfig
from kerasdl.data.decode import decode_image
from kerasdl.data.raw import RawSplits, stratified_split
from kerasdl.errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
AUTOTUNE = tf.data.AUTOTUNE


def _decode_file(path: str, channels: int | None) -> np.ndarray:
    return decode_image(tf.io.read_file(path), channels or 0).numpy()


class _DecoderMessages:
    """Collects what image decoders print on file descriptor 2 while files are decoded.

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


def list_image_files(root: Path) -> tuple[list[str], list[int], list[str]]:
    """``(paths, labels, class_names)`` of ``root/<class>/<image>``, sorted by class and name."""
    if not root.is_dir():
        raise UserError(f"data.path: folder not found: {root}")
    class_names = sorted(
        d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")
    )
    if not class_names:
        raise UserError(f"data.path: {root} has no class sub-folders (expected path/<class>/*.png)")
    paths, labels = [], []
    for label, name in enumerate(class_names):
        for f in sorted((root / name).iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS:
                paths.append(str(f))
                labels.append(label)
    return paths, labels, class_names


def _decoded_shapes(paths: list[str], channels: int | None) -> dict[int, tuple[int, ...]]:
    """``{index: (H, W, C)}`` of the files that decode, decoded in parallel (nothing kept)."""

    def shape(i: tf.Tensor, path: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return i, tf.shape(decode_image(tf.io.read_file(path), channels or 0))

    ds = tf.data.Dataset.from_tensor_slices((np.arange(len(paths)), paths))
    ds = ds.map(shape, num_parallel_calls=AUTOTUNE, deterministic=False).ignore_errors()
    return {int(i): tuple(int(d) for d in s) for i, s in ds.as_numpy_iterator()}


def _verify(paths: list[str], channels: int | None, on_corrupt: str) -> dict[int, tuple]:
    """The shapes of the readable files; the unreadable ones reported, each with its reason
    (or the first one raised as a UserError with ``on_corrupt: error``)."""
    messages = _DecoderMessages()
    try:
        with messages.capture():  # the decoders' complaints; re-read per bad file below
            shapes = _decoded_shapes(paths, channels)
        skipped = []
        for i in (i for i in range(len(paths)) if i not in shapes):
            try:
                with messages.capture() as printed:
                    image = _decode_file(paths[i], channels)
                shapes[i] = image.shape  # decoded on a second try: keep it
                continue
            except (tf.errors.InvalidArgumentError, tf.errors.OpError) as err:
                reason = "; ".join(dict.fromkeys([_op_error_reason(err), *printed]))
                if on_corrupt == "error":
                    raise UserError(f"corrupt or unreadable image: {paths[i]} ({reason})") from err
                skipped.append(f"{paths[i]} ({reason})")
    finally:
        messages.close()
    for f in skipped:
        print(f"warning: skipped corrupt or unreadable image: {f}", file=sys.stderr)
    return shapes


def _first_shape(paths: list[str], channels: int | None) -> dict[int, tuple]:
    """The shape of the first readable file (``verify_images: false``)."""
    for i, path in enumerate(paths):
        try:
            return {i: _decode_file(path, channels).shape}
        except tf.errors.OpError:
            continue
    return {}


def load_folder_source(cfg: DataConfig, seed: int) -> RawSplits:
    """Class-per-subfolder images, streamed from their paths (see the module docstring).

    Images are resized to ``data.image_size`` (required when they differ in size) and decoded at
    ``data.channels`` (default: the files' own channel count, which must then be the same for
    all).
    """
    root = Path(cfg.path or "")
    paths, labels, class_names = list_image_files(root)
    if cfg.verify_images:
        shapes = _verify(paths, cfg.channels, cfg.on_corrupt)
        keep = sorted(shapes)
        paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]
    else:
        shapes = _first_shape(paths, cfg.channels)
    if not shapes:
        raise UserError(f"data.path: no readable images under {root}")
    sizes = {s[:2] for s in shapes.values()}
    if len(sizes) > 1 and cfg.size_tuple() is None:
        raise UserError(
            f"data.image_size: images under {root} differ in size ({len(sizes)} shapes); "
            "set data.image_size to resize them"
        )
    depths = {s[2] for s in shapes.values()}
    if len(depths) > 1:
        raise UserError(
            f"data.channels: images under {root} differ in channels ({sorted(depths)}); "
            "set data.channels to 1 or 3"
        )
    (h, w), (c,) = (sizes.pop() if len(sizes) == 1 else (None, None)), depths
    y = np.asarray(labels, dtype="int64")
    parts = stratified_split(y, cfg.val_split, cfg.test_split, seed)
    files = np.asarray(paths)

    def read(path: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return tf.io.read_file(path), label

    splits = {
        k: tf.data.Dataset.from_tensor_slices((files[v], y[v])).map(read, num_parallel_calls=8)
        for k, v in parts.items()
    }
    split_labels = {k: y[v] for k, v in parts.items()}
    return RawSplits(
        splits,
        class_names,
        (h if cfg.verify_images else None, w if cfg.verify_images else None, c),
        {k: len(v) for k, v in parts.items()},
        encoded=True,
        in_memory=False,
        labels=split_labels.__getitem__,
        skip_errors=not cfg.verify_images and cfg.on_corrupt == "skip",
    )
