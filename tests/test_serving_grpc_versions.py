"""TF Serving's gRPC API over changing model versions, through the real client stubs.

Versions, version labels and ``GetModelStatus`` across a version change, a config reload sent as
a ``ReloadConfigRequest`` (``HandleReloadConfigRequest``), and a new version folder then a rollback
under a polled base folder: each test starts its own REST and gRPC servers over a repository of
tiny versioned models. (Moved from ``test_serving_grpc.py``.)
"""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest_serving import fresh_dir, tiny, wait_until

grpc = pytest.importorskip("grpc")
pytest.importorskip("tensorflow_serving")
pytest.importorskip("uvicorn")

from grpc_helpers import INVALID, Servers, rpc_error  # noqa: E402
from grpc_requests import predict_request  # noqa: E402
from tensorflow_serving.apis import get_model_status_pb2, model_management_pb2  # noqa: E402
from tensorflow_serving.config import model_server_config_pb2  # noqa: E402

from kerasdl.serving.repository import ModelRepository  # noqa: E402


def _status(servers: Servers, name: str, version: int | None = None) -> dict[int, str]:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    response = servers.models.GetModelStatus(request, timeout=30)
    state = get_model_status_pb2.ModelVersionStatus.State
    return {s.version: state.Name(s.state) for s in response.model_version_status}


wait_until = functools.partial(wait_until, poll=0.05)


def _version_answer(servers: Servers, name: str = "m", **spec) -> tuple[float, int]:
    request = predict_request(name, x=np.ones((1, 2), np.float32))
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    response = servers.predictions.Predict(request, timeout=30)
    return response.outputs["version"].float_val[0], response.model_spec.version.value


def _write_config(path: Path, body: str) -> Path:
    path.write_text(f"model_config_list {{ {body} }}\n")
    return path


def test_versions_labels_and_status_across_a_version_change():
    base = fresh_dir("grpc-versions")
    for v in (1, 2):
        shutil.copytree(tiny(v), base / "m" / str(v))
    conf = _write_config(
        base / "models.config",
        "config { name: 'm' base_path: 'm' model_version_policy { specific { versions: 1 "
        "versions: 2 } } version_labels { key: 'stable' value: 1 } "
        "version_labels { key: 'canary' value: 2 } }",
    )
    repo = ModelRepository(model_config_file=conf, poll_interval=0.1)
    with Servers(repo, config_root=base) as srv:
        assert _version_answer(srv) == (2.0, 2)  # latest
        assert _version_answer(srv, version=1) == (1.0, 1)
        assert _version_answer(srv, version_label="stable") == (1.0, 1)
        assert _version_answer(srv, version_label="canary") == (2.0, 2)
        assert _status(srv, "m") == {2: "AVAILABLE", 1: "AVAILABLE"}
        assert _status(srv, "m", 1) == {1: "AVAILABLE"}
        code, message = rpc_error(srv.models.GetModelStatus, _status_request("m", 9))
        assert (code, message) == (grpc.StatusCode.NOT_FOUND, "Could not find version 9 of model m")
        code, message = rpc_error(srv.models.GetModelStatus, _status_request("nope"))
        assert (code, message) == (
            grpc.StatusCode.NOT_FOUND,
            "Could not find any versions of model nope",
        )
        assert rpc_error(
            srv.models.GetModelStatus, get_model_status_pb2.GetModelStatusRequest()
        ) == (
            INVALID,
            "Missing ModelSpec",
        )

        # A new version under "latest 1", sent as a config reload: 3 serves, 1 and 2 end.
        shutil.copytree(tiny(3), base / "m" / "3")
        reload = model_management_pb2.ReloadConfigRequest()
        reload.config.model_config_list.config.add(name="m", base_path=str(base / "m"))
        response = srv.models.HandleReloadConfigRequest(reload, timeout=60)
        assert response.status.error_code == 0
        wait_until(lambda: _status(srv, "m") == {3: "AVAILABLE", 2: "END", 1: "END"}, "v3 only")
        assert _version_answer(srv) == (3.0, 3)
        assert rpc_error(srv.predictions.Predict, _label_request("stable")) == (
            INVALID,
            "Unrecognized servable version label: stable",
        )
        # A second model: the reload answers once it is loaded.
        shutil.copytree(tiny(5), base / "n" / "5")
        reload.config.model_config_list.config.add(name="n", base_path="n")  # relative: to conf
        srv.models.HandleReloadConfigRequest(reload, timeout=60)
        assert _version_answer(srv, "n") == (5.0, 5)
        # TF Serving's errors: only a model_config_list; a model that never loads.
        bad = model_management_pb2.ReloadConfigRequest()
        bad.config.custom_model_config.Pack(model_server_config_pb2.ModelServerConfig())
        code, message = rpc_error(srv.models.HandleReloadConfigRequest, bad)
        assert code == INVALID and "Only ModelConfigList is currently supported" in message
        reload.config.model_config_list.config.add(name="gone", base_path=str(base / "gone"))
        code, message = rpc_error(srv.models.HandleReloadConfigRequest, reload)
        assert code == grpc.StatusCode.UNKNOWN
        assert message.startswith("1 model(s) did not become available: {{name: gone")
        assert _version_answer(srv) == (3.0, 3)  # the others keep serving


def _status_request(name: str, version: int | None = None):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    return request


def _label_request(label: str):
    request = predict_request("m", x=np.ones((1, 2), np.float32))
    request.model_spec.version_label = label
    return request


def test_status_follows_a_new_version_folder_and_a_rollback():
    base = fresh_dir("grpc-folder")
    shutil.copytree(tiny(1), base / "m" / "1")
    with Servers(ModelRepository(base, poll_interval=0.1)) as srv:
        assert _status(srv, "m") == {1: "AVAILABLE"}
        shutil.copytree(tiny(2), base / "m" / "2")
        wait_until(lambda: _status(srv, "m") == {2: "AVAILABLE", 1: "END"}, "v2 served")
        assert _version_answer(srv) == (2.0, 2)
        shutil.rmtree(base / "m" / "2")
        wait_until(lambda: _status(srv, "m") == {2: "END", 1: "AVAILABLE"}, "v1 served again")
        assert _version_answer(srv) == (1.0, 1)
