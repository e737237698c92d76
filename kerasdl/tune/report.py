"""What a tuner leaves in ``--out`` at the end: ``best.yaml``, ``trials.csv`` and plots.

* ``best.yaml``: the best finished trial's full recipe (the recipe and ``--set`` of the tuner
  that ran it, with the trial's parameters and the user's ``run:`` section, not the trial's run
  folder), which ``kerasdl train best.yaml`` trains as is;
* ``trials.csv``: one row per trial (number, state, value, epochs reported, seconds, parameters,
  run folder, the trial it retries);
* ``history.png``: the optimisation history; ``importance.png``: the parameters' importance
  (fANOVA, Hutter et al. 2014), both from ``optuna.visualization.matplotlib``.

Every file is written atomically (:mod:`kerasdl.io`): tuners sharing ``--out`` may write them
at the same time, and a reader never sees half a file.
"""

from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from kerasdl.config import validate_recipe
from kerasdl.io import save_figure, write_text
from kerasdl.plotting import pyplot
from kerasdl.tune.storage import RECIPE_ATTR, RUN_DIR_ATTR

BEST, TRIALS, HISTORY_PLOT, IMPORTANCE_PLOT = (
    "best.yaml",
    "trials.csv",
    "history.png",
    "importance.png",
)


def write_best(study: optuna.Study, out: Path) -> Any:
    """``best.yaml``: the recipe the best trial recorded (user attribute ``recipe``); returns
    the best trial (None when no trial has finished or the best has no recipe)."""
    try:
        best = study.best_trial
    except ValueError:
        return None
    recipe = best.user_attrs.get(RECIPE_ATTR)
    if recipe is None:  # a trial added by other means than kerasdl tune
        return None
    cfg = validate_recipe(recipe)
    header = (
        f"# The best trial of study {study.study_name!r}: trial {best.number}, "
        f"{cfg.training.monitor} {best.value:.6g}\n"
        f"# ({best.user_attrs.get(RUN_DIR_ATTR, '')}). Train it: kerasdl train {out / BEST}\n"
    )
    write_text(out / BEST, header + yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return best


def write_trials(study: optuna.Study, out: Path) -> int:
    """``trials.csv``; returns the number of rows."""
    trials = study.get_trials(deepcopy=False)
    keys = sorted({k for t in trials for k in t.params})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["number", "state", "value", "epochs", "seconds", *keys, "run_dir", "retry_of"])
    for t in trials:
        seconds = (
            f"{(t.datetime_complete - t.datetime_start).total_seconds():.1f}"
            if t.datetime_complete and t.datetime_start
            else ""
        )
        retry_of = t.system_attrs.get("retry_history", [None])[-1]
        writer.writerow(
            [
                t.number,
                t.state.name,
                "" if t.value is None else repr(t.value),
                len(t.intermediate_values),
                seconds,
                *[t.params.get(k, "") for k in keys],
                t.user_attrs.get(RUN_DIR_ATTR, ""),
                "" if retry_of is None else retry_of,
            ]
        )
    write_text(out / TRIALS, buffer.getvalue())
    return len(trials)


def write_plots(study: optuna.Study, out: Path) -> list[str]:
    """The optimisation history and parameter importance plots; returns the notes of plots that
    could not be drawn yet (too few finished trials)."""
    from optuna.visualization import matplotlib as ovm

    pyplot()  # the Agg backend
    notes = []
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    plots = {
        HISTORY_PLOT: ovm.plot_optimization_history,
        IMPORTANCE_PLOT: ovm.plot_param_importances,
    }
    for name, plot in plots.items():
        if name == IMPORTANCE_PLOT and len(complete) < 2:
            notes.append(f"{name}: needs two finished trials")
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna's ExperimentalWarning
            try:
                ax = plot(study)
            except (ValueError, RuntimeError) as err:
                notes.append(f"{name}: {err}")
                continue
        figure = ax.figure
        figure.set_size_inches(7, 4.5)
        figure.tight_layout()
        save_figure(figure, out / name)
    return notes


def write_reports(study: optuna.Study, out: Path) -> list[str]:
    """All the summaries; returns lines saying what was written."""
    out.mkdir(parents=True, exist_ok=True)
    rows = write_trials(study, out)
    lines = [f"{out / TRIALS}: {rows} trial(s)"]
    best = write_best(study, out)
    if best is None:
        lines.append(f"{BEST}: no trial has finished yet")
    else:
        lines.append(
            f"{out / BEST}: trial {best.number} ({best.value:.4f}); kerasdl train {out / BEST}"
        )
    notes = write_plots(study, out)
    drawn = [n for n in (HISTORY_PLOT, IMPORTANCE_PLOT) if not any(x.startswith(n) for x in notes)]
    if drawn:
        lines.append(f"plots: {', '.join(str(out / n) for n in drawn)}")
    lines += [f"not drawn: {n}" for n in notes]
    return lines
