"""The per-op profiler of ``kerasdl.bench.profile``: categories, table arithmetic, a real trace."""

from __future__ import annotations

import importlib.util

import pytest
from tiny_models import TINY_CASE

from kerasdl.bench import Case
from kerasdl.bench.profile import (
    category_table,
    markdown,
    op_category,
    op_table,
    profile_case,
)

TINY = dict(TINY_CASE, batch_size=4)


@pytest.mark.parametrize(
    "op, node, expected",
    [
        (
            "_MklNativeConv2DBackpropFilter",
            "gradient_tape/m/conv/Conv2DBackpropFilter",
            "conv backward",
        ),
        ("_MklNativeConv2D", "m/conv/convolution", "conv forward"),
        ("_MklNativeFusedBatchNormGradV3", "", "batch norm"),
        ("ReluGrad", "", "element-wise"),
        ("StridedSliceGrad", "", "data movement"),
        ("_MklNativeAvgPoolGrad", "", "pooling"),
        ("Mul", "StatefulPartitionedCall/sgd/Mul_3", "optimizer update"),
        ("aten::convolution_backward", "", "conv backward"),
        ("aten::mkldnn_convolution", "", "conv forward"),
        ("aten::native_batch_norm_backward", "", "batch norm"),
        ("aten::threshold_backward", "", "element-wise"),
    ],
)
def test_op_category(op, node, expected):
    assert op_category(op, node, optimizer_scope="sgd") == expected


def test_op_table_sums_per_step_and_shares():
    ps = 1e9  # 1 ms in picoseconds
    ops = [("a/conv", "Conv2D", 6 * ps), ("b/conv", "Conv2D", 2 * ps), ("c", "Relu", 2 * ps)]
    rows = op_table(ops, steps=2)
    assert [r["op"] for r in rows] == ["Conv2D", "Relu"]
    assert rows[0]["ms_per_step"] == pytest.approx(4.0) and rows[0]["count_per_step"] == 1.0
    assert rows[0]["share_pct"] == pytest.approx(80.0) and rows[1]["share_pct"] == pytest.approx(
        20.0
    )
    cats = category_table(rows)
    assert cats[0] == {"category": "conv forward", "ms_per_step": 4.0, "share_pct": 80.0}


def test_profile_keras_trace_has_the_model_ops(tmp_path):
    summary = profile_case(Case(id="p", **TINY), steps=2, logdir=tmp_path)
    conv_fwd = [r for r in summary["ops"] if r["category"] == "conv forward"]
    conv_bwd = [r for r in summary["ops"] if r["category"] == "conv backward"]
    # one convolution: one forward and one filter-gradient kernel per step (no input gradient
    # for the first layer), and an optimizer update
    assert conv_fwd and conv_fwd[0]["count_per_step"] == 1
    assert conv_bwd and sum(r["count_per_step"] for r in conv_bwd) == 1
    assert any(r["category"] == "optimizer update" for r in summary["ops"])
    assert sum(r["share_pct"] for r in summary["ops"]) == pytest.approx(100.0)
    assert summary["wall_ms_per_step"] > 0 and summary["cpu_ms_per_step"] > 0
    assert list(tmp_path.rglob("*.xplane.pb"))  # the TensorBoard trace stays
    text = markdown(summary)
    assert "| conv forward |" in text and "simple_cnn 8x8 batch 4 float32" in text


def test_profile_keras_inference_has_only_forward_ops(tmp_path):
    summary = profile_case(Case(id="p", modes=["infer"], **TINY), steps=2, logdir=tmp_path)
    cats = {r["category"] for r in summary["ops"]}
    conv_fwd = [r for r in summary["ops"] if r["category"] == "conv forward"]
    assert conv_fwd and sum(r["count_per_step"] for r in conv_fwd) == 1
    assert "conv backward" not in cats and "optimizer update" not in cats
    assert summary["mode"] == "infer" and "float32 infer:" in markdown(summary)


def test_profile_cli_mode_infer(tmp_path, capsys):
    from kerasdl.bench.profile import main

    args = ["--model", "simple_cnn", "--input-size", "8", "--batch-size", "2", "--steps", "1"]
    assert main([*args, "--warmup", "1", "--mode", "infer", "--logdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "simple_cnn 8x8 batch 2 float32 infer:" in out
    assert "| conv forward |" in out and "conv backward" not in out


@pytest.mark.slow  # imports PyTorch (~13 s on a loaded 2-core machine)
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch extra not installed")
def test_profile_torch_peer(tmp_path):
    case = Case(id="t", kind="torch", model="resnet20", input_size=8, batch_size=2, warmup=1)
    summary = profile_case(case, steps=1, logdir=tmp_path)
    cats = {c["category"] for c in summary["categories"]}
    assert {"conv forward", "conv backward", "batch norm"} <= cats
    conv = next(r for r in summary["ops"] if r["op"] == "aten::mkldnn_convolution")
    assert conv["count_per_step"] == 19  # ResNet-20: 19 convolutions
    assert (tmp_path / "torch_trace.json").exists()
    infer = profile_case(
        Case(
            id="t",
            kind="torch",
            model="resnet20",
            input_size=8,
            batch_size=2,
            warmup=1,
            modes=["infer"],
        ),
        steps=1,
        logdir=tmp_path / "infer",
    )
    cats = {c["category"] for c in infer["categories"]}
    assert "conv forward" in cats and "conv backward" not in cats


def test_profile_rejects_other_kinds(tmp_path):
    with pytest.raises(ValueError, match="Cannot profile"):
        profile_case(Case(id="m", kind="matmul"), steps=1, logdir=tmp_path)


def test_profile_cli_rejects_an_unknown_model_in_one_line(capsys):
    from kerasdl.bench.profile import main

    assert main(["--model", "resnet_nosuch"]) == 2  # as `kerasdl profile`: one line, status 2
    err = capsys.readouterr().err
    assert "Unknown model 'resnet_nosuch'" in err and "Traceback" not in err
