"""TF Serving's gRPC API, through the real ``tensorflow-serving-api`` client stubs.

Every test talks to a real server over a real channel: REST (uvicorn) and gRPC in one process,
wired as ``kerasdl serve --grpc-port`` wires them (the gRPC server attached to the repository that
the REST app starts and stops), plus one ``kerasdl serve`` subprocess stopped with SIGTERM.
Versions, labels, status and config reloads are in ``test_serving_grpc_versions.py``.
"""

from __future__ import annotations

import shutil
import signal
import socket
import threading
import time

import numpy as np
import pytest
from conftest_serving import (
    call,
    digits_data,
    digits_uint8,
    exported,
    free_port,
    fresh_dir,
    model_base,
    png_bytes,
    start_serve,
    tiny,
)

grpc = pytest.importorskip("grpc")
pytest.importorskip("tensorflow_serving")
pytest.importorskip("uvicorn")

import tensorflow as tf  # noqa: E402
from grpc_helpers import (  # noqa: E402
    INVALID,
    MAX_BATCH,
    Servers,
    digits_and_examples_servers,
    rpc_error,
)
from grpc_requests import predict_request  # noqa: E402
from tensorflow_serving.apis import (  # noqa: E402
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from kerasdl.serving.app import ServerConfig  # noqa: E402
from kerasdl.serving.repository import ModelRepository  # noqa: E402

# --- models -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def servers():
    yield from digits_and_examples_servers("grpc")


# --- Predict ----------------------------------------------------------------------------------


def test_predict_gives_the_numbers_of_rest_and_of_the_in_process_call(servers):
    x, _ = digits_data()
    batch = x[:5]
    response = servers.predictions.Predict(predict_request(images=batch), timeout=30)
    assert response.model_spec.name == "digits"
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    assert set(response.outputs) == {"probabilities", "class_id", "class_name"}
    # TF Serving's default encoding: the typed value fields, which clients read directly.
    probs = response.outputs["probabilities"]
    assert len(probs.float_val) == 5 * 10 and not probs.tensor_content
    assert [d.size for d in probs.tensor_shape.dim] == [5, 10]
    grpc_probs = tf.make_ndarray(probs)
    grpc_names = [v.decode() for v in response.outputs["class_name"].string_val]
    assert list(response.outputs["class_id"].int64_val) == grpc_probs.argmax(1).tolist()

    sig = servers.repo.get("digits").signatures["serving_default"]
    np.testing.assert_array_equal(grpc_probs, sig({"images": batch})["probabilities"])
    code, rows = call(
        servers.port, "POST", "/v1/models/digits:predict", {"instances": batch.tolist()}
    )
    assert code == 200
    rest_probs = np.array([r["probabilities"] for r in rows["predictions"]], np.float32)
    np.testing.assert_array_equal(grpc_probs, rest_probs)
    assert grpc_names == [r["class_name"] for r in rows["predictions"]]
    code, cols = call(servers.port, "POST", "/v1/models/digits:predict", {"inputs": batch.tolist()})
    assert code == 200
    np.testing.assert_array_equal(
        grpc_probs, np.array(cols["outputs"]["probabilities"], np.float32)
    )


def test_predict_one_example_typed_fields_and_bytes_signature(servers):
    x, _ = digits_data()
    one = servers.predictions.Predict(predict_request(images=x[3:4]), timeout=30)
    assert [d.size for d in one.outputs["probabilities"].tensor_shape.dim] == [1, 10]
    # A client that fills float_val itself (no tensor_content) is read the same way.
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "digits"
    tensor = request.inputs["images"]
    tensor.dtype = tf.float32.as_datatype_enum
    for d in (1, 8, 8, 1):
        tensor.tensor_shape.dim.add(size=d)
    tensor.float_val.extend(x[3].ravel().tolist())
    typed = servers.predictions.Predict(request, timeout=30)
    assert list(typed.outputs["probabilities"].float_val) == list(
        one.outputs["probabilities"].float_val
    )
    # serving_bytes takes encoded images as DT_STRING.
    png = png_bytes(digits_uint8([3])[0])
    request = predict_request(image_bytes=np.array([png], dtype=object))
    request.model_spec.signature_name = "serving_bytes"
    by_bytes = servers.predictions.Predict(request, timeout=30)
    assert by_bytes.model_spec.signature_name == "serving_bytes"
    assert by_bytes.outputs["class_id"].int64_val == one.outputs["class_id"].int64_val


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width x height`` pixels (its IHDR chunk only)."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + crc


def test_image_pixel_limit_applies_over_grpc_too(servers):
    pytest.importorskip("kerasdl.serving.images")
    request = predict_request(image_bytes=np.array([_png_header(20000, 20000)], dtype=object))
    request.model_spec.signature_name = "serving_bytes"
    started = time.monotonic()
    code, message = rpc_error(servers.predictions.Predict, request)
    assert code == INVALID and "20000x20000 PNG" in message and "--max-image-pixels" in message
    assert time.monotonic() - started < 5


def test_predict_output_filter(servers):
    x, _ = digits_data()
    request = predict_request(images=x[:2])
    request.output_filter.extend(["class_id"])
    response = servers.predictions.Predict(request, timeout=30)
    assert list(response.outputs) == ["class_id"]
    request.output_filter.extend(["class_id"])
    assert rpc_error(servers.predictions.Predict, request) == (
        INVALID,
        "duplicate output tensor alias: class_id",
    )
    del request.output_filter[:]
    request.output_filter.extend(["logits"])
    assert rpc_error(servers.predictions.Predict, request) == (
        INVALID,
        "output tensor alias not found in signature: logits Outputs expected to be in the set "
        "{class_id,class_name,probabilities}.",
    )


def test_predict_errors_are_tf_servings(servers):
    x, _ = digits_data()
    predict = servers.predictions.Predict
    assert rpc_error(predict, predict_pb2.PredictRequest()) == (INVALID, "Missing ModelSpec")
    request = predict_request("", images=x[:1])
    assert rpc_error(predict, request) == (INVALID, "ModelSpec has no name specified.")
    request = predict_request("nope", images=x[:1])
    assert rpc_error(predict, request) == (
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Latest(nope)",
    )
    request = predict_request(images=x[:1])
    request.model_spec.version.value = 7
    assert rpc_error(predict, request) == (
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Specific(digits, 7)",
    )
    request = predict_request(images=x[:1])
    request.model_spec.version_label = "stable"
    assert rpc_error(predict, request) == (INVALID, "Unrecognized servable version label: stable")
    request = predict_request(images=x[:1])
    request.model_spec.signature_name = "nope"
    code, message = rpc_error(predict, request)
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert message.startswith('Serving signature key "nope" not found')
    # Inputs: missing, extra, renamed, wrong dtype, wrong shape, unparsable, too big.
    assert rpc_error(predict, predict_request()) == (
        INVALID,
        "input size does not match signature: 0!=1 len({}) != len({images}). Sent extra: {}. "
        "Missing but required: {images}.",
    )
    code, message = rpc_error(predict, predict_request(images=x[:1], extra=x[:1]))
    assert code == INVALID and "Sent extra: {extra}" in message
    assert rpc_error(predict, predict_request(pixels=x[:1])) == (
        INVALID,
        "Signature input alias: images(feed name: serving_default_images:0) not found in "
        "request and no default value provided. Inputs expected to be in the request {pixels}, "
        "or default input alias set: ",
    )
    code, message = rpc_error(predict, predict_request(images=x[:1].astype("float64")))
    assert code == INVALID and "DT_FLOAT" in message and "DT_DOUBLE" in message
    code, message = rpc_error(predict, predict_request(images=x[:1, :4]))
    assert code == INVALID and "[1, 4, 8, 1]" in message and "[-1, 8, 8, 1]" in message
    request = predict_request(images=x[:2])
    request.inputs["images"].tensor_content = request.inputs["images"].tensor_content[:-4]
    code, message = rpc_error(predict, request)
    assert code == INVALID and message.startswith("tensor parsing error: images")
    request = predict_request(images=x[:1])
    request.inputs["images"].tensor_shape.dim[0].size = 10**12  # a tiny message, a huge tensor
    request.inputs["images"].ClearField("tensor_content")
    request.inputs["images"].float_val.append(0.5)
    started = time.monotonic()
    code, message = rpc_error(predict, request)
    assert code == INVALID and "tensor parsing error: images" in message
    assert time.monotonic() - started < 5
    code, message = rpc_error(predict, predict_request(images=x[: MAX_BATCH + 1]))
    assert code == INVALID and "--max-batch" in message


def test_oversized_message_is_resource_exhausted(servers):
    big = np.zeros((MAX_BATCH, 64, 64, 1), np.float32)  # 256 KiB + framing > MAX_MESSAGE
    code, message = rpc_error(servers.predictions.Predict, predict_request(images=big))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in message
    # The server keeps answering.
    x, _ = digits_data()
    servers.predictions.Predict(predict_request(images=x[:1]), timeout=30)


def test_long_error_messages_are_cut_as_tf_serving_cuts_them(servers):
    request = predict_request(
        **{f"input_{'x' * 40}_{i}": np.zeros(1, np.float32) for i in range(40)}
    )
    code, message = rpc_error(servers.predictions.Predict, request)
    assert code == INVALID and message.endswith("...TRUNCATED") and len(message) == 1024 + 12


# --- GetModelMetadata -------------------------------------------------------------------------


def _metadata_request(name: str, fields=("signature_def",)):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = name
    request.metadata_field.extend(fields)
    return request


def test_get_model_metadata_is_the_saved_models_signature_defs(servers):
    from tensorflow.core.protobuf import saved_model_pb2

    response = servers.predictions.GetModelMetadata(_metadata_request("digits"), timeout=30)
    assert response.model_spec.name == "digits" and response.model_spec.version.value == 1
    assert not response.model_spec.signature_name
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(sig_map)
    saved = saved_model_pb2.SavedModel.FromString((exported() / "saved_model.pb").read_bytes())
    assert dict(sig_map.signature_def) == dict(saved.meta_graphs[0].signature_def)
    assert {"serving_default", "serving_bytes", "__saved_model_init_op"} <= set(
        sig_map.signature_def
    )
    default = sig_map.signature_def["serving_default"]
    assert default.inputs["images"].name == "serving_default_images:0"
    assert [d.size for d in default.inputs["images"].tensor_shape.dim] == [-1, 8, 8, 1]
    # The same tensor names as REST's metadata.
    code, body = call(servers.port, "GET", "/v1/models/digits/metadata")
    rest = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert code == 200 and rest["outputs"]["probabilities"]["name"] == (
        default.outputs["probabilities"].name
    )
    metadata = servers.predictions.GetModelMetadata
    assert rpc_error(metadata, get_model_metadata_pb2.GetModelMetadataRequest()) == (
        INVALID,
        "Missing ModelSpec",
    )
    assert rpc_error(metadata, _metadata_request("digits", ())) == (
        INVALID,
        "GetModelMetadataRequest must specify at least one metadata_field",
    )
    assert rpc_error(metadata, _metadata_request("digits", ("graph",))) == (
        INVALID,
        "Metadata field graph is not supported",
    )
    assert rpc_error(metadata, _metadata_request("nope"))[0] == grpc.StatusCode.NOT_FOUND


# --- batching ---------------------------------------------------------------------------------


def test_batching_serves_grpc_calls_in_merged_batches():
    base = fresh_dir("grpc-batching")
    shutil.copytree(tiny(4), base / "m" / "1")
    config = ServerConfig(batching=True, batch_timeout_ms=300, batch_threads=1, batch_size=64)
    with Servers(ModelRepository(base, poll_interval=0.0), config) as srv:
        results: list = []
        together = threading.Barrier(8)

        def client(i: int) -> None:
            x = np.full((2, 2), i, np.float32)
            together.wait(timeout=30)
            response = srv.predictions.Predict(predict_request("m", x=x), timeout=30)
            results.append(list(response.outputs["version"].float_val))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert results == [[4.0, 4.0]] * 8
        assert srv.grpc._batcher is not None and srv.grpc._batcher.batches_run < 8


# --- the command ------------------------------------------------------------------------------


def test_serve_cli_grpc_port_errors_are_one_line(capsys):
    from kerasdl.cli import main

    base = fresh_dir("grpc-cli")
    shutil.copytree(tiny(1), base / "m" / "1")
    assert main(["serve", str(base), "--port", "9000", "--grpc-port", "9000"]) == 2
    assert "--grpc-port" in capsys.readouterr().err
    assert main(["serve", str(base), "--grpc-max-message-bytes", "0", "--grpc-port", "1"]) == 2
    assert "--grpc-max-message-bytes must be >= 1" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        started = time.monotonic()
        assert main(["serve", str(base), "--port", str(free_port()), "--grpc-port", str(port)]) == 2
        err = capsys.readouterr().err
    assert f"gRPC port {port}" in err and "--grpc-port" in err and err.count("\n") == 1
    assert time.monotonic() - started < 10  # refused before any model loads


def test_cli_serves_rest_and_grpc_in_one_process_and_sigterm_stops_both():
    x, _ = digits_data()
    base = model_base("grpc-sigterm")
    port, grpc_port = free_port(), free_port()
    options = ["--grpc-port", str(grpc_port), "--batching", "--batch-timeout-ms", "300"]
    proc = start_serve(base, port, *options, "--batch-threads", "1")
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    try:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_request(images=x[:4])
        # wait_for_ready: the port is taken at once but answers once the models are loaded.
        response = stub.Predict(request, timeout=120, wait_for_ready=True)
        code, body = call(port, "POST", "/v1/models/digits:predict", {"inputs": x[:4].tolist()})
        assert code == 200
        np.testing.assert_array_equal(
            tf.make_ndarray(response.outputs["probabilities"]),
            np.array(body["outputs"]["probabilities"], np.float32),
        )
        # Calls in flight when SIGTERM arrives (each waits ~0.3 s in the batcher) all finish.
        futures = [stub.Predict.future(request, timeout=60) for _ in range(6)]
        time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert [f.result().model_spec.version.value for f in futures] == [1] * 6
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
        out = proc.stdout.read().decode()
        assert "gRPC API stopped" in out and "Traceback" not in out, out[-3000:]
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(request, timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        for freed in (port, grpc_port):  # nothing listens there any more
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", freed))
    finally:
        channel.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
