"""Benchmark cases and the timing harness: training and inference throughput of Keras models.

A :class:`Case` names what to measure (a kerasdl registry model, a ``keras.applications`` peer,
a PyTorch peer, the input pipeline alone, or the matrix-multiply peak) and how (input size, batch
size, precision, data, compile options, thread settings). :func:`run_case` measures it in this
process; :func:`run_isolated` runs it in a fresh Python process (``python -m
kerasdl.bench.worker``) so that thread settings, the dtype policy and PyTorch's OpenMP threads of
one case cannot leak into the next.

Method: every measurement runs ``warmup`` steps first (tracing, compilation, oneDNN kernel
selection), then ``repeats`` timed repetitions of ``steps`` steps; the median images/s is
reported, with the spread (min and max). Training uses Keras ``fit`` (SGD with momentum,
cross-entropy on logits and one-hot labels: what ``kerasdl train`` runs); inference calls the model
with ``training=False`` inside a ``tf.function``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

KINDS = ("kerasdl", "keras_app", "torch", "pipeline", "matmul")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


@dataclass
class Case:
    """One measurement.

    Attributes:
        id: unique name in a suite.
        kind: ``kerasdl`` (registry model), ``keras_app`` (``keras.applications`` peer), ``torch``
            (PyTorch peer), ``pipeline`` (input pipeline alone) or ``matmul`` (peak FLOP/s).
        model: registry name (the peers use the registry name of the same architecture).
        input_size: square input side.
        channels: input channels.
        batch_size: images per step.
        precision: ``float32``, ``mixed_bfloat16`` or ``mixed_float16``.
        num_classes: classifier width.
        model_kwargs: extra constructor arguments of the registry model.
        modes: ``train`` and/or ``infer``.
        data: ``synthetic`` (one batch in memory) or ``pipeline`` (kerasdl.data + the tf.data
            pipeline with the benchmark augmentation; ``recipe`` names a recipe file instead).
        recipe: a recipe whose data section feeds the model (``data="pipeline"``).
        jit_compile: XLA compilation of the train/predict step.
        steps_per_execution: Keras ``steps_per_execution``.
        threads: ``[inter_op, intra_op]`` thread-pool sizes (0 = TensorFlow's choice).
        private_threadpool: tf.data private thread-pool size (0 = shared pool; pipeline cases).
        fused_bn: batch norm on TensorFlow's fused kernel (False: Keras's own layer).
        steps, warmup, repeats: timed steps per repetition, warm-up steps, repetitions.
    """

    id: str
    kind: str = "kerasdl"
    model: str = ""
    input_size: int = 32
    channels: int = 3
    batch_size: int = 32
    precision: str = "float32"
    num_classes: int = 10
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    modes: list[str] = field(default_factory=lambda: ["train", "infer"])
    data: str = "synthetic"
    recipe: str | None = None
    jit_compile: bool = False
    steps_per_execution: int = 1
    threads: list[int] | None = None
    private_threadpool: int = 0
    fused_bn: bool = True
    steps: int = 10
    warmup: int = 3
    repeats: int = 3

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Case:
        return cls(**json.loads(text))


def time_repeats(run: Callable[[], None], repeats: int) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``run``."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return times


def throughput(times: list[float], images_per_rep: int) -> dict[str, float]:
    """Median, min and max images/s from repetition times."""
    rates = [images_per_rep / t for t in times]
    return {
        "median": statistics.median(rates),
        "min": min(rates),
        "max": max(rates),
        "repeats": len(rates),
    }


def _round_steps(steps: int, per_execution: int) -> int:
    return max(per_execution, (steps // per_execution) * per_execution)


def step_clock() -> Any:
    """A Keras callback that stamps the wall clock at ``fit`` start and after every batch group.

    TensorFlow runs the compiled train function synchronously, so two stamps bracket exactly the
    steps in between (with ``steps_per_execution`` k, one stamp per k steps). ``stamps[0]`` is the
    start of training.
    """
    import keras

    class StepClock(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.stamps: list[float] = []

        def on_train_begin(self, logs=None):
            self.stamps.append(time.perf_counter())

        def on_train_batch_end(self, batch, logs=None):
            self.stamps.append(time.perf_counter())

    return StepClock()


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
    import keras

    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        steps_per_execution=case.steps_per_execution,
        jit_compile=case.jit_compile,
    )
    spe = case.steps_per_execution
    warm, steps = _round_steps(case.warmup, spe), _round_steps(case.steps, spe)
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


def synthetic_batch(case: Case, seed: int = 0) -> tuple[Any, Any]:
    """One batch of standard-normal images and one-hot labels."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.standard_normal(
        (case.batch_size, case.input_size, case.input_size, case.channels), dtype=np.float32
    )
    y = np.eye(case.num_classes, dtype=np.float32)[
        rng.integers(0, case.num_classes, case.batch_size)
    ]
    return x, y


def build_keras_model(case: Case) -> Any:
    """The case's model under its precision policy (registry model or keras.applications)."""
    import keras

    keras.mixed_precision.set_global_policy(case.precision)
    shape = (case.input_size, case.input_size, case.channels)
    if case.kind == "keras_app":
        from kerasdl.bench.peers import keras_application

        return keras_application(case.model, shape, case.num_classes)
    from kerasdl.layers.normalization import set_fused_batch_norm
    from kerasdl.registry import create_model

    set_fused_batch_norm(case.fused_bn)
    return create_model(
        case.model, num_classes=case.num_classes, input_shape=list(shape), **case.model_kwargs
    )


def _configure_threads(case: Case) -> None:
    if case.threads:
        import tensorflow as tf

        tf.config.threading.set_inter_op_parallelism_threads(case.threads[0])
        tf.config.threading.set_intra_op_parallelism_threads(case.threads[1])


def run_keras_case(case: Case) -> dict[str, Any]:
    """Measure a ``kerasdl`` or ``keras_app`` case: MACs, training and inference images/s."""
    import keras
    import tensorflow as tf

    from kerasdl.models.macs import count_macs

    _configure_threads(case)
    keras.utils.set_random_seed(0)
    result: dict[str, Any] = {}
    if case.data == "pipeline":
        from kerasdl.bench.pipeline import pipeline_datasets

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
    if "infer" in case.modes:
        result["infer"] = keras_infer(model, tf.constant(x), case)
    keras.mixed_precision.set_global_policy("float32")
    return result


def run_case(case: Case) -> dict[str, Any]:
    """Measure ``case`` in this process; returns its figures (images/s, MACs, GFLOP/s, ...)."""
    if case.kind not in KINDS:
        raise ValueError(f"Unknown case kind {case.kind!r}. Expected one of: {', '.join(KINDS)}.")
    if case.precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {case.precision!r}. Expected one of: {PRECISIONS}.")
    if case.kind in ("kerasdl", "keras_app"):
        return run_keras_case(case)
    if case.kind == "torch":
        from kerasdl.bench.peers import run_torch_case

        return run_torch_case(case)
    if case.kind == "pipeline":
        from kerasdl.bench.pipeline import run_pipeline_case

        return run_pipeline_case(case)
    from kerasdl.bench.flops import run_matmul_case

    return run_matmul_case(case)


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
