"""TF Serving's gRPC PredictionService over the model repository.

The request handling follows TF Serving's own (``prediction_service_impl.cc``, ``predict_util.cc``,
``classifier.cc``, ``regressor.cc``, ``get_model_metadata_impl.cc``, ``get_model_status_impl.cc``,
``model_service_impl.cc``, ``server_core.cc``), including its status codes and, where they come
from TF Serving rather than from the TensorFlow runtime, its error messages:

* every call without ``model_spec``: INVALID_ARGUMENT "Missing ModelSpec"; an empty name:
  INVALID_ARGUMENT "ModelSpec has no name specified."; an unknown model or version: NOT_FOUND
  "Servable not found for request: Latest(m)" / "Specific(m, 3)"; an unknown
  ``version_label``: INVALID_ARGUMENT "Unrecognized servable version label: L".
* **Predict**: an unknown signature is FAILED_PRECONDITION; missing, extra or unparsable inputs
  and unknown or repeated ``output_filter`` aliases are INVALID_ARGUMENT. Inputs are checked
  against the signature's dtype and shape before anything runs (TensorFlow would fail inside the
  graph, or, for a concrete function, outside any status). Outputs use the typed value fields
  (``float_val``, ...), as TF Serving does by default.
* **Classify / Regress / MultiInference**: :mod:`kerasdl.serving.grpc_examples`.
* **GetModelMetadata** answers the SavedModel's own ``signature_def`` map (the graph's tensor
  names). ModelService is in :mod:`kerasdl.serving.grpc_model_service`.

Error messages are cut at 1,024 characters with "...TRUNCATED", as ``grpc_status_util.cc`` does
(:mod:`kerasdl.serving.grpc_common`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from kerasdl.serving import tensor_proto
from kerasdl.serving.codec import check_signature_shape
from kerasdl.serving.errors import invalid
from kerasdl.serving.grpc_common import (
    fill_model_spec,
    rpc,
    servable_of,
    signature_defs,
)
from kerasdl.serving.grpc_examples import ExampleRPCs
from kerasdl.serving.repository import ModelRepository
from kerasdl.serving.servable import Servable, Signature
from kerasdl.serving.tensor_proto import TensorProtoError

RunFn = Callable[[Servable, Signature, dict[str, np.ndarray]], dict[str, np.ndarray]]


class PredictionService(ExampleRPCs, prediction_service_pb2_grpc.PredictionServiceServicer):
    """``tensorflow.serving.PredictionService``: Predict, Classify, Regress, MultiInference and
    GetModelMetadata.

    Args:
        repo: the model repository (shared with the REST server).
        run: runs a signature on batched inputs (through the batcher or a thread pool).
        max_batch: the most examples one request may hold (``--max-batch``).
        max_tensor_bytes: the most bytes one decoded input tensor may take.
        pixel_limit: ``servable -> pixels`` for encoded images sent to string inputs (None: no
            check).
    """

    def __init__(
        self,
        repo: ModelRepository,
        run: RunFn,
        max_batch: int,
        max_tensor_bytes: int,
        pixel_limit: Callable[[Servable], int] | None = None,
    ) -> None:
        self.repo = repo
        self.run = run
        self.max_batch = max_batch
        self.max_tensor_bytes = max_tensor_bytes
        self.pixel_limit = pixel_limit

    # --- Predict ---------------------------------------------------------------------------

    @rpc
    def Predict(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC's name
        servable = servable_of(self.repo, request)
        sig = servable.signature(request.model_spec.signature_name)  # FAILED_PRECONDITION
        response = predict_pb2.PredictResponse()
        fill_model_spec(response.model_spec, request, servable, sig.name)
        inputs = self._inputs(request, servable, sig)
        fetch = self._output_filter(request, sig)
        outputs = self.run(servable, sig, inputs)
        for alias in fetch:
            info = sig.outputs[alias]
            tensor_proto.fill(
                response.outputs[alias], outputs[alias], info.tf_dtype.as_datatype_enum
            )
        return response

    def _inputs(self, request: Any, servable: Servable, sig: Signature) -> dict[str, np.ndarray]:
        sent, wanted = set(request.inputs), set(sig.inputs)
        if sent != wanted and len(sent) != len(wanted):  # VerifyRequestInputsSize
            raise invalid(
                f"input size does not match signature: {len(sent)}!={len(wanted)} "
                f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(wanted))}}}). "
                f"Sent extra: {{{','.join(sorted(sent - wanted))}}}. "
                f"Missing but required: {{{','.join(sorted(wanted - sent))}}}."
            )
        feeds = signature_defs(servable).get(sig.name)
        arrays: dict[str, np.ndarray] = {}
        for alias in sorted(wanted):  # saved_model::GetInputValues
            if alias not in sent:
                feed = feeds.inputs[alias].name if feeds is not None else alias
                raise invalid(
                    f"Signature input alias: {alias}(feed name: {feed}) not found in request "
                    "and no default value provided. Inputs expected to be in the request "
                    f"{{{','.join(sorted(sent))}}}, or default input alias set: "
                )
            try:
                arr = tensor_proto.to_array(request.inputs[alias], self.max_tensor_bytes)
            except TensorProtoError as err:
                raise invalid(f"tensor parsing error: {alias} ({err})") from err
            arrays[alias] = self._check(arr, request.inputs[alias].dtype, sig, alias)
        sizes = {k: a.shape[0] for k, a in arrays.items() if a.ndim}
        if len(set(sizes.values())) > 1:
            raise invalid(f"All inputs must share the batch (first) dimension. Received {sizes}.")
        if sizes and max(sizes.values()) > self.max_batch:
            raise invalid(
                f"Batch size {max(sizes.values())} exceeds the server's maximum of "
                f"{self.max_batch} (--max-batch)."
            )
        strings = [k for k, info in sig.inputs.items() if info.is_string]
        if strings and self.pixel_limit is not None:
            from kerasdl.serving.images import check_image_inputs

            check_image_inputs(arrays, strings, self.pixel_limit(servable))
        return arrays

    @staticmethod
    def _check(arr: np.ndarray, dtype_enum: int, sig: Signature, alias: str) -> np.ndarray:
        info = sig.inputs[alias]
        want = info.tf_dtype.as_datatype_enum
        if dtype_enum != want:
            got = tensor_proto.numpy_dtype(dtype_enum)
            raise invalid(
                f"Input '{alias}' is not of expected type: expects {info.dtype_name} "
                f"({info.tf_dtype.name}) but {got.name if got.kind != 'O' else 'string'} "
                f"({tensor_proto._dtype_name(dtype_enum)}) is provided."
            )
        check_signature_shape(arr, info, alias, sig.name)
        return arr

    @staticmethod
    def _output_filter(request: Any, sig: Signature) -> list[str]:
        seen: list[str] = []
        for alias in request.output_filter:  # PreProcessPrediction
            if alias not in sig.outputs:
                raise invalid(
                    f"output tensor alias not found in signature: {alias} Outputs expected to "
                    f"be in the set {{{','.join(sorted(sig.outputs))}}}."
                )
            if alias in seen:
                raise invalid(f"duplicate output tensor alias: {alias}")
            seen.append(alias)
        return seen or list(sig.outputs)

    # --- GetModelMetadata -------------------------------------------------------------------

    @rpc
    def GetModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        if not request.HasField("model_spec"):
            raise invalid("Missing ModelSpec")
        if not request.metadata_field:
            raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != "signature_def":
                raise invalid(f"Metadata field {field} is not supported")
        servable = servable_of(self.repo, request)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        for name, sd in signature_defs(servable).items():
            sig_map.signature_def[name].CopyFrom(sd)
        response.metadata["signature_def"].Pack(sig_map)
        return response


__all__ = ["PredictionService"]
