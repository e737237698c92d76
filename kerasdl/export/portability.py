"""The zoo beyond TensorFlow: export-format parity and Keras-backend parity, family by family.

One small configuration per family (:data:`CASES`: same architecture and block structure as the
registry variant, thinner and shallower so that it builds in seconds), with telling weights
(:func:`telling_weights`: randomised batch-norm statistics, no all-zero or all-one tensor), and
two checks:

* **formats**: each case converted to ONNX and LiteRT (:func:`kerasdl.export.formats.export_file`)
  and run by onnxruntime / the LiteRT interpreter on random images; the relative error against
  the Keras model's outputs (the table in ``docs/export.md``).
* **backends**: the TensorFlow backend saves each case's ``.weights.h5``, inputs and logits
  (``save``); another backend (``KERAS_BACKEND=jax`` or ``torch``) builds the same model, loads
  the weights and compares its logits (``check``).

Command line (``python -m kerasdl.export.portability``)::

    formats [--formats onnx,litert] [NAME ...]      # Markdown table of export parity
    save DIR [NAME ...]                             # TensorFlow backend: references into DIR
    check DIR [--fast-init] [NAME ...]              # current backend: compare, JSON to stdout
    backends [--backends jax,torch] [NAME ...]      # save + check in subprocesses, Markdown

This module imports neither TensorFlow nor Keras at import time (it runs under every backend).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

#: registry name -> constructor overrides (``num_classes`` is 5 unless given)
CASES: dict[str, dict[str, Any]] = {
    "alexnet": dict(input_shape=(63, 63, 3), filters=[8, 8, 8, 8, 8], fc_units=16),
    "alexnet_owt": dict(input_shape=(63, 63, 3), filters=[8, 8, 8, 8, 8], fc_units=16),
    "vgg11_bn": dict(input_shape=(32, 32, 3), filters=[8, 8, 16, 16, 16], fc_units=16),
    "resnet18": dict(input_shape=(32, 32, 3), depths=[1, 1, 1, 1]),
    "resnext50_32x4d": dict(input_shape=(32, 32, 3), depths=[1, 1, 1, 1], width_per_group=1),
    "wide_resnet50_2": dict(input_shape=(32, 32, 3), depths=[1, 1, 1, 1], width_per_group=16),
    "densenet121": dict(
        input_shape=(32, 32, 3), block_config=[2, 2, 2, 2], growth_rate=4, num_init_features=8
    ),
    "googlenet": dict(input_shape=(32, 32, 3)),
    "efficientnet_b0": dict(input_shape=(32, 32, 3), width_mult=0.25, depth_mult=0.25),
    "vit_ti_16": dict(
        input_shape=(32, 32, 3), patch_size=8, hidden_dim=16, num_layers=2, num_heads=2, mlp_dim=32
    ),
    "mlp": dict(input_shape=(8, 8, 1)),
    "perceptron": dict(input_shape=(8, 8, 1)),
    "simple_cnn": dict(input_shape=(16, 16, 3), filters=[8, 16], convs_per_stage=1),
    "resnet20": dict(input_shape=(16, 16, 3)),
    "wrn_28_2": dict(input_shape=(16, 16, 3), depth=10, widen_factor=1),
    "darts_net": dict(input_shape=(16, 16, 3), init_channels=4, layers=5),
}
FORMAT_NAMES = ("onnx", "litert")
BACKENDS = ("jax", "torch")
ATOL = RTOL = 1e-4


def case_kwargs(name: str) -> dict[str, Any]:
    """The constructor arguments of case ``name`` (5 classes)."""
    return {"num_classes": 5, **CASES[name]}


def telling_weights(model: Any, seed: int = 0) -> Any:
    """Overwrite the weights a fresh model holds as constants with random values, in place.

    Moving variances become U(0.5, 2), every other all-zero tensor N(0, 0.2) (biases, moving
    means, zero-initialised residual scales) and every all-one tensor U(0.5, 1.5) (batch-norm
    scales), so a port that drops a bias or mixes up the statistics changes the logits.
    """
    import keras

    rng = np.random.default_rng(seed)
    for weight in model.weights:
        value = keras.ops.convert_to_numpy(weight)
        if not np.issubdtype(value.dtype, np.floating) or value.size == 0:
            continue
        if weight.path.endswith("moving_variance"):
            new = rng.uniform(0.5, 2.0, value.shape)
        elif np.all(value == 0.0):
            new = rng.normal(0.0, 0.2, value.shape)
        elif np.all(value == 1.0):
            new = rng.uniform(0.5, 1.5, value.shape)
        else:
            continue
        weight.assign(new.astype(value.dtype))
    return model


def build_case(name: str, seed: int = 0, telling: bool = True) -> Any:
    """The case's model, seeded; with :func:`telling_weights` unless ``telling`` is False."""
    import keras

    from kerasdl.registry import create_model

    keras.utils.set_random_seed(seed)
    model = create_model(name, **case_kwargs(name))
    return telling_weights(model, seed) if telling else model


