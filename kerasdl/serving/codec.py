"""TF Serving's REST predict format: JSON request -> named numpy arrays -> JSON response.

Request (``POST /v1/models/NAME[/versions/N]:predict``): an object with an optional
``"signature_name"`` and exactly one of

* ``"instances"`` (row format): a list with one entry per example; with one input each entry is
  the example's value (or ``{input_name: value}``), with several inputs each entry is an object
  ``{input_name: value}``. Response ``{"predictions": [...]}``: a plain list when the signature has
  one output, else a list of per-example objects ``{output_name: value}``.
* ``"inputs"`` (columnar format): a tensor (one input) or ``{input_name: tensor}``, batch first.
  Response ``{"outputs": tensor}`` (one output) or ``{"outputs": {output_name: tensor}}``.

String inputs take ``{"b64": "<base64>"}`` (or plain text); string outputs are UTF-8 text, or
``{"b64": ...}`` when the output name ends in ``_bytes`` or the bytes are not UTF-8.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np

from kerasdl.serving.errors import invalid
from kerasdl.serving.limits import MAX_JSON_DEPTH

try:  # orjson parses request bodies ~3x faster and writes numpy arrays directly
    import orjson
except ImportError:  # pragma: no cover - the stdlib json works, only slower
    orjson = None
from kerasdl.serving.servable import Signature, TensorInfo

ROW, COLUMNAR = "row", "columnar"


@dataclass
class PredictRequest:
    """A decoded predict request: which signature, which format, and the batched inputs."""

    signature_name: str
    format: str
    inputs: dict[str, np.ndarray]
    batch_size: int


def parse_json(body: bytes) -> dict[str, Any]:
    """Parse the request body; errors name the problem like TF Serving's parser does."""
    if not body.strip():
        raise invalid("JSON Parse error: The document is empty")
    doc = None
    if orjson is not None:
        with contextlib.suppress(orjson.JSONDecodeError):
            doc = orjson.loads(body)
    if doc is None:  # the stdlib parser reads NaN/Infinity tokens (rejected later, by name)
        try:
            doc = json.loads(body)
        except RecursionError as err:
            raise invalid("JSON Parse error: the document is nested too deeply.") from err
        except (ValueError, UnicodeDecodeError) as err:
            raise invalid(f"JSON Parse error: {err}") from err
    if not isinstance(doc, dict):
        raise invalid(f"JSON Value: {body[:80]!r} ... Is not an object")
    return doc


def signature_name(doc: dict[str, Any]) -> str:
    """The requested signature name ('' = serving_default)."""
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid("'signature_name' key must be a string value.")
    return name


def _string_leaf(value: Any, name: str) -> bytes:
    if isinstance(value, dict):
        if set(value) != {"b64"} or not isinstance(value["b64"], str):
            raise invalid(f'Input \'{name}\': a binary value must be {{"b64": "<base64>"}}.')
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError) as err:
            raise invalid(f"Input '{name}': invalid base64 in 'b64' value: {err}") from err
    if isinstance(value, str):
        return value.encode("utf-8")
    raise invalid(
        f"Input '{name}' is not of expected type: string (DT_STRING); send {{\"b64\": ...}} or "
        f"text. Received: {type(value).__name__}"
    )


def _string_tree(value: Any, name: str, depth: int) -> Any:
    """Decode nested lists of string leaves, at most ``depth`` lists deep (else 400)."""
    if isinstance(value, list):
        if depth <= 0:
            raise invalid(f"Input '{name}' is nested more than {MAX_JSON_DEPTH} lists deep.")
        return [_string_tree(v, name, depth - 1) for v in value]
    return _string_leaf(value, name)


def _check_shape(arr: np.ndarray, info: TensorInfo, sig: str) -> None:
    if arr.ndim == 0:
        raise invalid(f"Input '{info.name}' has no batch dimension: send a list of examples.")
    if arr.shape[0] == 0:
        raise invalid("The request holds no examples (empty batch).")
    check_signature_shape(arr, info, info.name, sig)


def signature_shape_ok(arr: np.ndarray, info: TensorInfo) -> bool:
    """Whether ``arr`` has the rank and the known sizes of the input ``info`` (always, when its
    shape is unknown)."""
    return info.shape is None or (
        arr.ndim == len(info.shape)
        and all(d is None or d == a for d, a in zip(info.shape, arr.shape, strict=False))
    )


