"""``kerasdl lr-find RECIPE [--set key=value ...] [--min 1e-7] [--max 10] [--steps 100]``."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from kerasdl.commands._args import add_recipe_arguments, load_recipe_arguments
from kerasdl.errors import UserError
from kerasdl.io import check_output_dir

COMMAND = "lr-find"
HELP = "learning-rate range test: sweep the rate, plot the loss, suggest a rate"
DESCRIPTION = """Learning-rate range test (Smith 2017) on a recipe's model, data and optimizer.

Trains for up to --steps mini-batches while the learning rate grows exponentially from --min to
--max, stops when the smoothed loss exceeds 4x its best, and writes lr_find.csv and lr_find.png
to --out (default runs/<run.name>/lr_find/). The suggested rate is where the smoothed loss falls
fastest (steepest descent); "min/10", a tenth of the rate at the lowest loss, is printed too.
Set it with --set training.optimizer.learning_rate=... for `kerasdl train`.
  kerasdl lr-find configs/quickstart.yaml --steps 100
  kerasdl lr-find configs/quickstart.yaml --set training.optimizer.name=momentum --max 3"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_recipe_arguments(parser)
    parser.add_argument("--min", dest="min_lr", type=float, default=1e-7, help="first rate")
    parser.add_argument("--max", dest="max_lr", type=float, default=10.0, help="last rate")
    parser.add_argument("--steps", type=int, default=100, help="mini-batches at most (100)")
    parser.add_argument("--out", help="output folder (default runs/<run.name>/lr_find)")


def run(args: argparse.Namespace) -> int:
    if not 0 < args.min_lr < args.max_lr:
        raise UserError(f"expected 0 < --min < --max. Received: {args.min_lr}, {args.max_lr}")
    if args.steps < 5:
        raise UserError(f"--steps: expected at least 5. Received: {args.steps}")
    cfg = load_recipe_arguments(args)
    out = Path(args.out) if args.out else Path(cfg.run.output_dir) / cfg.run.name / "lr_find"
    check_output_dir(out)

    from kerasdl.training.lr_finder import find_recipe_lr

    result = find_recipe_lr(cfg, min_lr=args.min_lr, max_lr=args.max_lr, steps=args.steps)
    t = cfg.training
    result.save(out, f"{cfg.run.name}: {t.optimizer.name}, batch {t.batch_size}")

    n = len(result.lrs)
    end = "stopped: the loss diverged" if result.stopped_early else "reached --max"
    print(f"Swept {n} mini-batches from {result.lrs[0]:.3g} to {result.lrs[-1]:.3g} ({end})")
    best = min((v for v in result.smoothed if math.isfinite(v)), default=math.nan)
    print(f"Lowest smoothed loss {best:.4f} at lr {result.min_loss_lr:.3g}")
    print(f"Suggested learning rate: {result.suggestion:.3g} (steepest descent)")
    print(f"  alternative (min/10): {result.min_over_10:.3g}")
    print(f"Saved {out / 'lr_find.csv'} and {out / 'lr_find.png'}")
    return 0
