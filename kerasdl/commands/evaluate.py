"""``kerasdl evaluate RUN_DIR_OR_MODEL [--split test] [--recipe R] [--set k=v]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from kerasdl.commands._args import add_recipe_arguments

COMMAND = "evaluate"
HELP = (
    "evaluate a run's best checkpoint (or a .keras file): loss, accuracy, top-5, confusion matrix"
)
DESCRIPTION = """Reload the best checkpoint of a run folder (or a .keras file) and evaluate it.

Prints loss, accuracy, top-5 accuracy (when there are more than 5 classes) and the confusion
matrix, and saves the matrix as confusion_<split>.png (and evaluation_<split>.json) in the run
folder. The data is the run's own recipe (config.yaml) unless --recipe is given; --set changes
data keys. With --data DIR (class-per-subfolder images) or --data FILE.npz, every image there is
evaluated, preprocessed as in training (outputs named confusion_data-<name>.png)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="RUN_DIR_OR_MODEL", help="run folder or .keras file")
    parser.add_argument(
        "--split", default="test", choices=["train", "val", "test"], help="split to evaluate"
    )
    parser.add_argument(
        "--data",
        metavar="PATH",
        help="evaluate on all images of this class-per-subfolder folder or .npz file instead "
        "(same preprocessing as the run)",
    )
    add_recipe_arguments(parser, recipe_option=True, example="data.path=images/")
    parser.add_argument("--batch-size", type=int, default=None, help="evaluation batch size")


def run(args: argparse.Namespace) -> int:
    from kerasdl.config import load_run_recipe
    from kerasdl.errors import UserError

    target = Path(args.target)
    if not target.exists():
        raise UserError(f"not found: {target} (expected a run folder or a .keras file)")
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1. Received: {args.batch_size}")
    overrides, split, label = list(args.overrides), args.split, None
    if args.data:
        data = Path(args.data)
        if not data.exists():
            raise UserError(f"--data {args.data}: not found")
        if data.is_file() and data.suffix != ".npz":
            raise UserError(
                f"--data {args.data}: expected a folder of images (a subfolder per class) "
                "or an .npz file"
            )
        source = "npz" if data.suffix == ".npz" else "folder"
        overrides += [f"data.source={source}", f"data.path={data}", "data.augment=[]"]
        overrides += ["data.val_split=0.0", "data.test_split=0.0"]
        split = "train"  # every image of the given data
        label = f"data-{data.stem}"
    load_run_recipe(target, args.recipe, overrides)  # a bad recipe fails before TensorFlow loads
    from kerasdl.training.evaluation import evaluate_target

    report = evaluate_target(
        target,
        split=split,
        recipe=args.recipe,
        overrides=overrides,
        batch_size=args.batch_size,
        label=label,
    )
    print(report.text())
    if report.png:
        print(f"Confusion matrix: {report.png}")
    return 0
