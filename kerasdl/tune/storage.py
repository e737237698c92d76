"""Where a study lives, and keeping it consistent when a tuner dies (imports Optuna).

Storage (``--storage``):

* an SQLAlchemy URL: Optuna's RDB storage. ``sqlite:///tune.db`` for processes on one machine
  (SQLite locks the file; avoid network file systems), ``postgresql://...`` or
  ``mysql+pymysql://...`` for tuners on many machines;
* ``journal:PATH``: Optuna's journal file storage, an append-only log that tuners on many
  machines can share on a network file system (NFS, ...) without a database server.

A tuner killed with ``kill -9`` (or a machine that goes down) leaves its trial RUNNING. Every trial
a tuner runs carries its owner (host, process id and start time) and a heartbeat (a time stamp the
tuner renews every :data:`HEARTBEAT_S` seconds) as user attributes. Before each trial, every tuner
looks for RUNNING trials whose owner is gone (a process of this host that no longer exists) or
whose heartbeat is older than :data:`STALE_S`, marks them FAIL and enqueues a copy with the same
parameters and intermediate values (WAITING), which the next free tuner runs first; the copy
resumes the dead trial's run folder from its last backup. This is Optuna's heartbeat and
``RetryFailedTrialCallback`` (RDB storage only), done here for every storage, with the immediate
check of a local process added so that a restarted tuner needs no grace period.

References: Optuna docs, "Easy Parallelization" and ``optuna.storages.RDBStorage``
(``heartbeat_interval``, ``grace_period``, ``RetryFailedTrialCallback``),
``optuna.storages.journal.JournalFileBackend``.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from kerasdl.errors import UserError

OWNER_ATTR = "kerasdl_owner"  # {"host", "pid", "start"} of the tuner running the trial
HEARTBEAT_ATTR = "kerasdl_heartbeat"  # unix time, renewed while the trial runs
RUN_DIR_ATTR = "run_dir"  # the trial's run folder
RECIPE_ATTR = "recipe"  # the trial's recipe with the user's run: section (best.yaml, if best)
HEARTBEAT_S = 30.0
STALE_S = 300.0  # a heartbeat this old means the tuner is gone (ten renewals missed)
MAX_RETRY = 2  # a trial that kills its tuner every time is retried this often, then counts
JOURNAL = "journal:"
# Tuners that start together race to create a new database's tables (optuna/optuna#4621): the
# loser sees one of these and opens the database again.
_CREATE_RACE = ("already exists", "UNIQUE constraint failed", "duplicate key")
_CREATE_ATTEMPTS = 10


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """Optuna storage for a ``--storage`` value (see the module docstring)."""
    if url.startswith(JOURNAL):
        path = Path(url[len(JOURNAL) :])
        if not path.name or not path.parent.is_dir():
            raise UserError(f"--storage {url}: folder {path.parent} does not exist")
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(str(path)))
    if "://" not in url:
        raise UserError(
            f"--storage {url!r}: expected a database URL (sqlite:///tune.db, "
            "postgresql://user:password@host/db) or journal:PATH (a journal file)"
        )
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:"):
        # tuners write a few rows per epoch; wait for a busy file instead of failing at once
        kwargs = {"connect_args": {"timeout": 60}}
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:" and not Path(path).parent.is_dir():
            raise UserError(f"--storage {url}: folder {Path(path).parent} does not exist")
    for attempt in range(_CREATE_ATTEMPTS):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        except (ImportError, ModuleNotFoundError) as err:
            raise UserError(f"--storage {url}: the database driver is missing ({err})") from None
        except Exception as err:  # sqlalchemy's errors: a bad URL, a server that does not answer
            text = str(err)
            if attempt + 1 < _CREATE_ATTEMPTS and any(m in text for m in _CREATE_RACE):
                time.sleep(0.2 + random.random())  # another tuner is creating the tables
                continue
            first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
            raise UserError(f"--storage {url}: cannot open the storage ({first})") from None
    raise AssertionError("unreachable")


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22 of proc(5), after the command name


def owner() -> dict[str, Any]:
    """This tuner: host name, process id and process start time."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": _process_start(os.getpid())}


def _gone(who: dict[str, Any]) -> bool:
    """Whether the owner is a process of this host that no longer exists."""
    if who.get("host") != socket.gethostname():
        return False
    pid = int(who.get("pid", 0))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # exists, someone else's
    start = _process_start(pid)
    return start is not None and who.get("start") is not None and start != who["start"]


def claim(trial: optuna.trial.Trial) -> None:
    """Mark a trial as run by this tuner, with a fresh heartbeat."""
    trial.set_user_attr(OWNER_ATTR, owner())
    trial.set_user_attr(HEARTBEAT_ATTR, time.time())


