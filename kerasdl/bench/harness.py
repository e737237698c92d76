"""Running benchmark cases: training and inference throughput of Keras models, and the dispatcher.

A :class:`~kerasdl.bench.case.Case` names what to measure (a kerasdl registry model, a
``keras.applications`` peer, a PyTorch peer, the input pipeline alone, or the matrix-multiply peak)
and how (input size, batch size, precision, data, compile options, thread settings).
:func:`run_case` measures it in this process (Keras models here, the others by their runners in
:mod:`~kerasdl.bench.peers`, :mod:`~kerasdl.bench.pipeline` and :mod:`~kerasdl.bench.flops`,
which import only :mod:`~kerasdl.bench.case`); :func:`run_isolated` runs it in a fresh Python
process (``python -m kerasdl.bench.worker``) so that thread settings, the dtype policy and
PyTorch's OpenMP threads of one case cannot leak into the next.

Method: every measurement runs ``warmup`` steps first (tracing, compilation, oneDNN kernel
selection), then ``repeats`` timed repetitions of ``steps`` steps; the median images/s is
reported, with the spread (min and max). Training uses Keras ``fit`` (SGD with momentum,
cross-entropy on logits and one-hot labels: what ``kerasdl train`` runs); inference calls the model
with ``training=False`` inside a ``tf.function``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from kerasdl.bench.case import (
    KINDS,
    PRECISIONS,
    Case,
    configure_threads,
    peak_rss_mb,
    round_steps,
    rss_mb,
    step_clock,
    synthetic_batch,
    throughput,
    time_repeats,
)
from kerasdl.bench.flops import run_matmul_case
from kerasdl.bench.peers import keras_application, run_torch_case
from kerasdl.bench.pipeline import pipeline_datasets, run_pipeline_case


def keras_train(model: Any, dataset: Any, case: Case) -> dict[str, float]:
    """Steady-state training images/s of a Keras model with ``fit`` on a repeated dataset.

    One ``fit`` call runs the warm-up steps and then ``repeats`` x ``steps`` timed steps; each
    repetition is timed between the batch-end stamps that bracket it (:func:`step_clock`), the
    way the PyTorch peer times its loop. What ``fit`` spends outside the steps (building the
    epoch iterator, the model's first symbolic build, and tearing the iterator down again:
    with tf.data autotuning that teardown took up to 1.6 s on a loaded 2-core machine) is paid
    once per epoch in real training, so it is reported separately (``fit_outside_steps_s``)
    instead of being charged to every 10-step repetition.
    """
    compile_for_bench(model, case)
    spe = case.steps_per_execution
    warm, steps = round_steps(case.warmup, spe), round_steps(case.steps, spe)
    clock = step_clock()
    t0 = time.perf_counter()
    model.fit(
        dataset,
        epochs=1,
        steps_per_epoch=warm + steps * case.repeats,
        verbose=0,
        callbacks=[clock],
    )
    wall = time.perf_counter() - t0
    stamps = clock.stamps[warm // spe :]  # stamps[0]: the end of the warm-up
    per_rep = steps // spe
    times = [stamps[(i + 1) * per_rep] - stamps[i * per_rep] for i in range(case.repeats)]
    result = throughput(times, steps * case.batch_size)
    result["fit_outside_steps_s"] = wall - (clock.stamps[-1] - clock.stamps[0])
    return result


def compile_for_bench(model: Any, case: Case) -> None:
    """Compile ``model`` as ``kerasdl train`` trains: its SGD with momentum, cross-entropy on
    logits and one-hot labels, the case's steps per execution and XLA setting."""
    import keras

    from kerasdl.training.fused_sgd import FusedSGD

    model.compile(
        optimizer=FusedSGD(0.01, momentum=0.9),  # kerasdl train's SGD
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        steps_per_execution=case.steps_per_execution,
        jit_compile=case.jit_compile,
    )


def keras_infer(model: Any, images: Any, case: Case) -> dict[str, float]:
    """Inference images/s of ``model(images, training=False)`` compiled with ``tf.function``."""
    import tensorflow as tf

    fn = tf.function(lambda x: model(x, training=False), jit_compile=case.jit_compile)

    def run(n: int) -> None:
        for _ in range(n):
            out = fn(images)
        out.numpy()

    run(max(case.warmup, 1))
    times = time_repeats(lambda: run(case.steps), case.repeats)
    return throughput(times, case.steps * case.batch_size)


def build_keras_model(case: Case) -> Any:
    """The case's model under its precision policy (registry model or keras.applications)."""
    import keras

    keras.mixed_precision.set_global_policy(case.precision)
    shape = (case.input_size, case.input_size, case.channels)
    if case.kind == "keras_app":
        return keras_application(case.model, shape, case.num_classes)
    from kerasdl.layers.normalization import configure_batch_norm
    from kerasdl.registry import create_model

    model = create_model(
        case.model, num_classes=case.num_classes, input_shape=list(shape), **case.model_kwargs
    )
    if case.remat:
        from kerasdl.layers.remat import remat_blocks

        remat_blocks(model)
    return configure_batch_norm(model, fused=case.fused_bn)


def run_keras_case(case: Case) -> dict[str, Any]:
    """Measure a ``kerasdl`` or ``keras_app`` case: MACs, training and inference images/s."""
    import keras
    import tensorflow as tf

    from kerasdl.models.macs import count_macs

    configure_threads(case)
    keras.utils.set_random_seed(0)
    result: dict[str, Any] = {"rss_before_model_mb": rss_mb()}
    if case.data == "pipeline":
        train_ds, case = pipeline_datasets(case)
        result["model"] = case.model
        result["input_shape"] = [case.input_size, case.input_size, case.channels]
        model = build_keras_model(case)
        x = next(iter(train_ds))[0]
        train_ds = train_ds.repeat()
    else:
        model = build_keras_model(case)
        x, y = synthetic_batch(case)
        train_ds = tf.data.Dataset.from_tensors((x, y)).repeat()
    result["params"] = int(model.count_params())
    result["macs"] = int(count_macs(model))
    if "train" in case.modes:
        result["train"] = keras_train(model, train_ds, case)
        result["train_peak_rss_mb"] = peak_rss_mb()
    if "infer" in case.modes:
        result["infer"] = keras_infer(model, tf.constant(x), case)
    keras.mixed_precision.set_global_policy("float32")
    return result


# case kind -> the function that measures it in this process
RUNNERS: dict[str, Callable[[Case], dict[str, Any]]] = {
    "kerasdl": run_keras_case,
    "keras_app": run_keras_case,
    "torch": run_torch_case,
    "pipeline": run_pipeline_case,
    "matmul": run_matmul_case,
}


def run_case(case: Case) -> dict[str, Any]:
    """Measure ``case`` in this process; returns its figures (images/s, MACs, GFLOP/s, ...)."""
    if case.kind not in RUNNERS:
        raise ValueError(f"Unknown case kind {case.kind!r}. Expected one of: {', '.join(KINDS)}.")
    if case.precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {case.precision!r}. Expected one of: {PRECISIONS}.")
    return RUNNERS[case.kind](case)


def run_isolated(case: Case, timeout: float = 1800.0) -> dict[str, Any]:
    """Run ``case`` in a fresh Python process; ``{"error": ...}`` if it fails."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [sys.executable, "-m", "kerasdl.bench.worker", case.to_json()]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {proc.returncode}: {tail}"}
    result = json.loads(lines[-1])
    result["wall_seconds"] = wall
    return result
