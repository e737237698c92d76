"""``kerasdl search``: a DARTS architecture search from a recipe."""

from __future__ import annotations

import argparse

COMMAND = "search"
HELP = "run a DARTS architecture search and write the genotype and cell drawings"
DESCRIPTION = """Run a differentiable architecture search (DARTS, Liu et al. 2019) from a search
recipe (sections search/data/run; see docs/darts.md). The network weights train on one part of the
training split, the architecture parameters on the other; progress is printed per epoch and logged
to TensorBoard (losses, accuracies, the softmax of the alphas). The run folder receives
genotype.json, normal.png and reduce.png; genotype.json is also copied to
<output_dir>/<run name>/genotype.json for the retrain recipe (model darts_net, genotype: PATH).

Example:
  kerasdl search configs/darts_search_digits.yaml
  kerasdl search configs/darts_search_digits.yaml --set search.epochs=2 --set search.unrolled=true
  kerasdl train configs/darts_train_digits.yaml
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", metavar="RECIPE", help="search recipe (YAML)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe value, e.g. search.epochs=2 (repeatable)",
    )
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress lines")


def run(args: argparse.Namespace) -> int:
    from kerasdl.nas.config import load_search_recipe

    recipe = load_search_recipe(args.recipe, args.overrides)
    from kerasdl.nas.runner import run_search

    run_search(recipe, verbose=0 if args.quiet else 1)
    return 0
