"""``kerasdl experiment``: the list, the errors, and every experiment's ``--quick`` run.

The quick runs assert the direction of an effect only where it is robust at that budget (the
perceptron fails XOR and the MLP solves it; the plain 56-layer network's training loss ends
above the residual one's; sigmoid gradients vanish; a naive initialisation kills the signal) and
the arithmetic claims exactly. The experiments whose quick run takes longest are marked slow
(``pytest -m slow tests/test_experiments.py``); degradation's two 56-layer runs stay in the
default suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kerasdl.experiments import EXPERIMENTS, get_experiment, list_lines, run_experiment
from kerasdl.experiments.base import ArmRun, fill, merge, summarize

REQUIRED = (
    "perceptron_xor",
    "vanishing_gradients",
    "degradation",
    "small_filters",
    "bottleneck_1x1",
    "batchnorm_lr",
    "dropout",
    "initialization",
    "optimizers",
    "augmentation",
)
PNG = b"\x89PNG\r\n\x1a\n"
SLOW = ("batchnorm_lr", "optimizers", "schedules", "mixup", "augmentation", "dropout")


def _kerasdl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kerasdl", "experiment", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_list_names_every_experiment_with_its_claim() -> None:
    proc = _kerasdl("--list")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == len(EXPERIMENTS) >= 12
    names = [line.split()[0] for line in lines]
    assert set(REQUIRED) <= set(names)
    for line, name in zip(lines, names, strict=True):
        assert EXPERIMENTS[name].claim in line
    assert lines == list_lines()


def test_unknown_experiment_is_one_line_with_a_suggestion() -> None:
    proc = _kerasdl("perceptron_xr", "--quick")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "Did you mean 'perceptron_xor'?" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args", [("dropout", "--seeds", "0"), ()])
def test_bad_arguments_are_one_line(args: tuple[str, ...]) -> None:
    proc = _kerasdl(*args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_merge_fill_and_summary() -> None:
    base = {"model": {"name": "mlp", "hidden_units": [8]}, "training": {"epochs": 3}}
    merged = merge(base, {"model": {"dropout": 0.5}, "data": {"path": "{x}/a.npz"}})
    assert merged["model"] == {"name": "mlp", "hidden_units": [8], "dropout": 0.5}
    assert base["model"] == {"name": "mlp", "hidden_units": [8]}  # not modified
    assert fill(merged, {"x": "/d"})["data"]["path"] == "/d/a.npz"
    s = summarize([1.0, 3.0, float("nan")])
    assert (s["mean"], s["std"], s["min"], s["max"], s["n"]) == (2.0, 2**0.5, 1.0, 3.0, 2)
    assert summarize([0.5])["std"] == 0.0


def test_every_arm_recipe_is_a_valid_recipe() -> None:
    """Each arm's recipe (with placeholders filled) passes the project's own validation."""
    from kerasdl.config import validate_recipe
    from kerasdl.experiments.base import Context, arm_recipe

    ctx = Context(Path("/tmp/x"), quick=False, seeds=[0])
    names = {"data": "/d", "xor_npz": "/d/x.npz", "target": "/d/t.npz", "source_run": "/r"}
    for exp in EXPERIMENTS.values():
        if exp.run_arm is not None:
            continue
        for arm in exp.arms:
            cfg = validate_recipe(arm_recipe(exp, arm, 0, ctx, names))
            assert cfg.run.name == arm.name and cfg.run.seed == 0


def _quick(name: str, out: Path) -> tuple[dict, dict[str, list[ArmRun]]]:
    results, written = run_experiment(name, out, quick=True)
    folder = out / name
    assert {p.name for p in written} >= {"results.json", "results.md"}
    pngs = [p for p in written if p.suffix == ".png"]
    assert pngs and all(p.read_bytes().startswith(PNG) for p in pngs)
    data = json.loads((folder / "results.json").read_text())
    md = (folder / "results.md").read_text()
    for arm in get_experiment(name).arms_to_run(quick=True):
        assert f"`{arm.name}`" in md
    for png in pngs:
        assert f"]({png.name})" in md
    by_arm: dict[str, list[ArmRun]] = {}
    for r in results.runs:
        by_arm.setdefault(r.arm, []).append(r)
    assert len(data["runs"]) == len(results.runs) == len(by_arm)  # one seed
    return data, by_arm


def test_perceptron_fails_xor_and_mlp_solves_it(tmp_path: Path) -> None:
    """The perceptron gets at most 3 of the 4 points; the MLP all of them."""
    data, runs = _quick("perceptron_xor", tmp_path)
    acc = {arm: r[0].metrics["accuracy"] for arm, r in runs.items()}
    assert acc["perceptron"] <= 0.75 and acc["mlp"] == 1.0
    assert data["expected"] == [
        {"better": "mlp", "worse": "perceptron", "a": 1.0, "b": acc["perceptron"], "holds": True}
    ]
    assert (tmp_path / "perceptron_xor" / "data" / "xor.npz").is_file()
    assert (tmp_path / "perceptron_xor" / "decision_regions.png").read_bytes().startswith(PNG)
    run_dir = Path(runs["mlp"][0].run_dir)  # each arm is an ordinary run folder
    assert run_dir == tmp_path / "perceptron_xor" / "runs" / "mlp" / "seed0"
    assert {"config.yaml", "history.csv", "metrics.json", "best.keras"} <= {
        p.name for p in run_dir.iterdir()
    }


# Two 56-layer runs: about 2 minutes on an idle 2-core CPU. Kept in the default suite: it is the
# issue's own example of a claim the tests must show.
def test_degradation_plain_56_ends_above_residual_56(tmp_path: Path) -> None:
    _, runs = _quick("degradation", tmp_path)
    plain, res = runs["plain_56"][0], runs["resnet_56"][0]
    assert plain.history["loss"][-1] > res.history["loss"][-1]
    assert len(plain.history["loss"]) == 2  # the quick budget


def test_small_filters_arithmetic() -> None:
    """From Keras layers and the MAC counter, without training (the quick run is slow)."""
    from kerasdl.experiments.architecture import _conv_stack, receptive_field, small_filter_checks

    checks = {c["name"]: c["computed"] for c in small_filter_checks(c=64)}
    assert checks["two 3x3 weights, C=64 (= 18C^2)"] == 73_728  # 18 * 64^2
    assert checks["one 5x5 weights, C=64 (= 25C^2)"] == 102_400  # 25 * 64^2
    assert checks["two 3x3 MACs per output position, C=64"] == 73_728
    assert checks["one 5x5 MACs per output position, C=64"] == 102_400
    assert checks["two 3x3 receptive field (side, from the gradient)"] == 5
    assert checks["one 5x5 receptive field (side, from the gradient)"] == 5
    assert receptive_field(_conv_stack(4, (3,))) == 3
    assert receptive_field(_conv_stack(4, (3, 3, 3))) == 7
    assert {c["computed"] for c in small_filter_checks(c=8)} == {18 * 64, 25 * 64, 5}


def test_bottleneck_arithmetic(tmp_path: Path) -> None:
    data, runs = _quick("bottleneck_1x1", tmp_path)
    computed = [c["computed"] for c in data["analysis"]["checks"]]
    assert computed == [153_600, 15_872]
    assert all(c["ok"] for c in data["analysis"]["checks"])
    assert runs["direct_5x5"][0].extra["macs_per_position"] == 153_600
    assert runs["reduce_1x1"][0].extra["macs_per_position"] == 15_872
    assert runs["reduce_1x1"][0].extra["params"] == 192 * 16 + 25 * 16 * 32 + 2 * (16 + 32)


def test_sigmoid_gradients_vanish(tmp_path: Path) -> None:
    _, runs = _quick("vanishing_gradients", tmp_path)
    sig, relu = runs["sigmoid"][0].extra, runs["relu"][0].extra
    assert len(sig["grad_norms"]) == 10
    assert sig["grad_ratio"] < 1e-3 < 0.1 < relu["grad_ratio"]


def test_naive_initialization_kills_the_signal(tmp_path: Path) -> None:
    _, runs = _quick("initialization", tmp_path)
    naive, he = runs["naive"][0], runs["he"][0]
    assert naive.extra["act_ratio"] < 1e-6 and he.extra["act_ratio"] > 0.1
    assert naive.metrics["accuracy"] < 0.2  # chance is 0.1: nothing learnt


@pytest.mark.slow
def test_small_filters_quick(tmp_path: Path) -> None:
    data, runs = _quick("small_filters", tmp_path)
    assert all(c["ok"] for c in data["analysis"]["checks"])
    assert runs["two_3x3"][0].extra["params"] == 66_218  # the stage widths change: see docs
    assert runs["one_5x5"][0].extra["params"] == 53_034


@pytest.mark.slow
def test_transfer_learning_quick(tmp_path: Path) -> None:
    _, runs = _quick("transfer_learning", tmp_path)
    source = tmp_path / "transfer_learning" / "runs" / "source_0_4" / "seed0" / "best.keras"
    assert source.is_file()
    assert 0.0 <= runs["fine_tune"][0].metrics["accuracy"] <= 1.0


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_slower_quick_runs(name: str, tmp_path: Path) -> None:
    _, runs = _quick(name, tmp_path)
    for arm_runs in runs.values():
        assert all(0.0 <= r.metrics["accuracy"] <= 1.0 for r in arm_runs)


def test_model_options_of_the_arms() -> None:
    """The constructor options the arms select: defaults unchanged, the new ones real."""
    import numpy as np

    from kerasdl.layers.residual import BasicBlock
    from kerasdl.registry import create_model

    kw = dict(num_classes=10, input_shape=(8, 8, 1))
    res = create_model("resnet20", **kw)
    plain = create_model("resnet20", residual=False, **kw)
    assert plain.count_params() == res.count_params() == 270_810  # option A adds no weights
    assert plain.get_config()["residual"] is False and res.get_config()["residual"] is True
    assert sum(isinstance(layer, BasicBlock) for layer in res.layers) == 9
    assert not any(isinstance(layer, BasicBlock) for layer in plain.layers)
    assert sum("conv" in layer.name for layer in plain.layers) == 19  # 1 + 2 x 9 blocks
    cnn = create_model("simple_cnn", filters=[8, 16], convs_per_stage=1, kernel_size=5, **kw)
    trainable = sum(int(np.prod(w.shape)) for w in cnn.trainable_weights)
    assert trainable == 25 * 8 + 2 * 8 + 25 * 8 * 16 + 2 * 16 + 16 * 10 + 10  # convs, BN, head
    mlp = create_model("mlp", hidden_units=[256, 256], init_std=0.01, **kw)
    std = np.std(np.asarray(mlp.get_layer("dense_1").kernel))
    assert 0.009 < std < 0.011
    default = np.std(
        np.asarray(create_model("mlp", hidden_units=[256, 256], **kw).get_layer("dense_1").kernel)
    )
    assert abs(default - np.sqrt(2 / 512)) < 0.005  # Glorot uniform: var 2 / (fan_in + fan_out)
