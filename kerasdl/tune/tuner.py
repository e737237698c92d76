"""The tuner: trials of a recipe as ordinary runs, recorded in an Optuna study (imports Keras and
Optuna; the command imports it after the recipe and the space are checked).

Each trial asks the study for parameters (:func:`kerasdl.tune.space.suggest`), trains the recipe
with them through :func:`kerasdl.training.runner.train` into its own run folder
``<out>/trials/trial-NNNN/`` (TensorBoard logs, best.keras, history.csv, metrics.json), reports
the monitored metric after every epoch (:class:`PruningCallback`) and tells the study the best
value of the run (the epoch ``best.keras`` keeps) or that it was pruned. Tuners sharing a storage
take trials from one study until ``--trials`` are used (:func:`kerasdl.tune.storage.used`); the
trials of a tuner that died are failed and retried first (:func:`kerasdl.tune.storage.recover`),
and a retry resumes the dead trial's run folder.

References: Akiba et al. 2019 (Optuna; the ask-and-tell interface); the median stopping rule of
Golovin et al. 2017 (Google Vizier); Hyperband, Li et al. 2018.
"""

from __future__ import annotations

import csv
import math
import signal
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import keras
import optuna
import yaml
from optuna.trial import TrialState

from kerasdl.config import validate_recipe
from kerasdl.errors import UserError
from kerasdl.runfolder import RunFolder
from kerasdl.tune import storage as st
from kerasdl.tune.space import suggest, with_params
from kerasdl.tune.storage import TuneOptions

TRIALS_DIR = "trials"  # run.name of every trial: <out>/trials/trial-NNNN


class PruningCallback(keras.callbacks.Callback):
    """Reports ``logs[monitor]`` of every epoch to an Optuna trial; when the pruner says so, sets
    ``model.stop_training`` so that the run ends after this epoch and is finished as usual (its
    run folder complete), instead of raising through the runner as Optuna's integration does.

    Args:
        trial: the Optuna trial.
        monitor: the metric reported (``val_accuracy``, ``val_loss``, ...).
    """

    def __init__(self, trial: optuna.trial.Trial, monitor: str) -> None:
        super().__init__()
        self.trial = trial
        self.monitor = monitor
        self.pruned_at: int | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(float(value)):
            return
        self.trial.report(float(value), epoch)
        if self.trial.should_prune():
            self.pruned_at = epoch
            self.model.stop_training = True


