"""kerasdl tune: the space checked before any trial, tuners sharing one SQLite study, pruning,
best.yaml, and a tuner killed with SIGKILL whose trial is retried by the next one.

The main promises run the way a user runs them: the installed ``kerasdl`` command in a
subprocess, relative paths, the study read back with Optuna.
"""

from __future__ import annotations

import copy
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_distribute import ENV  # pytest puts tests/ on the path
from test_distribute import RECIPE as DIST_RECIPE

REPO = Path(__file__).resolve().parent.parent
KERASDL = [sys.executable, "-m", "kerasdl"]

# test_distribute's tiny recipe: one epoch of 79 steps (enough for the batch-norm statistics to
# be useful), the metric the study optimises named, relative run folders
RECIPE = copy.deepcopy(DIST_RECIPE)
RECIPE["training"].update(epochs=1, batch_size=16, monitor="val_accuracy")
RECIPE["run"].update(name="tiny", output_dir="runs")
GOOD_SPACE = {
    "training.optimizer.learning_rate": {"type": "float", "low": 0.003, "high": 0.03, "log": True},
    "model.filters": {"type": "categorical", "choices": [[8, 16], [16, 16]]},
}
# a learning rate at which one epoch leaves the network at chance level
BAD_SPACE = {
    "training.optimizer.learning_rate": {"type": "float", "low": 1e-8, "high": 2e-8, "log": True}
}


def _write(tmp: Path, name: str, data: dict) -> str:
    (tmp / name).write_text(yaml.safe_dump(data))
    return name


def _tune(tmp: Path, *args: str, wait: bool = True):
    command = [*KERASDL, "tune", "recipe.yaml", *args]
    if not wait:
        return subprocess.Popen(
            command, cwd=tmp, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    return subprocess.run(command, cwd=tmp, env=ENV, capture_output=True, text=True, timeout=600)


def _study(tmp: Path, name: str = "s", db: str = "study.db"):
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp / db}")


SHARED = ["--storage", "sqlite:///study.db", "--study", "s", "--out", "tune"]


@pytest.mark.parametrize(
    "space, expected",
    [
        ({"training.batch_size": {"type": "float", "low": 16, "high": 64}}, "training.batch_size"),
        ({"model.dropot": {"type": "float", "low": 0, "high": 0.5}}, "Did you mean 'dropout'"),
        ({"training.epochs": {"type": "int", "low": 0, "high": 3}}, "greater than 0"),
        ({"training.optimizer.lr": {"type": "float", "low": 0.1, "high": 1}}, "Unknown key"),
        ({"model.dropout": {"type": "float", "low": 0, "high": 1, "log": True}}, "above 0"),
        ({"run.output_dir": {"type": "categorical", "choices": ["a"]}}, "set by kerasdl tune"),
    ],
)
def test_space_is_checked_before_any_trial(tmp_path: Path, space: dict, expected: str) -> None:
    _write(tmp_path, "recipe.yaml", RECIPE)
    _write(tmp_path, "space.yaml", space)
    done = _tune(tmp_path, "--space", "space.yaml", "--trials", "2", *SHARED)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert expected in lines[0] and next(iter(space)) in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recipe.yaml", "space.yaml"]


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "tune").glob("*.yml")), ids=str)
def test_example_spaces_fit_the_quickstart_recipe(path: Path) -> None:
    from kerasdl.config import load_recipe
    from kerasdl.tune.space import check_space, load_space

    check_space(load_space(path), load_recipe(REPO / "configs" / "quickstart.yaml").to_dict())


def test_auto_monitor_and_bad_storage_are_refused(tmp_path: Path) -> None:
    _write(tmp_path, "space.yaml", GOOD_SPACE)
    recipe = {**RECIPE, "training": {**RECIPE["training"], "monitor": "auto"}}
    _write(tmp_path, "recipe.yaml", recipe)
    done = _tune(tmp_path, "--space", "space.yaml", "--trials", "2", *SHARED)
    assert done.returncode == 2 and "training.monitor" in done.stderr
    _write(tmp_path, "recipe.yaml", RECIPE)
    done = _tune(tmp_path, "--space", "space.yaml", "--trials", "2", "--storage", "tune.db")
    assert done.returncode == 2 and "journal:PATH" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_space_must_agree_with_the_study(tmp_path: Path) -> None:
    """Optuna keeps one kind of distribution per key and study: a space that changes it is
    refused before any trial, naming the key."""
    import optuna

    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'study.db'}", study_name="s", direction="maximize"
    )
    lr = optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True)
    study.add_trial(
        optuna.trial.create_trial(
            params={"training.optimizer.learning_rate": 0.01},
            distributions={"training.optimizer.learning_rate": lr},
            value=0.9,
        )
    )
    _write(tmp_path, "recipe.yaml", RECIPE)
    _write(
        tmp_path,
        "space.yaml",
        BAD_SPACE
        | {"training.optimizer.learning_rate": {"type": "float", "low": 1e-3, "high": 1e-1}},
    )
    done = _tune(tmp_path, "--space", "space.yaml", "--trials", "2", *SHARED)
    assert done.returncode == 2, done.stdout + done.stderr
    line = done.stderr.strip()
    assert "\n" not in line and "training.optimizer.learning_rate" in line and "log" in line
    assert len(_study(tmp_path).trials) == 1


