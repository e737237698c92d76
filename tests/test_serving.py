"""The model server: every endpoint and bad input, hot swap under load, batching, SIGTERM."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest_serving import (
    CLASS_NAMES,
    InProcessServer,
    call,
    digits_data,
    digits_uint8,
    exported,
    free_port,
    fresh_dir,
    model_base,
    png_bytes,
    staged_version,
    start_serve,
    wait_ready,
)

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from kerasdl.serving.app import ServerConfig  # noqa: E402
from kerasdl.serving.batcher import Batcher  # noqa: E402
from kerasdl.serving.codec import COLUMNAR, ROW, encode_predict  # noqa: E402
from kerasdl.serving.fast_json import fast_decode  # noqa: E402
from kerasdl.serving.repository import ModelRepository  # noqa: E402

MAX_BODY = 64 * 1024
MAX_BATCH = 16
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server():
    config = ServerConfig(max_body_bytes=MAX_BODY, max_batch=MAX_BATCH)
    with InProcessServer(model_base("endpoints"), config) as srv:
        yield srv


def _images(n: int, start: int = 0) -> list:
    x, _ = digits_data()
    return x[start : start + n].tolist()


def _b64_png(i: int) -> dict:
    return {"b64": base64.b64encode(png_bytes(digits_uint8([i])[0])).decode()}


# --- status, metadata, health ---------------------------------------------------------------


def test_status_metadata_and_health(server):
    p = server.port
    ok = {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    assert call(p, "GET", "/v1/models/digits") == (200, {"model_version_status": [ok]})
    assert call(p, "GET", "/v1/models/digits/versions/1") == (200, {"model_version_status": [ok]})
    status, meta = call(p, "GET", "/v1/models/digits/metadata")
    assert status == 200
    assert meta["model_spec"] == {"name": "digits", "signature_name": "", "version": "1"}
    sigs = meta["metadata"]["signature_def"]["signature_def"]
    # TF Serving lists the SavedModel's whole signature_def map, the init op's entry included.
    assert set(sigs) == {"serving_default", "serving_bytes", "__saved_model_init_op"}
    images = sigs["serving_default"]["inputs"]["images"]
    assert images["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in images["tensor_shape"]["dim"]] == ["-1", "8", "8", "1"]
    assert sigs["serving_bytes"]["inputs"]["image_bytes"]["dtype"] == "DT_STRING"
    assert set(sigs["serving_default"]["outputs"]) == {"probabilities", "class_id", "class_name"}
    assert sigs["serving_default"]["method_name"] == "tensorflow/serving/predict"
    assert call(p, "GET", "/v1/models/digits/versions/1/metadata")[1] == meta
    assert call(p, "GET", "/healthz") == (200, {"status": "alive"})
    assert call(p, "GET", "/v2/health/live")[0] == 200
    status, ready = call(p, "GET", "/readyz")
    assert status == 200 and "digits" in ready["detail"]
    status, models = call(p, "GET", "/v1/models")
    assert status == 200 and models["models"][0]["served_version"] == "1"


# --- predict --------------------------------------------------------------------------------


def test_predict_row_and_columnar_match_the_model(server):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(exported()))
    x, _ = digits_data()
    want = loaded.signatures["serving_default"](images=tf.constant(x[:3]))
    want_p = want["probabilities"].numpy()
    status, body = call(server.port, "POST", "/v1/models/digits:predict", {"instances": _images(3)})
    assert status == 200 and len(body["predictions"]) == 3
    for row, p in zip(body["predictions"], want_p, strict=True):
        assert set(row) == {"probabilities", "class_id", "class_name"}
        np.testing.assert_allclose(row["probabilities"], p, atol=1e-6)
        assert row["class_id"] == int(p.argmax())
        assert row["class_name"] == CLASS_NAMES[int(p.argmax())]
    status, body = call(
        server.port,
        "POST",
        "/v1/models/digits/versions/1:predict",
        {"signature_name": "serving_default", "inputs": {"images": _images(3)}},
    )
    assert status == 200 and set(body["outputs"]) == {"probabilities", "class_id", "class_name"}
    np.testing.assert_allclose(body["outputs"]["probabilities"], want_p, atol=1e-6)
    assert body["outputs"]["class_id"] == want_p.argmax(-1).tolist()
    # Columnar with a bare tensor for the single input; row with {input_name: value} objects.
    assert call(server.port, "POST", "/v1/models/digits:predict", {"inputs": _images(3)})[0] == 200
    rows = [{"images": im} for im in _images(2)]
    assert call(server.port, "POST", "/v1/models/digits:predict", {"instances": rows})[0] == 200


def test_a_large_float_batch_takes_the_fast_path_with_the_same_answer(server, monkeypatch):
    import tensorflow as tf

    from kerasdl.serving import app as app_module

    taken = []

    def spy(*args):
        taken.append(fast_decode(*args))
        return taken[-1]

    monkeypatch.setattr(app_module, "fast_decode", spy)
    x, _ = digits_data()
    loaded = tf.saved_model.load(str(exported()))
    want = loaded.signatures["serving_default"](images=tf.constant(x[:MAX_BATCH]))
    body = {"instances": _images(MAX_BATCH)}
    status, answer = call(server.port, "POST", "/v1/models/digits:predict", body)
    assert status == 200 and taken and taken[-1] is not None  # ~20 KB of numbers
    got = np.array([row["probabilities"] for row in answer["predictions"]])
    np.testing.assert_allclose(got, want["probabilities"].numpy(), atol=1e-6)
    body["instances"][3][2][1] = []  # ragged: the general path answers, with its 400
    status, answer = call(server.port, "POST", "/v1/models/digits:predict", body)
    assert status == 400 and "ragged" in answer["error"] and taken[-1] is None


def test_predict_bytes_signature_with_b64(server):
    x, _ = digits_data()
    images = [_b64_png(i) for i in range(4)]
    req = {"signature_name": "serving_bytes", "instances": images}
    status, by_bytes = call(server.port, "POST", "/v1/models/digits:predict", req)
    assert status == 200
    pixels = (digits_uint8(slice(0, 4)) / 255.0)[..., None].tolist()
    _, by_floats = call(server.port, "POST", "/v1/models/digits:predict", {"instances": pixels})
    for a, b in zip(by_bytes["predictions"], by_floats["predictions"], strict=True):
        np.testing.assert_allclose(a["probabilities"], b["probabilities"], atol=1e-5)
        assert a["class_name"] == b["class_name"]
    req = {"signature_name": "serving_bytes", "inputs": {"image_bytes": images}}
    status, body = call(server.port, "POST", "/v1/models/digits:predict", req)
    assert status == 200 and len(body["outputs"]["class_name"]) == 4


def test_response_shapes_follow_tf_serving():
    one = {"scores": np.array([[0.5, 0.5], [1.0, 0.0]], dtype="float32")}
    assert encode_predict(one, ROW) == b'{"predictions":[[0.5,0.5],[1.0,0.0]]}'
    assert encode_predict(one, COLUMNAR) == b'{"outputs":[[0.5,0.5],[1.0,0.0]]}'
    two = {**one, "label": np.array([b"a", b"b"], dtype=object)}
    assert encode_predict(two, ROW) == (
        b'{"predictions":[{"label":"a","scores":[0.5,0.5]},{"label":"b","scores":[1.0,0.0]}]}'
    )
    raw = {"img_bytes": np.array([b"\xff"], dtype=object), "x": np.array([np.nan], "float32")}
    assert encode_predict(raw, COLUMNAR) == b'{"outputs":{"img_bytes":[{"b64":"/w=="}],"x":[null]}}'


# --- bad input ------------------------------------------------------------------------------


BAD_REQUESTS = [
    # (description, path, raw body, status, words the error must contain)
    ("malformed JSON", ":predict", b'{"instances": [1,', 400, "JSON Parse error"),
    ("empty body", ":predict", b"", 400, "document is empty"),
    ("not an object", ":predict", b"[1, 2]", 400, "not an object"),
    ("both keys", ":predict", b'{"instances": [], "inputs": []}', 400, "not both"),
    ("neither key", ":predict", b'{"signature_name": ""}', 400, "Missing 'instances' or 'inputs'"),
    (
        "signature not a string",
        ":predict",
        b'{"signature_name": 100, "instances": []}',
        400,
        "'signature_name' key must be a string",
    ),
    (
        "unknown signature",
        ":predict",
        b'{"signature_name": "nope", "instances": [[1]]}',
        400,
        'signature key "nope" not found',
    ),
    (
        "wrong dtype",
        ":predict",
        b'{"instances": [[[["a"]]]]}',
        400,
        "'images' is not of expected type",
    ),
    ("bool dtype", ":predict", b'{"inputs": [[[[true]]]]}', 400, "not of expected type"),
    ("wrong shape", ":predict", b'{"instances": [[1.0, 2.0]]}', 400, "'images' has shape [1, 2]"),
    ("ragged", ":predict", b'{"inputs": [[[[0.1]]], [[[0.1], [0.2]]]]}', 400, "ragged"),
    ("NaN", ":predict", b'{"inputs": [[[[NaN]]]]}', 400, "NaN or Infinity"),
    ("Infinity", ":predict", b'{"inputs": [[[[-Infinity]]]]}', 400, "NaN or Infinity"),
    ("empty batch", ":predict", b'{"instances": []}', 400, "empty batch"),
    (
        "bad base64",
        ":predict",
        b'{"signature_name": "serving_bytes", "instances": [{"b64": "@@"}]}',
        400,
        "invalid base64",
    ),
    (
        "number for bytes",
        ":predict",
        b'{"signature_name": "serving_bytes", "instances": [1]}',
        400,
        "'image_bytes' is not of expected type: string",
    ),
    (
        "corrupt image",
        ":predict",
        b'{"signature_name": "serving_bytes", "instances": [{"b64": "aGVsbG8="}]}',
        400,
        "rejected the input",
    ),
    ("unknown input name", ":predict", b'{"inputs": {"pixels": [1]}}', 400, "Unknown input names"),
    (
        "unknown input name in a row",
        ":predict",
        b'{"instances": [{"pixels": [1]}]}',
        400,
        "Instance 0: unknown inputs ['pixels']; the signature takes ['images']",
    ),
    ("classify verb", ":classify", b'{"examples": []}', 400, "use ':predict'"),
]


@pytest.mark.parametrize(
    "what,suffix,raw,status,words", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS]
)
def test_bad_requests_get_4xx_with_a_message(server, what, suffix, raw, status, words):
    got, body = call(server.port, "POST", f"/v1/models/digits{suffix}", raw=raw)
    assert got == status, body
    assert set(body) == {"error"} and words in body["error"], body


def test_a_rejected_input_is_answered_without_the_graph_dump(server) -> None:
    """TensorFlow's runtime errors carry the Python stack of the traced signature; a client
    gets the op's own message only."""
    raw = b'{"signature_name": "serving_bytes", "instances": [{"b64": "aGVsbG8="}]}'
    got, body = call(server.port, "POST", "/v1/models/digits:predict", raw=raw)
    assert got == 400
    message = body["error"]
    dumps = ("Detected at node", "most recent call last", 'File "', "[[{{node", "[Op:", "<stack")
    for dump in dumps:
        assert dump not in message, message
    assert len(message) < 400 and "\n" not in message, message
    assert "rejected the input: Unknown image file format" in message, message


