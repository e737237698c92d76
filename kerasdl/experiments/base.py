"""What an experiment is (data), and how one runs: recipes through the project's own runner.

An :class:`Experiment` is a claim of the deep-learning story, a base recipe, a few :class:`Arm`
(each a recipe override: the variable the claim is about), the measures that compare them and the
expected direction (:attr:`Experiment.expect`). :func:`run` trains every arm for every seed with
:func:`kerasdl.training.runner.train` (each run is an ordinary run folder under
``DIR/NAME/runs/<arm>/seed<k>``), reads its ``history.csv`` and ``metrics.json``, lets the
experiment's probes measure more (gradient norms at initialisation, MAC counts, ...), and returns
:class:`Results` for :mod:`kerasdl.experiments.report` to write. Nothing here imports TensorFlow at
import time: ``kerasdl experiment --list`` answers at once.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Arm:
    """One arm: a name, what it changes (``recipe``, merged over the base recipe) and a label.

    String values of the recipe may name values the experiment's ``prepare`` step wrote
    (``"{xor_npz}"``), filled in per seed.
    """

    name: str
    recipe: dict[str, Any]
    label: str = ""


@dataclass
class ArmRun:
    """One finished run of an arm: its metrics, its history by column and probe results."""

    arm: str
    seed: int
    metrics: dict[str, float]
    history: dict[str, list[float]]
    run_dir: str = ""
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Measure:
    """A figure read off each run (``of``), and whether the claim wants it high or low."""

    name: str
    of: Callable[[ArmRun], float]
    higher_is_better: bool = True
    fmt: str = ".4f"


def test_metric(key: str = "accuracy", name: str = "test accuracy") -> Measure:
    """The run's ``metrics.json`` value (of ``best.keras`` on the test split)."""
    return Measure(name, lambda r: r.metrics[key], higher_is_better=not key.endswith("loss"))


def final(column: str = "loss", name: str = "final training loss") -> Measure:
    """The last epoch's value of a ``history.csv`` column."""
    return Measure(name, lambda r: r.history[column][-1], not column.endswith("loss"))


def probed(key: str, name: str, higher_is_better: bool = True, fmt: str = ".4g") -> Measure:
    """A value a probe stored in :attr:`ArmRun.extra`."""
    return Measure(name, lambda r: r.extra[key], higher_is_better, fmt)


@dataclass
class Context:
    """Where an experiment writes and how big it runs."""

    out: Path  # DIR/NAME
    quick: bool
    seeds: list[int]
    log: Callable[[str], None] = print

    @property
    def data_dir(self) -> Path:
        return self.out / "data"


@dataclass(frozen=True)
class Experiment:
    """A claim and the arms that test it.

    Args:
        name: the command's NAME.
        claim: the claim, one sentence (``kerasdl experiment --list``).
        reference: the paper(s) the claim is from.
        arms: the arms; ``quick_arms`` (names) is the subset ``--quick`` runs (default: all).
        base: the recipe every arm starts from (``run:`` is set per arm and seed).
        quick: recipe overrides for ``--quick`` (smaller budget), merged over every arm.
        measures: the figures of the table; the first is the one the verdict is about.
        expect: pairs ``(a, b)``: the claim says arm ``a`` beats arm ``b`` on the first measure.
        seeds: seeds of a full run (``--seeds`` overrides).
        curves: ``history.csv`` columns plotted per arm (``curves.png``).
        prepare: writes the experiment's data for a seed; returns values for the arms'
            ``"{...}"`` placeholders.
        probe: measures more of a finished run (stored in :attr:`ArmRun.extra`).
        run_arm: replaces training for experiments about cost, not learning.
        analyse: after all runs: arithmetic checks and extra plots; returns a dict with
            ``checks`` (list of ``{name, computed, expected, ok}``), ``plots`` and ``notes``.
    """

    name: str
    claim: str
    reference: str
    arms: tuple[Arm, ...]
    measures: tuple[Measure, ...]
    base: dict[str, Any] = field(default_factory=dict)
    quick: dict[str, Any] = field(default_factory=dict)
    quick_arms: tuple[str, ...] = ()
    expect: tuple[tuple[str, str], ...] = ()
    seeds: int = 3
    curves: tuple[str, ...] = ("loss",)
    prepare: Callable[[Context, int], dict[str, Any]] | None = None
    probe: Callable[[Any, ArmRun], dict[str, Any]] | None = None
    run_arm: Callable[[Arm, int, Context], ArmRun] | None = None
    analyse: Callable[[Context, Results], dict[str, Any]] | None = None

    def arms_to_run(self, quick: bool) -> list[Arm]:
        if quick and self.quick_arms:
            return [a for a in self.arms if a.name in self.quick_arms]
        return list(self.arms)


@dataclass
class Results:
    """Every run of an experiment, and what the analysis added."""

    experiment: Experiment
    quick: bool
    seeds: list[int]
    runs: list[ArmRun]
    analysis: dict[str, Any] = field(default_factory=dict)

    def of(self, arm: str) -> list[ArmRun]:
        return [r for r in self.runs if r.arm == arm]

    def values(self, arm: str, measure: Measure | None = None) -> list[float]:
        m = measure or self.experiment.measures[0]
        return [float(m.of(r)) for r in self.of(arm)]

    def summary(self, arm: str, measure: Measure | None = None) -> dict[str, float]:
        """Mean, sample standard deviation, min and max over the seeds."""
        return summarize(self.values(arm, measure))


