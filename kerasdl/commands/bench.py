"""``kerasdl bench [--suite default | --model NAME ...]``: throughput against peers, in one run."""

from __future__ import annotations

import argparse

from kerasdl.commands._args import add_case_arguments
from kerasdl.io import check_output_dir

COMMAND = "bench"
HELP = (
    "training/inference throughput vs keras.applications and PyTorch, utilization, input pipeline"
)
DESCRIPTION = """Measure training and inference throughput (images/s; median of --repeats
repetitions after warm-up) of kerasdl models next to the same architecture from keras.applications
and a PyTorch CPU reference (if the 'torch' extra is installed), the achieved share of the
machine's measured matrix-multiply peak, and the input pipeline alone. Every case runs in a fresh
process; the zoo's pairs run as two live processes timed in alternating rounds (--repeats rounds
of --steps steps each, at least 2 s, A B then B A, ...), and each ratio is the median of the
round ratios, shown with their range. Writes bench_<suite>.json and bench_<suite>.md to --out
and prints the tables.

  kerasdl bench --suite default        the issue's suite (ResNet-50, ResNet-20, pipeline), ~7 min
  kerasdl bench --suite defaults       measurements behind the fast defaults, ~17 min
  kerasdl bench --suite zoo            every family vs torchvision's model in PyTorch, fp32+bf16
  kerasdl bench --suite zoo --quick    the same cases at a tiny size (a smoke run)
  kerasdl bench --suite remat          peak training memory with and without training.remat
  kerasdl bench --suite threads        one inter-op thread / TF's default, per family (train)
  kerasdl bench --model resnet18 --input-size 64 --batch-size 32 --precision mixed_bfloat16

Suite times are the ones measured on the project's 2-core CPU (benchmarks/README.md: 6.7 and
16.6 min)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suite", help="a named suite: default, defaults, zoo, remat, threads")
    parser.add_argument(
        "--quick", action="store_true", help="zoo suite: tiny inputs, one step (a smoke run)"
    )
    parser.add_argument(
        "--only", help="zoo and threads suites: comma-separated names to keep (e.g. vit_b_32)"
    )
    parser.add_argument("--model", help="a registry model to benchmark (instead of a suite)")
    parser.add_argument("--channels", type=int, default=3, help="input channels (default 3)")
    add_case_arguments(parser, input_size=None, batch_size=32)
    # None: the suite's own (--model: 10 steps, 3 warm-up; zoo: 1 step per round, 1 warm-up;
    # zoo: float32 and bfloat16, or only --precision when given)
    parser.set_defaults(steps=None, warmup=None, precision=None)
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="repetitions, median reported (default 3; zoo: alternating rounds, default 6)",
    )
    parser.add_argument(
        "--steps-per-execution",
        type=int,
        default=None,
        help="zoo suite: kerasdl's Keras steps_per_execution for every model (default: each "
        "model's, what `kerasdl train` runs its family's recipe with)",
    )
    parser.add_argument("--no-peers", action="store_true", help="skip keras.applications/PyTorch")
    parser.add_argument("--no-pipeline", action="store_true", help="synthetic data only")
    parser.add_argument("--out", default="benchmarks/results", help="output folder")


def run(args: argparse.Namespace) -> int:
    from kerasdl.errors import UserError

    if bool(args.suite) == bool(args.model):
        raise UserError("give either --suite NAME or --model NAME")
    for key in ("batch_size", "steps", "repeats", "num_classes", "channels", "steps_per_execution"):
        if getattr(args, key) is not None and getattr(args, key) < 1:
            raise UserError(f"--{key.replace('_', '-')} must be at least 1")
    if args.warmup is not None and args.warmup < 0:
        raise UserError("--warmup must be at least 0")
    from kerasdl.bench import get_suite, markdown, model_suite, run_suite, write_report

    if args.suite == "zoo":
        from kerasdl.bench.suites import zoo_suite

        only = [m.strip() for m in args.only.split(",")] if args.only else None
        suite = zoo_suite(
            args.repeats or 6,
            quick=args.quick,
            models=only,
            steps=args.steps or 1,
            precisions=[args.precision] if args.precision else None,
            steps_per_execution=args.steps_per_execution,
        )
    elif args.steps_per_execution is not None:
        raise UserError("--steps-per-execution applies to --suite zoo")
    elif args.suite == "threads":
        from kerasdl.bench.suites import threads_suite

        if args.quick:
            raise UserError("--quick applies to --suite zoo")
        only = [m.strip() for m in args.only.split(",")] if args.only else None
        suite = threads_suite(args.repeats or 3, models=only, steps=args.steps or 2)
    elif args.suite:
        if args.quick or args.only:
            raise UserError("--quick and --only apply to --suite zoo")
        suite = get_suite(args.suite, args.repeats or 3)
    else:
        from kerasdl.registry import get_entry

        size = args.input_size or int(get_entry(args.model).default_input[0])
        suite = model_suite(
            args.model,
            size,
            args.batch_size,
            args.precision or "float32",
            num_classes=args.num_classes,
            channels=args.channels,
            pipeline=not args.no_pipeline,
            peers=not args.no_peers,
            steps=args.steps or 10,
            warmup=3 if args.warmup is None else args.warmup,
            repeats=args.repeats or 3,
        )
    check_output_dir(args.out)
    report = run_suite(suite, partial_dir=args.out)
    json_path, md_path = write_report(report, args.out)
    print(markdown(report))
    print(f"Wrote {json_path} and {md_path}")
    failed = [cid for cid, r in report["results"].items() if "error" in r["result"]]
    return 1 if failed else 0
