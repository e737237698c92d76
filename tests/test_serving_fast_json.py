"""The simdjson fast path decodes exactly what the general path decodes, or declines.

Every body here goes through both :func:`kerasdl.serving.fast_json.fast_decode` and the general
path (``codec.parse_json`` then ``codec.decode_predict``). Where the fast path answers, its
signature, format, batch and array (dtype, shape and bytes) must equal the general path's;
where it declines, the general path decides (and its 400s are tested elsewhere). The bodies
that a client of an image model sends must take the fast path.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from kerasdl.serving import codec, fast_json
from kerasdl.serving.errors import ServingError
from kerasdl.serving.servable import TensorInfo

MAX_BATCH = 8


class FakeSignature:
    """What the decoders read from a signature: its name and its inputs."""

    def __init__(self, name: str, *inputs: TensorInfo) -> None:
        self.name = name
        self.inputs = {i.name: i for i in inputs}


def _f32(shape, name="images"):
    return TensorInfo(name, np.dtype(np.float32), "DT_FLOAT", shape)


SIGS = {
    "serving_default": FakeSignature("serving_default", _f32((None, 2, 3))),
    "any_rank": FakeSignature("any_rank", _f32(None)),
    "free": FakeSignature("free", _f32((None, None, None))),
    "half": FakeSignature("half", TensorInfo("x", np.dtype(np.float16), "DT_HALF", (None, 2))),
    "ints": FakeSignature("ints", TensorInfo("x", np.dtype(np.int32), "DT_INT32", (None, 2))),
    "two": FakeSignature("two", _f32((None, 2), "a"), _f32((None, 2), "b")),
}


def _signature(name: str) -> FakeSignature:
    name = name or "serving_default"
    if name not in SIGS:
        raise codec.invalid(f'Serving signature name: "{name}" not found in signature def')
    return SIGS[name]


def _general(body: bytes):
    try:
        doc = codec.parse_json(body)
        sig = _signature(codec.signature_name(doc))
        req = codec.decode_predict(doc, sig, MAX_BATCH)
    except ServingError as err:
        return ("error", err.message)
    return _summary(sig, req)


def _summary(sig, req):
    ((name, arr),) = req.inputs.items() if len(req.inputs) == 1 else ((None, None),)
    if arr is None:
        return ("multi", sig.name)
    return (sig.name, req.format, req.batch_size, name, arr.dtype, arr.shape, arr.tobytes())


def _both(body: bytes):
    fast = fast_json.fast_decode(body, _signature, MAX_BATCH)
    return (None if fast is None else _summary(*fast)), _general(body)


@pytest.fixture(autouse=True)
def _small_bodies_too(monkeypatch):
    monkeypatch.setattr(fast_json, "MIN_BYTES", 0)


RNG = np.random.default_rng(0)
X = RNG.standard_normal((3, 2, 3)).astype(np.float32)

TAKEN = {  # bodies the fast path must take
    "compact": json.dumps({"instances": X.tolist()}, separators=(",", ":")),
    "pretty": json.dumps({"instances": X.tolist()}, indent=2),
    "columnar": json.dumps({"inputs": X.tolist()}),
    "name_first": json.dumps({"signature_name": "serving_default", "instances": X.tolist()}),
    "name_last": json.dumps({"inputs": X.tolist(), "signature_name": "free"}),
    "any_rank": json.dumps({"signature_name": "any_rank", "instances": X.tolist()}),
    "ints": '{"instances": [[[1, 2, 3], [-4, 0, -0]]]}',
    "mixed": '{"instances": [[[1, 2.5, 3e2], [-4E-3, 0.0, -0.0]]]}',
    "exponent_edges": '{"instances": [[[1e-45, 3.4e15, 5e-324], [9007199254740991, 1, 2]]]}',
    "float16": '{"signature_name": "half", "instances": [[0.1, 65504], [1e-8, -2.5]]}',
    "max_batch": json.dumps({"instances": np.zeros((MAX_BATCH, 2, 3)).tolist()}),
    "crlf_tabs": '\r\n\t{ "instances" :\t[[[1,2,3],\r\n[4,5,6]]] }\n',
}

DECLINED = {  # bodies the fast path must leave to the general path
    "ragged_same_count": '{"signature_name": "free", "instances": [[[1, 2]], [[3]], [[4, 5, 6]]]}',
    "empty_inner": '{"signature_name": "free", "instances": [[[1], []]]}',
    "empty_batch": '{"instances": []}',
    "number_beside_lists": '{"signature_name": "free", "instances": [[[1, 2], 3]]}',
    "too_deep_once": '{"instances": [[[1, [2], 3], [4, 5, 6]]]}',
    "true": '{"instances": [[[true, 2, 3], [4, 5, 6]]]}',
    "null": '{"instances": [[[null, 2, 3], [4, 5, 6]]]}',
    "string": '{"instances": [[["1", 2, 3], [4, 5, 6]]]}',
    "nan": '{"instances": [[[NaN, 2, 3], [4, 5, 6]]]}',
    "infinity": '{"instances": [[[-Infinity, 2, 3], [4, 5, 6]]]}',
    "over_float64": '{"instances": [[[1e400, 2, 3], [4, 5, 6]]]}',
    "over_float32": '{"instances": [[[1e39, 2, 3], [4, 5, 6]]]}',
    "float16_overflow": '{"signature_name": "half", "instances": [[70000, 1]]}',
    # At or above 2**53 a float64 cannot tell an integer token from a decimal one, and numpy
    # casts all-integer arrays from int64: the general path decides.
    "big_float": '{"instances": [[[3.4e38, 2, 3], [4, 5, 6]]]}',
    "big_int": '{"instances": [[[9007199254740993, 2, 3], [4, 5, 6]]]}',
    "huge_int": '{"instances": [[[18446744073709551616, 2, 3], [4, 5, 6]]]}',
    "wrong_shape": '{"instances": [[[1, 2], [4, 5]]]}',
    "wrong_rank": '{"instances": [[1, 2, 3]]}',
    "over_max_batch": json.dumps({"instances": np.zeros((MAX_BATCH + 1, 2, 3)).tolist()}),
    "both_keys": '{"instances": [[[1,2,3],[4,5,6]]], "inputs": [[[1,2,3],[4,5,6]]]}',
    "two_names": '{"signature_name": "free", "instances": [[[1]]], "signature_name": "free"}',
    "duplicate_key": '{"instances": [[[1,2,3],[4,5,6]]], "instances": [[[1,2,3],[4,5,6]]]}',
    "unknown_signature": '{"signature_name": "nope", "instances": [[[1,2,3],[4,5,6]]]}',
    "escaped_name": '{"signature_name": "serving\\u005fdefault", "instances": [[[1,2,3],[4,5,6]]]}',
    "int_signature": '{"signature_name": "ints", "instances": [[1, 2]]}',
    "two_inputs": '{"signature_name": "two", "inputs": [[1, 2]]}',
    "row_objects": '{"instances": [{"images": [[1,2,3],[4,5,6]]}]}',
    "trailing_comma": '{"instances": [[[1,2,3],[4,5,6],]]}',
    "leading_zero": '{"instances": [[[01,2,3],[4,5,6]]]}',
    "bare_dot": '{"instances": [[[.5,2,3],[4,5,6]]]}',
    "plus_sign": '{"instances": [[[+1,2,3],[4,5,6]]]}',
    "missing_number": '{"instances": [[[1,,3],[4,5,6]]]}',
    "unclosed": '{"instances": [[[1,2,3],[4,5,6]]}',
    "extra_text": '{"instances": [[[1,2,3],[4,5,6]]]} x',
    "not_an_object": "[[[1,2,3],[4,5,6]]]",
    "scalar": '{"signature_name": "any_rank", "instances": 5}',
}


@pytest.mark.parametrize("body", TAKEN.values(), ids=TAKEN.keys())
def test_the_fast_path_takes_plain_float_arrays_and_matches_the_general_path(body):
    fast, general = _both(body.encode())
    assert fast is not None
    assert fast == general


@pytest.mark.parametrize("body", DECLINED.values(), ids=DECLINED.keys())
def test_the_fast_path_declines_what_it_cannot_prove(body):
    fast, _ = _both(body.encode())
    assert fast is None


def _mutations(text: str, rng: np.random.Generator, n: int):
    """``n`` random one-character edits of ``text`` drawn from the characters that matter."""
    alphabet = '[],0123456789.-eE "'
    for _ in range(n):
        i = int(rng.integers(len(text)))
        op = rng.integers(3)
        c = alphabet[int(rng.integers(len(alphabet)))]
        if op == 0:
            yield text[:i] + text[i + 1 :]
        elif op == 1:
            yield text[:i] + c + text[i:]
        else:
            yield text[:i] + c + text[i + 1 :]


def test_random_edits_never_make_the_paths_disagree():
    rng = np.random.default_rng(1)
    bodies = []
    for shape in [(2, 2, 3), (1, 2, 3), (3, 1, 1), (2, 3, 2)]:
        x = np.round(rng.standard_normal(shape), 2)
        name = "serving_default" if shape[1:] == (2, 3) else "free"
        base = json.dumps({"signature_name": name, "instances": x.tolist()})
        bodies += list(_mutations(base, rng, 150))
    answered = 0
    for body in bodies:
        fast, general = _both(body.encode())
        if fast is not None:
            answered += 1
            assert fast == general, body
    assert answered > 20  # some edits (a digit for a digit) keep the body valid and taken


def test_large_bodies_only(monkeypatch):
    monkeypatch.setattr(fast_json, "MIN_BYTES", 4096)
    small = TAKEN["compact"].encode()
    assert fast_json.fast_decode(small, _signature, MAX_BATCH) is None
    big = json.dumps({"instances": np.zeros((MAX_BATCH, 2, 3)).tolist()}, indent=16).encode()
    assert len(big) >= 4096
    assert fast_json.fast_decode(big, _signature, MAX_BATCH) is not None


def test_an_image_batch_is_exact_and_float32():
    x = RNG.random((MAX_BATCH, 2, 3), dtype=np.float32)
    body = json.dumps({"instances": x.tolist()}).encode()
    sig, req = fast_json.fast_decode(body, _signature, MAX_BATCH)
    assert sig is SIGS["serving_default"] and req.format == codec.ROW
    arr = req.inputs["images"]
    assert arr.dtype == np.float32 and req.batch_size == MAX_BATCH
    np.testing.assert_array_equal(arr, x)  # Python's repr of a float32 round-trips exactly
