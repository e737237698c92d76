"""Send images to a TF-Serving-compatible server (``kerasdl serve`` or TF Serving itself).

Usage::

    python apps/serve_client.py --model digits photo.jpg seven.png   # top class per image
    python apps/serve_client.py --smoke --url http://127.0.0.1:8501   # check a running server
    python apps/serve_client.py --smoke                               # train, export, serve, check

Images travel base64-encoded (``{"b64": ...}``) to the ``serving_bytes`` signature, which decodes,
resizes and normalizes them inside the model graph, so the client needs no preprocessing code.
The client uses only the standard library's HTTP client.

``--smoke`` checks a server end to end: model status and metadata, digits written as PNG files,
the two JPEG photographs scikit-learn ships (``load_sample_images``), float pixels through
``serving_default`` in the columnar format, and a broken request answered with 400. Without
``--url`` it first trains a small CNN on the digits for a few seconds, exports it to a temporary
folder and starts ``kerasdl serve`` on a free port.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse


class Client:
    """A minimal TF Serving REST client.

    Args:
        url: the server, e.g. ``http://127.0.0.1:8501``.
        timeout: seconds per request.
    """

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        parsed = urlparse(url)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 8501
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            data = None if body is None else json.dumps(body).encode()
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read() or b"null")
        finally:
            conn.close()

    def predict_images(self, model: str, images: list[bytes]) -> list[dict[str, Any]]:
        """Top class and probabilities for encoded images (JPEG/PNG/...)."""
        body = {
            "signature_name": "serving_bytes",
            "instances": [{"b64": base64.b64encode(b).decode("ascii")} for b in images],
        }
        status, answer = self.request("POST", f"/v1/models/{model}:predict", body)
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {answer.get('error') if answer else answer}")
        return answer["predictions"]


def _png(image: Any) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(image: Any) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise SystemExit(f"smoke: FAILED: {what}")
    print(f"smoke: {what}")


def smoke(client: Client, model: str) -> None:
    """Check a running server end to end; exits non-zero on the first failure."""
    import numpy as np
    from sklearn.datasets import load_digits, load_sample_images

    status, body = client.request("GET", f"/v1/models/{model}")
    _check(status == 200, f"model {model} status {body}")
    states = [s["state"] for s in body["model_version_status"]]
    _check("AVAILABLE" in states, "a version is AVAILABLE")
    status, meta = client.request("GET", f"/v1/models/{model}/metadata")
    sigs = meta["metadata"]["signature_def"]["signature_def"]
    _check(status == 200 and {"serving_default", "serving_bytes"} <= set(sigs), "both signatures")
    dims = sigs["serving_default"]["inputs"]["images"]["tensor_shape"]["dim"]
    h, w, c = (int(d["size"]) for d in dims[1:])

    digits = load_digits()
    pngs = [_png(np.round(im * 255 / 16).astype("uint8")) for im in digits.images[:10]]
    answers = client.predict_images(model, pngs)
    _check(len(answers) == 10, "10 digit PNGs answered")
    for a in answers:
        _check(abs(sum(a["probabilities"]) - 1.0) < 1e-4, f"PNG -> {a['class_name']!r}")
    correct = sum(
        str(a["class_name"]) == str(t) for a, t in zip(answers, digits.target, strict=False)
    )
    print(f"smoke: {correct}/10 digits right (names are the model's class names)")

    photos = [_jpeg(im) for im in load_sample_images().images]
    for a in client.predict_images(model, photos):
        _check(len(a["probabilities"]) > 0, f"JPEG photograph -> {a['class_name']!r}")

    pixels = np.random.default_rng(0).random((3, h, w, c)).round(3).tolist()
    status, body = client.request(
        "POST", f"/v1/models/{model}:predict", {"inputs": {"images": pixels}}
    )
    _check(status == 200 and len(body["outputs"]["class_id"]) == 3, "columnar float pixels")
    status, body = client.request("POST", f"/v1/models/{model}:predict", {"instances": "oops"})
    _check(status == 400 and "error" in body, f"bad request -> 400: {body.get('error')}")
    print("smoke: ok")


@contextlib.contextmanager
def _own_server(workdir: Path) -> Iterator[str]:
    """Train a small CNN on digits, export it and run ``kerasdl serve`` on a free port."""
    from kerasdl.cli import quiet_tensorflow

    quiet_tensorflow()
    import keras
    from sklearn.datasets import load_digits

    from kerasdl.data.preprocess import PreprocessSpec, preprocess_images
    from kerasdl.export import export_saved_model
    from kerasdl.models.simple_cnn import SimpleCNN

    d = load_digits()
    x = (d.images / 16.0).astype("float32")[..., None]
    spec = PreprocessSpec((8, 8), 1, [0.3], [0.4], [str(i) for i in range(10)])
    keras.utils.set_random_seed(0)
    model = SimpleCNN(10, (8, 8, 1), filters=[16, 32], convs_per_stage=1)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(preprocess_images(x, spec).numpy(), d.target, batch_size=64, epochs=5, verbose=0)
    export_saved_model(model, spec, workdir / "saved_models", "digits")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "kerasdl", "serve", str(workdir / "saved_models")]
    proc = subprocess.Popen(cmd + ["--port", str(port)], env={**os.environ})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("smoke: FAILED: the server did not start")
            with contextlib.suppress(OSError):
                if Client(url, timeout=2).request("GET", "/readyz")[0] == 200:
                    break
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="*", help="image files to classify")
    parser.add_argument("--url", help="server URL (default http://127.0.0.1:8501)")
    parser.add_argument("--model", default="digits", help="model name (default digits)")
    parser.add_argument("--smoke", action="store_true", help="check the server end to end")
    args = parser.parse_args(argv)
    if args.smoke:
        if args.url:
            smoke(Client(args.url), args.model)
            return 0
        with tempfile.TemporaryDirectory() as tmp, _own_server(Path(tmp)) as url:
            smoke(Client(url), "digits")
        return 0
    if not args.images:
        parser.error("give image files, or --smoke")
    client = Client(args.url or "http://127.0.0.1:8501")
    try:
        answers = client.predict_images(args.model, [Path(p).read_bytes() for p in args.images])
    except (OSError, RuntimeError) as err:
        print(f"serve_client: error: {err}", file=sys.stderr)
        return 2
    for path, a in zip(args.images, answers, strict=True):
        print(f"{path}: {a['class_name']} ({max(a['probabilities']):.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