@pytest.mark.parametrize("url", ["sqlite:///{}/x.db", "journal:{}/x.log"])
def test_dead_tuner_trial_is_failed_and_retried(tmp_path: Path, url: str) -> None:
    """The recovery rule on an SQLite and a journal-file study: a RUNNING trial whose owner
    process is gone, or whose heartbeat is stale, is failed and re-enqueued with its parameters
    and reports; a live owner's trial is left alone."""
    import optuna
    from optuna.trial import TrialState

    from kerasdl.tune import storage as st

    storage = st.open_storage(url.format(tmp_path))
    study = optuna.create_study(storage=storage, direction="maximize")
    gone = subprocess.Popen(["true"])  # a process of this host that has ended
    gone.wait()
    dead, live, old = study.ask(), study.ask(), study.ask()
    for trial in (dead, live, old):
        trial.suggest_float("lr", 1e-3, 1e-1, log=True)
        trial.report(0.5, 0)
        st.claim(trial)
    dead.set_user_attr(st.OWNER_ATTR, {**st.owner(), "pid": gone.pid})
    old.set_user_attr(st.OWNER_ATTR, {"host": "elsewhere", "pid": 1, "start": None})
    old.set_user_attr(st.HEARTBEAT_ATTR, time.time() - st.STALE_S - 1)
    assert st.used(study) == 3
    before = study.trials[live.number].user_attrs[st.HEARTBEAT_ATTR]

    def beat() -> float:
        return study.trials[live.number].user_attrs[st.HEARTBEAT_ATTR]

    with st.heartbeat(live, every=0.05):  # renewed from a thread while the trial trains
        deadline = time.time() + 30  # (a loaded machine may keep the thread waiting)
        while beat() == before and time.time() < deadline:
            time.sleep(0.05)
    assert beat() > before
    recovered = st.recover(study)
    assert sorted(recovered) == [(dead.number, 3), (old.number, 4)], study.trials
    trials = study.get_trials()
    assert [t.state for t in trials[:3]] == [TrialState.FAIL, TrialState.RUNNING, TrialState.FAIL]
    for failed, retry in ((trials[0], trials[3]), (trials[2], trials[4])):
        assert retry.state == TrialState.WAITING and retry.params == failed.params
        assert retry.intermediate_values == {0: 0.5}
        assert retry.system_attrs["retry_history"] == [failed.number]
        assert st.OWNER_ATTR not in retry.user_attrs  # the next tuner claims it afresh
    assert st.used(study) == 1  # the live trial; the failed ones are to be run again
    assert st.recover(study) == []


@pytest.mark.parametrize("pruner, prunes", [("median", True), ("hyperband", True), ("none", False)])
def test_pruners_stop_poor_trials(pruner: str, prunes: bool) -> None:
    """``--pruner`` on a synthetic study: good and hopeless trials alternate, three epochs each."""
    import optuna

    from kerasdl.tune.storage import make_pruner

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", pruner=make_pruner(pruner, 2, epochs=3))
    states = []
    for n in range(12):
        trial = study.ask()
        level = 0.9 if n % 2 == 0 else 0.1
        for epoch in range(3):
            trial.report(level + 0.01 * epoch, epoch)
            if trial.should_prune():
                states.append(study.tell(trial, state=optuna.trial.TrialState.PRUNED).state)
                break
        else:
            states.append(study.tell(trial, level).state)
    pruned = [n for n, s in enumerate(states) if s == optuna.trial.TrialState.PRUNED]
    assert bool(pruned) == prunes and all(n % 2 == 1 for n in pruned), states


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open()))


