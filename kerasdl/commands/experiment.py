"""``kerasdl experiment --list``; ``kerasdl experiment NAME [--quick] [--seeds N] [--out DIR]``."""

from __future__ import annotations

import argparse

from kerasdl.errors import UserError
from kerasdl.io import check_output_dir

COMMAND = "experiment"
HELP = "reproduce a claim of the deep-learning canon: arms, a table and a plot"
DESCRIPTION = """Run one of the canon's claims as an experiment: a few recipes (arms) trained with
kerasdl's own runner on the bundled digits (or synthetic data the experiment writes), compared on
the claim's measure over several seeds. Writes DIR/NAME/results.json, results.md (each arm's
mean and spread) and PNG plots; every arm's run folder is under DIR/NAME/runs/.
  kerasdl experiment --list
  kerasdl experiment perceptron_xor --quick
  kerasdl experiment degradation --seeds 3 --out experiments"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="the experiment (see --list)")
    parser.add_argument("--list", action="store_true", help="list the experiments and claims")
    parser.add_argument(
        "--quick", action="store_true", help="small budget, one seed (about a minute)"
    )
    parser.add_argument("--seeds", type=int, help="seeds (default 1 with --quick, else 3-5)")
    parser.add_argument("--out", default="experiments", help="output folder (default experiments)")


def run(args: argparse.Namespace) -> int:
    if args.list:
        from kerasdl.experiments import list_lines

        print("\n".join(list_lines()))
        return 0
    if not args.name:
        raise UserError("name an experiment, or pass --list to see them")
    from kerasdl.experiments import get_experiment, run_experiment

    get_experiment(args.name)  # an unknown name fails before TensorFlow loads
    check_output_dir(args.out)
    if args.seeds is not None and args.seeds < 1:
        raise UserError(f"--seeds: expected at least 1. Received: {args.seeds}")
    results, written = run_experiment(args.name, args.out, args.quick, args.seeds)
    for line in _verdict_lines(results):
        print(line)
    print("Wrote " + ", ".join(str(p) for p in written))
    return 0


def _verdict_lines(results) -> list[str]:
    from kerasdl.experiments.base import verdicts

    lines = []
    for v in verdicts(results):
        word = "holds" if v["holds"] else "does NOT hold"
        lines.append(f"{v['better']} beats {v['worse']}: {word} ({v['a']:.4g} vs {v['b']:.4g})")
    for c in results.analysis.get("checks", []):
        lines.append(f"check {c['name']}: {c['computed']:,} ({'ok' if c['ok'] else 'MISMATCH'})")
    return lines
