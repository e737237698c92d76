"""Precision policy choice: float32, mixed_float16, mixed_bfloat16, or auto.

``auto`` picks bfloat16 where the hardware runs it fast (GPUs of compute capability 8.0 and newer;
CPUs with AVX-512 BF16 or AMX), float16 on older GPUs (7.0+, tensor cores; Keras applies loss
scaling), and float32 otherwise. Mixed precision keeps variables and the final logits in float32
(Micikevicius et al. 2018; Kalamkar et al. 2019 for bfloat16).
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf


def cpu_has_fast_bf16() -> bool:
    """True when /proc/cpuinfo lists AVX-512 BF16 or AMX BF16."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def resolve_precision(choice: str) -> str:
    """The Keras dtype policy name for a recipe's ``training.precision``."""
    if choice != "auto":
        return choice
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        caps = [
            tf.config.experimental.get_device_details(g).get("compute_capability", (0, 0))
            for g in gpus
        ]
        major = min(c[0] for c in caps)
        if major >= 8:
            return "mixed_bfloat16"
        if major >= 7:
            return "mixed_float16"
        return "float32"
    return "mixed_bfloat16" if cpu_has_fast_bf16() else "float32"
