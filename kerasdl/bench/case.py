"""What a benchmark measures and how it is timed: :class:`Case` and the timing helpers.

Every other bench module imports this one and nothing imports back: the case runners
(:mod:`~kerasdl.bench.harness` for Keras models, :mod:`~kerasdl.bench.peers`,
:mod:`~kerasdl.bench.pipeline`, :mod:`~kerasdl.bench.flops`) build on it, and
:func:`kerasdl.bench.harness.run_case` dispatches to them.
"""

from __future__ import annotations

import json
import statistics
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
        fused_bn: batch norm on TensorFlow's fused kernel (False: the Keras implementation).
        remat: rematerialise the model's blocks (:func:`kerasdl.layers.remat.remat_blocks`,
            what ``training.remat: true`` does).
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
    remat: bool = False
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


def round_steps(steps: int, per_execution: int) -> int:
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


def rss_mb() -> float:
    """This process's resident set size now, in MiB (Linux ``/proc/self/status``; 0 elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB (``getrusage``; Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def configure_threads(case: Case) -> None:
    if case.threads:
        import tensorflow as tf

        tf.config.threading.set_inter_op_parallelism_threads(case.threads[0])
        tf.config.threading.set_intra_op_parallelism_threads(case.threads[1])
