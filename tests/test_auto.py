"""training.* = auto: the fast choice per machine and family, printed and recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from conftest import write_recipe

from kerasdl.config import RecipeConfig
from kerasdl.errors import UserError
from kerasdl.training import auto
from kerasdl.training import precision as precision_module


@pytest.fixture
def hardware(monkeypatch):
    """Pretend the CPU has (or lacks) fast bfloat16; no environment pin."""
    monkeypatch.delenv("KERASDL_AUTO_PRECISION", raising=False)

    def set_fast(fast: bool) -> None:
        monkeypatch.setattr(precision_module, "cpu_has_fast_bf16", lambda: fast)
        monkeypatch.setattr(
            precision_module.tf.config, "list_physical_devices", lambda kind=None: []
        )

    return set_fast


def test_defaults_are_auto():
    t = RecipeConfig().training
    assert (t.precision, t.steps_per_execution, t.inter_op_threads) == ("auto", "auto", "auto")


def test_bfloat16_on_fast_hardware_except_the_fully_connected_models(hardware):
    hardware(True)
    assert auto.choose_precision("resnet").value == "mixed_bfloat16"
    assert auto.choose_precision("vit").value == "mixed_bfloat16"
    kept = auto.choose_precision("foundations")
    assert kept.value == "float32" and "too small" in kept.why
    hardware(False)
    choice = auto.choose_precision("resnet")
    assert choice.value == "float32" and "no fast" in choice.why


def test_environment_pin_and_its_errors(hardware, monkeypatch):
    hardware(True)
    monkeypatch.setenv("KERASDL_AUTO_PRECISION", "float32")
    assert auto.choose_precision("resnet").value == "float32"
    monkeypatch.setenv("KERASDL_AUTO_PRECISION", "bf16")
    with pytest.raises(UserError, match="KERASDL_AUTO_PRECISION"):
        auto.choose_precision("resnet")


def test_explicit_precision_is_kept(hardware):
    hardware(True)
    precision, choices = auto.resolve_run("float32", 0, "resnet50")
    assert precision == "float32" and choices == []


def test_inter_op_table_and_the_default():
    for family, why in auto.INTER_OP_ONE.items():
        assert auto.choose_inter_op_threads(family).value == 1
        assert why  # each entry names its measurement
    assert auto.choose_inter_op_threads("no_such_family").value == 0


def test_threads_cannot_change_once_tensorflow_runs():
    import tensorflow as tf

    tf.constant(1.0) + 1.0  # TensorFlow is running in this process now
    current = tf.config.threading.get_inter_op_parallelism_threads()
    assert auto.apply_inter_op_threads(current) == ""
    note = auto.apply_inter_op_threads(current + 3)
    assert "already running" in note
    assert tf.config.threading.get_inter_op_parallelism_threads() == current


def test_family_of():
    assert auto.family_of("resnet20") == "resnet_cifar"
    assert auto.family_of("no_such_model") == ""
    assert auto.family_of(None) == ""


@pytest.mark.parametrize("model", ["simple_cnn", "resnet20"])
def test_a_run_prints_and_records_what_auto_picked(tmp_path, model):
    """`kerasdl train` as a user runs it: a fresh process, so the thread choice takes effect.
    The ResNet-20 run sets ``training.inter_op_threads: 1`` itself: it is applied and recorded,
    and is not an ``auto`` choice."""
    path = write_recipe(tmp_path / "r.yaml", tmp_path / "runs", training={"epochs": 1})
    explicit = model == "resnet20"
    if explicit:
        recipe = yaml.safe_load(path.read_text())
        recipe["model"] = {"name": "resnet20", "filters": [4, 8, 8]}
        recipe["data"]["image_size"] = 16
        recipe["training"]["inter_op_threads"] = 1
        path.write_text(yaml.safe_dump(recipe))
    done = subprocess.run(
        [sys.executable, "-m", "kerasdl", "train", "r.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("auto: "))
    assert "precision float32 (KERASDL_AUTO_PRECISION)" in line
    assert "steps per execution 16" in line
    assert "oneDNN on (" in line or "oneDNN off (" in line
    family = auto.family_of(model)
    want = 1 if explicit or family in auto.INTER_OP_ONE else 0
    assert ("inter-op threads" not in line) if explicit else (f"inter-op threads {want} (" in line)
    assert "training.inter_op_threads" not in done.stdout  # applied: TF starts after choosing
    (run_info,) = (tmp_path / "runs").rglob("run_info.json")
    info = json.loads(run_info.read_text())
    assert info["inter_op_threads"] == want  # read back from TensorFlow inside the run
    recorded = info["auto"]
    assert recorded["precision"]["value"] == "float32"
    assert recorded["steps_per_execution"]["value"] == 16
    assert recorded["onednn"]["value"] in ("on", "off") and recorded["onednn"]["why"]
    if explicit:
        assert "inter_op_threads" not in recorded
    else:
        assert recorded["inter_op_threads"]["value"] == want


def test_an_explicit_thread_count_is_applied_or_the_run_says_why(capsys):
    """``training.inter_op_threads: N`` goes to TensorFlow; once it runs, one line says so."""
    import tensorflow as tf

    tf.constant(1.0) + 1.0
    current = tf.config.threading.get_inter_op_parallelism_threads()
    precision, choices = auto.resolve_run("float32", current + 2, "resnet20")
    assert (precision, choices) == ("float32", [])  # explicit settings are not "auto" choices
    assert "training.inter_op_threads" in capsys.readouterr().out
    auto.resolve_run("float32", current, "resnet20")
    assert capsys.readouterr().out == ""