def test_two_tuners_share_one_sqlite_study_and_pruning_prunes(tmp_path: Path) -> None:
    _write(tmp_path, "recipe.yaml", RECIPE)
    _write(tmp_path, "space.yaml", GOOD_SPACE)
    _write(tmp_path, "bad.yaml", BAD_SPACE)
    args = ["--space", "space.yaml", "--trials", "3", *SHARED, "--pruner", "none"]
    tuners = [_tune(tmp_path, *args, wait=False) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in tuners]
    for p, out in zip(tuners, outs, strict=True):
        assert p.returncode == 0, out[-3000:]
    ran = [int(out.split("This tuner ran ")[1].split()[0]) for out in outs]
    assert sum(ran) == 3 and min(ran) >= 1, ran  # both took part, no trial twice

    from optuna.trial import TrialState

    study = _study(tmp_path)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    for t in study.trials:  # each trial an ordinary run with its own folder
        run = tmp_path / t.user_attrs["run_dir"]
        assert run.parent == tmp_path / "tune" / "trials" and (run / "metrics.json").is_file()
        assert any((run / "logs").rglob("events.out.tfevents.*"))
        values = [float(r["val_accuracy"]) for r in _rows(run / "history.csv")]
        assert t.value == pytest.approx(max(values)) and len(t.intermediate_values) == 1
    rows = _rows(tmp_path / "tune" / "trials.csv")
    assert [r["state"] for r in rows] == ["COMPLETE"] * 3
    assert (tmp_path / "tune" / "history.png").stat().st_size > 1000
    assert (tmp_path / "tune" / "importance.png").stat().st_size > 1000

    # best.yaml: the recipe the best trial trained (its run folder's), with the user's run:
    best = yaml.safe_load((tmp_path / "tune" / "best.yaml").read_text())
    run_dir = tmp_path / study.best_trial.user_attrs["run_dir"]
    trained = yaml.safe_load((run_dir / "config.yaml").read_text())
    lr = "training.optimizer.learning_rate"
    assert best["training"]["optimizer"]["learning_rate"] == study.best_params[lr]
    assert best["run"] == {**trained["run"], "output_dir": "runs", "name": "tiny", "id": None}
    assert {**best, "run": None} == {**trained, "run": None}

    # A third tuner joins with a hopeless learning rate and two epochs: the median rule stops
    # its trial after the first.
    bad = ["--space", "bad.yaml", "--trials", "4", *SHARED, "--startup-trials", "1"]
    done = _tune(tmp_path, *bad, "--set", "training.epochs=2")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    pruned = _study(tmp_path).trials[3]
    assert pruned.state == TrialState.PRUNED, pruned.intermediate_values
    run = tmp_path / pruned.user_attrs["run_dir"]
    assert len(_rows(run / "history.csv")) == 1 and (run / "metrics.json").is_file()
    assert "pruned after 1 epoch(s)" in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_tuner_restarted_continues_and_best_yaml_trains(tmp_path: Path, how: int) -> None:
    recipe = copy.deepcopy(RECIPE)
    recipe["training"]["epochs"] = 5
    _write(tmp_path, "recipe.yaml", recipe)
    _write(tmp_path, "space.yaml", GOOD_SPACE)
    args = ["--space", "space.yaml", "--trials", "2", *SHARED, "--pruner", "none"]
    tuner = _tune(tmp_path, *args, wait=False)
    state = tmp_path / "tune" / "trials" / "trial-0000" / "backup" / "checkpoint"
    deadline = time.time() + 300
    while not (state.is_file() and "ckpt-2" in state.read_text()):
        assert tuner.poll() is None and time.time() < deadline, tuner.communicate()[0][-3000:]
        time.sleep(0.2)
    os.kill(tuner.pid, how)
    out = tuner.communicate(timeout=120)[0]

    from optuna.trial import TrialState

    left = [t.state for t in _study(tmp_path).trials]
    if how == signal.SIGKILL:  # left RUNNING: the next tuner finds its tuner gone
        assert left == [TrialState.RUNNING]
        note = "trial 0: its tuner is gone; marked failed, retried as trial 1"
    else:  # SIGTERM ends the tuner as Ctrl-C does: it fails and re-enqueues its trial itself
        assert tuner.returncode == 130 and left == [TrialState.FAIL, TrialState.WAITING], out
        assert "trial 0: interrupted; marked failed, retried as trial 1" in out
        note = "Study 's'"
    done = _tune(tmp_path, *args)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert note in done.stdout
    assert "Resuming tune/trials/trial-0000 from epoch" in done.stdout
    trials = _study(tmp_path).trials
    assert [t.state for t in trials] == [TrialState.FAIL] + [TrialState.COMPLETE] * 2
    assert trials[1].params == trials[0].params
    assert trials[1].user_attrs["run_dir"] == "tune/trials/trial-0000"
    history = _rows(tmp_path / "tune" / "trials" / "trial-0000" / "history.csv")
    assert [int(r["epoch"]) for r in history] == list(range(5))  # resumed, each epoch once
    assert len(trials[1].intermediate_values) == 5

    if how == signal.SIGTERM:
        return
    trained = subprocess.run(
        [*KERASDL, "train", "tune/best.yaml", "--quiet"],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "Run folder: runs/tiny/" in trained.stdout
