"""SavedModel export with TF-Serving signatures (``keras.export.ExportArchive``).

Two signatures, both returning the same three outputs:

* ``serving_default`` -- input ``images``: float32 ``(batch, H, W, C)`` pixels in ``[0, 1]``
  (uint8 / 255) at the training input size and channel count, *before* standardization; the
  signature standardizes with the run's mean/std itself.
* ``serving_bytes`` -- input ``image_bytes``: a batch of encoded JPEG/PNG/GIF/BMP/WebP strings; the
  graph decodes each to the training channel count with
  :func:`kerasdl.data.decode.decode_image` (the ``folder`` data source's decoder), resizes,
  converts and standardizes it.

Both call :func:`kerasdl.data.preprocess.preprocess_images`, the function the training pipeline
uses, so serving sees exactly the training preprocessing. Outputs: ``probabilities`` float32
``(batch, classes)`` (softmax of the logits), ``class_id`` int64 ``(batch,)`` (the top class) and
``class_name`` string ``(batch,)``. Class names travel as the asset ``assets/class_names.txt`` (one
per line, read by a lookup table in the graph); the preprocessing spec is copied to
``assets.extra/preprocess.json`` (TF Serving's folder for extra files).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import tensorflow as tf

from kerasdl.data.decode import decode_image
from kerasdl.data.preprocess import PreprocessSpec, preprocess_images
from kerasdl.errors import UserError
from kerasdl.export.layout import atomic_version_dir, free_version
from kerasdl.export.source import check_name, resolve_source

DEFAULT_SIGNATURE = "serving_default"
BYTES_SIGNATURE = "serving_bytes"
IMAGES_INPUT = "images"
BYTES_INPUT = "image_bytes"
CLASS_NAMES_ASSET = "class_names.txt"
EXTRA_DIR = "assets.extra"


def _class_names(spec: PreprocessSpec, num_classes: int) -> list[str]:
    names = list(spec.class_names) or [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise UserError(
            f"preprocess.json lists {len(names)} class names but the model has {num_classes} "
            "outputs."
        )
    bad = [n for n in names if "\n" in n or "\r" in n or not n]
    if bad:
        raise UserError(f"Class names must be non-empty single lines. Received: {bad[:3]}")
    return names


def _check_model(model: Any, spec: PreprocessSpec) -> int:
    in_shape = tuple(model.inputs[0].shape[1:]) if getattr(model, "inputs", None) else None
    if in_shape is not None and None not in in_shape and in_shape != spec.input_shape:
        raise UserError(
            f"The model takes inputs of shape {in_shape} but preprocess.json says "
            f"{spec.input_shape}."
        )
    out_shape = tuple(model.outputs[0].shape)
    if len(out_shape) != 2 or out_shape[-1] is None:
        raise UserError(f"Expected a classifier with (batch, classes) logits. Got {out_shape}.")
    return int(out_shape[-1])


def build_archive(model: Any, spec: PreprocessSpec, asset_dir: str | Path) -> Any:
    """An ``ExportArchive`` holding ``model`` with the two serving signatures.

    Args:
        model: a Keras classifier returning logits ``(batch, classes)``.
        spec: the preprocessing the model was trained with.
        asset_dir: a folder where the class-names asset file is written before export.
    """
    import keras

    num_classes = _check_model(model, spec)
    names = _class_names(spec, num_classes)
    asset = Path(asset_dir) / CLASS_NAMES_ASSET
    asset.write_text("\n".join(names) + "\n")
    table = tf.lookup.StaticHashTable(
        tf.lookup.TextFileInitializer(
            str(asset),
            key_dtype=tf.int64,
            key_index=tf.lookup.TextFileIndex.LINE_NUMBER,
            value_dtype=tf.string,
            value_index=tf.lookup.TextFileIndex.WHOLE_LINE,
        ),
        default_value="",
    )
    h, w, c = spec.input_shape

    def head(x: tf.Tensor) -> dict[str, tf.Tensor]:
        logits = model(x, training=False)
        probs = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
        ids = tf.argmax(probs, axis=-1, output_type=tf.int64)
        return {"probabilities": probs, "class_id": ids, "class_name": table.lookup(ids)}

    def decode(data: tf.Tensor) -> tf.Tensor:
        return preprocess_images(decode_image(data, c), spec)

    def serve_images(images: tf.Tensor) -> dict[str, tf.Tensor]:
        return head(preprocess_images(images, spec))

    def serve_bytes(image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        spec_out = tf.TensorSpec((h, w, c), tf.float32)
        return head(tf.map_fn(decode, image_bytes, fn_output_signature=spec_out))

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(table)
    archive.add_endpoint(
        DEFAULT_SIGNATURE,
        serve_images,
        input_signature=[tf.TensorSpec((None, h, w, c), tf.float32, name=IMAGES_INPUT)],
    )
    archive.add_endpoint(
        BYTES_SIGNATURE,
        serve_bytes,
        input_signature=[tf.TensorSpec((None,), tf.string, name=BYTES_INPUT)],
    )
    return archive


def export_saved_model(
    model: Any,
    spec: PreprocessSpec,
    out: str | Path,
    name: str,
    version: int | None = None,
) -> Path:
    """Export ``model`` to ``out/name/version/`` (TF Serving layout), atomically.

    Args:
        model: a Keras classifier returning logits.
        spec: its preprocessing spec (input size, channels, mean/std, class names).
        out: the model base folder (``saved_models``).
        name: the model name (folder and URL name).
        version: the version number; default: one more than the highest existing one.

    Returns:
        The version folder written.

    Example:
        >>> export_saved_model(model, spec, "saved_models", "digits")
        PosixPath('saved_models/digits/1')
    """
    model_dir = Path(out) / check_name(name)
    version = free_version(model_dir, version)
    with tempfile.TemporaryDirectory(prefix="kerasdl-assets-") as asset_dir:
        archive = build_archive(model, spec, asset_dir)
        with atomic_version_dir(model_dir, version) as tmp:
            archive.write_out(str(tmp), verbose=False)
            extra = tmp / EXTRA_DIR
            extra.mkdir()
            (extra / "preprocess.json").write_text(json.dumps(spec.to_json(), indent=2))
    return model_dir / str(version)


def export_run(
    source: str | Path,
    out: str | Path = "saved_models",
    name: str | None = None,
    version: int | None = None,
) -> Path:
    """Export a run folder (or a ``.keras`` file with ``preprocess.json`` beside it).

    Args:
        source: ``RUN_DIR`` holding ``best.keras`` and ``preprocess.json``, or a ``.keras`` file.
        out: the model base folder.
        name: the model name; default from the run's ``config.yaml`` or folder name.
        version: the version; default the next free integer.
    """
    src = resolve_source(source)
    model = src.load_model()
    return export_saved_model(model, src.spec, out, name or src.default_name, version)
