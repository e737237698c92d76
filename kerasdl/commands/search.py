"""``kerasdl search``: a DARTS architecture search from a recipe."""

from __future__ import annotations

import argparse

from kerasdl.commands._args import add_recipe_arguments

COMMAND = "search"
HELP = "run a DARTS architecture search and write the genotype and cell drawings"
DESCRIPTION = """Run a differentiable architecture search (DARTS, Liu et al. 2019) from a search
recipe (sections search/data/run; see docs/darts.md). The network weights train on one part of the
training split, the architecture parameters on the other; progress is printed per epoch and logged
to TensorBoard (losses, accuracies, the softmax of the alphas). The run folder receives
genotype.json, normal.png and reduce.png; genotype.json is also copied to
<output_dir>/<run name>/genotype.json for the retrain recipe (model darts_net, genotype: PATH).
The search state is backed up after every epoch: after a kill, the same command continues an
unfinished search of the same recipe (--fresh starts a new one; --resume RUN_DIR names it).

Example:
  kerasdl search configs/darts_search_digits.yaml
  kerasdl search configs/darts_search_digits.yaml --set search.epochs=2 --set search.unrolled=true
  kerasdl train configs/darts_train_digits.yaml
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_recipe_arguments(
        parser,
        recipe_metavar="RECIPE",
        recipe_help="search recipe (YAML); optional with --resume",
        example="search.epochs=2",
    )
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress lines")
    parser.add_argument("--fresh", action="store_true", help="never resume; start a new search")
    parser.add_argument(
        "--resume", metavar="RUN_DIR", help="continue this search folder with its own recipe"
    )


def run(args: argparse.Namespace) -> int:
    from kerasdl.errors import UserError
    from kerasdl.nas.config import load_search_recipe

    if not args.recipe and not args.resume:
        raise UserError("give a search RECIPE (or --resume RUN_DIR)")
    if args.fresh and args.resume:
        raise UserError("--resume and --fresh contradict each other; give one")
    if args.resume:
        from pathlib import Path

        from kerasdl.runfolder import RunFolder

        saved = RunFolder(Path(args.resume)).config
        if not saved.is_file():
            raise UserError(f"--resume: {args.resume} has no config.yaml; it is not a run folder")
        own = load_search_recipe(saved)
        recipe = load_search_recipe(args.recipe or saved, args.overrides)
        from kerasdl.runfolder import differing_keys

        diff = differing_keys(own.model_dump(mode="json"), recipe.model_dump(mode="json"))
        if diff:
            raise UserError(
                f"--resume {args.resume}: the recipe given differs from the search's config.yaml "
                f"in {', '.join(diff)}; a resumed search continues its own recipe"
            )
        recipe = own
    else:
        recipe = load_search_recipe(args.recipe, args.overrides)
    from kerasdl.nas.runner import run_search

    run_search(recipe, verbose=0 if args.quiet else 1, fresh=args.fresh, resume_dir=args.resume)
    return 0
