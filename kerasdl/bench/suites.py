"""Benchmark suites: which cases run together, and the side-by-side comparisons with targets.

``default`` is the issue's suite (ResNet-50 at 224 vs ``keras.applications`` and PyTorch, CIFAR
ResNet-20 in float32 and bfloat16 vs PyTorch, the input pipeline vs the quickstart model).
``defaults`` measures the candidate fast defaults (steps per execution, XLA, thread settings,
tf.data parallelism, mixed precision). :func:`model_suite` builds a suite for any registry model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from kerasdl.bench.case import Case
from kerasdl.config import QUICKSTART
from kerasdl.errors import UserError

SHORT = {"float32": "fp32", "mixed_bfloat16": "bf16", "mixed_float16": "fp16"}


@dataclass
class Comparison:
    """``case`` / ``peer`` on ``metric`` (``train``, ``infer`` or ``pipeline``), with a target."""

    label: str
    case: str
    peer: str
    metric: str = "train"
    peer_metric: str | None = None
    target: float | None = None


@dataclass
class Suite:
    name: str
    cases: list[Case]
    comparisons: list[Comparison] = field(default_factory=list)


def peak_cases(precisions: list[str]) -> list[Case]:
    """Matmul-peak cases (2048 x 2048, 5 products per repetition) for each precision."""
    return [
        Case(id=f"peak_{SHORT[p]}", kind="matmul", input_size=2048, precision=p, steps=5)
        for p in dict.fromkeys(precisions)
    ]


def default_suite(repeats: int = 3) -> Suite:
    big = dict(input_size=224, batch_size=16, num_classes=1000, steps=3, warmup=2)
    small = dict(input_size=32, batch_size=128, num_classes=10, steps=10, warmup=5)
    quick = dict(recipe=str(QUICKSTART), batch_size=64, steps=60, warmup=20)
    one_op = [1, os.cpu_count() or 1]
    cases = [
        Case(id="resnet50_fp32", model="resnet50", **big),
        Case(id="keras_app_resnet50_fp32", kind="keras_app", model="resnet50", **big),
        Case(id="torch_resnet50_fp32", kind="torch", model="resnet50", **big),
        Case(id="resnet20_fp32", model="resnet20", **small),
        Case(id="resnet20_fp32_keras_bn", model="resnet20", fused_bn=False, **small),
        Case(id="torch_resnet20_fp32", kind="torch", model="resnet20", **small),
        Case(id="resnet20_bf16", model="resnet20", precision="mixed_bfloat16", **small),
        Case(
            id="torch_resnet20_bf16",
            kind="torch",
            model="resnet20",
            precision="mixed_bfloat16",
            **small,
        ),
        # One inter-op thread (kernels run one at a time, each on all cores, as PyTorch runs
        # them): a candidate default, measured in the same quiet run as the rows above.
        Case(id="resnet20_fp32_interop1", model="resnet20", threads=one_op, **small),
        Case(
            id="resnet20_bf16_interop1",
            model="resnet20",
            precision="mixed_bfloat16",
            threads=one_op,
            **small,
        ),
        Case(id="resnet50_fp32_interop1", model="resnet50", threads=one_op, **big),
        Case(id="quickstart_train", data="pipeline", modes=["train"], **quick),
        Case(id="quickstart_pipeline", kind="pipeline", **{**quick, "steps": 200}),
        *peak_cases(["float32", "mixed_bfloat16"]),
    ]
    for c in cases:
        c.repeats = repeats
    comparisons = [
        Comparison(
            "ResNet-50 224 b16 fp32 train vs keras.applications",
            "resnet50_fp32",
            "keras_app_resnet50_fp32",
            target=1.8,
        ),
        Comparison(
            "ResNet-50 224 b16 fp32 train vs PyTorch",
            "resnet50_fp32",
            "torch_resnet50_fp32",
            target=1.0,
        ),
        Comparison(
            "ResNet-50 224 b16 fp32 inference vs keras.applications",
            "resnet50_fp32",
            "keras_app_resnet50_fp32",
            metric="infer",
        ),
        Comparison(
            "ResNet-50 224 b16 fp32 inference vs PyTorch",
            "resnet50_fp32",
            "torch_resnet50_fp32",
            metric="infer",
        ),
        Comparison(
            "ResNet-20 32 b128 fp32 train vs PyTorch",
            "resnet20_fp32",
            "torch_resnet20_fp32",
            target=1.0,
        ),
        Comparison(
            "ResNet-20 32 b128 bf16 train vs PyTorch",
            "resnet20_bf16",
            "torch_resnet20_bf16",
            target=1.0,
        ),
        Comparison(
            "ResNet-20 32 b128 inference fp32 vs PyTorch",
            "resnet20_fp32",
            "torch_resnet20_fp32",
            metric="infer",
        ),
        Comparison(
            "ResNet-20 32 b128 inference bf16 vs PyTorch",
            "resnet20_bf16",
            "torch_resnet20_bf16",
            metric="infer",
        ),
        Comparison(
            "ResNet-20 fp32 train, inter_op 1 / TF default threads",
            "resnet20_fp32_interop1",
            "resnet20_fp32",
        ),
        Comparison(
            "ResNet-20 bf16 train, inter_op 1 / TF default threads",
            "resnet20_bf16_interop1",
            "resnet20_bf16",
        ),
        Comparison(
            "ResNet-50 fp32 train, inter_op 1 / TF default threads",
            "resnet50_fp32_interop1",
            "resnet50_fp32",
        ),
        Comparison(
            "Input pipeline vs quickstart training",
            "quickstart_pipeline",
            "quickstart_train",
            metric="pipeline",
            peer_metric="train",
            target=5.0,
        ),
    ]
    return Suite("default", cases, comparisons)


def defaults_suite(repeats: int = 3) -> Suite:
    """Candidate fast defaults, each next to its baseline."""
    small = dict(model="resnet20", input_size=32, batch_size=128, steps=8, warmup=4)
    quick = dict(
        recipe=str(QUICKSTART), data="pipeline", batch_size=64, modes=["train"], steps=96, warmup=32
    )
    cases = [
        Case(id="r20_base", **small),
        Case(id="r20_spe8", steps_per_execution=8, **small),
        Case(id="r20_xla", jit_compile=True, **small),
        Case(id="r20_threads_1x2", threads=[1, 2], **small),
        Case(id="r20_bf16", precision="mixed_bfloat16", **small),
        Case(id="quick_base", **quick),
        Case(id="quick_spe16", steps_per_execution=16, **quick),
        Case(id="quick_xla", jit_compile=True, **quick),
        Case(id="pipe_parallel", kind="pipeline", recipe=quick["recipe"], batch_size=64, steps=200),
        Case(
            id="pipe_1thread",
            kind="pipeline",
            recipe=quick["recipe"],
            batch_size=64,
            steps=200,
            private_threadpool=1,
        ),
    ]
    for c in cases:
        c.repeats = repeats
    cmp = [
        Comparison("ResNet-20 steps_per_execution 8 / 1", "r20_spe8", "r20_base"),
        Comparison("ResNet-20 XLA / no XLA (fp32)", "r20_xla", "r20_base"),
        Comparison("ResNet-20 inter_op 1 / TF default threads", "r20_threads_1x2", "r20_base"),
        Comparison("ResNet-20 mixed_bfloat16 / float32 (auto)", "r20_bf16", "r20_base"),
        Comparison("ResNet-20 inference XLA / no XLA", "r20_xla", "r20_base", metric="infer"),
        Comparison("Quickstart steps_per_execution 16 / 1", "quick_spe16", "quick_base"),
        Comparison("Quickstart XLA / no XLA", "quick_xla", "quick_base"),
        Comparison("tf.data parallel / one thread", "pipe_parallel", "pipe_1thread", "pipeline"),
    ]
    return Suite("defaults", cases, cmp)


def model_suite(
    model: str,
    input_size: int,
    batch_size: int,
    precision: str = "float32",
    *,
    num_classes: int = 10,
    channels: int = 3,
    pipeline: bool = True,
    peers: bool = True,
    steps: int = 10,
    warmup: int = 3,
    repeats: int = 3,
) -> Suite:
    """One registry model, synthetic and pipeline data, with its available peers."""
    from kerasdl.bench.peers import has_keras_application, has_torch_peer
    from kerasdl.registry import get_entry

    get_entry(model)  # UserError for an unknown name
    if precision not in SHORT:
        raise UserError(f"--precision {precision!r}: expected one of {', '.join(SHORT)}")
    common = dict(
        model=model,
        input_size=input_size,
        batch_size=batch_size,
        precision=precision,
        num_classes=num_classes,
        channels=channels,
        steps=steps,
        warmup=warmup,
        repeats=repeats,
    )
    tag = f"{model}_{SHORT[precision]}"
    cases = [Case(id=tag, **common)]
    cmp = []
    if pipeline:
        cases.append(Case(id=f"{tag}_pipeline", data="pipeline", modes=["train"], **common))
        cases.append(Case(id=f"pipeline_{input_size}", kind="pipeline", **{**common, "steps": 50}))
        cmp.append(
            Comparison(
                f"{model} input pipeline / training",
                f"pipeline_{input_size}",
                tag,
                metric="pipeline",
                peer_metric="train",
            )
        )
    if peers and has_keras_application(model) and channels == 3:
        cases.append(Case(id=f"keras_app_{tag}", kind="keras_app", **common))
        for metric in ("train", "infer"):
            cmp.append(
                Comparison(
                    f"{model} {metric} vs keras.applications",
                    tag,
                    f"keras_app_{tag}",
                    metric=metric,
                )
            )
    if peers and has_torch_peer(model):
        cases.append(Case(id=f"torch_{tag}", kind="torch", **common))
        for metric in ("train", "infer"):
            cmp.append(
                Comparison(f"{model} {metric} vs PyTorch", tag, f"torch_{tag}", metric=metric)
            )
    cases += peak_cases([precision])
    return Suite(f"model:{model}", cases, cmp)


SUITES = {"default": default_suite, "defaults": defaults_suite}


def get_suite(name: str, repeats: int = 3) -> Suite:
    if name not in SUITES:
        raise UserError(f"Unknown suite {name!r}. Expected one of: {', '.join(SUITES)}.")
    return SUITES[name](repeats)
