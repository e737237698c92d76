"""Run a suite and report it: JSON with every figure, Markdown tables with ratios and targets."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from kerasdl.bench.case import Case
from kerasdl.bench.flops import MATMUL_DTYPES, infer_flops_per_image, train_flops_per_image
from kerasdl.bench.flops import utilization as util_pct
from kerasdl.bench.harness import run_case, run_isolated
from kerasdl.bench.paired import run_paired
from kerasdl.bench.suites import SHORT, Suite
from kerasdl.io import write_text

PEER_NAMES = {"kerasdl": "kerasdl", "keras_app": "keras.applications", "torch": "PyTorch"}


# the widest vector extension a CPU has, as /proc/cpuinfo flags; it decides TensorFlow's and
# PyTorch's kernels (and whether bfloat16 is native): best first
ISA = (
    ("amx_bf16", "AMX"),
    ("avx512_bf16", "AVX-512 BF16"),
    ("avx512_vnni", "AVX-512 VNNI"),
    ("avx512f", "AVX-512"),
    ("avx2", "AVX2"),
)


def machine_info() -> dict[str, Any]:
    """CPU model and its widest vector extension, core count, load, library versions, and
    whether TensorFlow's oneDNN kernels run (:mod:`kerasdl.onednn`)."""
    from kerasdl import onednn

    cpu = platform.processor()
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu == platform.processor():
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "isa": next((name for flag, name in ISA if flag in flags), ""),
        "onednn": "on" if onednn.enabled() else "off",
        "cores": os.cpu_count(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "python": platform.python_version(),
    }
    for mod in ("tensorflow", "keras", "torch"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return info


def run_suite(
    suite: Suite,
    *,
    isolated: bool = True,
    log: Callable[[str], None] = print,
    partial_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Measure every case of ``suite`` (each in a fresh process unless ``isolated=False``).

    With ``partial_dir`` the report so far is written there after every case (a long run on a
    busy machine keeps what it measured if it is stopped).
    """
    t0 = time.perf_counter()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    load_start = [round(v, 2) for v in os.getloadavg()]
    results: dict[str, Any] = {}
    by_id = {c.id: c for c in suite.cases}
    # a pair whose PyTorch peer cannot run here (no torch extra) is measured one case at a time,
    # so that kerasdl's side still gets its figures and the peer its one-line error
    peer_of = {
        p.case: by_id[p.peer]
        for p in suite.pairs
        if p.peer in by_id and (by_id[p.peer].kind != "torch" or find_spec("torch") is not None)
    }
    for case in suite.cases:
        if case.id in results:
            continue  # measured with its pair
        t = time.perf_counter()
        if suite.paired and isolated and case.id in peer_of:
            peer = peer_of[case.id]
            log(f"[bench] {case.id} and {peer.id}, alternating rounds ...")
            measured = run_paired(case, peer, round_seconds=suite.round_seconds, log=log)
            for c, res in zip((case, peer), measured, strict=True):
                results[c.id] = {"case": asdict(c), "result": res}
                status = res.get("error") or _summary(res)
                log(f"[bench] {c.id}: {status} ({time.perf_counter() - t:.0f} s)")
            if partial_dir is not None:
                write_report(_report(suite, results, started, load_start, t0), partial_dir)
            continue
        log(f"[bench] {case.id} ...")
        if isolated:
            res = run_isolated(case)
        else:
            try:
                res = run_case(case)
            except Exception as err:  # noqa: BLE001 -- a failed case is reported, not fatal
                res = {"error": f"{type(err).__name__}: {err}"}
        results[case.id] = {"case": asdict(case), "result": res}
        status = res.get("error") or _summary(res)
        log(f"[bench] {case.id}: {status} ({time.perf_counter() - t:.0f} s)")
        if partial_dir is not None:
            write_report(_report(suite, results, started, load_start, t0), partial_dir)
    return _report(suite, results, started, load_start, t0)


def _report(
    suite: Suite, results: dict, started: str, load_start: list, t0: float
) -> dict[str, Any]:
    report = {
        "suite": suite.name,
        "machine": {**machine_info(), "load_average_start": load_start},
        "started": started,
        "seconds": time.perf_counter() - t0,
        "results": results,
        "pairs": [asdict(p) for p in suite.pairs],
    }
    add_derived(report, suite)
    return report


def _summary(res: dict[str, Any]) -> str:
    parts = [
        f"{k} {res[k]['median']:.1f} img/s" for k in ("train", "infer", "pipeline") if k in res
    ]
    if "peak" in res:
        parts.append(f"peak {res['peak']['median'] / 1e9:.1f} GFLOP/s")
    return ", ".join(parts)


def _median(res: dict[str, Any], metric: str) -> float | None:
    entry = res.get(metric)
    return entry["median"] if isinstance(entry, dict) else None


def add_derived(report: dict[str, Any], suite: Suite) -> None:
    """Add utilization to every model case and the comparison rows to ``report``."""
    results = report["results"]
    peaks = {
        r["case"]["precision"]: r["result"]["peak"]["median"]
        for r in results.values()
        if r["case"]["kind"] == "matmul" and "peak" in r["result"]
    }
    macs_by_arch = {
        (r["case"]["model"], r["case"]["input_size"]): r["result"]["macs"]
        for r in results.values()
        if r["case"]["kind"] == "kerasdl" and "macs" in r["result"]
    }
    for r in results.values():
        case, res = r["case"], r["result"]
        macs = res.get("macs") or macs_by_arch.get((case["model"], case["input_size"]))
        peak = peaks.get(case["precision"])
        if not macs or not peak:
            continue
        for metric, per_image in (
            ("train", train_flops_per_image),
            ("infer", infer_flops_per_image),
        ):
            ips = _median(res, metric)
            if ips:
                res[f"{metric}_utilization_pct"] = util_pct(ips, per_image(macs), peak)
    rows = []
    for c in suite.comparisons:
        res = results.get(c.case, {}).get("result", {})
        a = _median(res, c.metric)
        b = _median(results.get(c.peer, {}).get("result", {}), c.peer_metric or c.metric)
        ratio = a / b if a and b else None
        rounds = _rounds(res, c.peer, c.metric) if c.peer_metric in (None, c.metric) else None
        if rounds and ratio is not None:
            ratio = rounds["median"]
        met = None if c.target is None or ratio is None else ratio >= c.target
        row = {**asdict(c), "value": a, "peer_value": b, "ratio": ratio, "met": met}
        if rounds:
            row["ratio_range"] = [rounds["min"], rounds["max"]]
        rows.append(row)
    report["comparisons"] = rows


def _rounds(res: dict[str, Any], peer: str, metric: str) -> dict[str, Any] | None:
    """The round ratios of ``res`` against ``peer`` on ``metric``, if they were measured paired."""
    paired = res.get("paired") or {}
    return paired.get(metric) if paired.get("peer") == peer else None


def _ratio(ratio: float | None, rounds: dict[str, Any] | list[float] | None) -> str:
    """``1.23x``, or ``1.23x (1.10-1.31)`` with the range of the round ratios."""
    if ratio is None:
        return "-"
    if isinstance(rounds, dict):
        rounds = [rounds["min"], rounds["max"]]
    return f"{ratio:.2f}x" + (f" ({rounds[0]:.2f}-{rounds[1]:.2f})" if rounds else "")


def _fmt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: machine, per-case figures, comparisons with targets."""
    m = report["machine"]
    lines = [
        f"Suite `{report['suite']}`, started {report['started']}, "
        f"{report['seconds'] / 60:.1f} min. "
        f"Machine: {m.get('cpu')}"
        + (f" ({m['isa']})" if m.get("isa") else "")
        + f", {m.get('cores')} cores, load "
        + (f"at the start {m['load_average_start']}, " if "load_average_start" in m else "")
        + f"at the end {m.get('load_average')}; Python {m.get('python')}, "
        f"TensorFlow {m.get('tensorflow')}"
        + (f" (oneDNN {m['onednn']})" if "onednn" in m else "")
        + ", "
        f"Keras {m.get('keras')}" + (f", PyTorch {m['torch']}" if "torch" in m else "") + ".",
        "",
        "| case | implementation | model | input | batch | precision | data | options "
        "| train img/s | infer img/s | train util | infer util |",
        "|---|---|---|---|---|---|---|---|---:|---:|---:|---:|",
    ]
    peaks = []
    for cid, r in report["results"].items():
        case, res = r["case"], r["result"]
        if case["kind"] == "matmul":
            if "peak" in res:
                peaks.append(
                    f"{MATMUL_DTYPES[case['precision']]} {res['peak']['median'] / 1e9:.0f} GFLOP/s"
                )
            continue
        if "error" in res:
            lines.append(
                f"| {cid} | {case['kind']} | {case['model']} | failed: {_one_line(res['error'])} "
                "| | | | | | | | |"
            )
            continue
        opts = []
        if case["steps_per_execution"] > 1:
            opts.append(f"spe {case['steps_per_execution']}")
        if case["jit_compile"]:
            opts.append("XLA")
        if case["threads"]:
            opts.append(f"threads {case['threads'][0]}x{case['threads'][1]}")
        if not case.get("fused_bn", True):
            opts.append("Keras BN")
        if case.get("remat"):
            opts.append("remat")
        if case["private_threadpool"]:
            opts.append(f"tf.data pool {case['private_threadpool']}")
        size = res.get("input_shape", [case["input_size"]] * 2 + [case["channels"]])
        kind = PEER_NAMES.get(case["kind"], "input pipeline")
        train = _fmt(_median(res, "train") or _median(res, "pipeline"))
        data = "pipeline" if case["kind"] == "pipeline" else case["data"]
        if case["recipe"] and data == "pipeline":
            data = f"pipeline ({Path(case['recipe']).name})"
        lines.append(
            f"| {cid} | {kind} | {res.get('model') or case['model'] or '-'} "
            f"| {size[0]}x{size[1]}x{size[2]} "
            f"| {case['batch_size']} | {SHORT[case['precision']]} | {data} "
            f"| {', '.join(opts) or '-'} | {train} | {_fmt(_median(res, 'infer'))} "
            f"| {_pct(res.get('train_utilization_pct'))} "
            f"| {_pct(res.get('infer_utilization_pct'))} |"
        )
    if report.get("pairs"):
        lines += ["", *pairs_table(report)]
    if peaks:
        lines += ["", f"Measured matmul peak (2048x2048, all cores): {'; '.join(peaks)}."]
    if report.get("comparisons"):
        lines += [
            "",
            "| comparison | kerasdl | peer | ratio | target | met |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for c in report["comparisons"]:
            target = "-" if c["target"] is None else f">= {c['target']:.1f}x"
            met = {None: "-", True: "yes", False: "**NO**"}[c["met"]]
            lines.append(
                f"| {c['label']} | {_fmt(c['value'])} | {_fmt(c['peer_value'])} "
                f"| {_ratio(c['ratio'], c.get('ratio_range'))} | {target} | {met} |"
            )
    return "\n".join(lines) + "\n"


def pairs_table(report: dict[str, Any]) -> list[str]:
    """kerasdl and its PyTorch peer side by side: images/s, ratio, utilisation, peak RSS."""
    results = report["results"]
    peers = {results.get(p["peer"], {}).get("case", {}).get("kind") for p in report["pairs"]}
    vs = "kerasdl / PyTorch" if peers == {"torch"} else "case / peer"
    lines = [
        f"| model | precision | train img/s {vs} | ratio | infer img/s {vs} | ratio "
        f"| train util {vs} | train peak RSS MiB {vs} |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for p in report["pairs"]:
        a = results.get(p["case"], {}).get("result", {})
        b = results.get(p["peer"], {}).get("result", {})
        case = results.get(p["case"], {}).get("case", {})
        prec = SHORT[case.get("precision", "float32")]
        spe = case.get("steps_per_execution", 1)  # the kerasdl side's fit, when above 1
        cells = [p["label"] + (f" (spe {spe})" if spe > 1 else ""), prec]
        for metric in ("train", "infer"):
            va, vb = _median(a, metric), _median(b, metric)
            rounds = _rounds(a, p["peer"], metric)
            cells.append(f"{_fmt(va)} / {_fmt(vb)}")
            ratio = (rounds["median"] if rounds else va / vb) if va and vb else None
            cells.append(_ratio(ratio, rounds))
        cells.append(
            f"{_pct(a.get('train_utilization_pct'))} / {_pct(b.get('train_utilization_pct'))}"
        )
        rss = [_fmt(r.get("train_peak_rss_mb"), 0) for r in (a, b)]
        cells.append(f"{rss[0]} / {rss[1]}")
        if "error" in a or "error" in b:
            cells[0] += " (failed: " + _one_line(a.get("error") or b.get("error")) + ")"
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _one_line(error: str, limit: int = 300) -> str:
    """A failure as one table cell: TensorFlow's error's last line that names it (a graph error
    puts the op's Python traceback first), cut at ``limit`` characters; the JSON keeps all of it."""
    lines = [ln.strip() for ln in error.splitlines() if ln.strip()]
    if not lines:
        return "unknown error"
    head = lines[0]
    named = [ln for ln in lines[1:] if not ln.startswith(("File ", "Detected at node", "[["))]
    text = f"{head} {named[-1]}" if named and named[-1] != head else head
    text = text.replace("|", "/")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}%"


def write_report(report: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``bench_<suite>.json`` and ``bench_<suite>.md`` (each atomically)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = "bench_" + report["suite"].replace(":", "_")
    paths = (out / f"{stem}.json", out / f"{stem}.md")
    for path, text in zip(paths, (json.dumps(report, indent=2), markdown(report)), strict=True):
        write_text(path, text)
    return paths


__all__ = ["Case", "machine_info", "markdown", "run_suite", "write_report"]
