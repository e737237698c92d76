"""Where a step spends its time: per-op tables for kerasdl models and their PyTorch peers.

``kerasdl profile --model resnet20 --input-size 32 --batch-size 128 --precision
mixed_bfloat16 --torch`` trains the model with Keras ``fit`` (the benchmark's loss and optimizer)
under the TensorFlow profiler and prints one table per implementation: time per step by op type,
its share, the op count per step, and a coarse category (convolution forward/backward, batch norm,
element-wise, data movement, optimizer update, ...). The step's wall time and the process's CPU
time per step are printed too; on a shared machine the CPU time is the steadier figure. The
TensorFlow trace stays in ``--logdir`` (open it with TensorBoard's profile plugin); the PyTorch
peer (``--torch``) runs under ``torch.profiler`` in a separate process and writes a Chrome trace
there.

Op time is the wall time of each kernel on its executor thread, summed: with TensorFlow's two
inter-op threads two kernels can run at once, so the sum can exceed the step's wall time (the
``parallel`` column of the summary). PyTorch's figure is each operator's self CPU time.

A case whose ``modes`` are ``["infer"]`` (``--mode infer``) profiles forward passes instead:
``model(x, training=False)`` in a ``tf.function`` (as the benchmark times inference) and the
PyTorch peer in eval mode under ``torch.inference_mode``.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kerasdl.bench.case import Case, step_clock, synthetic_batch
from kerasdl.bench.harness import build_keras_model

CATEGORIES = {
    "conv forward": ("Conv2D", "DepthwiseConv2dNative", "_FusedConv2D", "convolution"),
    "conv backward": ("Conv2DBackprop", "DepthwiseConv2dNativeBackprop", "convolution_backward"),
    "matmul": ("MatMul", "FusedMatMul", "BatchMatMul", "addmm", "aten::mm", "linear"),
    "batch norm": ("FusedBatchNorm", "batch_norm"),
    "element-wise": (
        "Relu",
        "AddV2",
        "AddN",
        "Add",
        "Mul",
        "Sub",
        "Cast",
        "BiasAdd",
        "threshold",
        "clamp",
        "aten::add",
        "aten::mul",
        "fill_",
        "zero_",
    ),
    "data movement": (
        "Pad",
        "Slice",
        "StridedSlice",
        "Concat",
        "Transpose",
        "Reshape",
        "Tile",
        "copy_",
        "pad",
        "slice",
    ),
    "pooling": ("Pool", "pool", "Mean"),
}


def op_category(op_type: str, node: str = "", optimizer_scope: str = "") -> str:
    """A coarse category for an op type (TensorFlow op or PyTorch ``aten::`` operator)."""
    if optimizer_scope and f"/{optimizer_scope}/" in f"/{node}/":
        return "optimizer update"
    name = op_type.replace("_MklNative", "").replace("_Mkl", "")
    for category in ("conv backward", "conv forward", "matmul", "batch norm", "pooling"):
        if any(k in name for k in CATEGORIES[category]):
            return category
    if any(name.startswith(k) or k in name for k in CATEGORIES["data movement"]):
        return "data movement"
    if any(name.startswith(k) or k in name for k in CATEGORIES["element-wise"]):
        return "element-wise"
    if "Variable" in name or "Assign" in name:
        return "variables"
    return "other"


def _trace_ops(logdir: Path) -> list[tuple[str, str, float]]:
    """``(node, op_type, duration_ps)`` of every kernel in the newest trace under ``logdir``."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    files = sorted(logdir.rglob("*.xplane.pb"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise RuntimeError(f"no profiler trace under {logdir}")
    space = xplane_pb2.XSpace()
    space.ParseFromString(files[-1].read_bytes())
    ops = []
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        meta = plane.event_metadata
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for ev in line.events:
                name = meta[ev.metadata_id].name
                # Kernel events are named "node/name:OpType"; executor bookkeeping is not.
                if ":" not in name or name.startswith(("Thread", "Executor")):
                    continue
                node, op_type = name.rsplit(":", 1)
                ops.append((node, op_type, float(ev.duration_ps)))
    return ops