def case_inputs(name: str, batch: int = 2, seed: int = 0) -> np.ndarray:
    """Random float32 inputs in [0, 1) for case ``name``."""
    shape = tuple(CASES[name]["input_shape"])
    return np.random.default_rng(seed).random((batch, *shape), np.float32)


def save_reference(work: str | Path, names: list[str] | None = None) -> list[str]:
    """TensorFlow backend: write ``NAME.weights.h5``, ``NAME.x.npy`` and ``NAME.y.npy``."""
    import keras

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError("References are saved on the TensorFlow backend (KERAS_BACKEND).")
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    names = list(names or CASES)
    for name in names:
        model = build_case(name)
        x = case_inputs(name)
        model.save_weights(work / f"{name}.weights.h5")
        np.save(work / f"{name}.x.npy", x)
        np.save(work / f"{name}.y.npy", keras.ops.convert_to_numpy(model(x, training=False)))
    return names


def _numpy_initializers() -> None:
    """JAX on a CPU compiles one XLA program per random initializer and weight shape (about a
    second each on a busy 2-core machine, minutes for GoogLeNet); the weights are overwritten by
    ``load_weights`` anyway, so draw them with NumPy."""
    import jax.numpy as jnp
    from keras.src.backend.jax import random as jax_random

    def draw(shape: Any, *args: Any, dtype: Any = None, seed: Any = None, **kw: Any) -> Any:
        values = np.random.default_rng(0).uniform(-0.05, 0.05, tuple(shape))
        return jnp.asarray(values, dtype or "float32")

    for fn in ("normal", "uniform", "truncated_normal"):
        setattr(jax_random, fn, draw)


def check_backend(
    work: str | Path, names: list[str] | None = None, fast_init: bool = False
) -> dict[str, dict[str, Any]]:
    """Current backend: build each case, load the TensorFlow weights, compare the logits.

    Returns:
        ``{name: {"ok": bool, "max_abs": float, "rel": float, "seconds": float}}``, or
        ``{"ok": False, "error": "..."}`` for a case that fails to build or run.
    """
    import keras

    from kerasdl.export.formats import relative_error
    from kerasdl.registry import create_model

    if fast_init and keras.backend.backend() == "jax":
        _numpy_initializers()
    work = Path(work)
    results: dict[str, dict[str, Any]] = {}
    for name in names or list(CASES):
        start = time.perf_counter()
        try:
            model = create_model(name, **case_kwargs(name))
            model.load_weights(work / f"{name}.weights.h5")
            x = np.load(work / f"{name}.x.npy")
            if keras.backend.backend() == "jax":  # one compiled program, not op-by-op dispatch
                y = model.predict(x, batch_size=len(x), verbose=0)
            else:
                y = keras.ops.convert_to_numpy(model(x, training=False))
            want = np.load(work / f"{name}.y.npy")
            ok = bool(np.allclose(y, want, rtol=RTOL, atol=ATOL))
            results[name] = {
                "ok": ok,
                "max_abs": float(np.max(np.abs(y - want))),
                "rel": relative_error(y, want),
            }
        except Exception as err:  # noqa: BLE001 - reported per case, not raised
            results[name] = {"ok": False, "error": f"{type(err).__name__}: {err}"[:500]}
        results[name]["seconds"] = round(time.perf_counter() - start, 2)
    return results