def check_signature_shape(arr: np.ndarray, info: TensorInfo, name: str, sig: str) -> None:
    """A 400 unless ``arr`` has the rank and the known sizes of signature ``sig``'s input
    ``info`` (called ``name`` in the request)."""
    if not signature_shape_ok(arr, info):
        raise invalid(
            f"Input '{name}' has shape {list(arr.shape)} but signature '{sig}' expects "
            f"{info.shape_text()} (-1 = any size; the first dimension is the batch)."
        )


def to_array(value: Any, info: TensorInfo, sig: str) -> np.ndarray:
    """Convert one input's JSON value (batch first) to a checked numpy array."""
    name = info.name
    if info.is_string:
        tree = _string_tree(value, name, MAX_JSON_DEPTH)
        try:
            arr = np.empty(np.shape(tree) if isinstance(tree, list) else (), dtype=object)
            arr[...] = tree if isinstance(tree, list) else tree
        except ValueError as err:
            raise invalid(f"Input '{name}' is a ragged nested list: {err}") from err
        _check_shape(arr, info, sig)
        return arr
    try:
        arr = _dense(value)
        if arr is None:
            arr = np.array(value)
    except (ValueError, OverflowError) as err:
        if "maximum number of dimension" in str(err):
            deep = f"Input '{name}' is nested more than {MAX_JSON_DEPTH} lists deep."
            raise invalid(deep) from err
        raise invalid(
            f"Input '{name}' is a ragged nested list; every example must have the same shape "
            f"{info.shape_text()}."
        ) from err
    kind, want = arr.dtype.kind, info.dtype.kind
    allowed = {"f": "fiu", "i": "iu", "u": "iu", "b": "b"}.get(want, "")
    if kind not in allowed:
        got = {"U": "string", "b": "bool", "O": "object/null/mixed", "f": "float"}.get(kind, kind)
        raise invalid(
            f"Input '{name}' is not of expected type: {info.dtype_name} ({info.dtype.name}). "
            f"Received values of type {got}."
        )
    if want == "f":
        with np.errstate(over="ignore"):  # too large for the dtype: inf, refused just below
            arr = arr.astype(info.dtype)
        if not np.isfinite(arr).all():
            raise invalid(
                f"Input '{name}' contains NaN or Infinity (or a number too large for "
                f"{info.dtype.name}); signature '{sig}' takes finite numbers only."
            )
    else:
        arr = arr.astype(info.dtype)
    _check_shape(arr, info, sig)
    return arr


def _dense(value: Any) -> np.ndarray | None:
    """``np.array(value)`` for a rectangular nested list of scalars, faster; None otherwise.

    numpy reads nested lists element by element through its generic sequence protocol (22 ms
    for 32 32x32x3 images here); flattening level by level with ``itertools.chain`` and
    converting the flat list once gives the same array (the same leaves give the same dtype) in
    16 ms. Anything else (ragged, lists beside scalars, too deep) is left to ``np.array``, which
    then raises its own error.
    """
    if type(value) is not list or not value or type(value[0]) is not list:
        return None
    shape, level = [len(value)], value
    while type(level[0]) is list:
        if set(map(type, level)) != {list}:
            return None
        sizes = set(map(len, level))
        if len(sizes) != 1 or 0 in sizes or len(shape) >= MAX_JSON_DEPTH:
            return None
        shape.append(sizes.pop())
        level = list(chain.from_iterable(level))
    try:
        flat = np.array(level)
    except (ValueError, OverflowError):
        return None
    if flat.ndim != 1:
        return None
    return flat.reshape(shape)


