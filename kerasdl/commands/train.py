"""``kerasdl train [RECIPE] [--set key=value ...]``."""

from __future__ import annotations

import argparse

from kerasdl.commands._args import add_recipe_arguments

COMMAND = "train"
HELP = "train a recipe (default: the quickstart recipe on the bundled digits data)"
DESCRIPTION = """Train a YAML recipe with Keras fit and write a run folder.

With no RECIPE, trains configs/quickstart.yaml. Keys can be overridden with --set, e.g.
  kerasdl train configs/quickstart.yaml --set training.epochs=5 --set run.seed=1
An unfinished run of the same recipe (same resolved config, not running) is resumed from its
last backup unless --fresh is given: after kill -9, Ctrl-C or a crash, run the same command
again. --resume RUN_DIR continues that run folder with its own config.yaml; a RECIPE or --set
given with it may change training.epochs only. The run folder's config.yaml can be passed back
to repeat the run in a new folder."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_recipe_arguments(parser, example="training.epochs=3")
    parser.add_argument("--fresh", action="store_true", help="never resume; start a new run")
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue this run folder with its own recipe (only training.epochs may change)",
    )
    parser.add_argument("--quiet", action="store_true", help="no per-step progress bar")


def run(args: argparse.Namespace) -> int:
    from kerasdl.config import load_recipe
    from kerasdl.errors import UserError

    if args.resume:
        from kerasdl.runfolder import resume_recipe

        if args.fresh:
            raise UserError("--resume and --fresh contradict each other; give one")
        given = None
        if args.recipe or args.overrides:
            given = (
                load_recipe(args.recipe, args.overrides)
                if args.recipe
                else resume_recipe(args.resume, overrides=args.overrides)
            )
        cfg = resume_recipe(args.resume, given)
    else:
        cfg = load_recipe(args.recipe, args.overrides)
    from kerasdl.training.runner import train

    result = train(cfg, fresh=args.fresh, resume_dir=args.resume, verbose=2 if args.quiet else 1)
    if not result.metrics:
        print(
            f"Worker finished (final weights fingerprint {result.weights_fingerprint!r}); "
            f"the chief writes the run folder {result.run_dir}"
        )
        return 0
    parts = ", ".join(f"{k} {v:.4f}" for k, v in result.metrics.items())
    acc = result.metrics.get("accuracy")
    if acc is not None:
        print(f"Test accuracy: {acc:.4f}")
    print(f"Test metrics: {parts}")
    print(f"Run folder: {result.run_dir}")
    print(f"TensorBoard: tensorboard --logdir {result.run_dir / 'logs'}")
    return 0