def run_backend(backend: str, work: str | Path, names: list[str] | None = None) -> dict:
    """:func:`check_backend` in a subprocess with ``KERAS_BACKEND=backend``; its JSON result."""
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, "-m", "kerasdl.export.portability", "check", str(work), *(names or [])]
    proc = subprocess.run(
        [*cmd, "--fast-init"], capture_output=True, text=True, env=env, timeout=1800
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{backend} check failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def format_parity(
    names: list[str] | None = None, formats: tuple[str, ...] = FORMAT_NAMES
) -> dict[str, dict[str, Any]]:
    """Convert each case to each format, run it, and compare with the Keras model.

    Returns:
        ``{name: {fmt: {"rel": worst relative error over logits and probabilities, "seconds":
        conversion time} or {"error": the one-line reason}}}``.
    """
    from kerasdl.data.preprocess import PreprocessSpec
    from kerasdl.errors import UserError
    from kerasdl.export.formats import FILE_NAMES, check_parity, export_file

    table: dict[str, dict[str, Any]] = {}
    for name in names or list(CASES):
        model = build_case(name)
        h, w, c = CASES[name]["input_shape"]
        spec = PreprocessSpec((h, w), c, [0.45] * c, [0.25] * c)
        table[name] = {}
        for fmt in formats:
            with tempfile.TemporaryDirectory(prefix="kerasdl-parity-") as tmp:
                path = Path(tmp) / FILE_NAMES[fmt]
                start = time.perf_counter()
                try:
                    reference = export_file(model, spec, fmt, path)
                    seconds = time.perf_counter() - start
                    errors = check_parity(path, reference, spec)
                    table[name][fmt] = {"rel": max(errors.values()), "seconds": round(seconds, 1)}
                except UserError as err:
                    table[name][fmt] = {"error": str(err)}
    return table


def _markdown_formats(table: dict[str, dict[str, Any]]) -> str:
    fmts = sorted({f for row in table.values() for f in row}, key=FORMAT_NAMES.index)
    lines = [
        "| model | " + " | ".join(f"{f} rel. error | {f} s" for f in fmts) + " |",
        "|---|" + "---:|---:|" * len(fmts),
    ]
    for name, row in table.items():
        cells = []
        for f in fmts:
            r = row[f]
            cells += [f"{r['rel']:.1e}", f"{r['seconds']}"] if "rel" in r else [r["error"], "-"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _markdown_backends(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    backends = list(results)
    lines = [
        "| model | " + " | ".join(f"{b} max abs | {b} rel. error | {b} s" for b in backends) + " |",
        "|---|" + "---:|---:|---:|" * len(backends),
    ]
    for name in next(iter(results.values())):
        cells = []
        for b in backends:
            r = results[b][name]
            cells += (
                [f"{r['max_abs']:.1e}", f"{r['rel']:.1e}", str(r["seconds"])]
                if "rel" in r
                else [r["error"], "-", "-"]
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m kerasdl.export.portability {formats,save,check,backends} ...``."""
    parser = argparse.ArgumentParser(prog="python -m kerasdl.export.portability")
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("formats", help="export parity table (Markdown)")
    p.add_argument("--formats", default=",".join(FORMAT_NAMES))
    p = sub.add_parser("save", help="TensorFlow backend: save references")
    p.add_argument("work")
    p = sub.add_parser("check", help="current backend: compare with the references (JSON)")
    p.add_argument("work")
    p.add_argument("--fast-init", action="store_true", help="JAX: NumPy initializers")
    p = sub.add_parser("backends", help="save + check per backend in subprocesses (Markdown)")
    p.add_argument("--backends", default=",".join(BACKENDS))
    for p in sub.choices.values():
        p.add_argument("names", nargs="*", help="cases (default: all)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(CASES))
    if unknown:
        parser.error(f"unknown cases {unknown}; expected some of {sorted(CASES)}")
    names = args.names or None
    if args.what == "formats":
        print(_markdown_formats(format_parity(names, tuple(args.formats.split(",")))))
    elif args.what == "save":
        save_reference(args.work, names)
    elif args.what == "check":
        print(json.dumps(check_backend(args.work, names, args.fast_init)))
    else:
        with tempfile.TemporaryDirectory(prefix="kerasdl-backends-") as work:
            save_reference(work, names)
            results = {b: run_backend(b, work, names) for b in args.backends.split(",")}
        print(_markdown_backends(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
