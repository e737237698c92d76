"""TF Serving's gRPC PredictionService over the model repository, and the helpers of both services.

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
* **Classify / Regress** run a signature that has TF Serving's structure (one input ``inputs``
  taking serialized ``tf.Example`` strings; outputs ``classes`` and/or ``scores``, or one
  ``outputs``), whatever its method name, as TF Serving does by default. Any other signature
  (kerasdl's exports are predict signatures) gets TF Serving's INVALID_ARGUMENT, e.g. "Expected
  one or two output Tensors, found 3". An unknown signature is INVALID_ARGUMENT here ("No
  signature was found with the name: s").
* **GetModelMetadata** answers the SavedModel's own ``signature_def`` map (the graph's tensor
  names). ModelService is in :mod:`kerasdl.serving.grpc_model_service`.

Error messages are cut at 1,024 characters with "...TRUNCATED", as ``grpc_status_util.cc`` does.
"""

from __future__ import annotations

import functools
import logging
import weakref
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from kerasdl.serving import tensor_proto
from kerasdl.serving.codec import check_signature_shape
from kerasdl.serving.errors import ServingError, invalid
from kerasdl.serving.repository import ModelRepository
from kerasdl.serving.servable import DEFAULT_SIGNATURE, Servable, Signature
from kerasdl.serving.tensor_proto import TensorProtoError

log = logging.getLogger("kerasdl.serving")

MESSAGE_LIMIT = 1024  # grpc_status_util.cc
_BY_VALUE = {code.value[0]: code for code in grpc.StatusCode}
_HTTP_ONLY = {"PAYLOAD_TOO_LARGE": "RESOURCE_EXHAUSTED", "REQUEST_TIMEOUT": "DEADLINE_EXCEEDED"}
_SIGDEFS: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()

RunFn = Callable[[Servable, Signature, dict[str, np.ndarray]], dict[str, np.ndarray]]


def grpc_code(code: str) -> grpc.StatusCode:
    """The gRPC status code of a :class:`ServingError` code name."""
    return getattr(grpc.StatusCode, _HTTP_ONLY.get(code, code), grpc.StatusCode.UNKNOWN)


def status_message(message: str) -> str:
    """TF Serving's cut of a long error message."""
    if len(message) > MESSAGE_LIMIT:
        return message[:MESSAGE_LIMIT] + "...TRUNCATED"
    return message


