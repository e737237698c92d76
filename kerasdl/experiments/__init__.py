"""The canon's claims as experiments: ``kerasdl experiment NAME`` reproduces one with a table and a
plot.

Each experiment is data (:class:`~kerasdl.experiments.base.Experiment`: a claim, its paper, a base
recipe, arms and measures) in one of the theme modules; :func:`run_experiment` trains its arms with
the project's own runner and writes ``DIR/NAME/results.json``, ``results.md`` and PNG plots
(:mod:`kerasdl.experiments.report`). docs/experiments.md has every experiment's full-run table,
plot and verdict.

Example:
    >>> from kerasdl.experiments import EXPERIMENTS, run_experiment
    >>> sorted(EXPERIMENTS)[:2]
    ['augmentation', 'batchnorm_lr']
    >>> results = run_experiment("perceptron_xor", "experiments", quick=True)
"""

from __future__ import annotations

from pathlib import Path

from kerasdl.errors import UserError, suggest
from kerasdl.experiments import architecture, foundations, regularization, training
from kerasdl.experiments.base import Context, Experiment, Results, run

EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for module in (foundations, architecture, training, regularization)
    for e in module.EXPERIMENTS
}


def get_experiment(name: str) -> Experiment:
    """The experiment called ``name``; an unknown name is a :class:`UserError` with a suggestion."""
    if name not in EXPERIMENTS:
        raise UserError(f"Unknown experiment {name!r}." + suggest(name, EXPERIMENTS))
    return EXPERIMENTS[name]


def list_lines() -> list[str]:
    """One line per experiment: its name, then its claim."""
    width = max(len(n) for n in EXPERIMENTS)
    return [f"{name:<{width}}  {e.claim}" for name, e in EXPERIMENTS.items()]


def run_experiment(
    name: str, out: str | Path = "experiments", quick: bool = False, seeds: int | None = None
) -> tuple[Results, list[Path]]:
    """Run experiment ``name`` into ``out/name`` and write its files.

    Args:
        name: an experiment name (:data:`EXPERIMENTS`).
        out: the folder the experiment's folder goes in.
        quick: the small budget (one seed unless ``seeds``; fewer epochs and arms).
        seeds: number of seeds (0, 1, ... ); default 1 with ``quick``, else the experiment's.

    Returns:
        The results and the files written (``results.json``, ``results.md``, PNGs).
    """
    from kerasdl.experiments import report

    exp = get_experiment(name)
    if seeds is not None and seeds < 1:
        raise UserError(f"--seeds: expected at least 1. Received: {seeds}")
    n = seeds or (1 if quick else exp.seeds)
    ctx = Context(Path(out) / name, quick, list(range(n)))
    results = run(exp, ctx)
    return results, report.write(results, ctx.out)


__all__ = ["EXPERIMENTS", "Experiment", "Results", "get_experiment", "list_lines", "run_experiment"]
