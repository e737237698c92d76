"""A supervised training run end to end: accuracy, run folder, evaluate, resume, TensorBoard."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import write_recipe

from kerasdl.cli import main


def test_quickstart_short_budget_reaches_stated_accuracy(trained_run) -> None:
    # The tiny recipe (8x8 digits, 6 epochs) must reach 93% on the held-out test split.
    assert trained_run.metrics["accuracy"] >= 0.93
    run_dir = trained_run.run_dir
    for name in (
        "config.yaml",
        "preprocess.json",
        "best.keras",
        "metrics.json",
        "history.csv",
        "run_info.json",
    ):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "logs" / "train").is_dir() and (run_dir / "logs" / "validation").is_dir()
    rows = list(csv.DictReader((run_dir / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == list(range(6))
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["accuracy"] == pytest.approx(trained_run.metrics["accuracy"])
    assert not list(run_dir.glob(".*tmp*"))  # no temporary file left behind


def test_resolved_config_repeats_the_run(trained_run) -> None:
    from kerasdl.config import load_recipe

    cfg = load_recipe(trained_run.run_dir / "config.yaml")
    assert cfg.to_dict() == yaml.safe_load((trained_run.run_dir / "config.yaml").read_text())


def test_evaluate_reproduces_metrics_json(trained_run, capsys) -> None:
    run_dir = trained_run.run_dir
    assert main(["evaluate", str(run_dir)]) == 0
    out = capsys.readouterr().out
    saved = json.loads((run_dir / "metrics.json").read_text())
    evaluated = json.loads((run_dir / "evaluation_test.json").read_text())
    for key in ("accuracy", "loss", "top5"):
        assert evaluated[key] == pytest.approx(saved[key], abs=1e-5)
    assert f"accuracy   {saved['accuracy']:.4f}" in out
    matrix = np.array(evaluated["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == 360
    assert np.trace(matrix) / matrix.sum() == pytest.approx(saved["accuracy"], abs=1e-6)
    assert (run_dir / "confusion_test.png").stat().st_size > 1000


def test_evaluate_on_a_folder_of_images(trained_run, tmp_path: Path, capsys) -> None:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i in range(40):
        folder = tmp_path / "imgs" / str(digits.target[i])
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (digits.images[i] / 16.0 * 255).astype("uint8")
        Image.fromarray(pixels).save(folder / f"{i}.png")
    assert main(["evaluate", str(trained_run.run_dir), "--data", str(tmp_path / "imgs")]) == 0
    out = capsys.readouterr().out
    assert "Evaluation on data-imgs (40 images)" in out
    result = json.loads((trained_run.run_dir / "evaluation_data-imgs.json").read_text())
    assert result["accuracy"] >= 0.8  # the run's model on images it mostly trained on
    assert main(["evaluate", str(trained_run.run_dir), "--data", str(tmp_path / "nope")]) == 2


def _fingerprint_from_checkpoint(run_dir: Path, checkpoint: Path) -> float:
    """Restore a backup into a freshly built model, independently of the runner's code path."""
    import tensorflow as tf

    from kerasdl.config import load_recipe
    from kerasdl.registry import create_model

    cfg = load_recipe(run_dir / "config.yaml")
    model = create_model(
        cfg.model.name, num_classes=10, input_shape=(8, 8, 1), **cfg.model.kwargs()
    )
    tf.train.Checkpoint(model=model).restore(str(checkpoint)).expect_partial()
    return float(sum(np.abs(np.asarray(w, np.float64)).sum() for w in model.get_weights()))


