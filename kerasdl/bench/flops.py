"""Utilization: achieved FLOP/s over the machine's measured matrix-multiply peak.

FLOPs come from kerasdl's own MAC count (:func:`kerasdl.models.macs.count_macs`: convolutions,
dense and attention products; not normalization, activations or pooling). One MAC is two FLOPs.
Training costs are approximated, as usual, by three forward passes per image (the forward pass,
and the backward pass's gradients with respect to activations and to weights, each about one
forward): training FLOPs per image = ``3 x 2 x MACs``; inference = ``2 x MACs``.

The peak is measured, not taken from a data sheet: the median FLOP/s of a large square
``tf.matmul`` (``2 n^3`` FLOPs) in the compute dtype of the precision (float32, bfloat16, float16)
on all cores, after a warm-up.
"""

from __future__ import annotations

from typing import Any

from kerasdl.bench.case import Case, configure_threads, time_repeats

MATMUL_DTYPES = {"float32": "float32", "mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}


def train_flops_per_image(macs: int) -> float:
    """Approximate training FLOPs per image: 3 passes x 2 FLOPs per MAC."""
    return 6.0 * macs


def infer_flops_per_image(macs: int) -> float:
    return 2.0 * macs


def utilization(images_per_s: float, flops_per_image: float, peak_flops: float) -> float:
    """Achieved FLOP/s as a percentage of ``peak_flops``."""
    return 100.0 * images_per_s * flops_per_image / peak_flops


def matmul_peak(dtype: str = "float32", n: int = 2048, steps: int = 5, repeats: int = 3) -> dict:
    """Median FLOP/s of ``n x n`` by ``n x n`` matrix products in ``dtype``."""
    import tensorflow as tf

    a = tf.cast(tf.random.normal((n, n), dtype=tf.float32), dtype)
    # Orthogonal-like scale keeps the chained product's magnitude stable.
    b = tf.cast(tf.random.normal((n, n), dtype=tf.float32) / n**0.5, dtype)

    @tf.function
    def chain(a: Any, b: Any) -> Any:
        # A dependent chain: every product needs the previous one, so none can be merged or
        # skipped by graph optimizations (identical independent products would be).
        out = a
        for _ in range(steps):
            out = tf.matmul(out, b)
        return out

    chain(a, b).numpy()
    times = time_repeats(lambda: chain(a, b).numpy(), repeats)
    rates = sorted(2.0 * n**3 * steps / t for t in times)
    return {"dtype": dtype, "n": n, "median": rates[len(rates) // 2], "max": rates[-1]}


def run_matmul_case(case: Case) -> dict[str, Any]:
    """The matmul peak for ``case.precision`` (``case.input_size`` is the matrix side)."""
    configure_threads(case)
    return {
        "peak": matmul_peak(
            MATMUL_DTYPES[case.precision], case.input_size, case.steps, case.repeats
        )
    }
