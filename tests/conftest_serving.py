"""Shared, cached artifacts for the export and serving tests (built once per pytest process).

* :func:`digits_run` -- a run folder like ``kerasdl train`` writes: a small SimpleCNN trained for a
  few epochs on scikit-learn's 8x8 digits (``best.keras``), ``preprocess.json`` and ``config.yaml``.
* :func:`exported` -- that run exported as ``<base>/digits/1``.
* :func:`staged_version` -- a second, different model (the head biased towards class 0) exported to
  a staging folder, to be renamed into a served model folder (a version swap).
"""

from __future__ import annotations

import atexit
import functools
import http.client
import json
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

_ROOT = Path(tempfile.mkdtemp(prefix="kerasdl-serving-tests-"))
atexit.register(shutil.rmtree, _ROOT, True)

CLASS_NAMES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
]


@functools.cache
def digits_data() -> tuple[np.ndarray, np.ndarray]:
    """Digits as float32 (N, 8, 8, 1) pixels in [0, 1] and int labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype("float32")[..., None], d.target.astype("int64")


def digits_uint8(index: slice | list[int]) -> np.ndarray:
    """Digits as uint8 (N, 8, 8) grayscale, the way an image file holds them."""
    x, _ = digits_data()
    return np.round(x[index, ..., 0] * 255).astype("uint8")


def png_bytes(image: np.ndarray) -> bytes:
    """Encode a uint8 (H, W) or (H, W, 3) array as PNG."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


@functools.cache
def digits_run() -> Path:
    """Train a tiny SimpleCNN on digits and write a run folder."""
    import keras

    from kerasdl.data.preprocess import PreprocessSpec, preprocess_images
    from kerasdl.models.simple_cnn import SimpleCNN

    x, y = digits_data()
    spec = PreprocessSpec((8, 8), 1, [0.3], [0.4], list(CLASS_NAMES))
    keras.utils.set_random_seed(0)
    model = SimpleCNN(
        num_classes=10, input_shape=(8, 8, 1), filters=[8, 16], convs_per_stage=1, name="digits"
    )
    model.compile(
        keras.optimizers.Adam(5e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(preprocess_images(x, spec).numpy(), y, batch_size=64, epochs=4, verbose=0)
    run = _ROOT / "runs" / "digits" / "20260101-000000"
    run.mkdir(parents=True)
    model.save(run / "best.keras")
    spec.save(run / "preprocess.json")
    (run / "config.yaml").write_text("run:\n  name: digits\nmodel:\n  name: simple_cnn\n")
    return run


@functools.cache
def keras_model() -> Any:
    import keras

    return keras.saving.load_model(digits_run() / "best.keras")


@functools.cache
def exported() -> Path:
    """``<base>/digits/1`` exported from :func:`digits_run`; returns the version folder."""
    from kerasdl.data.preprocess import PreprocessSpec
    from kerasdl.export.saved_model import export_saved_model

    spec = PreprocessSpec.load(digits_run() / "preprocess.json")
    return export_saved_model(keras_model(), spec, _ROOT / "exported", "digits")


@functools.cache
def staged_version() -> Path:
    """A different model (head bias +20 on class 0: always predicts 'zero'), exported once."""
    import keras

    from kerasdl.data.preprocess import PreprocessSpec
    from kerasdl.export.saved_model import export_saved_model

    model = keras.saving.load_model(digits_run() / "best.keras")
    head = model.get_layer("head")
    bias = head.bias.numpy()
    bias[0] += 20.0
    head.bias.assign(bias)
    spec = PreprocessSpec.load(digits_run() / "preprocess.json")
    return export_saved_model(model, spec, _ROOT / "staging", "digits", version=1)


def fresh_dir(name: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=_ROOT))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    raw: bytes | None = None,
    timeout: float = 60.0,
) -> tuple[int, Any]:
    """One HTTP request to the loopback server; returns (status, parsed JSON body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        text = resp.read()
        return resp.status, json.loads(text) if text else None
    finally:
        conn.close()