@pytest.mark.parametrize("verb", ["classify", "regress"])
def test_classify_and_regress_on_an_unknown_model_or_version_are_404(server, verb: str) -> None:
    """As TF Serving: the servable is looked up first (NOT_FOUND), the verb refused after."""
    for path in (f"/v1/models/nope:{verb}", f"/v1/models/digits/versions/999:{verb}"):
        got, body = call(server.port, "POST", path, raw=b'{"examples": [{"x": 1}]}')
        assert got == 404 and "Servable not found" in body["error"], (path, body)


def test_tensorflow_message_keeps_the_ops_message() -> None:
    from kerasdl.serving.errors import tensorflow_message

    raw = (
        "Graph execution error:\n\nDetected at node StatefulPartitionedCall/reshape defined at "
        '(most recent call last):\n  File "/x/app.py", line 3, in <module>\n\n  File "/x/y.py"'
        ", line 9, in f\n\nInput to reshape is a tensor with 12 values, but the requested shape "
        "has 64\n\t [[{{node StatefulPartitionedCall/reshape}}]] [Op:__inference_fn_123]"
    )
    assert tensorflow_message(raw) == (
        "Input to reshape is a tensor with 12 values, but the requested shape has 64"
    )
    assert tensorflow_message("plain message") == "plain message"


