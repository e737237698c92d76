"""Arguments the commands share: the recipe and its ``--set KEY=VALUE`` overrides; the
synthetic training case of ``kerasdl bench`` and ``kerasdl profile``.

Not a command (modules starting with ``_`` are skipped by the discovery in :mod:`kerasdl.cli`).

Example:
    >>> def add_arguments(parser):
    ...     add_recipe_arguments(parser, example="training.epochs=3")
    >>> def run(args):
    ...     cfg = load_recipe_arguments(args)  # kerasdl.config.load_recipe(recipe, overrides)
"""

from __future__ import annotations

import argparse
from typing import Any

DEFAULT_RECIPE_HELP = "YAML recipe (default: configs/quickstart.yaml)"


def add_recipe_arguments(
    parser: argparse.ArgumentParser,
    *,
    recipe_required: bool = False,
    recipe_option: bool = False,
    example: str | None = None,
    recipe_help: str | None = None,
    recipe_metavar: str | None = None,
) -> None:
    """Add the recipe (``args.recipe``) and repeatable ``--set KEY=VALUE`` (``args.overrides``).

    Args:
        parser: the command's parser.
        recipe_required: the recipe is a required positional (else optional: the quickstart
            recipe when omitted).
        recipe_option: the recipe is ``--recipe RECIPE``, naming the data of a trained model
            (default: the run's own ``config.yaml``), instead of a positional.
        example: an override shown in the help of ``--set``, ``KEY=VALUE``.
        recipe_help: the help of the positional recipe (default: says the quickstart recipe is
            used when it is omitted, or just "YAML recipe" when it is required).
        recipe_metavar: its name in the usage line (default ``recipe``).
    """
    if recipe_option:
        parser.add_argument(
            "--recipe", help="recipe whose data section to use (default: the run's)"
        )
    else:
        default_help = "YAML recipe" if recipe_required else DEFAULT_RECIPE_HELP
        parser.add_argument(
            "recipe",
            nargs=None if recipe_required else "?",
            metavar=recipe_metavar,
            help=recipe_help or default_help,
        )
    shown = f", e.g. {example}" if example else ""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a recipe key{shown} (repeatable; value parsed as YAML)",
    )


PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def add_case_arguments(
    parser: argparse.ArgumentParser, *, input_size: int | None, batch_size: int
) -> None:
    """Add the options of a synthetic training case: ``--input-size`` (None: the model's),
    ``--batch-size``, ``--precision``, ``--num-classes``, ``--steps`` and ``--warmup``."""
    side = f"default {input_size}" if input_size else "default: the model's"
    parser.add_argument("--input-size", type=int, default=input_size, help=f"input side ({side})")
    parser.add_argument(
        "--batch-size", type=int, default=batch_size, help=f"batch size (default {batch_size})"
    )
    parser.add_argument(
        "--precision", default="float32", choices=PRECISIONS, help="dtype policy (default float32)"
    )
    parser.add_argument("--num-classes", type=int, default=10, help="classes (default 10)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (default 10)")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up steps (default 3)")


def load_recipe_arguments(args: argparse.Namespace) -> Any:
    """The validated recipe of ``args.recipe`` with ``args.overrides`` applied (no TensorFlow)."""
    from kerasdl.config import load_recipe

    return load_recipe(args.recipe, args.overrides)