def _rpc(method: Callable[..., Any]) -> Callable[..., Any]:
    """Answer a handler's errors with their gRPC status (unexpected ones: INTERNAL, logged)."""

    @functools.wraps(method)
    def handler(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except ServingError as err:
            code, message = grpc_code(err.code), err.message
        except Exception as err:  # noqa: BLE001 - the one place that answers the unexpected
            op_code = getattr(err, "error_code", None)  # a tf.errors.OpError from the graph
            if isinstance(op_code, int) and op_code in _BY_VALUE:
                code, message = _BY_VALUE[op_code], getattr(err, "message", str(err))
            else:
                log.error("internal error in gRPC %s", method.__name__, exc_info=err)
                code, message = grpc.StatusCode.INTERNAL, f"{type(err).__name__}: {err}"
        log.debug("gRPC %s: %s %s", method.__name__, code.name, message)
        context.abort(code, status_message(message))  # raises

    return handler


def _servable(repo: ModelRepository, request: Any) -> Servable:
    """The servable a request's ``model_spec`` names (TF Serving's ServableRequestFromModelSpec)."""
    if not request.HasField("model_spec"):
        raise invalid("Missing ModelSpec")
    spec = request.model_spec
    if not spec.name:
        raise invalid("ModelSpec has no name specified.")
    which = spec.WhichOneof("version_choice")
    version = spec.version.value if which == "version" else None
    label = spec.version_label if which == "version_label" else None
    return repo.get(spec.name, version, label)


def _fill_model_spec(target: Any, request: Any, servable: Servable, signature: str | None) -> None:
    """The response's ``model_spec`` as TF Serving's MakeModelSpec writes it."""
    target.name = request.model_spec.name
    if signature is not None:
        target.signature_name = signature or DEFAULT_SIGNATURE
    target.version.value = servable.version


def signature_defs(servable: Servable) -> dict[str, Any]:
    """The ``serve`` MetaGraphDef's ``SignatureDef`` protos of a loaded version (cached).

    Read from the version's ``saved_model.pb`` (the graph's own tensor names); when the folder is
    gone (a deleted version still served from memory) they are rebuilt from the loaded
    signatures, with TF2's usual names.
    """
    cached = _SIGDEFS.get(servable)
    if cached is not None:
        return cached
    from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

    defs: dict[str, Any] = {}
    try:
        proto = saved_model_pb2.SavedModel.FromString(
            (servable.path / "saved_model.pb").read_bytes()
        )
        graphs = [g for g in proto.meta_graphs if "serve" in g.meta_info_def.tags]
        if graphs:
            defs = dict(graphs[0].signature_def)
    except (OSError, ValueError) as err:
        log.warning("signature defs of %s v%d rebuilt: %s", servable.name, servable.version, err)
    if not defs:
        for name, sig in servable.signatures.items():
            sd = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
            for alias, info in sig.inputs.items():
                _tensor_info(sd.inputs[alias], info, f"{name}_{alias}:0")
            for i, (alias, info) in enumerate(sig.outputs.items()):
                _tensor_info(sd.outputs[alias], info, f"StatefulPartitionedCall:{i}")
            defs[name] = sd
    _SIGDEFS[servable] = defs
    return defs


def _tensor_info(target: Any, info: Any, tensor_name: str) -> None:
    target.name = tensor_name
    target.dtype = info.tf_dtype.as_datatype_enum
    if info.shape is None:
        target.tensor_shape.unknown_rank = True
    else:
        for d in info.shape:
            target.tensor_shape.dim.add(size=-1 if d is None else d)


def _debug_string(servable: Servable, name: str) -> str:
    sd = signature_defs(servable).get(name)
    return str(sd) if sd is not None else name


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """``tensorflow.serving.PredictionService`` (Predict, Classify, Regress, GetModelMetadata).

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

    @_rpc
    def Predict(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC's name
        servable = _servable(self.repo, request)
        sig = servable.signature(request.model_spec.signature_name)  # FAILED_PRECONDITION
        response = predict_pb2.PredictResponse()
        _fill_model_spec(response.model_spec, request, servable, sig.name)
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

    # --- Classify and Regress ---------------------------------------------------------------

    def _example_signature(self, request: Any, kind: str) -> tuple[Servable, Signature]:
        servable = _servable(self.repo, request)
        name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        sig = servable.signatures.get(name)
        if sig is None:
            raise invalid(f"No signature was found with the name: {name}")
        if len(sig.inputs) != 1:
            raise invalid("Expected one input Tensor.")
        if kind == "classification":
            if len(sig.outputs) not in (1, 2):
                raise invalid(f"Expected one or two output Tensors, found {len(sig.outputs)}")
        elif len(sig.outputs) != 1:
            raise invalid("Expected one output Tensor.")
        if "inputs" not in sig.inputs:
            raise invalid(
                f"No {kind} inputs found in SignatureDef: {_debug_string(servable, name)}"
            )
        if kind == "classification" and not {"classes", "scores"} & set(sig.outputs):
            raise invalid(
                'Expected classification signature outputs to contain at least one of "classes" '
                f'or "scores". Signature was: {_debug_string(servable, name)}'
            )
        if kind == "regression" and "outputs" not in sig.outputs:
            raise invalid(
                f"No regression outputs found in SignatureDef: {_debug_string(servable, name)}"
            )
        if not sig.inputs["inputs"].is_string:
            raise invalid(
                f"Expects arg[0] to be {sig.inputs['inputs'].tf_dtype.name} but string is provided"
            )
        return servable, sig

    def _run_examples(self, request: Any, servable: Servable, sig: Signature) -> Any:
        examples = serialized_examples(request.input)
        if examples.shape[0] > self.max_batch:
            raise invalid(
                f"Batch size {examples.shape[0]} exceeds the server's maximum of "
                f"{self.max_batch} (--max-batch)."
            )
        outputs = self.run(servable, sig, {"inputs": examples})
        return examples.shape[0], outputs

    def _examples_rpc(self, request: Any, kind: str, response: Any) -> tuple[int, dict]:
        """Classify's and Regress's common part: find the ``kind`` signature, fill the
        response's model spec, run the examples; returns their count and the outputs."""
        servable, sig = self._example_signature(request, kind)
        _fill_model_spec(response.model_spec, request, servable, sig.name)
        return self._run_examples(request, servable, sig)

    @_rpc
    def Classify(self, request: Any, context: Any) -> Any:  # noqa: N802
        response = classification_pb2.ClassificationResponse()
        n, outputs = self._examples_rpc(request, "classification", response)
        classes, scores = outputs.get("classes"), outputs.get("scores")
        for name, arr, kind in (("classes", classes, "O"), ("scores", scores, "f")):
            if arr is None:
                continue
            if arr.ndim != 2:
                raise invalid(
                    f"Expected Tensor shape: [batch_size num_classes] but got {list(arr.shape)}"
                )
            if arr.dtype.kind != kind or (kind == "f" and arr.dtype != np.float32):
                want = "DT_STRING" if kind == "O" else "DT_FLOAT"
                raise invalid(f"Expected {name} Tensor of {want}. Got: {arr.dtype.name}")
            if arr.shape[0] != n:
                raise invalid(f"Expected {name} output batch size of {n}. Got: {arr.shape[0]}")
        if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
            raise invalid(
                "Tensors class and score should match in dim_size(1). Got "
                f"{classes.shape[1]} vs. {scores.shape[1]}"
            )
        width = (classes if classes is not None else scores).shape[1]
        for i in range(n):
            row = response.result.classifications.add()
            for c in range(width):
                cl = row.classes.add()
                if classes is not None:
                    label = classes[i, c]
                    cl.label = (
                        label if isinstance(label, str) else bytes(label).decode("utf-8", "replace")
                    )
                if scores is not None:
                    cl.score = float(scores[i, c])
        return response

    @_rpc
    def Regress(self, request: Any, context: Any) -> Any:  # noqa: N802
        response = regression_pb2.RegressionResponse()
        n, outputs = self._examples_rpc(request, "regression", response)
        out = outputs["outputs"]
        if not (out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 1)):
            raise invalid(
                "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but "
                f"got {list(out.shape)}"
            )
        if out.shape[0] != n:
            raise invalid(
                f"Input batch size did not match output batch size: {n} vs. {out.shape[0]}"
            )
        if out.dtype != np.float32:
            raise invalid(f"Expected output Tensor of DT_FLOAT.  Got: {out.dtype.name}")
        for value in out.reshape(-1).tolist():
            response.result.regressions.add(value=value)
        return response

    # --- GetModelMetadata -------------------------------------------------------------------

    @_rpc
    def GetModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        if not request.HasField("model_spec"):
            raise invalid("Missing ModelSpec")
        if not request.metadata_field:
            raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != "signature_def":
                raise invalid(f"Metadata field {field} is not supported")
        servable = _servable(self.repo, request)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        for name, sd in signature_defs(servable).items():
            sig_map.signature_def[name].CopyFrom(sd)
        response.metadata["signature_def"].Pack(sig_map)
        return response


def serialized_examples(input_proto: Any) -> np.ndarray:
    """The serialized ``tf.Example`` strings of an ``Input`` (InputToSerializedExampleTensor).

    With ``example_list_with_context`` each example is its context's bytes followed by its own,
    which parses as the two merged (the example's features win), exactly as TF Serving builds it.
    """
    kind = input_proto.WhichOneof("kind")
    if kind == "example_list":
        blobs = [e.SerializeToString() for e in input_proto.example_list.examples]
    elif kind == "example_list_with_context":
        ctx = input_proto.example_list_with_context.context.SerializeToString()
        blobs = [
            ctx + e.SerializeToString() for e in input_proto.example_list_with_context.examples
        ]
    else:
        blobs = []
    if not blobs:
        raise invalid("Input is empty.")
    out = np.empty(len(blobs), dtype=object)
    out[:] = blobs
    return out


__all__ = [
    "MESSAGE_LIMIT",
    "PredictionService",
    "grpc_code",
    "serialized_examples",
    "signature_defs",
    "status_message",
]