def op_table(
    ops: list[tuple[str, str, float]], steps: int, optimizer_scope: str = ""
) -> list[dict[str, Any]]:
    """Rows ``{op, category, ms_per_step, share_pct, count_per_step}``, largest first."""
    total: collections.Counter = collections.Counter()
    count: collections.Counter = collections.Counter()
    cats: dict[tuple[str, str], str] = {}
    for node, op_type, dur_ps in ops:
        cat = op_category(op_type, node, optimizer_scope)
        key = (op_type, cat)
        total[key] += dur_ps
        count[key] += 1
        cats[key] = cat
    grand = sum(total.values()) or 1.0
    rows = [
        {
            "op": op_type,
            "category": cat,
            "ms_per_step": dur / 1e9 / steps,
            "share_pct": 100.0 * dur / grand,
            "count_per_step": count[(op_type, cat)] / steps,
        }
        for (op_type, cat), dur in total.most_common()
    ]
    return rows


def category_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The op rows summed by category, largest first."""
    ms: collections.Counter = collections.Counter()
    for r in rows:
        ms[r["category"]] += r["ms_per_step"]
    grand = sum(ms.values()) or 1.0
    return [
        {"category": c, "ms_per_step": v, "share_pct": 100.0 * v / grand}
        for c, v in ms.most_common()
    ]


def _infers(case: Case) -> bool:
    """True for a case that profiles forward passes (``modes == ["infer"]``)."""
    return "train" not in case.modes


def profile_keras(case: Case, steps: int, logdir: str | Path) -> dict[str, Any]:
    """Profile ``steps`` training steps of a ``kerasdl``/``keras_app`` case with Keras ``fit``
    (forward passes for an inference case)."""
    import keras
    import tensorflow as tf

    from kerasdl.training.fused_sgd import FusedSGD

    logdir = Path(logdir)
    keras.utils.set_random_seed(0)
    model = build_keras_model(case)
    x, y = synthetic_batch(case)
    dataset = tf.data.Dataset.from_tensors((x, y)).repeat()
    optimizer = FusedSGD(0.01, momentum=0.9)  # kerasdl train's SGD
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        jit_compile=case.jit_compile,
    )
    if _infers(case):
        forward = tf.function(lambda v: model(v, training=False), jit_compile=case.jit_compile)
        images = tf.constant(x)
        for _ in range(max(case.warmup, 1)):
            forward(images).numpy()
        cpu0, t0 = time.process_time(), time.perf_counter()
        tf.profiler.experimental.start(str(logdir))
        try:
            for _ in range(steps):
                out = forward(images)
            out.numpy()
        finally:
            tf.profiler.experimental.stop()
        wall = time.perf_counter() - t0
    else:
        model.fit(dataset, epochs=1, steps_per_epoch=max(case.warmup, 1), verbose=0)
        clock = step_clock()
        cpu0 = time.process_time()
        tf.profiler.experimental.start(str(logdir))
        try:
            model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[clock])
        finally:
            tf.profiler.experimental.stop()
        wall = clock.stamps[-1] - clock.stamps[0]
    cpu = time.process_time() - cpu0
    keras.mixed_precision.set_global_policy("float32")
    rows = op_table(_trace_ops(logdir), steps, optimizer_scope=optimizer.name)
    return _summary("TensorFlow", case, steps, wall, cpu, rows, str(logdir))


def profile_torch(case: Case, steps: int, logdir: str | Path) -> dict[str, Any]:
    """Profile ``steps`` training steps (or forward passes) of the PyTorch peer (self CPU time
    per operator)."""
    import torch
    import torch.nn.functional as F
    from torch.profiler import ProfilerActivity, profile

    from kerasdl.bench.torch_models import build_torch_model

    torch.manual_seed(0)
    model = build_torch_model(case.model, case.num_classes, case.channels, case.input_size)
    model = model.to(memory_format=torch.channels_last).train(not _infers(case))
    dtype = {"mixed_bfloat16": torch.bfloat16, "mixed_float16": torch.float16}.get(case.precision)
    x = torch.randn(case.batch_size, case.channels, case.input_size, case.input_size)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, case.num_classes, (case.batch_size,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            out = model(x)
        F.cross_entropy(out.float(), y).backward()
        opt.step()

    def infer_step() -> None:
        with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            model(x)

    step = infer_step if _infers(case) else train_step

    for _ in range(max(case.warmup, 1)):
        step()
    cpu0, t0 = time.process_time(), time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    Path(logdir).mkdir(parents=True, exist_ok=True)
    prof.export_chrome_trace(str(Path(logdir) / "torch_trace.json"))
    averages = prof.key_averages()
    # self CPU time in microseconds -> picoseconds, the unit of the TensorFlow trace
    ops = [("", e.key, e.self_cpu_time_total * 1e6) for e in averages if e.self_cpu_time_total]
    counts = {e.key: e.count for e in averages}
    rows = op_table(ops, steps)
    for r in rows:
        r["count_per_step"] = counts.get(r["op"], 0) / steps
    return _summary("PyTorch", case, steps, wall, cpu, rows, str(logdir))


def _summary(
    impl: str, case: Case, steps: int, wall: float, cpu: float, rows: list, logdir: str
) -> dict[str, Any]:
    op_ms = sum(r["ms_per_step"] for r in rows)
    return {
        "implementation": impl,
        "model": case.model,
        "input_size": case.input_size,
        "batch_size": case.batch_size,
        "precision": case.precision,
        "mode": "infer" if _infers(case) else "train",
        "steps": steps,
        "wall_ms_per_step": 1000.0 * wall / steps,
        "cpu_ms_per_step": 1000.0 * cpu / steps,
        "op_ms_per_step": op_ms,
        "images_per_s": case.batch_size * steps / wall,
        "ops": rows,
        "categories": category_table(rows),
        "logdir": logdir,
    }


def markdown(summary: dict[str, Any], top: int = 15) -> str:
    """The summary line, the category table and the ``top`` op types as Markdown."""
    s = summary
    parallel = s["op_ms_per_step"] / s["wall_ms_per_step"] if s["wall_ms_per_step"] else 0.0
    lines = [
        f"**{s['implementation']}** {s['model']} {s['input_size']}x{s['input_size']} batch "
        f"{s['batch_size']} {s['precision']} {s.get('mode', 'train')}: "
        f"{s['wall_ms_per_step']:.1f} ms/step wall "
        f"({s['images_per_s']:.1f} img/s), {s['cpu_ms_per_step']:.1f} ms/step CPU, op time "
        f"{s['op_ms_per_step']:.1f} ms/step (parallel {parallel:.2f}), {s['steps']} steps",
        "",
        "| category | ms/step | share |",
        "|---|---:|---:|",
    ]
    lines += [
        f"| {c['category']} | {c['ms_per_step']:.2f} | {c['share_pct']:.1f}% |"
        for c in s["categories"]
    ]
    lines += ["", "| op | category | ms/step | share | per step |", "|---|---|---:|---:|---:|"]
    lines += [
        f"| {r['op']} | {r['category']} | {r['ms_per_step']:.2f} | {r['share_pct']:.1f}% "
        f"| {r['count_per_step']:.0f} |"
        for r in s["ops"][:top]
    ]
    return "\n".join(lines)


def profile_case(case: Case, steps: int, logdir: str | Path) -> dict[str, Any]:
    """Profile a case in this process (``kerasdl``, ``keras_app`` or ``torch``)."""
    if case.kind == "torch":
        return profile_torch(case, steps, logdir)
    if case.kind in ("kerasdl", "keras_app"):
        return profile_keras(case, steps, logdir)
    raise ValueError(f"Cannot profile a {case.kind!r} case; expected kerasdl, keras_app or torch.")


def profile_isolated(case: Case, steps: int, logdir: str | Path) -> dict[str, Any]:
    """:func:`profile_case` in a fresh Python process (as the benchmark isolates its cases)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [sys.executable, "-m", "kerasdl", "profile", "--case-json", case.to_json()]
    cmd += ["--steps", str(steps), "--logdir", str(logdir), "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"profiling {case.id} failed: {tail}")
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    """``python -m kerasdl.bench.profile ARGS``: the ``kerasdl profile`` command."""
    from kerasdl.cli import main as cli_main

    return cli_main(["profile", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
