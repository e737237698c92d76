"""Benchmarks: kerasdl's training/inference throughput against its peers, in one run.

>>> from kerasdl.bench import get_suite, run_suite, write_report
>>> report = run_suite(get_suite("default"))  # doctest: +SKIP
>>> write_report(report, "benchmarks/results")  # doctest: +SKIP

Modules: :mod:`~kerasdl.bench.case` (cases, timing), :mod:`~kerasdl.bench.harness` (Keras
models, :func:`run_case`), :mod:`~kerasdl.bench.peers` (keras.applications and PyTorch peers;
:mod:`~kerasdl.bench.torch_models`),
:mod:`~kerasdl.bench.flops` (utilization), :mod:`~kerasdl.bench.pipeline` (input pipeline alone),
:mod:`~kerasdl.bench.suites`, :mod:`~kerasdl.bench.report`.
"""

from kerasdl.bench.case import Case
from kerasdl.bench.harness import run_case, run_isolated
from kerasdl.bench.report import markdown, run_suite, write_report
from kerasdl.bench.suites import Comparison, Suite, get_suite, model_suite

__all__ = [
    "Case",
    "Comparison",
    "Suite",
    "get_suite",
    "markdown",
    "model_suite",
    "run_case",
    "run_isolated",
    "run_suite",
    "write_report",
]
