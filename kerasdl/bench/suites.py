"""Benchmark suites: which cases run together, and the side-by-side comparisons with targets.

``default`` is the issue's suite (ResNet-50 at 224 vs ``keras.applications`` and PyTorch, CIFAR
ResNet-20 in float32 and bfloat16 vs PyTorch, the input pipeline vs the quickstart model).
``defaults`` measures the candidate fast defaults (steps per execution, XLA, thread settings,
tf.data parallelism, mixed precision). ``zoo`` puts one representative of every family next to
the same architecture in PyTorch (torchvision's models), in float32 and bfloat16.
:func:`model_suite` builds a suite for any registry model.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import NamedTuple

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
class Pair:
    """A kerasdl case and its PyTorch peer, shown side by side (``label`` names the row)."""

    label: str
    case: str
    peer: str


@dataclass
class Suite:
    """Cases to measure, the comparisons with targets, and the side-by-side pairs.

    ``paired``: measure each pair's two cases together in alternating rounds
    (:func:`kerasdl.bench.paired.run_paired`) instead of one after the other; their ratios are
    then the median of the round ratios; ``round_seconds``: the least time of a round (more
    steps per round for the fast models).
    """

    name: str
    cases: list[Case]
    comparisons: list[Comparison] = field(default_factory=list)
    pairs: list[Pair] = field(default_factory=list)
    paired: bool = False
    round_seconds: float = 0.0


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


class ZooModel(NamedTuple):
    """One row of the zoo: a family's representative, and the recipe its ``kerasdl train`` run
    stands for."""

    name: str  # registry name
    label: str
    size: int  # input side
    batch: int
    classes: int
    recipe: str  # configs/<recipe>: the family's recipe (a source checkout's configs/ folder)
    # kerasdl's side runs Keras ``fit`` with the steps per execution ``kerasdl train`` resolves
    # for that recipe (``training.steps_per_execution: auto``: 16, or 1 under a distribution
    # strategy, as the ImageNet recipes' ``mirrored``); tests/test_bench.py checks each row
    # against its recipe.
    steps_per_execution: int


# One representative per family. The 224 models run at the batch 16 with 1000 classes;
# the CIFAR-scale ones at 32x32. ``alexnet_owt`` is torchvision's ``alexnet`` (kerasdl's
# ``alexnet`` is the 2012 paper's net). Ordered so that the families the issue found below
# target come first. The DARTS network's recipe resolves 16 steps per execution too, but it runs
# 1 here: a round of 16 of its 3-second steps would take 50 s a side, and what 16 steps per
# execution saves (Keras's per-step overhead, a few ms) is under 1% of such a step.
ZOO = [
    ZooModel("vit_b_32", "ViT-B/32", 224, 16, 1000, "imagenet/deit_s.yaml", 1),
    ZooModel("vgg11_bn", "VGG-11-BN", 224, 16, 1000, "imagenet/vgg16_bn.yaml", 1),
    ZooModel("resnet50", "ResNet-50", 224, 16, 1000, "imagenet/resnet50.yaml", 1),
    ZooModel("googlenet", "GoogLeNet", 224, 16, 1000, "imagenet/googlenet.yaml", 1),
    ZooModel(
        "efficientnet_b0", "EfficientNet-B0", 224, 16, 1000, "imagenet/efficientnet_b0.yaml", 1
    ),
    ZooModel("densenet121", "DenseNet-121", 224, 16, 1000, "imagenet/densenet121.yaml", 1),
    ZooModel("resnext50_32x4d", "ResNeXt-50 32x4d", 224, 16, 1000, "imagenet/resnet50.yaml", 1),
    ZooModel("alexnet_owt", "AlexNet (torchvision)", 224, 16, 1000, "imagenet/alexnet.yaml", 1),
    ZooModel("resnet20", "CIFAR ResNet-20", 32, 128, 10, "cifar10/resnet20.yaml", 16),
    ZooModel("darts_net", "DARTS (V2, 20 cells)", 32, 32, 10, "cifar10/darts_train.yaml", 1),
]
# The targets: training >= 1.2x PyTorch (float32 and bfloat16), inference >= 1.0x.
ZOO_TARGETS = {
    ("train", "float32"): 1.2,
    ("train", "mixed_bfloat16"): 1.2,
    ("infer", "float32"): 1.0,
}


def zoo_suite(
    repeats: int = 6,
    *,
    quick: bool = False,
    models: list[str] | None = None,
    precisions: list[str] | None = None,
    steps: int = 1,
    steps_per_execution: int | None = None,
) -> Suite:
    """Every family's representative next to the same architecture in PyTorch, fp32 and bf16.

    Each kerasdl / PyTorch pair runs as two live processes timed in ``repeats`` alternating
    rounds of ``steps`` steps (:func:`kerasdl.bench.paired.run_paired`, when run by
    :func:`~kerasdl.bench.report.run_suite`): every round's ratio compares two measurements
    seconds apart, and the pair's ratio is their median, so the drifts of a shared machine's
    speed hit both sides alike. Every float32 pair runs before the bfloat16 ones. Timing: one
    warm-up step, then 6 rounds of at least 1 step and 2 seconds (the slower side's) by
    default (sized to fit the suite in about 20 minutes on 2 idle cores). ``quick`` is a smoke
    setting: 64x64 (16x16 for the CIFAR models), batch 2, one step, one repetition.

    kerasdl's side runs ``fit`` with each row's ``steps_per_execution`` (:class:`ZooModel`: what
    ``kerasdl train`` runs the family's recipe with), or ``steps_per_execution`` for every row
    when given; a round is then whole executions, the same number of steps on both sides.
    """
    precisions = precisions or ["float32", "mixed_bfloat16"]
    chosen = [z for z in ZOO if models is None or z.name in models]
    if models is not None and len(chosen) != len(set(models)):
        unknown = sorted(set(models) - {z.name for z in ZOO})
        raise UserError(f"not in the zoo suite: {', '.join(unknown)}")
    cases: list[Case] = []
    pairs: list[Pair] = []
    cmp: list[Comparison] = []
    for p, (name, label, size, batch, classes, _, spe) in itertools.product(precisions, chosen):
        if quick:
            size, batch = (64 if size > 32 else 16), 2
        timing = dict(steps=1, warmup=1, repeats=1) if quick else dict(steps=steps, warmup=1)
        tag = f"{name}_{SHORT[p]}"
        common = dict(
            model=name,
            input_size=size,
            batch_size=batch,
            num_classes=classes,
            precision=p,
            **timing,
        )
        cases.append(Case(id=tag, steps_per_execution=steps_per_execution or spe, **common))
        cases.append(Case(id=f"torch_{tag}", kind="torch", **common))
        pairs.append(Pair(f"{label} {size} b{batch}", tag, f"torch_{tag}"))
        for metric in ("train", "infer"):
            cmp.append(
                Comparison(
                    f"{label} {SHORT[p]} {metric} vs PyTorch",
                    tag,
                    f"torch_{tag}",
                    metric=metric,
                    target=ZOO_TARGETS.get((metric, p)),
                )
            )
    if not quick:
        for c in cases:
            c.repeats = repeats
    peaks = peak_cases(precisions)  # first: a partial run still has its utilisation
    if quick:
        for c in peaks:
            c.input_size, c.steps, c.repeats = 256, 2, 1
    return Suite("zoo", peaks + cases, cmp, pairs, paired=True, round_seconds=0 if quick else 2.0)


def remat_suite(repeats: int = 3) -> Suite:
    """Peak training memory and speed with and without ``training.remat`` (ResNet-50, ViT-B/32)."""
    cases: list[Case] = []
    pairs: list[Pair] = []
    for name, label in (("resnet50", "ResNet-50"), ("vit_b_32", "ViT-B/32")):
        common = dict(
            model=name,
            input_size=224,
            batch_size=16,
            num_classes=1000,
            modes=["train"],
            steps=2,
            warmup=1,
            repeats=repeats,
        )
        cases += [Case(id=f"{name}_remat", remat=True, **common), Case(id=name, **common)]
        pairs.append(Pair(f"{label} 224 b16, remat / without", f"{name}_remat", name))
    return Suite("remat", cases, [], pairs)


def threads_suite(repeats: int = 3, *, models: list[str] | None = None, steps: int = 2) -> Suite:
    """Training throughput with one inter-op thread against TensorFlow's default, per family.

    The measurement behind ``training.inter_op_threads: auto``
    (:mod:`kerasdl.training.auto`): the quickstart recipe (steps_per_execution 16, as ``auto``
    runs it) and every zoo representative at its zoo size, float32, alternating the two settings
    per model in fresh processes.
    """
    quick = ("quickstart", "Quickstart SimpleCNN (recipe, spe 16)")
    chosen = [quick] + [(z.name, z.label) for z in ZOO]
    if models is not None:
        known = {c[0] for c in chosen}
        unknown = sorted(set(models) - known)
        if unknown:
            raise UserError(f"not in the threads suite: {', '.join(unknown)}")
        chosen = [c for c in chosen if c[0] in models]
    sizes = {z.name: (z.size, z.batch, z.classes) for z in ZOO}
    cases: list[Case] = []
    cmp: list[Comparison] = []
    for name, label in chosen:
        if name == "quickstart":
            common: dict = dict(
                recipe=str(QUICKSTART),
                data="pipeline",
                batch_size=64,
                steps_per_execution=16,
                steps=96,
                warmup=32,
            )
        else:
            size, batch, classes = sizes[name]
            common = dict(
                model=name,
                input_size=size,
                batch_size=batch,
                num_classes=classes,
                steps=steps,
                warmup=1,
            )
        common.update(modes=["train"], repeats=repeats)
        cases += [
            Case(id=f"{name}_interop1", threads=[1, 0], **common),
            Case(id=f"{name}_tf", **common),
        ]
        cmp.append(
            Comparison(f"{label}: inter_op 1 / TF default", f"{name}_interop1", f"{name}_tf")
        )
    return Suite("threads", cases, cmp)


SUITES = {
    "default": default_suite,
    "defaults": defaults_suite,
    "zoo": zoo_suite,
    "remat": remat_suite,
    "threads": threads_suite,
}


def get_suite(name: str, repeats: int | None = None, quick: bool = False) -> Suite:
    """The named suite with ``repeats`` repetitions (rounds for the zoo; None: the default)."""
    if name not in SUITES:
        raise UserError(f"Unknown suite {name!r}. Expected one of: {', '.join(SUITES)}.")
    if name == "zoo":
        return zoo_suite(repeats or 6, quick=quick)
    if quick:
        raise UserError("--quick applies to --suite zoo only")
    return SUITES[name](repeats or 3)
