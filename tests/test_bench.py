"""Smoke tests of the benchmark harness: one tiny case of each kind, report and CLI errors."""

from __future__ import annotations

import importlib.util
import json

import pytest
from tiny_models import TINY_CASE

from kerasdl.bench import Case, Comparison, Suite, markdown, run_case, run_suite, write_report
from kerasdl.bench.flops import train_flops_per_image, utilization

TINY = dict(TINY_CASE, steps=2, repeats=1)


def test_suite_runs_and_reports(tmp_path):
    suite = Suite(
        "smoke",
        [
            Case(id="tiny", **TINY),
            Case(id="tiny_pipe", kind="pipeline", **{**TINY, "input_size": 8}),
            Case(id="peak_fp32", kind="matmul", input_size=64, steps=2, repeats=1),
        ],
        [Comparison("pipeline / train", "tiny_pipe", "tiny", "pipeline", "train", target=0.0)],
    )
    report = run_suite(suite, isolated=False, log=lambda _: None)
    tiny = report["results"]["tiny"]["result"]
    assert "error" not in tiny, tiny
    # simple_cnn [4], 1 conv per stage at 8x8x1: 3x3x1x4 MACs per position, plus the 4->10 head.
    assert tiny["macs"] == 8 * 8 * 9 * 4 + 4 * 10
    assert tiny["train"]["median"] > 0 and tiny["infer"]["repeats"] == 1
    assert tiny["train_utilization_pct"] > 0
    pipe = report["results"]["tiny_pipe"]["result"]
    assert pipe["pipeline"]["median"] > 0 and pipe["input_shape"] == [8, 8, 1]
    row = report["comparisons"][0]
    assert row["ratio"] == pytest.approx(pipe["pipeline"]["median"] / tiny["train"]["median"])
    assert row["met"] is True
    json_path, md_path = write_report(report, tmp_path)
    assert json.loads(json_path.read_text())["suite"] == "smoke"
    text = md_path.read_text()
    assert "| tiny | kerasdl | simple_cnn | 8x8x1 |" in text and "pipeline / train" in text


def test_training_is_timed_inside_one_fit_call():
    import keras
    import tensorflow as tf

    from kerasdl.bench.harness import build_keras_model, keras_train, synthetic_batch

    case = Case(id="t", **{**TINY, "steps": 4, "warmup": 2, "repeats": 3}, steps_per_execution=2)
    model = build_keras_model(case)
    x, y = synthetic_batch(case)
    res = keras_train(model, tf.data.Dataset.from_tensors((x, y)).repeat(), case)
    keras.mixed_precision.set_global_policy("float32")
    # one fit call: the warm-up steps, then 3 timed repetitions of 4 steps
    assert int(model.optimizer.iterations.numpy()) == 2 + 3 * 4
    assert res["repeats"] == 3 and res["min"] <= res["median"] <= res["max"]
    assert res["fit_outside_steps_s"] >= 0


def test_utilization_formula():
    # 1 GMAC model at 10 img/s trains at 60 GFLOP/s: 60% of a 100 GFLOP/s peak.
    assert utilization(10.0, train_flops_per_image(10**9), 100e9) == pytest.approx(60.0)


def test_markdown_flags_missed_targets():
    report = {
        "suite": "x",
        "machine": {"cpu": "cpu", "cores": 2},
        "started": "now",
        "seconds": 60.0,
        "results": {},
        "comparisons": [
            {
                "label": "a vs b",
                "value": 1.0,
                "peer_value": 2.0,
                "ratio": 0.5,
                "target": 1.0,
                "met": False,
            },
        ],
    }
    assert "| a vs b | 1.0 | 2.0 | 0.50x | >= 1.0x | **NO** |" in markdown(report)