def test_bad_input_for_shapes(server):
    # 8x8 images with the right rank but a wrong size, a batch over --max-batch.
    wrong = np.zeros((2, 8, 7, 1)).tolist()
    status, body = call(server.port, "POST", "/v1/models/digits:predict", {"inputs": wrong})
    assert status == 400 and "[2, 8, 7, 1]" in body["error"] and "[-1, 8, 8, 1]" in body["error"]
    status, body = call(
        server.port, "POST", "/v1/models/digits:predict", {"instances": _images(MAX_BATCH + 1)}
    )
    assert status == 400 and f"maximum of {MAX_BATCH}" in body["error"]


def test_unknown_model_version_route_method_and_size(server):
    p = server.port
    status, body = call(p, "POST", "/v1/models/nope:predict", {"instances": [[1]]})
    assert (status, body) == (404, {"error": "Servable not found for request: Latest(nope)"})
    status, body = call(p, "POST", "/v1/models/digits/versions/7:predict", {"instances": [[1]]})
    assert status == 404 and "Specific(digits, 7)" in body["error"]
    assert call(p, "GET", "/v1/models/nope")[0] == 404
    assert call(p, "GET", "/v1/models/digits/versions/7")[0] == 404
    assert call(p, "GET", "/v1/models/digits/versions/7/metadata")[0] == 404
    # TF Serving: an unknown label, and a known URL with the wrong method, are 400.
    status, body = call(p, "GET", "/v1/models/digits/labels/stable")
    assert status == 400 and "Unrecognized servable version label: stable" in body["error"]
    status, body = call(p, "GET", "/v2/nothing/here")
    assert status == 404 and "Malformed request" in body["error"]
    status, body = call(p, "GET", "/v1/models/digits:predict")
    assert (status, body) == (400, {"error": "Malformed request: GET /v1/models/digits:predict"})
    big = b'{"instances": [' + b"0.0," * (MAX_BODY // 4) + b"0.0]}"
    status, body = call(p, "POST", "/v1/models/digits:predict", raw=big)
    assert status == 413 and "--max-body-bytes" in body["error"]
    # After all of that the server still answers.
    assert call(p, "POST", "/v1/models/digits:predict", {"instances": _images(1)})[0] == 200


# --- batching, hot swap under load, broken versions -----------------------------------------


def test_batcher_merges_concurrent_requests_and_isolates_failures():
    calls = []

    def fn(inputs):
        x = inputs["x"]
        calls.append(len(x))
        if (x < 0).any():
            raise ValueError("negative input")
        return {"y": x * 2}

    async def scenario():
        with ThreadPoolExecutor(2) as pool:
            batcher = Batcher(pool, max_batch_size=8, batch_timeout=0.5, num_batch_threads=1)
            reqs = [np.full((2, 3), i, dtype="float32") for i in range(5)]
            outs = await asyncio.gather(*(batcher.submit("k", fn, {"x": r}) for r in reqs))
            for r, o in zip(reqs, outs, strict=True):
                np.testing.assert_array_equal(o["y"], r * 2)
            calls_before = len(calls)
            good, bad = np.ones((1, 3), "float32"), -np.ones((1, 3), "float32")
            results = await asyncio.gather(
                batcher.submit("k", fn, {"x": good}),
                batcher.submit("k", fn, {"x": bad}),
                return_exceptions=True,
            )
            return outs, calls_before, results

    outs, calls_before, results = asyncio.run(scenario())
    # 5 requests of 2 rows with a batch of 8: one batch of 4 requests, then one of 1.
    assert calls[:calls_before] == [8, 2]
    np.testing.assert_array_equal(results[0]["y"], np.full((1, 3), 2.0))
    assert isinstance(results[1], ValueError)


def test_load_with_version_swap_and_broken_version():
    base = model_base("load")
    config = ServerConfig(max_body_bytes=MAX_BODY, max_batch=MAX_BATCH, batching=True)
    x, y = digits_data()
    # Digits that version 1 classifies as something other than 0: version 2 always answers "zero".
    staged = staged_version()
    with InProcessServer(base, config) as srv:
        p = srv.port
        errors, answers, done = [], [], []
        swapped = threading.Event()
        stop = threading.Event()
        sample = [i for i in range(60) if y[i] != 0][:20]

        def client(k: int) -> None:
            for n in range(150):  # bounded: at most 150 requests per client
                if stop.is_set():
                    return
                i = sample[(k * 7 + n) % len(sample)]
                if n % 3 == 0:
                    req = {"signature_name": "serving_bytes", "instances": [_b64_png(i)]}
                else:
                    req = {"instances": x[i : i + 1 + n % 2].tolist()}
                status, body = call(p, "POST", "/v1/models/digits:predict", req, timeout=30)
                done.append(1)
                if status != 200:
                    errors.append((status, body))
                else:
                    answers.append((swapped.is_set(), body["predictions"][0]["class_name"]))

        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(client, k) for k in range(8)]
            deadline = time.monotonic() + 60
            while len(done) < 120 and time.monotonic() < deadline:
                time.sleep(0.01)
            os.rename(staged, base / "digits" / "2")  # an atomic new version, as export writes
            while time.monotonic() < deadline:
                code, status = call(p, "GET", "/v1/models/digits/versions/2")
                if code == 200 and status["model_version_status"][0]["state"] == "AVAILABLE":
                    break
                time.sleep(0.05)
            swapped.set()
            target = len(done) + 120
            while len(done) < target and time.monotonic() < deadline:
                time.sleep(0.01)
            stop.set()
            for f in futures:
                f.result()
        assert errors == []
        assert len(done) >= 240
        before = {name for after, name in answers if not after}
        after = [name for was_swapped, name in answers if was_swapped]
        assert before - {"zero"}, "version 1 answered"
        assert after and set(after[-20:]) == {"zero"}, "version 2 answered after the swap"
        status = call(p, "GET", "/v1/models/digits")[1]["model_version_status"]
        assert [(s["version"], s["state"]) for s in status] == [("2", "AVAILABLE"), ("1", "END")]
        server = srv.app.state.server
        assert server.batcher is not None and server.batcher.examples_run >= len(done)

        # A broken new version is reported and version 2 keeps serving.
        broken = base / "digits" / "3"
        broken.mkdir()
        (broken / "saved_model.pb").write_bytes(b"this is not a SavedModel")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status = call(p, "GET", "/v1/models/digits")[1]["model_version_status"]
            if status[0]["version"] == "3" and status[0]["state"] == "END":
                break
            time.sleep(0.05)
        assert status[0]["state"] == "END" and status[0]["status"]["error_code"] == "UNKNOWN"
        assert status[0]["status"]["error_message"]
        assert status[1] == {
            "version": "2",
            "state": "AVAILABLE",
            "status": {"error_code": "OK", "error_message": ""},
        }
        models = call(p, "GET", "/v1/models")[1]["models"][0]
        assert models["served_version"] == "2"
        ok = call(p, "POST", "/v1/models/digits:predict", {"instances": x[:1].tolist()})
        assert ok[0] == 200 and ok[1]["predictions"][0]["class_name"] == "zero"


