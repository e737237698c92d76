"""What TF Serving's two gRPC services share: status codes, the handler wrapper, model specs and
the SavedModel's ``SignatureDef`` protos (``grpc_status_util.cc``, ``util.cc``,
``get_model_metadata_impl.cc``)."""

from __future__ import annotations

import functools
import logging
import weakref
from collections.abc import Callable
from typing import Any

import grpc

from kerasdl.serving.errors import ServingError, invalid
from kerasdl.serving.repository import ModelRepository
from kerasdl.serving.servable import DEFAULT_SIGNATURE, Servable

log = logging.getLogger("kerasdl.serving")

MESSAGE_LIMIT = 1024  # grpc_status_util.cc
_BY_VALUE = {code.value[0]: code for code in grpc.StatusCode}
_HTTP_ONLY = {"PAYLOAD_TOO_LARGE": "RESOURCE_EXHAUSTED", "REQUEST_TIMEOUT": "DEADLINE_EXCEEDED"}
_SIGDEFS: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def grpc_code(code: str) -> grpc.StatusCode:
    """The gRPC status code of a :class:`ServingError` code name."""
    return getattr(grpc.StatusCode, _HTTP_ONLY.get(code, code), grpc.StatusCode.UNKNOWN)


def status_message(message: str) -> str:
    """TF Serving's cut of a long error message."""
    if len(message) > MESSAGE_LIMIT:
        return message[:MESSAGE_LIMIT] + "...TRUNCATED"
    return message


def rpc(method: Callable[..., Any]) -> Callable[..., Any]:
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


def servable_of(repo: ModelRepository, request: Any) -> Servable:
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


def fill_model_spec(target: Any, request: Any, servable: Servable, signature: str | None) -> None:
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


def debug_string(servable: Servable, name: str) -> str:
    sd = signature_defs(servable).get(name)
    return str(sd) if sd is not None else name
