"""Which oneDNN kernels one training step runs, kerasdl's against PyTorch's (benchmarks/README.md).

Runs a zoo model's training step on both sides as the zoo suite does (kerasdl: Keras ``fit``
through ``kerasdl.bench.paired``; PyTorch: torchvision's model, eager, ``channels_last``), each
in a fresh process with ``ONEDNN_VERBOSE=1``, and prints, per primitive kind, implementation and
propagation, how many primitives one step executed and their summed time on each side::

    python benchmarks/onednn_kernels.py resnet50 224 16 1000
    python benchmarks/onednn_kernels.py resnet20 32 128 10

Summed primitive time is not step time: TensorFlow runs independent kernels at once (a layer's
weight and data gradients) on one thread pool, so each of two concurrent kernels takes longer
while the step does not. Compare implementations, and the kernels that run alone (forward).
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys

MARK, END = "=====STEP=====", "=====END====="


def one_step(kind: str, model: str, size: int, batch: int, classes: int) -> None:
    """(Child process) warm up for two steps, then print the markers around one timed step."""
    from kerasdl.bench.case import Case
    from kerasdl.bench.paired import make_steps

    case = Case(
        id=kind,
        kind=kind,
        model=model,
        input_size=size,
        batch_size=batch,
        num_classes=classes,
        modes=["train"],
    )
    steps = make_steps(case)
    steps.train(2)
    print(MARK, flush=True)
    seconds = steps.train(1)
    print(f"{END} {seconds:.3f}", flush=True)
    os._exit(0)  # the paused fit's thread would wait for its next grant


def kernels(log: str, errors: str = "") -> tuple[dict[tuple[str, str, str], list[float]], float]:
    """``{(kind, implementation, propagation): [count, ms]}`` of the marked step, and its s."""
    if MARK not in log or END not in log:
        last = (errors.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"error: the step did not finish: {last}")
    step, tail = log.split(MARK, 1)[1].split(END, 1)
    table: dict[tuple[str, str, str], list[float]] = collections.defaultdict(lambda: [0, 0.0])
    for line in step.splitlines():
        if line.startswith("onednn_verbose,v1,primitive,exec,"):
            f = line.split(",")
            row = table[(f[5], f[6], f[7])]
            row[0] += 1
            row[1] += float(f[-1])
    return table, float(tail.split()[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("size", type=int)
    parser.add_argument("batch", type=int)
    parser.add_argument("classes", type=int)
    parser.add_argument("--child", choices=["kerasdl", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        one_step(args.child, args.model, args.size, args.batch, args.classes)
    from kerasdl.errors import UserError
    from kerasdl.registry import get_entry

    try:
        get_entry(args.model)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    env = {**os.environ, "ONEDNN_VERBOSE": "1"}
    sides = {}
    for kind in ("kerasdl", "torch"):
        cmd = [sys.executable, __file__, *map(str, (args.model, args.size, args.batch))]
        cmd += [str(args.classes), "--child", kind]
        run = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        sides[kind] = kernels(run.stdout, run.stderr)
    (k, k_step), (t, t_step) = sides["kerasdl"], sides["torch"]
    print(f"{args.model} {args.size}x{args.size} batch {args.batch}: one training step")
    print(f"step wall time: kerasdl {k_step:.3f} s, PyTorch {t_step:.3f} s\n")
    print(
        "| primitive | implementation | propagation "
        "| count kerasdl / PyTorch | ms kerasdl / PyTorch |"
    )
    print("|---|---|---|---:|---:|")
    for key in sorted(
        set(k) | set(t), key=lambda r: -max(k.get(r, [0, 0])[1], t.get(r, [0, 0])[1])
    ):
        (kn, kms), (tn, tms) = k.get(key, [0, 0.0]), t.get(key, [0, 0.0])
        print(f"| {' | '.join(key)} | {kn} / {tn} | {kms:,.1f} / {tms:,.1f} |")
    total = [sum(v[1] for v in side.values()) for side in (k, t)]
    print(f"| all | | | | {total[0]:,.1f} / {total[1]:,.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