# --- the CLI server: client app and graceful shutdown ---------------------------------------


def test_cli_server_client_smoke_and_sigterm_finishes_in_flight(capsys):
    base = model_base("cli")
    port = free_port()
    options = ["--batching", "--batch-timeout-ms", "1500", "--poll-interval", "0"]
    proc = start_serve(base, port, *options)
    try:
        wait_ready(port, proc, timeout=90)
        spec = importlib.util.spec_from_file_location(
            "serve_client", ROOT / "apps" / "serve_client.py"
        )
        client = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(client)
        argv = ["--smoke", "--url", f"http://127.0.0.1:{port}", "--model", "digits"]
        assert client.main(argv) == 0
        assert "smoke: ok" in capsys.readouterr().out
        # A request waits ~1.5 s in the batcher; SIGTERM arrives meanwhile; it must still succeed.
        result = {}
        x, _ = digits_data()

        def slow() -> None:
            result["r"] = call(
                port, "POST", "/v1/models/digits:predict", {"instances": x[:1].tolist()}, timeout=30
            )

        t = threading.Thread(target=slow)
        t.start()
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        t.join(timeout=30)
        assert result["r"][0] == 200 and len(result["r"][1]["predictions"]) == 1
        # uvicorn finishes the shutdown, then re-raises SIGTERM so the exit status says so.
        assert proc.wait(timeout=40) in (0, -signal.SIGTERM)
        log = proc.stdout.read().decode()
        assert "Application shutdown complete" in log, log[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_repository_layout_and_serve_cli_errors(capsys):
    from kerasdl.cli import main

    base = fresh_dir("layout")
    for path in ("a/1", "a/.tmp-2-x", "b/3", ".hidden/1"):
        (base / path).mkdir(parents=True)
    assert sorted(ModelRepository(base).model_dirs()) == ["a", "b"]
    # A single model's folder (integer children) is served under its own name.
    assert list(ModelRepository(base / "a").model_dirs()) == ["a"]
    assert main(["serve", str(base / "missing")]) == 2
    assert "Model base folder not found" in capsys.readouterr().err
    assert main(["serve", str(base), "--max-batch", "0"]) == 2
    assert "--max-batch must be >= 1" in capsys.readouterr().err