def decode_predict(doc: dict[str, Any], sig: Signature, max_batch: int) -> PredictRequest:
    """Turn a parsed predict request into batched numpy inputs for ``sig``."""
    has_rows, has_cols = "instances" in doc, "inputs" in doc
    if has_rows and has_cols:
        raise invalid("Request may contain either 'instances' or 'inputs', but not both.")
    if not has_rows and not has_cols:
        raise invalid("Missing 'instances' or 'inputs' key: the request has no input.")
    names = list(sig.inputs)
    if has_rows:
        rows = doc["instances"]
        if not isinstance(rows, list):
            raise invalid("'instances' must be a list with one entry per example.")
        if not rows:
            raise invalid("The request holds no examples (empty batch).")
        columns = _columns_from_rows(rows, names)
        fmt = ROW
    else:
        columns = _columns_from_inputs(doc["inputs"], names)
        fmt = COLUMNAR
    arrays = {k: to_array(v, sig.inputs[k], sig.name) for k, v in columns.items()}
    sizes = {k: a.shape[0] for k, a in arrays.items()}
    batch = next(iter(sizes.values()))
    if any(s != batch for s in sizes.values()):
        raise invalid(f"All inputs must share the batch (first) dimension. Received sizes {sizes}.")
    if batch > max_batch:
        raise invalid(
            f"Batch size {batch} exceeds the server's maximum of {max_batch} (--max-batch)."
        )
    return PredictRequest(sig.name, fmt, arrays, int(batch))


def _columns_from_rows(rows: list[Any], names: list[str]) -> dict[str, list[Any]]:
    if len(names) == 1:
        (name,) = names
        column = []
        for i, r in enumerate(rows):
            if isinstance(r, dict) and set(r) != {"b64"}:  # {input_name: value}
                if set(r) != {name}:
                    unknown = sorted(set(r) - {name})
                    raise invalid(
                        f"Instance {i}: unknown inputs {unknown}; the signature takes {names}."
                    )
                r = r[name]
            column.append(r)
        return {name: column}
    columns: dict[str, list[Any]] = {n: [] for n in names}
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise invalid(f"Instance {i} must be an object {{input_name: value}} (inputs {names}).")
        unknown = sorted(set(row) - set(names))
        missing = sorted(set(names) - set(row))
        if unknown or missing:
            raise invalid(f"Instance {i}: unknown inputs {unknown}, missing inputs {missing}.")
        for n in names:
            columns[n].append(row[n])
    return columns


def _columns_from_inputs(value: Any, names: list[str]) -> dict[str, Any]:
    named = isinstance(value, dict) and set(value) != {"b64"}
    if len(names) == 1 and not (named and set(value) == set(names)):
        if named:
            raise invalid(f"Unknown input names {sorted(value)}; the signature takes {names}.")
        return {names[0]: value}
    if not named:
        raise invalid(f"'inputs' must be an object {{input_name: tensor}} for inputs {names}.")
    unknown, missing = sorted(set(value) - set(names)), sorted(set(names) - set(value))
    if unknown or missing:
        raise invalid(f"'inputs': unknown inputs {unknown}, missing inputs {missing}.")
    return dict(value)


def _jsonable(arr: np.ndarray, name: str) -> Any:
    if orjson is not None and arr.dtype.kind in "fiub" and arr.dtype.itemsize <= 8:
        return np.ascontiguousarray(
            arr
        )  # orjson writes numpy arrays (float32 at float32 precision, NaN as null)
    if arr.dtype.kind == "f":
        finite = np.isfinite(arr)
        if not finite.all():  # strict JSON has no NaN/Infinity: answer null there
            obj = arr.astype(object)
            obj[~finite] = None
            return obj.tolist()
        return arr.tolist()
    if arr.dtype.kind in "OSU":
        as_b64 = name.endswith("_bytes")
        flat = [_string_out(v, as_b64) for v in arr.reshape(-1).tolist()]
        return np.array(flat, dtype=object).reshape(arr.shape).tolist()
    return arr.tolist()


def _string_out(value: Any, as_b64: bool) -> Any:
    if isinstance(value, str):
        value = value.encode("utf-8")
    if not as_b64:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return {"b64": base64.b64encode(value).decode("ascii")}


def encode_predict(outputs: dict[str, np.ndarray], fmt: str) -> bytes:
    """The JSON response body for ``outputs`` in the request's format."""
    values = {k: _jsonable(v, k) for k, v in sorted(outputs.items())}
    if fmt == COLUMNAR:
        body: Any = {"outputs": next(iter(values.values())) if len(values) == 1 else values}
    elif len(values) == 1:
        body = {"predictions": next(iter(values.values()))}
    else:
        n = len(next(iter(values.values())))
        body = {"predictions": [{k: v[i] for k, v in values.items()} for i in range(n)]}
    return dumps(body)


def dumps(obj: Any) -> bytes:
    """Compact strict JSON (no NaN/Infinity tokens: non-finite numbers are written as null)."""
    if orjson is not None:
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8")
