"""TF Serving's URL grammar, methods and metadata, as a TF Serving client meets them (issue 14,
defect 9): each route answers with TF Serving's status and error text."""

from __future__ import annotations

import http.client

import pytest
from conftest_serving import InProcessServer, call, digits_data, exported, model_base

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from kerasdl.serving.app import ServerConfig  # noqa: E402

PREDICT = "/v1/models/digits:predict"


@pytest.fixture(scope="module")
def server():
    with InProcessServer(model_base("routes"), ServerConfig()) as srv:
        yield srv


MALFORMED = "Malformed request: {} {}"
ROUTES = [
    # (method, path, status, error or None)
    ("GET", "/V1/MODELS/digits", 200, None),
    ("GET", "/v1/Models/digits/Versions/1", 200, None),
    ("GET", "/v1/models/dig%69ts", 200, None),  # TF Serving URL-decodes the name
    ("GET", "/v1/models/digits/METADATA", 200, None),  # the status, as in TF Serving
    ("GET", "/v1/models/digits/versions/abc", 400, MALFORMED),
    ("GET", "/v1/models/digits/versions/-1", 400, MALFORMED),
    (
        "GET",
        "/v1/models/digits/versions/99999999999999999999",
        400,
        "Failed to convert version: 99999999999999999999 to numeric.",
    ),
    ("GET", "/v1/models/digits/versions/9223372036854775807", 404, None),
    ("GET", "/v1/models/digits/labels/stable", 400, "Unrecognized servable version label: stable"),
    ("GET", "/v1/models/digits/", 400, MALFORMED),
    ("GET", "/v1/models/digits:predict", 400, MALFORMED),
    ("GET", "/v1/nothing", 400, MALFORMED),
    ("GET", "/V1/MODELS", 400, "Missing model name in request."),
    ("POST", "/v1/models/digits", 400, MALFORMED),
    ("POST", "/v1/models/digits:PREDICT", 400, MALFORMED),
    ("POST", "/v1/models/digits/metadata", 400, MALFORMED),
    ("PUT", "/v1/models/digits:predict", 400, MALFORMED),
    ("DELETE", "/v1/models/digits", 400, MALFORMED),
    ("PATCH", "/v1/models/digits", 400, MALFORMED),
    ("GET", "/v2/nothing", 404, MALFORMED),
    ("OPTIONS", "/v1/models/digits:predict", 400, "Origin header is missing in CORS preflight"),
]


@pytest.mark.parametrize("method,path,status,error", ROUTES, ids=[f"{r[0]} {r[1]}" for r in ROUTES])
def test_urls_and_methods_are_routed_like_tf_serving(server, method, path, status, error):
    raw = b'{"instances": [1]}' if method in ("POST", "PUT", "PATCH") else None
    got, body = call(server.port, method, path, raw=raw)
    assert got == status, body
    if status == 200:
        assert set(body) == {"model_version_status"}
    if error is not None:
        assert body == {"error": error.format(method, path)}


def test_case_insensitive_predict_and_cors_preflight(server):
    x, _ = digits_data()
    status, body = call(
        server.port, "POST", "/V1/Models/digits/VERSIONS/1:predict", {"instances": x[:2].tolist()}
    )
    assert status == 200 and len(body["predictions"]) == 2
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("OPTIONS", PREDICT, headers={"Origin": "https://example.org"})
    assert conn.getresponse().status == 200
    conn.close()


def test_metadata_shows_the_graphs_own_tensor_names(server):
    from tensorflow.core.protobuf import saved_model_pb2

    status, meta = call(server.port, "GET", "/v1/models/digits/metadata")
    assert status == 200
    sigs = meta["metadata"]["signature_def"]["signature_def"]
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((exported() / "saved_model.pb").read_bytes())
    want = proto.meta_graphs[0].signature_def
    assert set(sigs) == set(want)
    for key, sig in want.items():
        for side in ("inputs", "outputs"):
            names = {k: v["name"] for k, v in sigs[key][side].items()}
            assert names == {k: v.name for k, v in getattr(sig, side).items()}, (key, side)
    outputs = sigs["serving_default"]["outputs"]
    assert sigs["serving_default"]["inputs"]["images"]["name"] == "serving_default_images:0"
    assert all(o["name"].startswith("StatefulPartitionedCall") for o in outputs.values())
    assert outputs["class_id"]["tensor_shape"] == {
        "dim": [{"size": "-1", "name": ""}],
        "unknown_rank": False,
    }
    assert sigs["serving_default"]["method_name"] == "tensorflow/serving/predict"
    assert meta["model_spec"] == {"name": "digits", "signature_name": "", "version": "1"}
