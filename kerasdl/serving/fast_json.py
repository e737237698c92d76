"""A fast path for the commonest predict body: one float input given as a JSON array of numbers.

``{"instances": [[...]]}`` (or ``"inputs"``, with an optional ``"signature_name"`` before or
after it) for a signature with one floating-point input is what an image classifier's clients
send. The general path (:func:`~kerasdl.serving.codec.parse_json`, then
:func:`~kerasdl.serving.codec.to_array`) makes a Python float per number and a list per row:
~40 ms for 32 32x32x3 images here, as much as the model itself. This path reads the numbers
straight into a float64 buffer with simdjson (``pysimdjson``'s ``Array.as_buffer``, C++ with
SIMD parsing) and checks the structure on the raw bytes instead of on Python objects, in ~8 ms.

It answers only when it is sure to give exactly what the general path gives; on anything else
(another layout, a string anywhere in the array, a ragged or too-deep array, a non-number, NaN,
a magnitude at or above 2**53, a shape the signature refuses, an over-size batch)
it returns ``None`` and the general path runs, with its error messages. Exactness:

* *Structure*: with the numbers and whitespace removed, a regular array of shape
  ``(n0, ..., nk)`` leaves one fixed skeleton of brackets and commas (``[[,,],[,,]]`` for
  ``(2, 3)``); the body's skeleton must equal it, and the count of numbers must be the product
  of the shape (a one-number list and an empty one have the same skeleton). simdjson has parsed
  the span as valid JSON, so between two separators there is exactly one number.
* *Values*: simdjson, like orjson and Python, reads a decimal number as the nearest float64; an
  integer below 2**53 is exact in float64. Casting that to the input's dtype is what the general
  path does with the parsed floats and integers.

Reference: simdjson (Langdale and Lemire, "Parsing gigabytes of JSON per second", VLDB Journal
28, 2019); pysimdjson (https://github.com/TkTech/pysimdjson).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from kerasdl.serving.codec import COLUMNAR, ROW, PredictRequest, signature_shape_ok
from kerasdl.serving.limits import MAX_JSON_DEPTH

try:
    import simdjson
except ImportError:  # pragma: no cover - the general path works, only slower
    simdjson = None

MIN_BYTES = 4096  # below this the general path is as fast and this one is not worth its checks

_NAME = rb'"signature_name"\s*:\s*"([A-Za-z0-9_.\-/]*)"'
_HEAD = re.compile(rb"\s*\{\s*(?:" + _NAME + rb"\s*,\s*)?\"(instances|inputs)\"\s*:\s*(?=\[)")
_TAIL = re.compile(rb"\]\s*(?:,\s*" + _NAME + rb"\s*)?\}\s*\Z")
_NUMBER_AND_SPACE = b"0123456789.eE+- \t\n\r"
_EXACT_INTEGERS = 2.0**53
_local = threading.local()


def _skeleton(shape: tuple[int, ...]) -> bytes:
    """The brackets and commas of a regular JSON array of ``shape`` (numbers left out)."""
    text = b""
    for size in reversed(shape):
        text = b"[" + b",".join([text] * size) + b"]"
    return text


def _first_path_shape(array: Any, rank: int | None) -> tuple[int, ...] | None:
    """The lengths along the first element at each of ``rank`` levels (all levels if None);
    None if a level is not a non-empty list or the element below the last one is not a number."""
    shape: list[int] = []
    while rank is None or len(shape) < rank:
        if not isinstance(array, simdjson.Array):
            break
        if len(array) == 0 or len(shape) >= MAX_JSON_DEPTH:
            return None
        shape.append(len(array))
        array = array[0]
    if isinstance(array, simdjson.Array | simdjson.Object) or len(shape) != (rank or len(shape)):
        return None
    return tuple(shape)


def _numbers(body: bytes, start: int, end: int, rank: int | None) -> np.ndarray | None:
    """The numbers of ``body[start:end]`` (an array) as a float64 array of its shape, or None
    if it is not regular. Nothing is copied: simdjson reads the span through a memoryview, and
    the skeleton is taken of the whole body (the head's and tail's parts are a few bytes)."""
    parser = getattr(_local, "parser", None)
    if parser is None:  # one per thread, reused: a new one pays for its buffers on every call
        parser = _local.parser = simdjson.Parser()
    try:
        with memoryview(body) as view, view[start:end] as span:
            doc = parser.parse(span)
        shape = _first_path_shape(doc, rank)
        if shape is None:
            return None
        flat = np.frombuffer(doc.as_buffer(of_type="d"), dtype=np.float64)
    except (ValueError, TypeError, RuntimeError, MemoryError):
        return None
    finally:
        doc = None  # the parser may not be reused or freed while its elements live
    if flat.size != np.prod(shape):
        return None
    head, tail = body[:start], body[end:]
    skeleton = head.translate(None, _NUMBER_AND_SPACE) + _skeleton(shape)
    if body.translate(None, _NUMBER_AND_SPACE) != skeleton + tail.translate(
        None, _NUMBER_AND_SPACE
    ):
        return None
    if flat.size and not np.abs(flat).max() < _EXACT_INTEGERS:
        return None  # float64 cannot tell an integer token from a decimal one from here on
    return flat.reshape(shape)


def fast_decode(
    body: bytes, signature: Callable[[str], Any], max_batch: int
) -> tuple[Any, PredictRequest] | None:
    """The signature and decoded request of ``body``, or None to let the general path decide.

    Args:
        body: the raw request body.
        signature: looks a signature up by name, ``""`` for the default (``Servable.signature``).
        max_batch: the server's ``--max-batch``.
    """
    if simdjson is None or len(body) < MIN_BYTES:
        return None
    head = _HEAD.match(body)
    tail = _TAIL.search(body, max(0, len(body) - 512))
    if head is None or tail is None or (head.group(1) and tail.group(1)):
        return None
    start, end = head.end(), tail.start() + 1  # the array
    if body.find(b'"', start, end) >= 0:
        return None
    try:
        sig = signature((head.group(1) or tail.group(1) or b"").decode())
    except Exception:  # noqa: BLE001 - the general path reports it, after parsing as TF Serving
        return None
    if len(sig.inputs) != 1:
        return None
    ((name, info),) = sig.inputs.items()
    if info.is_string or info.dtype.kind != "f":
        return None
    values = _numbers(body, start, end, None if info.shape is None else len(info.shape))
    if values is None or not 0 < len(values) <= max_batch:
        return None
    with np.errstate(over="ignore"):  # an overflow becomes inf, and declined
        arr = values.astype(info.dtype)
    if not np.isfinite(arr).all() or not signature_shape_ok(arr, info):
        return None
    fmt = ROW if head.group(2) == b"instances" else COLUMNAR
    return sig, PredictRequest(sig.name, fmt, {name: arr}, len(arr))