@contextlib.contextmanager
def heartbeat(trial: optuna.trial.Trial, every: float = HEARTBEAT_S) -> Iterator[None]:
    """Renew the trial's heartbeat every ``every`` seconds in a thread while the block runs."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every):
            with contextlib.suppress(Exception):  # a busy database: the next beat will do
                trial.set_user_attr(HEARTBEAT_ATTR, time.time())

    thread = threading.Thread(target=beat, name="kerasdl-tune-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def retry(study: optuna.Study, failed: optuna.trial.FrozenTrial) -> int | None:
    """Enqueue a WAITING copy of a failed trial (same parameters, intermediate values; the
    system attributes of Optuna's ``RetryFailedTrialCallback``: ``failed_trial`` is the first
    trial of the series, ``retry_history`` all of them). Returns the copy's number, or None
    after :data:`MAX_RETRY` retries."""
    history = [*failed.system_attrs.get("retry_history", []), failed.number]
    if len(history) > MAX_RETRY:
        return None
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.WAITING,
            params=failed.params,
            distributions=failed.distributions,
            user_attrs={
                k: v for k, v in failed.user_attrs.items() if k not in (OWNER_ATTR, HEARTBEAT_ATTR)
            },
            system_attrs={"failed_trial": history[0], "retry_history": history},
            intermediate_values=failed.intermediate_values,
        )
    )
    return study.get_trials(deepcopy=False)[-1].number


def stale_trials(study: optuna.Study, now: float | None = None) -> list[optuna.trial.FrozenTrial]:
    """RUNNING trials of a tuner that is gone (see the module docstring)."""
    now = time.time() if now is None else now
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        who = t.user_attrs.get(OWNER_ATTR)
        if who is None:  # killed between asking for the trial and claiming it
            started = t.datetime_start.timestamp() if t.datetime_start else now
            if now - started > STALE_S:
                out.append(t)
            continue
        beat = float(t.user_attrs.get(HEARTBEAT_ATTR, 0.0))
        if _gone(who) or now - beat > STALE_S:
            out.append(t)
    return out


def recover(study: optuna.Study, now: float | None = None) -> list[tuple[int, int | None]]:
    """Fail the trials of tuners that are gone and enqueue their retries.

    Returns:
        ``(failed trial, its retry or None)`` for every trial this call failed (a trial another
        tuner failed first is left to it).
    """
    done = []
    for t in stale_trials(study, now):
        try:
            study.tell(t.number, state=TrialState.FAIL)
        except (RuntimeError, ValueError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # another tuner was first
        done.append((t.number, retry(study, study.get_trials(deepcopy=False)[t.number])))
    return done


def used(study: optuna.Study) -> int:
    """Trials that count against ``--trials``: finished or running, except failures retried."""
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    counted = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    return sum(
        t.state in counted or (t.state == TrialState.FAIL and t.number not in retried)
        for t in trials
    )


@dataclass(frozen=True)
class TuneOptions:
    """How a tuner runs (the command's options, checked).

    Args:
        trials: trials the study should have (all tuners together, failures included).
        storage: the ``--storage`` URL (:func:`kerasdl.tune.storage.open_storage`).
        study: the study's name.
        out: the folder of the trial run folders and the summaries.
        pruner: ``median``, ``hyperband`` or ``none``.
        startup_trials: finished trials before the median pruner prunes.
    """

    trials: int
    storage: str
    study: str
    out: Path
    pruner: str = "median"
    startup_trials: int = 5


def direction_of(monitor: str) -> str:
    """``minimize`` for a loss, else ``maximize`` (the runner's rule for ``best.keras``)."""
    return "minimize" if monitor.endswith("loss") else "maximize"


def make_pruner(name: str, startup_trials: int, epochs: int) -> optuna.pruners.BasePruner:
    """The ``--pruner``: median stopping rule, Hyperband over the epochs, or none."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1))
    return optuna.pruners.NopPruner()


def _sampler() -> optuna.samplers.BaseSampler:
    """TPE (Bergstra et al. 2011) with the constant liar: a trial another tuner is running counts
    as a poor result, so tuners sharing a study do not all propose the same region (Optuna's
    advice for parallel optimisation)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(constant_liar=True)


def open_study(opts: TuneOptions, monitor: str, epochs: int) -> optuna.Study:
    """Create the study or load it (the same name in the same storage: tuners join it)."""
    direction = direction_of(monitor)
    study = optuna.create_study(
        storage=open_storage(opts.storage),
        study_name=opts.study,
        direction=direction,
        load_if_exists=True,
        pruner=make_pruner(opts.pruner, opts.startup_trials, epochs),
        sampler=_sampler(),
    )
    existing = study.direction.name.lower()
    if existing != direction:
        raise UserError(
            f"--study {opts.study}: the study in {opts.storage} is to {existing}, but "
            f"training.monitor {monitor!r} is to {direction}; use another study name"
        )
    return study
