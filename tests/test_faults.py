"""Fault injection: runs killed at every point where they write, then resumed as a user would.

Each test starts ``kerasdl train`` through ``tests/fault_harness.py``, which kills the process
(SIGKILL, SIGINT or SIGTERM) at one point of the run: mid-epoch, while writing the history row,
the best checkpoint, the backup, run_info.json or metrics.json, or between two epochs. Then the
user's command runs again (the same command, or ``kerasdl train --resume RUN_DIR``), from the
recipe's folder with the default relative ``run.output_dir`` unless the test says otherwise.
What a user would check is checked: the run finishes exactly its planned epochs, history.csv
has each epoch once, no file of the run folder is half written, the recipe is not rewritten, and
the run folder is the same one.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from conftest import REPO, TINY_RECIPE

HARNESS = REPO / "tests" / "fault_harness.py"
KERASDL = str(Path(sys.executable).parent / "kerasdl")
ENV = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
EPOCHS = 4


def _recipe(folder: Path, output_dir: str = "runs", **sections: dict) -> Path:
    recipe = {k: dict(v) for k, v in TINY_RECIPE.items()}
    recipe["model"]["filters"] = [8, 16]
    recipe["training"].update(epochs=EPOCHS, log_images=0)
    for key, value in sections.items():
        recipe.setdefault(key, {}).update(value)
    recipe["run"].update(name="f", output_dir=output_dir)
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _kill(
    cwd: Path, point: str, epoch: int, args: list[str], command: str = "train"
) -> subprocess.CompletedProcess:
    """Run the harness until it kills itself; assert it did."""
    cmd = [sys.executable, str(HARNESS), point, str(epoch), "--", command, *args, "--quiet"]
    done = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)
    expected = {"_sigint": 130, "_sigterm": -signal.SIGTERM}.get(
        point[point.rfind("_") :], -signal.SIGKILL
    )
    assert done.returncode == expected, (done.returncode, done.stdout[-2000:], done.stderr[-3000:])
    return done


def _kerasdl(cwd: Path, *args: str, command: str = "train") -> subprocess.CompletedProcess:
    done = subprocess.run(
        [KERASDL, command, *args, "--quiet"],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return done


def _only_run(parent: Path) -> Path:
    runs = [p for p in parent.iterdir() if p.is_dir()]
    assert len(runs) == 1, f"expected one run folder, found {[p.name for p in runs]}"
    return runs[0]


def check_finished_run(run_dir: Path, epochs: int, config_text: str | None = None) -> dict:
    """What a user checks after the resumed run: every file whole, every epoch once."""
    leftovers = [
        str(p.relative_to(run_dir))
        for p in run_dir.rglob("*")
        if ".tmp" in p.name or "_temp" in p.name
    ]
    assert not leftovers, f"half-written files left: {leftovers}"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "split" in metrics and metrics["accuracy"] > 0.3
    info = json.loads((run_dir / "run_info.json").read_text())
    assert "final_weights_fingerprint" in info
    with (run_dir / "history.csv").open() as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    assert all(len(r) == len(header) for r in body), body
    assert [int(r[0]) for r in body] == list(range(epochs))
    with zipfile.ZipFile(run_dir / "best.keras") as z:
        assert z.testzip() is None
    listed = (run_dir / "backup" / "checkpoint").read_text()
    assert f'model_checkpoint_path: "ckpt-{epochs}"' in listed
    for name in (f"ckpt-{epochs}.index", f"ckpt-{epochs}.data-00000-of-00001"):
        assert (run_dir / "backup" / name).is_file()
    if config_text is not None:
        assert (run_dir / "config.yaml").read_text() == config_text  # never rewritten
    return info


# The fast part of the suite (default run): a kill at each kind of write, relative run folder.
FAST = [
    ("mid_epoch", 2, "same"),
    ("backup_torn", 1, "same"),
    ("history_write", 2, "same"),
    ("best_save", 1, "resume"),
    ("metrics_write", 0, "same"),
    ("preprocess_write", 0, "same"),
]
SLOW = [
    ("backup_data", 2, "same"),
    ("between_epochs", 1, "resume"),
    ("run_info_write", 0, "resume"),
    ("mid_epoch_sigint", 1, "same"),
    ("mid_epoch_sigterm", 2, "resume"),
    ("history_write_sigterm", 0, "same"),
]


def _kill_and_resume(tmp_path: Path, point: str, epoch: int, how: str, **recipe_kw) -> dict:
    output_dir = recipe_kw.pop("output_dir", "runs")
    recipe = _recipe(tmp_path, output_dir, **recipe_kw)
    killed = _kill(tmp_path, point, epoch, [recipe.name])
    parent = Path(output_dir) if Path(output_dir).is_absolute() else tmp_path / output_dir
    run_dir = _only_run(parent / "f")
    assert not (run_dir / "metrics.json").exists() or point == "run_info_write", killed.stdout
    config_text = (run_dir / "config.yaml").read_text()
    rel = os.path.relpath(run_dir, tmp_path)
    args = [recipe.name] if how == "same" else ["--resume", rel]
    done = _kerasdl(tmp_path, *args)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    # the folder as the user named it: relative for "runs" or --resume RUN_DIR, else absolute
    assert f"Resuming {rel}" in done.stdout or f"Resuming {run_dir}" in done.stdout
    assert "Traceback" not in done.stderr
    assert _only_run(parent / "f") == run_dir  # the same folder, not a new run
    return check_finished_run(run_dir, EPOCHS, config_text)


@pytest.mark.parametrize("point,epoch,how", FAST)
def test_kill_at_each_write_then_resume(tmp_path: Path, point: str, epoch: int, how: str) -> None:
    _kill_and_resume(tmp_path, point, epoch, how)


@pytest.mark.slow
@pytest.mark.parametrize("point,epoch,how", SLOW)
def test_kill_at_each_write_then_resume_slow(
    tmp_path: Path, point: str, epoch: int, how: str
) -> None:
    _kill_and_resume(tmp_path, point, epoch, how)


@pytest.mark.slow
def test_kill_with_absolute_output_dir(tmp_path: Path) -> None:
    _kill_and_resume(tmp_path, "mid_epoch", 2, "resume", output_dir=str(tmp_path / "abs_runs"))


@pytest.mark.slow
def test_kill_fixmatch_method_run(tmp_path: Path) -> None:
    method = {"name": "fixmatch", "labels_per_class": 5, "mu": 2}
    info = _kill_and_resume(tmp_path, "mid_epoch", 1, "same", method=method)
    assert info["resumes"][0]["epoch"] == 1


def test_resume_alone_continues_the_runs_own_recipe_and_can_extend_it(tmp_path: Path) -> None:
    """``--resume RUN_DIR`` alone: the run's config.yaml, not the quickstart, and never
    rewritten; ``--set training.epochs`` extends it and the extension is remembered."""
    recipe = _recipe(tmp_path)
    _kill(tmp_path, "between_epochs", 0, [recipe.name])
    run_dir = _only_run(tmp_path / "runs" / "f")
    rel = os.path.relpath(run_dir, tmp_path)
    config_text = (run_dir / "config.yaml").read_text()

    done = _kerasdl(tmp_path, "--resume", rel, "--set", "training.epochs=5")
    assert done.returncode == 0, done.stderr[-3000:]
    info = check_finished_run(run_dir, 5, config_text)
    assert info["epochs"] == 5 and info["resumes"][-1]["epochs"] == 5

    again = _kerasdl(tmp_path, "--resume", rel)  # remembers 5 epochs, trains nothing more
    assert again.returncode == 0, again.stderr[-3000:]
    assert "All 5 epochs were already trained" in again.stdout
    check_finished_run(run_dir, 5, config_text)


def test_resume_with_a_different_recipe_names_the_keys(tmp_path: Path) -> None:
    """A recipe or --set given with --resume that changes more than the epochs is a user error
    naming the keys, before TensorFlow loads; the run folder is untouched."""
    from kerasdl.config import load_recipe
    from kerasdl.errors import UserError
    from kerasdl.runfolder import resume_recipe

    recipe = _recipe(tmp_path)
    run_dir = tmp_path / "runs" / "f" / "r1"
    run_dir.mkdir(parents=True)
    load_recipe(recipe).dump_yaml(run_dir / "config.yaml")
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}

    with pytest.raises(UserError, match=r"differs .* in model\.filters.*only training\.epochs"):
        resume_recipe(run_dir, resume_recipe(run_dir, overrides=["model.filters=[4, 4]"]))
    other = load_recipe(recipe, ["data.image_size=12", "training.batch_size=32"])
    with pytest.raises(UserError, match=r"data\.image_size, training\.batch_size"):
        resume_recipe(run_dir, other)
    same = resume_recipe(run_dir, load_recipe(recipe, ["training.epochs=9"]))
    assert same.training.epochs == 9

    done = _kerasdl(tmp_path, "--resume", "runs/f/r1", "--set", "model.dropout=0.5")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "model.dropout" in done.stderr
    assert "tensorflow" not in done.stderr.lower()
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


def test_backup_of_another_model_is_a_mismatch_not_damage(tmp_path: Path) -> None:
    """A readable backup that holds another model is reported as such, with what differs, and
    never with advice to delete it."""
    import keras

    from kerasdl.training import callbacks as cb

    def model(width: int) -> keras.Model:
        m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(width), keras.layers.Dense(2)])
        m.compile("sgd", "mse")
        m.optimizer.build(m.trainable_variables)
        return m

    saved = model(8)
    state = cb.TrainingState("max")
    manager = cb.tf.train.CheckpointManager(
        cb.make_checkpoint(saved, state), str(tmp_path / "backup"), 2
    )
    manager.save(checkpoint_number=1)
    other = model(16)
    with pytest.raises(cb.BackupMismatch) as err:
        cb.restore_backup(other, cb.TrainingState("max"), tmp_path / "backup")
    message = str(err.value)
    assert "different model" in message and "delete" not in message
    assert "--resume RUN_DIR" in message
    restored = cb.restore_backup(model(8), cb.TrainingState("max"), tmp_path / "backup")
    assert restored.endswith("ckpt-1")


def test_deterministic_run_killed_mid_epoch_ends_with_the_same_weights(tmp_path: Path) -> None:
    """``run.deterministic``: a run killed mid-epoch and resumed ends with exactly the weights
    of an uninterrupted run (augmentation, dropout and shuffling included)."""
    import numpy as np
    import tensorflow as tf

    sections = {
        "run": {"deterministic": True},
        "data": {"augment": [{"name": "random_crop", "padding": 1}, {"name": "flip"}]},
    }
    whole_dir, killed_dir = tmp_path / "whole", tmp_path / "killed"
    whole_dir.mkdir()
    killed_dir.mkdir()
    whole_recipe = _recipe(whole_dir, **sections)
    done = _kerasdl(whole_dir, whole_recipe.name)
    assert done.returncode == 0, done.stderr[-3000:]
    whole = _only_run(whole_dir / "runs" / "f")

    killed_recipe = _recipe(killed_dir, **sections)
    _kill(killed_dir, "mid_epoch", 2, [killed_recipe.name])
    again = _kerasdl(killed_dir, killed_recipe.name)
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = _only_run(killed_dir / "runs" / "f")
    info = check_finished_run(resumed, EPOCHS)
    assert info["resumes"][0]["epoch"] == 2

    def final_tensors(run_dir: Path) -> dict:
        reader = tf.train.load_checkpoint(str(run_dir / "backup" / f"ckpt-{EPOCHS}"))
        names = [n for n in reader.get_variable_to_shape_map() if n.startswith(("model/", "rng/"))]
        return {n: reader.get_tensor(n) for n in names}

    a, b = final_tensors(whole), final_tensors(resumed)
    assert a.keys() == b.keys() and any(k.startswith("rng/") for k in a)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    w = json.loads((whole / "run_info.json").read_text())["final_weights_fingerprint"]
    assert info["final_weights_fingerprint"] == w
    h_whole = (whole / "history.csv").read_text()
    assert (resumed / "history.csv").read_text() == h_whole


@pytest.mark.slow
@pytest.mark.parametrize("point", ["mid_epoch", "backup_torn"])
def test_kill_darts_search_then_resume(tmp_path: Path, point: str) -> None:
    """A DARTS search killed mid-epoch (or while saving its backup) continues where it was."""
    recipe = yaml.safe_load((REPO / "configs" / "darts_search_digits.yaml").read_text())
    recipe["search"].update(epochs=3, layers=2, init_channels=4, batch_size=64)
    recipe["run"] = {"name": "s", "output_dir": "runs", "seed": 0}
    (tmp_path / "search.yaml").write_text(yaml.safe_dump(recipe))
    _kill(tmp_path, point, 1, ["search.yaml"], command="search")
    run_dir = _only_run(tmp_path / "runs" / "s")
    config_text = (run_dir / "config.yaml").read_text()
    done = _kerasdl(tmp_path, "search.yaml", command="search")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "Resuming" in done.stdout
    assert _only_run(tmp_path / "runs" / "s") == run_dir
    assert (run_dir / "config.yaml").read_text() == config_text
    leftovers = [p.name for p in run_dir.rglob("*") if ".tmp" in p.name or "_temp" in p.name]
    assert not leftovers
    with (run_dir / "history.csv").open() as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [0, 1, 2]
    alphas = json.loads((run_dir / "alphas.json").read_text())
    assert len(alphas["softmax_per_epoch"]) == 3
    assert "val_accuracy" in json.loads((run_dir / "metrics.json").read_text())
    assert (run_dir / "genotype.json").is_file()


@pytest.mark.parametrize("name", ["simclr", "moco"])
def test_backup_of_a_method_that_updates_part_of_its_variables_restores(
    name: str, tmp_path: Path
) -> None:
    """SimCLR and MoCo update the encoder and projector only; their backup restores into a fresh
    method (as a resumed run builds it) without a mismatch."""
    import keras
    import numpy as np
    import tensorflow as tf

    import kerasdl
    from kerasdl.data import ssl
    from kerasdl.methods import build_method
    from kerasdl.training import callbacks as cb

    images = np.random.default_rng(0).random((32, 8, 8, 1)).astype("float32")
    views = ssl.contrastive_dataset(
        tf.data.Dataset.from_tensor_slices((images, np.zeros(32, "int64"))), 16, seed=0
    )
    extra = {"queue_size": 32} if name == "moco" else {}

    def method() -> keras.Model:
        net = kerasdl.create_model("simple_cnn", num_classes=10, input_shape=(8, 8, 1), filters=[4])
        m = build_method(name, net, 10, projection_dim=8, seed=0, **extra)
        m.compile(keras.optimizers.Adam(1e-3))
        return m

    trained = method()
    trained.fit(views, epochs=1, verbose=0, shuffle=False)
    state = cb.TrainingState("min")
    manager = tf.train.CheckpointManager(
        cb.make_checkpoint(trained, state), str(tmp_path / "backup"), 2
    )
    manager.save(checkpoint_number=1)
    fresh = method()
    assert cb.restore_backup(fresh, cb.TrainingState("min"), tmp_path / "backup").endswith("ckpt-1")
    for a, b in zip(fresh.optimizer.variables, trained.optimizer.variables, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_run_folder_in_use_is_neither_resumed_nor_taken_over(tmp_path: Path) -> None:
    """While a process trains in a folder (its lock held), the same recipe started again gets a
    new folder, and ``--resume`` of that folder is a one-line error; once the lock is released
    (the process ended, even by kill -9) the folder is found again."""
    from kerasdl.config import load_recipe
    from kerasdl.errors import UserError
    from kerasdl.runfolder import RunLock, find_unfinished_run
    from kerasdl.training.runner import _open_run_folder

    cfg = load_recipe(_recipe(tmp_path), [f"run.output_dir={tmp_path / 'runs'}"])
    run_dir = tmp_path / "runs" / "f" / "r1"
    run_dir.mkdir(parents=True)
    cfg.dump_yaml(run_dir / "config.yaml")
    held = RunLock(run_dir)
    assert held.acquire()
    try:
        assert RunLock.held(run_dir)
        assert find_unfinished_run(cfg) is None
        with pytest.raises(UserError, match="in use by another kerasdl process"):
            _open_run_folder(cfg, fresh=False, resume_dir=run_dir, chief=True)
    finally:
        held.release()
    assert find_unfinished_run(cfg) == run_dir
    folder, resuming, lock = _open_run_folder(cfg, fresh=False, resume_dir=None, chief=True)
    assert folder.path == run_dir and resuming
    lock.release()


def test_deterministic_method_recipe_is_rejected_before_tensorflow(tmp_path: Path) -> None:
    done = _kerasdl(
        tmp_path,
        str(_recipe(tmp_path, method={"name": "fixmatch"})),
        "--set",
        "run.deterministic=true",
    )
    assert done.returncode == 2 and "run.deterministic" in done.stderr
    assert done.stderr.count("\n") == 1 and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("fails", [False, True])
def test_a_non_chief_workers_scratch_backup_is_removed_however_the_run_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fails: bool
) -> None:
    """A worker other than the chief saves its part of the backup into a temporary folder; it
    is removed when the run ends, also when the run ends in an error (it piled up before)."""
    import dataclasses
    import tempfile

    import keras
    from conftest import write_recipe

    from kerasdl.config import load_recipe
    from kerasdl.training import runner

    def second_worker(*args, **kwargs):
        info = describe(*args, **kwargs)
        return dataclasses.replace(info, task={"type": "worker", "index": 1})

    class Fail(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if fails and epoch == 1:
                raise RuntimeError("the chief went away")

    describe = runner.describe_distribution
    monkeypatch.setattr(runner, "describe_distribution", second_worker)
    scratch_root = tmp_path / "tmp"
    scratch_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch_root))
    seen: list[list[str]] = []

    def ours() -> list[str]:  # (TensorFlow's autograph writes its own files there too)
        return sorted(p.name for p in scratch_root.glob("kerasdl-worker-*"))

    class Look(keras.callbacks.Callback):  # the scratch backup exists while the run trains
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            seen.append(ours())

    cfg = load_recipe(write_recipe(tmp_path / "tiny.yaml", tmp_path / "runs"))
    if fails:
        with pytest.raises(RuntimeError, match="the chief went away"):
            runner.train(cfg, verbose=0, callbacks=[Look(), Fail()])
    else:
        runner.train(cfg, verbose=0, callbacks=[Look()])
    assert seen and all(len(names) == 1 for names in seen)
    assert ours() == []
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.json"))
