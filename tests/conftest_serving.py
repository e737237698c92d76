"""Shared, cached artifacts for the export and serving tests (built once per pytest process).

* :func:`digits_run` -- a run folder like ``kerasdl train`` writes: a small SimpleCNN trained for a
  few epochs on scikit-learn's 8x8 digits (``best.keras``), ``preprocess.json`` and ``config.yaml``.
* :func:`exported` -- that run exported as ``<base>/digits/1``.
* :func:`staged_version` -- a second, different model (the head biased towards class 0) exported to
  a staging folder, to be renamed into a served model folder (a version swap).
* :func:`tiny` -- a tiny SavedModel whose only output is the number it was built with.

And the helpers the serving tests share: :func:`model_base` (a fresh base serving the exported
digits model), :func:`free_port`, :func:`call` (one raw HTTP request), :func:`wait_until`,
:class:`UvicornThread` (an app served in a thread), :func:`start_serve` and :func:`wait_ready`
(``kerasdl serve`` in a subprocess, and waiting until it is ready).
"""

from __future__ import annotations

import atexit
import functools
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
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


@functools.cache
def tiny(value: int) -> Path:
    """A SavedModel whose ``serving_default`` maps x (N, 2) to {"version": value} per row."""
    import tensorflow as tf

    class Tiny(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.value = tf.Variable(float(value))

        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32)], autograph=False)
        def serve(self, x):
            return {"version": tf.reduce_sum(x, axis=1) * 0.0 + self.value}

    module = Tiny()
    path = fresh_dir(f"tiny-{value}") / "model"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def fresh_dir(name: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=_ROOT))
    return path


def model_base(name: str) -> Path:
    """A fresh model base folder serving :func:`exported` as ``digits/1``."""
    base = fresh_dir(name)
    shutil.copytree(exported(), base / "digits" / "1")
    return base


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


def wait_until(
    cond: Callable[[], bool], what: str, timeout: float = 60.0, poll: float = 0.02
) -> None:
    """Poll ``cond`` every ``poll`` seconds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll)


class UvicornThread:
    """uvicorn serving ``app`` in a thread on a free loopback port (``self.port``)."""

    def __init__(self, app: Any, start_timeout: float = 60.0, stop_timeout: float = 30.0) -> None:
        import uvicorn

        self.port = free_port()
        self.app = app
        self.start_timeout, self.stop_timeout = start_timeout, stop_timeout
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Any:
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=self.stop_timeout)


class InProcessServer(UvicornThread):
    """uvicorn serving the model repository ``base`` in a thread on a free loopback port."""

    def __init__(self, base: Path, config: Any, poll: float = 0.1) -> None:
        from kerasdl.serving.app import create_app
        from kerasdl.serving.repository import ModelRepository

        super().__init__(create_app(ModelRepository(base, poll_interval=poll), config))


def serve_env() -> dict[str, str]:
    """The environment of a server subprocess: quiet TensorFlow, this checkout importable."""
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}


def serve_command(base: Path, port: int, *options: str) -> list[str]:
    """``python -m kerasdl serve BASE --port PORT [options]``."""
    return [sys.executable, "-m", "kerasdl", "serve", str(base), "--port", str(port), *options]


def start_serve(base: Path, port: int, *options: str) -> subprocess.Popen:
    """``kerasdl serve`` in a subprocess, its stdout and stderr on ``proc.stdout``."""
    return subprocess.Popen(
        serve_command(base, port, *options),
        env=serve_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def wait_ready(
    port: int,
    proc: subprocess.Popen,
    timeout: float,
    output: Callable[[], str] | None = None,
) -> None:
    """Wait until the server process on ``port`` answers ``/readyz`` with 200.

    Fails if the process exits (with the tail of ``output()``, by default its stdout) or after
    ``timeout`` seconds.
    """
    if output is None:

        def output() -> str:
            return proc.stdout.read().decode()[-2000:]

    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, output()
        assert time.monotonic() < deadline, "server not ready"
        try:
            if call(port, "GET", "/readyz", timeout=2)[0] == 200:
                break
        except OSError:
            pass
        time.sleep(0.2)
