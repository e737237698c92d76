"""``run_search``: a DARTS search run from a recipe, by the one runner.

The search is a task (:class:`kerasdl.nas.task.SearchTask`) of
:func:`kerasdl.training.runner.train`, which owns its run folder, backups and resume like any
training run's; see :mod:`kerasdl.nas.task` for what the folder holds.

Reference:
    Liu, Simonyan & Yang, "DARTS: Differentiable Architecture Search", ICLR 2019.
"""

from __future__ import annotations

from pathlib import Path

from kerasdl.models.genotype import Genotype
from kerasdl.nas.callbacks import AlphaLogger, ProgressPrinter  # noqa: F401  (re-exported)
from kerasdl.nas.config import SearchRecipe
from kerasdl.nas.task import split_train  # noqa: F401  (re-exported)


def run_search(
    recipe: SearchRecipe,
    verbose: int = 1,
    *,
    fresh: bool = False,
    resume_dir: str | Path | None = None,
) -> tuple[Path, Genotype]:
    """Run a DARTS search and write its run folder; returns the folder and the genotype.

    Like a training run, a search saves its whole state (network weights, alphas, both
    optimizers, the epoch) to ``backup/`` after every epoch; started again with the same recipe
    (or with ``resume_dir``), an unfinished search continues from its last backup.

    Args:
        recipe: the validated search recipe (for ``resume_dir``, the run's own).
        verbose: print one line per epoch.
        fresh: never resume an unfinished search.
        resume_dir: continue this run folder.
    """
    from kerasdl.training.runner import train

    result = train(recipe, fresh=fresh, resume_dir=resume_dir, verbose=verbose)
    return result.run_dir, Genotype.from_dict(result.metrics["genotype"])