def test_a_failed_case_is_one_table_line_naming_the_error():
    """A TensorFlow graph error puts the op's Python traceback before its message: the table
    shows the message (here the CPU's missing grouped filter gradient), on one line."""
    error = (
        "r50: InvalidArgumentError: Graph execution error:\n\nDetected at node grad/Conv2D"
        'BackpropFilter defined at (most recent call last):\n  File "a.py", line 1, in f\n\n'
        "filter_size does not have enough elements, requested 9437184, got 294912\n"
        "\t [[{{node grad/Conv2DBackpropFilter}}]] [Op:__inference_step_1]"
    )
    report = {
        "suite": "x",
        "machine": {"cpu": "cpu", "cores": 2, "isa": "AVX2", "onednn": "off"},
        "started": "now",
        "seconds": 60.0,
        "results": {
            "r50": {"case": {"kind": "kerasdl", "model": "resnet50"}, "result": {"error": error}}
        },
        "comparisons": [],
    }
    text = markdown(report)
    row = next(ln for ln in text.splitlines() if ln.startswith("| r50 |"))
    assert row.startswith(
        "| r50 | kerasdl | resnet50 | failed: r50: InvalidArgumentError: Graph execution error: "
        "filter_size does not have enough elements, requested 9437184, got 294912 |"
    )
    assert "Machine: cpu (AVX2), 2 cores" in text and "(oneDNN off)" in text


def test_bad_case_and_cli_errors():
    with pytest.raises(ValueError, match="precision"):
        run_case(Case(id="x", model="simple_cnn", precision="int8"))
    from kerasdl.cli import main

    assert main(["bench"]) == 2
    assert main(["bench", "--suite", "nope"]) == 2
    assert main(["bench", "--suite", "default", "--steps-per-execution", "4"]) == 2
    assert main(["bench", "--suite", "zoo", "--steps-per-execution", "0"]) == 2


def test_zoo_runs_fit_as_kerasdl_train_runs_each_familys_recipe():
    """Each zoo row's steps per execution is what ``kerasdl train`` resolves for its family's
    recipe (or 1, never more), and kerasdl's side of the pair runs with it."""
    from pathlib import Path

    from kerasdl.bench.suites import ZOO, zoo_suite
    from kerasdl.config import load_recipe
    from kerasdl.registry import get_entry

    configs = Path(__file__).resolve().parent.parent / "configs"
    resolved = {}
    for row in ZOO:
        cfg = load_recipe(configs / row.recipe)
        assert get_entry(cfg.model.name).family == get_entry(row.name).family, row
        resolved[row.name] = cfg.training.execution_steps(cfg.distribute.strategy != "none")
        assert row.steps_per_execution in (1, resolved[row.name]), row
    assert resolved["resnet20"] == resolved["darts_net"] == 16  # CIFAR recipes: no strategy
    assert resolved["resnet50"] == 1  # the ImageNet recipes train under `mirrored`
    suite = zoo_suite(quick=True, models=["resnet20", "resnet50"], precisions=["float32"])
    spe = {c.id: c.steps_per_execution for c in suite.cases}
    assert spe["resnet20_fp32"] == 16 and spe["resnet50_fp32"] == 1
    suite = zoo_suite(
        quick=True, models=["resnet20"], precisions=["float32"], steps_per_execution=2
    )
    assert {c.steps_per_execution for c in suite.cases if c.kind == "kerasdl"} == {2}


@pytest.mark.slow  # imports PyTorch and builds ResNet-50 (~30 s on a loaded 2-core machine)
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch extra not installed")
def test_torch_references_match_kerasdl_parameter_counts():
    from kerasdl.bench.torch_models import build_torch_model
    from kerasdl.registry import create_model

    def count(m):
        return sum(p.numel() for p in m.parameters())

    keras_r20 = create_model("resnet20", num_classes=10, input_shape=[32, 32, 3])
    trainable = sum(int(w.numpy().size) for w in keras_r20.trainable_weights)
    assert count(build_torch_model("resnet20", 10)) == trainable == 269_722
    assert count(build_torch_model("resnet50", 1000)) == 25_557_032  # torchvision's own model
    res = run_case(
        Case(
            id="t",
            kind="torch",
            model="resnet20",
            batch_size=2,
            steps=1,
            warmup=1,
            repeats=1,
            threads=[1, 1],
        )
    )
    assert res["train"]["median"] > 0 and res["infer"]["median"] > 0


