"""A fast path for the commonest predict body: one float input given as a JSON array of numbers.

``{"instances": [[...]]}`` (or ``"inputs"``, with an optional ``"signature_name"`` before or
after it) for a signature with one floating-point input is what an image classifier's clients
send. The general path (:func:`~kerasdl.serving.codec.parse_json`, then
:func:`~kerasdl.serving.codec.to_array`) makes a Python float per number and a list per row:
~40 ms for 32 32x32x3 images here, as much as the model itself. This path reads the numbers
straight into a float64 buffer with simdjson (``pysimdjson``'s ``Array.as_buffer``, C++ with
SIMD parsing) and checks the structure on the raw bytes instead of on Python objects, in ~8 ms;
the server feeds the body to a :class:`StreamDecoder` while it arrives, so most of that is done
by the time the last byte is in.

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
_OPENING = re.compile(rb"[\[\s]*")
_HEAD_WINDOW = 1024  # a head (the key, a signature name) longer than this: the general path
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


class StreamDecoder:
    """The fast path, fed a body piece by piece while it arrives (or whole, by :meth:`decode`).

    A 2 MB body takes a few milliseconds to arrive, in pieces, and parsing it as long again
    once it is complete. Here the pieces are worked on as they arrive:

    * each piece's skeleton (``bytes.translate``) is taken at once; the body's skeleton is
      their concatenation, compared once at the end;
    * the examples are parsed in parts, each up to the last *top-level* comma received: with
      the leaves at depth ``r`` (the count of ``[`` the array opens with), a run of exactly
      ``r - 1`` closing brackets and a comma closes one example and starts the next, so the
      text before it is a list of whole examples. That comma is overwritten with ``]`` to
      parse the part in place as one array, then with ``[`` to open the next part.

    Splitting cannot make a wrong answer: the parts and the commas between them are the whole
    array, each part must be valid JSON with the same example shape, and the body's skeleton
    is checked whole. A comma that is not between examples (the array is irregular) makes a
    part that fails its checks, and the body goes to the general path.
    """

    PART_BYTES = 1 << 18  # parse once this much waits (smaller parts pay more per-call costs)

    def __init__(self, signature: Callable[[str], Any], max_batch: int) -> None:
        self._signature = signature
        self._max_batch = max_batch
        self._buf: bytearray | bytes = bytearray()  # received, not yet parsed (from _at)
        self._at = 0
        self._head_end = 0
        self._skeleton: list[bytes] = []  # of every piece received
        self._size = 0
        self._head: tuple[bytes, bytes] | None = None  # (signature name or b"", key)
        self._head_skeleton = b""
        self._rank = 0  # leaves are this many lists deep; 0 until the first number is seen
        self._parts: list[np.ndarray] = []
        self._example: tuple[int, ...] | None = None
        self._count = 0
        self._failed = simdjson is None

    def feed(self, chunk: bytes) -> None:
        """Take the next piece of the body; parse the examples in it if enough waits."""
        self._size += len(chunk)
        if self._failed:
            return
        try:
            self._skeleton.append(chunk.translate(None, _NUMBER_AND_SPACE))
            self._buf += chunk  # type: ignore[operator]
            if self._rank == 0 and not self._start(final=False):
                return
            if len(self._buf) >= self.PART_BYTES:
                cut = self._last_top_level_comma()
                if cut > 0:
                    self._take(cut)
                    self._buf[cut] = ord("[")  # type: ignore[index]
                    del self._buf[:cut]  # type: ignore[union-attr]
        except Exception:  # noqa: BLE001 - anything odd: the general path decides
            self._fail()

    def decode(self, body: bytes) -> tuple[Any, PredictRequest] | None:
        """The whole body at once: the same as :meth:`feed` then :meth:`finish`."""
        self._size = len(body)
        if not self._failed:
            self._buf = body
            self._skeleton = [body.translate(None, _NUMBER_AND_SPACE)]
        return self.finish()

    def finish(self) -> tuple[Any, PredictRequest] | None:
        """The signature and decoded request of the whole body, or None for the general path."""
        try:
            return self._finish()
        except Exception:  # noqa: BLE001 - the general path reports it, after parsing as TF Serving
            return None
        finally:
            self._fail()  # one answer per decoder; frees what it holds

    def _fail(self) -> None:
        self._failed = True
        self._buf, self._skeleton, self._parts = b"", [], []

    def _start(self, final: bool) -> bool:
        """Read the head and the array's depth; False while they are incomplete (or bad)."""
        buf = self._buf
        if self._head is None:
            head = _HEAD.match(buf)
            if head is None:
                if final or len(buf) >= _HEAD_WINDOW:
                    self._fail()
                return False
            self._head = (bytes(head.group(1) or b""), bytes(head.group(2)))  # buf will change
            self._head_end = head.end()
        opening = _OPENING.match(buf, self._head_end)
        if opening.end() == len(buf):
            if final:
                self._fail()
            return False  # the first number has not arrived yet
        if buf[opening.end()] not in b"-0123456789":  # objects, strings ({"b64": ...}), ...
            self._fail()
            return False
        self._rank = buf.count(b"[", opening.start(), opening.end())
        self._head_skeleton = buf[: opening.start()].translate(None, _NUMBER_AND_SPACE)
        if isinstance(buf, bytearray):
            del buf[: opening.start()]  # from the array's "[" (cheap: bytearray moves its start)
        else:
            self._at = opening.start()  # a whole body: not copied
        return True

    def _last_top_level_comma(self) -> int:
        """The position of the last comma received that follows exactly ``rank - 1`` closing
        brackets (any comma when the leaves are the examples), or -1."""
        buf, closes = self._buf, b"]" * (self._rank - 1)
        if not closes:
            return buf.rfind(b",")
        end = len(buf)
        for _ in range(8):  # a few tries; else wait for more data (finish parses the rest)
            at = buf.rfind(closes, 0, end)
            if at <= 0:
                return -1
            after = at + len(closes)
            while after < len(buf) and buf[after] in b" \t\r\n":
                after += 1
            if buf[at - 1] != ord("]") and after < len(buf) and buf[after] == ord(","):
                return after
            end = at + len(closes) - 1
        return -1

    def _take(self, end: int) -> None:
        """Parse ``_buf[:end]`` and a ``]`` (``[``, then examples and commas) as one array;
        keep its numbers."""
        buf = self._buf
        closing = buf[end] if end < len(buf) else None
        if closing is not None and closing != ord("]"):
            buf[end] = ord("]")  # type: ignore[index]
        with memoryview(buf) as view, view[self._at : end + 1] as text:
            values = _numbers(text, self._rank)
        if values is None or (self._example is not None and values.shape[1:] != self._example):
            return self._fail()
        self._example = values.shape[1:]
        self._count += len(values)
        if self._count > self._max_batch:
            return self._fail()
        self._parts.append(values)

    def _finish(self) -> tuple[Any, PredictRequest] | None:
        if self._failed or self._size < MIN_BYTES:
            return None
        if self._rank == 0 and not self._start(final=True):
            return None
        buf, (name, key) = self._buf, self._head  # type: ignore[misc]
        tail = _TAIL.search(buf, max(0, len(buf) - 512))
        if tail is None or (name and tail.group(1)):
            return None
        self._take(tail.start())  # the last part, with the array's own "]"
        if self._failed:
            return None
        expected = self._head_skeleton + _skeleton((self._count, *self._example))  # type: ignore[misc]
        expected += buf[tail.start() + 1 :].translate(None, _NUMBER_AND_SPACE)
        if b"".join(self._skeleton) != expected:
            return None
        sig = self._signature((name or tail.group(1) or b"").decode())
        if len(sig.inputs) != 1:
            return None
        ((input_name, info),) = sig.inputs.items()
        if info.is_string or info.dtype.kind != "f":
            return None
        if info.shape is not None and len(info.shape) != self._rank:
            return None
        values = self._parts[0] if len(self._parts) == 1 else np.concatenate(self._parts)
        with np.errstate(over="ignore"):  # an overflow becomes inf, and declined
            arr = values.astype(info.dtype)
        if not np.isfinite(arr).all() or not signature_shape_ok(arr, info):
            return None
        fmt = ROW if key == b"instances" else COLUMNAR
        return sig, PredictRequest(sig.name, fmt, {input_name: arr}, len(arr))


def _numbers(text: memoryview, rank: int) -> np.ndarray | None:
    """``text``'s numbers as a float64 array of its shape, or None unless it is an array of
    depth ``rank`` along its first elements, holding that shape's count of numbers, all below
    2**53 in magnitude (its regularity is checked on the skeleton)."""
    parser = getattr(_local, "parser", None)
    if parser is None:  # one per thread, reused: a new one pays for its buffers on every call
        parser = _local.parser = simdjson.Parser()
    try:
        doc = parser.parse(text)
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
    return StreamDecoder(signature, max_batch).decode(body)
