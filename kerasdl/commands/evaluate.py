"""``kerasdl evaluate RUN_DIR_OR_MODEL [--split test] [--recipe R] [--set k=v]``."""

from __future__ import annotations

import argparse
from pathlib import Path

COMMAND = "evaluate"
HELP = (
    "evaluate a run's best checkpoint (or a .keras file): loss, accuracy, top-5, confusion matrix"
)
DESCRIPTION = """Reload the best checkpoint of a run folder (or a .keras file) and evaluate it.

Prints loss, accuracy, top-5 accuracy (when there are more than 5 classes) and the confusion
matrix, and saves the matrix as confusion_<split>.png (and evaluation_<split>.json) in the run
folder. The data is the run's own recipe (config.yaml) unless --recipe is given; --set changes
data keys, e.g. evaluate on other data with --set data.source=folder --set data.path=DIR."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="RUN_DIR_OR_MODEL", help="run folder or .keras file")
    parser.add_argument(
        "--split", default="test", choices=["train", "val", "test"], help="split to evaluate"
    )
    parser.add_argument("--recipe", help="recipe whose data section to use (default: the run's)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a key of the recipe, e.g. data.path=images/",
    )
    parser.add_argument("--batch-size", type=int, default=None, help="evaluation batch size")


def run(args: argparse.Namespace) -> int:
    from kerasdl.errors import UserError
    from kerasdl.training.evaluation import evaluate_target

    target = Path(args.target)
    if not target.exists():
        raise UserError(f"not found: {target} (expected a run folder or a .keras file)")
    report = evaluate_target(
        target,
        split=args.split,
        recipe=args.recipe,
        overrides=args.overrides,
        batch_size=args.batch_size,
    )
    print(report.text())
    if report.png:
        print(f"Confusion matrix: {report.png}")
    return 0
