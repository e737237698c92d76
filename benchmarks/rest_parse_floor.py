"""The floor of REST at batch 32: how fast can Python read the numbers of the bench's JSON body?

``benchmarks/serving_bench.py`` sends 32 images of 32x32x3 as ``{"instances": [...]}`` (2 MB,
98,304 numbers of 16-17 significant digits, what ``ndarray.tolist()`` of float32 images gives).
The issue's goal (REST overhead under 50% of the in-process call, ~17 ms here) leaves ~8.5 ms for
everything the server does; this script times the parsers on PyPI that turn that body into a
float64 array, each the median of ``--repeats`` calls, with the ratio to simdjson (the one
``kerasdl serve``'s fast path uses, :mod:`kerasdl.serving.fast_json`), and the fast path itself
(parse, shape and structure check).

    python benchmarks/rest_parse_floor.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import numpy as np


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    x = np.random.default_rng(0).random((32, 32, 32, 3), dtype=np.float32)
    body = json.dumps({"instances": np.round(x, 4).tolist()}).encode()  # as serving_bench sends
    start, end = body.index(b"[["), body.rindex(b"]") + 1
    span = body[start:end]
    want = np.round(x, 4).astype(np.float64).ravel()
    brackets_to_space = bytes.maketrans(b"[]", b"  ")
    cases: dict[str, Callable[[], np.ndarray]] = {}

    import simdjson

    from kerasdl.serving import fast_json

    parser_ = simdjson.Parser()

    def simd() -> np.ndarray:
        doc = parser_.parse(span)
        out = np.frombuffer(doc.as_buffer(of_type="d"), dtype=np.float64).copy()
        del doc
        return out

    cases["simdjson parse + flatten (pysimdjson)"] = simd
    cases["kerasdl fast path (parse, shape, structure check)"] = lambda: fast_json._numbers(
        body, start, end, 4
    ).ravel()
    try:
        import orjson

        cases["orjson + numpy.array"] = lambda: np.array(orjson.loads(span)).ravel()
    except ImportError:
        pass
    try:
        import pyarrow as pa
        import pyarrow.csv as pcsv

        lines = span.translate(brackets_to_space).replace(b",", b"\n")
        read = pcsv.ReadOptions(autogenerate_column_names=True, block_size=1 << 20)
        convert = pcsv.ConvertOptions(column_types={"f0": pa.float64()})
        cases["pyarrow CSV reader (numbers only, multi-threaded)"] = lambda: (
            pcsv.read_csv(pa.py_buffer(lines), read_options=read, convert_options=convert)
            .column(0)
            .to_numpy()
        )
    except ImportError:
        pass
    flat = span.translate(brackets_to_space)
    cases["numpy.fromstring(sep=',')"] = lambda: np.fromstring(flat, dtype=np.float64, sep=",")
    cases["bytes.translate of the body (the structure check alone)"] = lambda: np.frombuffer(
        body.translate(None, b"0123456789.eE+- "), dtype=np.uint8
    )
    print(f"body: {len(body):,} bytes, {want.size:,} numbers\n")
    print("| parser | ms (median) | / simdjson | same values |")
    print("|---|---:|---:|---|")
    base = None
    for name, fn in cases.items():
        ms = median_ms(fn, args.repeats)
        base = base or ms
        out = fn()
        same = "-" if out.dtype == np.uint8 else str(np.array_equal(out, want))
        print(f"| {name} | {ms:.2f} | {ms / base:.2f}x | {same} |")


if __name__ == "__main__":
    main()
