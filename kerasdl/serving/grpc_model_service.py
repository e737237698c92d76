"""TF Serving's gRPC ModelService over the model repository (``model_service_impl.cc``).

* **GetModelStatus** answers every version's state (``START``, ``LOADING``, ``AVAILABLE``,
  ``UNLOADING``, ``END``) and load error, newest first, or one version's
  (``get_model_status_impl.cc``: "Missing ModelSpec", NOT_FOUND "Could not find version N of
  model m" / "Could not find any versions of model m"; a ``version_label`` is ignored, as there).
* **HandleReloadConfigRequest** serves a new ``model_config_list`` as a changed
  ``--model-config-file`` would, and answers once the newly listed models are loaded or have
  failed (``server_core.cc``: UNKNOWN "N model(s) did not become available: {...}"); any other
  config kind is INVALID_ARGUMENT, as in TF Serving.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
)

from kerasdl.serving.errors import ServingError, invalid
from kerasdl.serving.grpc_common import rpc
from kerasdl.serving.repository import ModelRepository

log = logging.getLogger("kerasdl.serving")


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """``tensorflow.serving.ModelService`` (GetModelStatus, HandleReloadConfigRequest).

    Args:
        repo: the model repository.
        config_root: the folder relative ``base_path`` values of a reloaded config are taken
            from (the config file's folder, else the working directory).
    """

    def __init__(self, repo: ModelRepository, config_root: Path) -> None:
        self.repo = repo
        self.config_root = config_root

    @rpc
    def GetModelStatus(self, request: Any, context: Any) -> Any:  # noqa: N802
        from tensorflow.core.protobuf import error_codes_pb2

        if not request.HasField("model_spec"):
            raise invalid("Missing ModelSpec")
        spec = request.model_spec
        version = spec.version.value if spec.HasField("version") else None
        body = self.repo.status(spec.name, version)
        response = get_model_status_pb2.GetModelStatusResponse()
        for entry in body["model_version_status"]:
            status = entry["status"]
            response.model_version_status.add(
                version=int(entry["version"]),
                state=get_model_status_pb2.ModelVersionStatus.State.Value(entry["state"]),
                status={
                    "error_code": error_codes_pb2.Code.Value(status["error_code"]),
                    "error_message": status["error_message"],
                },
            )
        return response

    @rpc
    def HandleReloadConfigRequest(self, request: Any, context: Any) -> Any:  # noqa: N802
        from google.protobuf import text_format

        from kerasdl.serving.model_config import ModelConfigError, parse_model_config

        if request.config.WhichOneof("config") != "model_config_list":
            raise invalid(
                "ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
                "ModelConfigList is currently supported"
            )
        if not hasattr(self.repo, "_config_specs"):
            raise ServingError("UNIMPLEMENTED", "this model repository cannot change its models")
        text = text_format.MessageToString(request.config)
        try:
            specs = parse_model_config(text, self.config_root, "ReloadConfigRequest")
        except ModelConfigError as err:
            raise invalid(str(err)) from err
        failed = self._apply(specs)
        if failed:
            raise ServingError(
                "UNKNOWN",
                f"{len(failed)} model(s) did not become available: {{"
                + "".join(f"{{{f}}}, " for f in failed)
                + "}",
            )
        response = model_management_pb2.ReloadConfigResponse()
        response.status.error_code = 0
        return response

    def _apply(self, specs: list[Any], timeout: float = 600.0) -> list[str]:
        """Serve ``specs`` instead of the current models; the new models that failed to load.

        Like a changed ``--model-config-file``: the manager loads and unloads in its
        availability-preserving order. Then waits, as TF Serving's WaitUntilModelsAvailable,
        until every newly listed model has a version available or nothing left loading.
        """
        repo = self.repo
        before = set(repo.model_dirs())
        repo.replace_models(specs)
        deadline = time.monotonic() + timeout
        failed: list[str] = []
        for name in [s.name for s in specs if s.name not in before]:
            while True:
                try:
                    repo.get(name)
                    break
                except ServingError:
                    pass
                try:
                    states = repo.status(name)["model_version_status"]
                except ServingError:
                    states = []
                loading = [s for s in states if s["state"] in ("START", "LOADING")]
                if not loading or time.monotonic() > deadline:
                    errors = [
                        f"name: {name} version: {s['version']} due to error: "
                        f"{s['status']['error_message']}"
                        for s in states
                        if s["status"]["error_message"]
                    ]
                    failed.append("; ".join(errors) or f"name: {name} (no version found)")
                    break
                time.sleep(0.05)
        return failed


__all__ = ["ModelService"]
