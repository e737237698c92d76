"""One loaded SavedModel version: its signatures, their TF Serving metadata, and running them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kerasdl.serving.errors import ServingError, invalid, tensorflow_message
from kerasdl.serving.safety import UnsafeModelError, check_saved_model

log = logging.getLogger("kerasdl.serving")

DEFAULT_SIGNATURE = "serving_default"


@dataclass(frozen=True)
class TensorInfo:
    """A signature input or output: dtype (numpy) and shape (``None`` = any size)."""

    name: str
    dtype: np.dtype
    dtype_name: str  # TF's enum name, e.g. DT_FLOAT
    shape: tuple[int | None, ...] | None  # None = unknown rank
    tf_dtype: Any = None

    def metadata(self, tensor_name: str) -> dict[str, Any]:
        """The TF Serving ``TensorInfo`` JSON."""
        shape: dict[str, Any] = {"unknown_rank": self.shape is None}
        if self.shape is not None:
            shape["dim"] = [{"size": str(-1 if d is None else d), "name": ""} for d in self.shape]
        return {"dtype": self.dtype_name, "tensor_shape": shape, "name": tensor_name}

    @property
    def is_string(self) -> bool:
        return self.dtype_name == "DT_STRING"

    def shape_text(self) -> str:
        if self.shape is None:
            return "any"
        return "[" + ", ".join("-1" if d is None else str(d) for d in self.shape) + "]"


def _tensor_info(name: str, spec: Any) -> TensorInfo:
    import tensorflow as tf
    from tensorflow.core.framework import types_pb2

    dtype = tf.as_dtype(spec.dtype)
    enum = dtype.as_datatype_enum
    shape = None if spec.shape.rank is None else tuple(spec.shape.as_list())
    np_dtype = np.dtype(object) if dtype == tf.string else np.dtype(dtype.as_numpy_dtype)
    return TensorInfo(name, np_dtype, types_pb2.DataType.Name(enum), shape, dtype)


class Signature:
    """A callable signature with its input and output descriptions."""

    def __init__(self, name: str, fn: Any) -> None:
        self.name = name
        self.fn = fn
        _, kwargs = fn.structured_input_signature
        self.inputs = {k: _tensor_info(k, v) for k, v in sorted(kwargs.items())}
        outs = fn.structured_outputs
        if not isinstance(outs, dict):
            outs = {"output_0": outs}
        self.outputs = {k: _tensor_info(k, v) for k, v in sorted(outs.items())}

    def metadata(self) -> dict[str, Any]:
        """The TF Serving ``SignatureDef`` JSON."""
        return {
            "inputs": {k: v.metadata(f"{self.name}_{k}:0") for k, v in self.inputs.items()},
            "outputs": {k: v.metadata(f"{self.name}/{k}:0") for k, v in self.outputs.items()},
            "method_name": "tensorflow/serving/predict",
        }

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tensorflow as tf

        tensors = {k: tf.constant(v, dtype=self.inputs[k].tf_dtype) for k, v in inputs.items()}
        try:
            result = self.fn(**tensors)
        except tf.errors.InvalidArgumentError as err:
            raise invalid(
                f"Signature '{self.name}' rejected the input: {tensorflow_message(err.message)}"
            ) from err
        if not isinstance(result, dict):
            result = {"output_0": result}
        return {k: v.numpy() for k, v in result.items()}


class Servable:
    """A SavedModel version loaded with ``tf.saved_model.load``.

    Before loading, :func:`~kerasdl.serving.safety.check_saved_model` reads the graph (without
    running it) and refuses a version whose load-time functions or signatures can touch files,
    processes or the network.

    Args:
        name: the model name.
        version: the version number.
        path: the version folder.
        allow_unsafe_ops: load such a version anyway (``kerasdl serve --allow-unsafe-ops``).

    Raises:
        UnsafeModelError: the version was refused (PERMISSION_DENIED; not retried).
        Exception: whatever loading raised (the repository reports it and keeps the old version).
    """

    def __init__(
        self, name: str, version: int, path: str | Path, *, allow_unsafe_ops: bool = False
    ) -> None:
        import tensorflow as tf

        self.name = name
        self.version = version
        self.path = Path(path)
        self.safety = check_saved_model(self.path, allow_unsafe_ops=allow_unsafe_ops)
        if not self.safety.unchanged():  # replaced between the check and the load: check again
            raise OSError(f"{self.path}: the SavedModel file changed while it was being checked")
        log.debug("%s checked in %.1f ms", self.path, self.safety.seconds * 1000)
        self._loaded = tf.saved_model.load(str(self.path))
        self.signatures = {k: Signature(k, fn) for k, fn in self._loaded.signatures.items()}
        if not self.signatures:
            raise ValueError(f"{self.path} has no serving signatures")
        self.warm_up()
        from kerasdl.serving.metadata import model_metadata

        model_metadata(self)  # read now, as TF Serving keeps it: the folder may be deleted later

    def warm_up(self) -> None:
        """Run every signature whose inputs are all fixed-size numbers once on zeros.

        This both traces nothing new (signatures are concrete functions) and proves the version
        runs before it replaces the one being served.
        """
        for sig in self.signatures.values():
            feed = {}
            for k, info in sig.inputs.items():
                if info.is_string or info.shape is None or None in info.shape[1:]:
                    break
                feed[k] = np.zeros((1, *info.shape[1:]), dtype=info.dtype)
            else:
                sig(feed)

    def signature(self, name: str | None) -> Signature:
        """The named signature (``serving_default`` when ``name`` is empty)."""
        key = name or DEFAULT_SIGNATURE
        if key not in self.signatures:
            raise ServingError(
                "FAILED_PRECONDITION",
                f'Serving signature key "{key}" not found in model {self.name} version '
                f"{self.version}; available: {sorted(self.signatures)}",
            )
        return self.signatures[key]

    def metadata(self) -> dict[str, Any]:
        """TF Serving's ``GET .../metadata`` response body."""
        return {
            "model_spec": {"name": self.name, "signature_name": "", "version": str(self.version)},
            "metadata": {
                "signature_def": {
                    "signature_def": {k: s.metadata() for k, s in self.signatures.items()}
                }
            },
        }


def load_error_code(err: BaseException) -> str:
    """TF's canonical code name for a load error (``UNKNOWN`` when it has none)."""
    code = getattr(err, "error_code", None)
    if isinstance(code, int):
        from tensorflow.core.protobuf import error_codes_pb2

        try:
            return error_codes_pb2.Code.Name(code)
        except ValueError:
            return "UNKNOWN"
    return "NOT_FOUND" if isinstance(err, FileNotFoundError) else "UNKNOWN"


__all__ = [
    "Servable",
    "load_error_code",
    "ServingError",
    "Signature",
    "TensorInfo",
    "UnsafeModelError",
]