def test_resume_after_kill_9(tmp_path: Path) -> None:
    recipe = write_recipe(
        tmp_path / "r.yaml", tmp_path / "runs", training={"epochs": 8}, model={"filters": [8, 16]}
    )
    cmd = [sys.executable, "-m", "kerasdl", "train", str(recipe), "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    state = None
    while time.time() < deadline and proc.poll() is None:
        state = next((tmp_path / "runs" / "tiny").glob("*/backup/checkpoint"), None)
        if state is not None and "ckpt-2" in state.read_text():
            break
        time.sleep(0.2)
    assert proc.poll() is None, "training finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)  # mid-epoch 3, no chance to clean up
    proc.wait()
    run_dir = state.parent.parent
    assert not (run_dir / "metrics.json").exists()
    import shutil

    shutil.copytree(run_dir / "backup", tmp_path / "backup_at_kill")

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Resuming {run_dir}" in done.stdout
    assert len(list((tmp_path / "runs" / "tiny").iterdir())) == 1  # same folder, not a new run
    info = json.loads((run_dir / "run_info.json").read_text())
    resume = info["resumes"][0]
    assert resume["epoch"] >= 2
    rows = list(csv.DictReader((run_dir / "history.csv").open()))
    epochs = [int(r["epoch"]) for r in rows]
    # Each planned epoch has exactly one row, in order (redone epochs replace their rows).
    assert epochs == list(range(8))
    fingerprint = _fingerprint_from_checkpoint(
        run_dir, tmp_path / "backup_at_kill" / resume["checkpoint"]
    )
    assert resume["weights_fingerprint"] == pytest.approx(fingerprint, rel=1e-9)
    assert (run_dir / "metrics.json").is_file()


def test_corrupt_newest_backup_falls_back_then_errors(trained_run, tmp_path: Path) -> None:
    import shutil

    from kerasdl.config import load_recipe
    from kerasdl.data import load_data
    from kerasdl.errors import UserError
    from kerasdl.training import callbacks as cb
    from kerasdl.training.runner import build_model, compile_model

    backup = tmp_path / "backup"
    shutil.copytree(trained_run.run_dir / "backup", backup)
    cfg = load_recipe(trained_run.run_dir / "config.yaml")
    model = build_model(cfg, load_data(cfg.data, cfg.run.seed))
    compile_model(model, cfg, steps_per_epoch=20)
    newest = sorted(backup.glob("ckpt-*.data-*"))[-1]
    newest.write_bytes(b"garbage")
    state = cb.TrainingState("max")
    restored = cb.restore_backup(model, state, backup)
    assert restored is not None and restored.endswith("ckpt-5")
    assert int(state.epoch.numpy()) == 5
    for f in backup.glob("ckpt-*.data-*"):
        f.write_bytes(b"garbage")
    with pytest.raises(UserError, match="no backup in .* can be read"):
        cb.restore_backup(model, cb.TrainingState("max"), backup)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tensorboard_server_lists_run_and_serves_loss(trained_run) -> None:
    logdir = trained_run.run_dir.parent.parent
    port = _free_port()
    tb = Path(sys.executable).with_name("tensorboard")
    proc = subprocess.Popen(
        [str(tb), "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        runs = None
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                runs = json.loads(urllib.request.urlopen(f"{base}/data/runs", timeout=5).read())
                if any(r.endswith("logs/train") for r in runs):
                    break
            except OSError:
                pass
            time.sleep(1)
        train_run = next(r for r in runs if r.endswith("logs/train"))
        url = f"{base}/data/plugin/scalars/scalars?run={train_run}&tag=epoch_loss"
        points = json.loads(urllib.request.urlopen(url, timeout=10).read())
        assert len(points) == 6
        losses = [p[2] for p in points]
        assert losses[-1] < losses[0]
        tags = json.loads(
            urllib.request.urlopen(f"{base}/data/plugin/scalars/tags", timeout=10).read()
        )
        assert "learning_rate" in tags[train_run]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_trim_history_drops_the_rows_a_resumed_run_redoes(tmp_path: Path) -> None:
    """A crash after an epoch's CSV row and before its backup: the resumed run redoes the epoch."""
    from kerasdl.training.runner import trim_history

    path = tmp_path / "history.csv"
    path.write_text("epoch,loss\n0,2.0\n1,1.5\n2,1.2\n")
    trim_history(path, 2)
    assert path.read_text() == "epoch,loss\n0,2.0\n1,1.5\n"
    trim_history(path, 5)  # nothing to drop
    assert path.read_text() == "epoch,loss\n0,2.0\n1,1.5\n"
    path.write_text("epoch,loss\n0,2.0\n\n1,1.5\n")  # a blank line (hand-edited file)
    trim_history(path, 1)
    assert path.read_text() == "epoch,loss\n0,2.0\n\n"
    trim_history(tmp_path / "missing.csv", 1)  # no history yet: nothing to do
    assert not (tmp_path / "missing.csv").exists()
