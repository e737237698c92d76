"""The FixMatch / SimCLR app scripts (--smoke) and the ``kerasdl probe`` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest
import yaml
from test_cli_polish import TF_CHATTER  # pytest puts tests/ on the path

import kerasdl
from kerasdl.cli import main

REPO = Path(__file__).resolve().parent.parent


def test_fixmatch_and_simclr_apps_smoke():
    """Both apps run; the FixMatch one, with the user's environment (no TF_CPP_MIN_LOG_LEVEL or
    KERASDL_TF_LOGS), also starts quietly: TensorFlow imported quietly
    (kerasdl.cli.quiet_tensorflow, the mechanism the ``kerasdl`` command defers to the first
    import), no TensorFlow chatter or Keras warnings on stderr."""
    user_env = {
        k: v for k, v in os.environ.items() if k not in ("KERASDL_TF_LOGS", "TF_CPP_MIN_LOG_LEVEL")
    }
    envs = {
        "fixmatch_digits.py": user_env,
        "simclr_digits.py": {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    }
    procs = {
        app: subprocess.Popen(
            [sys.executable, str(REPO / "apps" / app), "--smoke"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for app, env in envs.items()
    }  # both at once: their start-up (TensorFlow import, tracing) overlaps
    out = {app: p.communicate(timeout=600) for app, p in procs.items()}
    for app, p in procs.items():
        assert p.returncode == 0, out[app][1][-3000:]
    assert "FixMatch test accuracy:" in out["fixmatch_digits.py"][0]
    assert "linear probe (10 labels per class):" in out["simclr_digits.py"][0]
    stderr = out["fixmatch_digits.py"][1]
    for noise in (*TF_CHATTER, "Warning", "retracing"):
        assert noise not in stderr, stderr


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    recipe = {"data": {"source": "digits", "image_size": 8, "channels": 1}, "run": {"seed": 0}}
    (run / "config.yaml").write_text(yaml.safe_dump(recipe))
    net = kerasdl.create_model("simple_cnn", num_classes=0, input_shape=(8, 8, 1), filters=[8])
    net.save(run / "backbone.keras")
    return run


def test_probe_command_writes_results(run_dir, capsys):
    assert main(["probe", str(run_dir), "--labels-per-class", "5"]) == 0
    res = json.loads((run_dir / "probe.json").read_text())
    assert res["train_examples"] == 50 and res["labels_per_class"] == 5
    # even random convolutional features separate digits far better than chance (10%)
    assert 0.3 < res["linear"] <= 1.0 and 0.3 < res["knn"] <= 1.0
    assert "linear:" in capsys.readouterr().out


def test_probe_command_rejects_bad_targets(tmp_path, run_dir, capsys):
    assert main(["probe", str(tmp_path / "missing")]) == 2
    loose = tmp_path / "loose.keras"  # a .keras file with no config.yaml beside it
    loose.write_bytes((run_dir / "backbone.keras").read_bytes())
    assert main(["probe", str(loose)]) == 2  # no recipe for the data
    assert "no config.yaml beside it; pass --recipe" in capsys.readouterr().err
    (tmp_path / "bad.keras").write_text("not a model")
    rc = main(["probe", str(tmp_path / "bad.keras"), "--recipe", str(run_dir / "config.yaml")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"cannot load {tmp_path / 'bad.keras'}" in err
    keras.config.set_dtype_policy("float32")