def best_value(history: Path, monitor: str, direction: str) -> tuple[float, int]:
    """The best ``monitor`` value in a run's ``history.csv`` and the number of epochs run."""
    rows = list(csv.DictReader(history.open())) if history.is_file() else []
    values = [float(r[monitor]) for r in rows if r.get(monitor) not in (None, "")]
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return float("nan"), len(rows)
    return (min(values) if direction == "minimize" else max(values)), len(rows)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, Kubernetes stopping a pod) ends the tuner like Ctrl-C: the running
    trial is failed and retried by the next tuner, instead of being left RUNNING."""
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Tuner:
    """Runs trials of one recipe in one study until the study has ``opts.trials``.

    Args:
        base: the resolved recipe (``RecipeConfig.to_dict()``) with the user's overrides.
        space: the checked space (:func:`kerasdl.tune.space.load_space`).
        opts: the options.
        study: the study (:func:`kerasdl.tune.storage.open_study`).
        log: where progress lines go.
    """

    def __init__(
        self,
        base: dict[str, Any],
        space: dict[str, Any],
        opts: TuneOptions,
        study: optuna.Study,
        log: Callable[[str], None] = print,
    ) -> None:
        self.base, self.space, self.opts, self.log = base, space, opts, log
        self.monitor = base["training"]["monitor"]
        self.direction = st.direction_of(self.monitor)
        self.study = study

    def run(self) -> int:
        """Run trials until the study has enough; returns how many this tuner ran."""
        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")  # the retracing notes of one model per trial
        ran = 0
        with sigterm_as_interrupt():
            while True:
                self._recover()
                if st.used(self.study) >= self.opts.trials:
                    return ran
                self.run_trial()
                ran += 1

    def _recover(self) -> None:
        for failed, again in st.recover(self.study):
            then = f"retried as trial {again}" if again is not None else "retried too often"
            self.log(f"trial {failed}: its tuner is gone; marked failed, {then}")

    def trial_recipe(self, params: dict[str, Any], series: int) -> tuple[Any, dict[str, Any]]:
        """The validated recipe of a trial (the base with ``params``, its run folder fixed:
        ``<out>/trials/trial-<series>``) and the same with the user's ``run:`` section."""
        recipe = validate_recipe(with_params(self.base, params)).to_dict()
        data = with_params(recipe, {})
        data["run"].update(output_dir=str(self.opts.out), name=TRIALS_DIR, id=f"trial-{series:04d}")
        return validate_recipe(data), recipe

    def run_trial(self) -> optuna.trial.FrozenTrial:
        """Ask, train, tell (a trial that does not finish is told FAIL; an interrupted one is
        retried)."""
        trial = self.study.ask()
        st.claim(trial)
        try:
            frozen = self._train_and_tell(trial)
        except KeyboardInterrupt:
            failed = self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            again = st.retry(self.study, failed)
            self.log(f"trial {trial.number}: interrupted; marked failed, retried as trial {again}")
            raise
        except BaseException:
            self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            raise
        return frozen

    def _train_and_tell(self, trial: optuna.trial.Trial) -> optuna.trial.FrozenTrial:
        from kerasdl.training.runner import train

        params = suggest(trial, self.space)
        asked = self.study.get_trials(deepcopy=False)[trial.number]
        series = asked.system_attrs.get("failed_trial", trial.number)  # a retry: the first's
        cfg, recipe = self.trial_recipe(params, series)
        folder = RunFolder(self.opts.out / TRIALS_DIR / cfg.run.id)
        self._check_folder(folder, cfg)
        trial.set_user_attr(st.RUN_DIR_ATTR, str(folder.path))
        # best.yaml, if this trial is the best (any tuner of the study writes it, whatever its
        # own recipe and --set)
        trial.set_user_attr(st.RECIPE_ATTR, recipe)
        shown = ", ".join(f"{k}={_short(v)}" for k, v in params.items())
        self.log(f"trial {trial.number}: {shown}  ({folder.path})")
        start = time.monotonic()
        pruning = PruningCallback(trial, self.monitor)
        trained_before = folder.finished  # trained, then killed before telling the study
        if not trained_before:
            with st.heartbeat(trial), warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # Optuna: step already reported
                keras.backend.clear_session()
                train(cfg, verbose=0, callbacks=[pruning])
        value, epochs = best_value(folder.history, self.monitor, self.direction)
        seconds = time.monotonic() - start
        pruned = pruning.pruned_at is not None or (
            trained_before and epochs < cfg.training.epochs and trial.should_prune()
        )
        if pruned:
            frozen = self.study.tell(trial, state=TrialState.PRUNED)
            self.log(f"trial {trial.number}: pruned after {epochs} epoch(s) ({seconds:.0f} s)")
        else:
            frozen = self.study.tell(trial, value)
            self.log(
                f"trial {trial.number}: {self.monitor} {value:.4f} "
                f"({frozen.state.name.lower()}, {epochs} epoch(s), {seconds:.0f} s)"
            )
        return frozen

    def _check_folder(self, folder: RunFolder, cfg: Any) -> None:
        """A trial's run folder that exists must be this trial's (another study in the same
        ``--out`` would otherwise be resumed)."""
        if not folder.config.is_file():
            return
        if yaml.safe_load(folder.config.read_text()) != cfg.to_dict():
            raise UserError(
                f"{folder.path} holds a run of another recipe (another study with the same "
                "--out?); use another --out or study"
            )


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