def summarize(values: list[float]) -> dict[str, float]:
    """``mean``, ``std`` (sample, 0 for one value), ``min`` and ``max`` of finite values
    (non-finite ones, a diverged run's NaN loss, count as ``nan`` and are reported)."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return {"mean": math.nan, "std": math.nan, "min": math.nan, "max": math.nan, "n": 0}
    mean = sum(finite) / len(finite)
    var = sum((v - mean) ** 2 for v in finite) / (len(finite) - 1) if len(finite) > 1 else 0.0
    return {
        "mean": mean,
        "std": math.sqrt(var),
        "min": min(finite),
        "max": max(finite),
        "n": len(finite),
    }


def digits_recipe(
    model: dict[str, Any] | None = None,
    *,
    epochs: int,
    batch_size: int = 64,
    optimizer: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    **training: Any,
) -> dict[str, Any]:
    """A base recipe on the bundled digits: ``model:`` (if given), ``data:`` (``source: digits``
    plus ``data``) and ``training:`` (epochs, batch size, optimizer, any other key)."""
    recipe: dict[str, Any] = {
        "data": {"source": "digits", **(data or {})},
        "training": {"epochs": epochs, "batch_size": batch_size, **training},
    }
    if optimizer is not None:
        recipe["training"]["optimizer"] = optimizer
    if model is not None:
        recipe["model"] = model
    return recipe


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` merged in, section by section (a deep copy)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def fill(value: Any, names: dict[str, Any]) -> Any:
    """Fill ``"{name}"`` placeholders in the strings of a recipe."""
    if isinstance(value, dict):
        return {k: fill(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, names) for v in value]
    if isinstance(value, str) and "{" in value:
        return value.format_map(names)
    return value


def arm_recipe(exp: Experiment, arm: Arm, seed: int, ctx: Context, names: dict) -> dict:
    """The whole recipe of one arm and seed (base, arm, ``--quick`` overrides, run section)."""
    recipe = merge(exp.base, arm.recipe)
    if ctx.quick:
        recipe = merge(recipe, exp.quick)
    run = {"name": arm.name, "output_dir": str(ctx.out / "runs"), "seed": seed, "id": f"seed{seed}"}
    recipe = merge(recipe, {"run": run, "training": {"log_images": 0}})
    return fill(recipe, names)


def read_history(path: Path) -> dict[str, list[float]]:
    """``history.csv`` as columns of floats."""
    columns: dict[str, list[float]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                columns.setdefault(key, []).append(float(value) if value else math.nan)
    return columns


def train_arm(recipe: dict[str, Any], arm: str, seed: int, log_file: Path) -> tuple[ArmRun, Any]:
    """Validate and train one recipe with :func:`kerasdl.training.runner.train`; the runner's
    messages go to ``log_file``. Returns the run and its validated recipe."""
    import keras
    import tensorflow as tf

    from kerasdl.config import validate_recipe
    from kerasdl.runfolder import RunFolder
    from kerasdl.training.runner import train

    tf.get_logger().setLevel("ERROR")  # Keras's retracing notes: every arm is a new model
    cfg = validate_recipe(recipe)
    run_dir = Path(cfg.run.output_dir) / cfg.run.name / str(cfg.run.id)
    shutil.rmtree(run_dir, ignore_errors=True)  # an experiment's run is always a new one
    start = time.monotonic()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a") as log, contextlib.redirect_stdout(log):
        result = train(cfg, fresh=True, verbose=0)
    seconds = time.monotonic() - start
    history = read_history(RunFolder(result.run_dir).history)
    run = ArmRun(arm, seed, dict(result.metrics), history, str(result.run_dir), seconds)
    keras.backend.clear_session()
    return run, cfg


def run(exp: Experiment, ctx: Context) -> Results:
    """Run every arm of ``exp`` for every seed of ``ctx`` and analyse the results."""
    ctx.out.mkdir(parents=True, exist_ok=True)
    runs: list[ArmRun] = []
    for seed in ctx.seeds:
        names = {"data": str(ctx.data_dir)}
        if exp.prepare is not None:
            names.update(exp.prepare(ctx, seed))
        for arm in exp.arms_to_run(ctx.quick):
            if exp.run_arm is not None:
                result = exp.run_arm(arm, seed, ctx)
            else:
                recipe = arm_recipe(exp, arm, seed, ctx, names)
                result, cfg = train_arm(recipe, arm.name, seed, ctx.out / "train.log")
                if exp.probe is not None:
                    result.extra.update(exp.probe(cfg, result))
            shown = exp.measures[0]
            value = shown.of(result)
            ctx.log(
                f"[{exp.name}] {arm.name:<16} seed {seed}: {shown.name} "
                f"{value:{shown.fmt}} ({result.seconds:.1f} s)"
            )
            runs.append(result)
    results = Results(exp, ctx.quick, list(ctx.seeds), runs)
    if exp.analyse is not None:
        results.analysis = exp.analyse(ctx, results)
    return results


def verdicts(results: Results) -> list[dict[str, Any]]:
    """Each expected pair ``(a, b)``: the means, and whether ``a`` beat ``b`` as claimed."""
    m = results.experiment.measures[0]
    out = []
    for a, b in results.experiment.expect:
        sa, sb = results.summary(a), results.summary(b)
        if not (sa["n"] and sb["n"]):
            continue
        better = sa["mean"] > sb["mean"] if m.higher_is_better else sa["mean"] < sb["mean"]
        out.append({"better": a, "worse": b, "a": sa["mean"], "b": sb["mean"], "holds": better})
    return out
