"""``kerasdl profile``: where a training step spends its time, op by op (kerasdl.bench.profile)."""

from __future__ import annotations

import argparse

from kerasdl.commands._args import add_case_arguments

COMMAND = "profile"
HELP = "per-op time of a training or inference step, for a zoo model and its peers"
DESCRIPTION = """Train a registry model with Keras fit (the benchmark's loss and optimizer) under
the TensorFlow profiler and print one table per implementation: time per step by op type, its
share, the op count per step and a coarse category (convolution forward/backward, batch norm,
element-wise, data movement, optimizer update, ...), with the step's wall and CPU time. The trace
stays in --logdir (TensorBoard's profile plugin opens it). Each implementation runs in a fresh
process. With --mode infer the step is a forward pass (training=False; PyTorch under
torch.inference_mode), as the benchmark times inference. `python -m kerasdl.bench.profile` is the
same command.

Example:
  kerasdl profile --model resnet20 --precision mixed_bfloat16 --torch
  kerasdl profile --model densenet121 --input-size 224 --batch-size 16 --mode infer --torch
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="resnet20", help="registry model (default resnet20)")
    add_case_arguments(parser, input_size=32, batch_size=128)
    parser.add_argument(
        "--mode",
        choices=["train", "infer"],
        default="train",
        help="profile a training step (default) or a forward pass",
    )
    parser.add_argument("--keras-app", action="store_true", help="also keras.applications")
    parser.add_argument("--torch", action="store_true", help="also the PyTorch peer")
    parser.add_argument("--top", type=int, default=15, help="op rows per table")
    parser.add_argument("--logdir", default="benchmarks/results/profile", help="trace folder")
    parser.add_argument("--case-json", help=argparse.SUPPRESS)  # worker mode: one case
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from kerasdl.errors import UserError

    if args.steps < 1 or args.batch_size < 1 or args.input_size < 1:
        raise UserError("--steps, --batch-size and --input-size must be at least 1")
    from kerasdl.registry import get_entry

    get_entry(args.model)  # an unknown name: one line here, not a worker's traceback
    from kerasdl.bench.case import Case
    from kerasdl.bench.profile import markdown, profile_case, profile_isolated

    if args.case_json:  # worker mode: one case, JSON on stdout
        summary = profile_case(Case.from_json(args.case_json), args.steps, args.logdir)
        print(json.dumps(summary) if args.json else markdown(summary, args.top))
        return 0
    base = dict(
        model=args.model,
        input_size=args.input_size,
        batch_size=args.batch_size,
        num_classes=args.num_classes,
        precision=args.precision,
        warmup=args.warmup,
        modes=[args.mode],
    )
    cases = [Case(id="kerasdl", **base)]
    if args.keras_app:
        cases.append(Case(id="keras_app", kind="keras_app", **base))
    if args.torch:
        cases.append(Case(id="torch", kind="torch", **base))
    for case in cases:
        summary = profile_isolated(case, args.steps, Path(args.logdir) / case.id)
        print(markdown(summary, args.top) + "\n", flush=True)
    return 0
