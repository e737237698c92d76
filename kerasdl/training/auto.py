"""``auto`` training settings: the measured fast choice for this machine and model, printed.

A recipe leaves three speed settings at ``auto`` by default, and the run prints what each became
and why (one line, also recorded as ``auto`` in ``run_info.json``):

* ``training.precision``: ``mixed_bfloat16`` where the hardware runs bfloat16 fast (CPUs with
  AVX-512 BF16 or AMX, GPUs of compute capability 8.0+; float16 on 7.x GPUs) for every family
  but the fully connected ``foundations`` models (perceptron, MLP), whose few small products do
  not pay for the casts; ``float32`` otherwise (:mod:`kerasdl.training.precision`). Measured on
  an AVX-512 BF16 CPU: ResNet-20 training 1.38x float32, ResNet-50 2.5x (benchmarks/README.md,
  DESIGN.md). ``KERASDL_AUTO_PRECISION`` overrides the hardware check (the test suite pins
  ``float32`` with it so that its numbers do not depend on the machine).
* ``training.inter_op_threads``: TensorFlow runs independent ops of a step concurrently on an
  inter-op pool (default: one thread per core). ``auto`` gives one thread to the families listed
  in :data:`INTER_OP_ONE`, measured by ``kerasdl bench --suite threads`` (benchmarks/README.md),
  and TensorFlow's default to the others. On the project's 2-core CPU (2026-11-27, quiet, float32
  training) one thread was slower or equal for every family measured (GoogLeNet 0.90x,
  EfficientNet-B0 0.88x, DARTS 0.66x, ResNet-20 0.95x, DenseNet-121 0.98x, the quickstart
  0.99x; ViT-B/32 1.08x in one run and 0.81x in the next), so the table is empty there: the
  default is the fast choice. A number sets the pool for a run (``0``: TensorFlow's default).
  TensorFlow fixes its pools when it starts, so the choice applies only when ``kerasdl train``
  starts TensorFlow (not inside a process that already ran TensorFlow ops; the run says so).
* TensorFlow's oneDNN kernels (not a recipe setting): ``import kerasdl`` turns them on for every
  x86-64 CPU, where TensorFlow alone does so only with AVX-512 VNNI/BF16 or AMX
  (:mod:`kerasdl.onednn`); the ``auto:`` line says whether they run and why.
* ``training.steps_per_execution``: 16 training steps per call of the compiled function (2.7x
  the quickstart's throughput), 1 with ``log_grad_norm`` or a distribution strategy
  (:meth:`kerasdl.config.schema.TrainingConfig.execution_steps`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from kerasdl.errors import UserError

# Families whose training measured faster with one inter-op thread than with TensorFlow's default
# (``kerasdl bench --suite threads``, float32, 2-core Xeon; ratios in benchmarks/README.md), as
# family -> the measurement. None did on 2026-11-27 (see the module docstring).
INTER_OP_ONE: dict[str, str] = {}

# Families kept in float32 by ``precision: auto`` even on bfloat16 hardware.
FLOAT32_FAMILIES = ("foundations",)

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
LABELS = {
    "inter_op_threads": "inter-op threads",
    "steps_per_execution": "steps per execution",
    "onednn": "oneDNN",
}


@dataclass(frozen=True)
class AutoChoice:
    """What an ``auto`` setting became, and why."""

    setting: str
    value: Any
    why: str


def family_of(model_name: str | None) -> str:
    """The registry family of ``model_name`` ("" for none or an unknown name)."""
    if not model_name:
        return ""
    from kerasdl.registry import get_entry

    try:
        return get_entry(model_name).family
    except UserError:
        return ""


def choose_precision(family: str) -> AutoChoice:
    """``training.precision: auto`` for a model of ``family`` on this machine."""
    from kerasdl.training.precision import resolve_precision

    pinned = os.environ.get("KERASDL_AUTO_PRECISION")
    if pinned:
        if pinned not in PRECISIONS:
            raise UserError(
                f"KERASDL_AUTO_PRECISION={pinned!r}: expected one of {', '.join(PRECISIONS)}"
            )
        return AutoChoice("precision", pinned, "KERASDL_AUTO_PRECISION")
    hardware = resolve_precision("auto")
    if hardware == "float32":
        return AutoChoice("precision", "float32", "no fast bfloat16/float16 on this machine")
    if family in FLOAT32_FAMILIES:
        return AutoChoice("precision", "float32", f"{family} models are too small for {hardware}")
    return AutoChoice("precision", hardware, "fast on this machine")


def choose_inter_op_threads(family: str) -> AutoChoice:
    """``training.inter_op_threads: auto``: 1 for the measured families, else TF's default (0)."""
    if family in INTER_OP_ONE:
        return AutoChoice("inter_op_threads", 1, f"{family}: {INTER_OP_ONE[family]}")
    return AutoChoice("inter_op_threads", 0, "TensorFlow's default, one per core")


def apply_inter_op_threads(threads: int) -> str:
    """Size TensorFlow's inter-op pool (0: its default); returns a note when it cannot."""
    import tensorflow as tf

    if tf.config.threading.get_inter_op_parallelism_threads() == threads:
        return ""
    try:
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        current = tf.config.threading.get_inter_op_parallelism_threads()
        return f"kept {current or 'the default'} (TensorFlow was already running in this process)"
    return ""


def resolve_run(
    precision: str, inter_op_threads: int | str, model_name: str | None
) -> tuple[str, list[AutoChoice]]:
    """Resolve a run's ``auto`` precision and inter-op threads, and size the inter-op pool.

    Returns:
        The Keras dtype policy name, and the choices made for the settings left at ``auto``.
    """
    from kerasdl.training.precision import resolve_precision

    family = family_of(model_name)
    choices: list[AutoChoice] = []
    if precision == "auto":
        choices.append(choose_precision(family))
        precision = choices[-1].value
    else:
        precision = resolve_precision(precision)
    if inter_op_threads == "auto":
        choice = choose_inter_op_threads(family)
        note = apply_inter_op_threads(choice.value)
        choices.append(AutoChoice(choice.setting, choice.value, note or choice.why))
    else:
        note = apply_inter_op_threads(int(inter_op_threads))
        if note:
            print(f"training.inter_op_threads {inter_op_threads}: {note}")
    return precision, choices


def onednn_choice() -> AutoChoice:
    """Whether TensorFlow runs its oneDNN kernels in this run, and why (:mod:`kerasdl.onednn`)."""
    from kerasdl import onednn

    on, why = onednn.status()
    return AutoChoice("onednn", "on" if on else "off", why)


def describe(choices: list[AutoChoice]) -> str:
    """One line: ``auto: precision float32 (why), inter-op threads 1 (why), ...``."""
    parts = [f"{LABELS.get(c.setting, c.setting)} {c.value} ({c.why})" for c in choices]
    return "auto: " + "; ".join(parts)