def test_zoo_suite_alternates_and_covers_every_family():
    from kerasdl.bench.suites import ZOO, zoo_suite
    from kerasdl.registry import get_entry

    suite = zoo_suite(quick=True)
    families = {get_entry(name).family for name, *_ in ZOO}
    assert len(families) == len(ZOO) - 1  # one per family; ResNeXt is in the resnet family
    models = [c for c in suite.cases if c.kind != "matmul"]
    assert [c.kind for c in models[:4]] == ["kerasdl", "torch", "kerasdl", "torch"]
    assert all(c.precision == "float32" for c in models[: 2 * len(ZOO)])  # fp32 pairs first
    assert len(suite.pairs) == 2 * len(ZOO) and suite.cases[0].kind == "matmul"
    with pytest.raises(Exception, match="not in the zoo"):
        zoo_suite(models=["perceptron"])


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch extra not installed")
def test_zoo_quick_pair_reports_memory(tmp_path):
    from kerasdl.bench.suites import zoo_suite

    suite = zoo_suite(quick=True, models=["resnet20"], precisions=["float32"])
    report = run_suite(suite, isolated=False, log=lambda _: None, partial_dir=tmp_path)
    for cid in ("resnet20_fp32", "torch_resnet20_fp32"):
        res = report["results"][cid]["result"]
        assert "error" not in res, res
        assert res["train_peak_rss_mb"] >= res["rss_before_model_mb"] > 0
    text = markdown(report)
    assert "| CIFAR ResNet-20 16 b2 (spe 16) | fp32 |" in text and "train peak RSS MiB" in text
    assert (tmp_path / "bench_zoo.json").exists()


@pytest.mark.slow  # builds every zoo model in Keras and in torchvision (~1 min)
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch extra not installed")
def test_zoo_peers_are_the_same_architectures():
    from kerasdl.bench.suites import ZOO
    from kerasdl.bench.torch_models import build_torch_model, is_torchvision
    from kerasdl.registry import create_model

    for name, _, size, _, classes in ZOO:
        peer = build_torch_model(name, classes, 3, size)
        assert is_torchvision(name) == (name not in ("resnet20", "darts_net"))
        keras_model = create_model(name, num_classes=classes, input_shape=[size, size, 3])
        trainable = sum(int(w.numpy().size) for w in keras_model.trainable_weights)
        assert sum(p.numel() for p in peer.parameters()) == trainable, name


def test_threads_suite_pairs_one_inter_op_thread_with_the_default():
    from kerasdl.bench.suites import threads_suite
    from kerasdl.errors import UserError

    suite = threads_suite(2, models=["quickstart", "resnet20"], steps=3)
    by_id = {c.id: c for c in suite.cases}
    assert set(by_id) == {
        "quickstart_interop1",
        "quickstart_tf",
        "resnet20_interop1",
        "resnet20_tf",
    }
    assert by_id["resnet20_interop1"].threads == [1, 0] and by_id["resnet20_tf"].threads is None
    assert by_id["resnet20_tf"].input_size == 32 and by_id["resnet20_tf"].steps == 3
    assert by_id["quickstart_tf"].steps_per_execution == 16  # as `auto` runs the quickstart
    assert all(c.modes == ["train"] and c.repeats == 2 for c in suite.cases)
    assert [(c.case, c.peer) for c in suite.comparisons] == [
        ("quickstart_interop1", "quickstart_tf"),
        ("resnet20_interop1", "resnet20_tf"),
    ]
    with pytest.raises(UserError, match="not in the threads suite: nope"):
        threads_suite(models=["nope"])


def test_zoo_suite_runs_one_precision_when_asked():
    from kerasdl.bench.suites import zoo_suite

    suite = zoo_suite(models=["resnet20"], precisions=["float32"])
    assert {c.precision for c in suite.cases if c.kind != "matmul"} == {"float32"}
