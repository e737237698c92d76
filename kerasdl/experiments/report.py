"""An experiment's files: ``results.json``, ``results.md`` and its plots, written atomically.

``results.md`` holds the table (each arm, each measure's mean and spread over the seeds, the
per-seed values), the expected directions with what was measured, and the arithmetic checks;
``curves.png`` the arms' learning curves (mean over seeds, shaded between the lowest and the
highest seed). Experiments add plots of their own through the same helpers.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from kerasdl.experiments.base import Results, summarize, verdicts
from kerasdl.io import save_figure, write_json, write_text
from kerasdl.plotting import pyplot


def _num(value: float, fmt: str) -> str:
    return "nan" if not math.isfinite(value) else f"{value:{fmt}}"


def table_rows(results: Results) -> list[dict[str, Any]]:
    """One row per arm: its label and each measure's summary and per-seed values."""
    exp = results.experiment
    rows = []
    for arm in exp.arms_to_run(results.quick):
        row: dict[str, Any] = {"arm": arm.name, "label": arm.label, "measures": {}}
        for m in exp.measures:
            values = results.values(arm.name, m)
            row["measures"][m.name] = {"values": values, **summarize(values)}
        rows.append(row)
    return rows


def markdown(results: Results) -> str:
    """``results.md``: the claim, the table, the expected directions and the checks."""
    exp = results.experiment
    seeds = ", ".join(str(s) for s in results.seeds)
    mode = "--quick" if results.quick else "full run"
    lines = [
        f"# {exp.name}",
        "",
        f"**Claim.** {exp.claim} ({exp.reference})",
        "",
        f"{mode}, seeds {seeds}; mean ± sample standard deviation over the seeds "
        "[lowest, highest], or one figure where every seed gave the same.",
        "",
    ]
    head = ["arm", "what it is"] + [m.name for m in exp.measures]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table_rows(results):
        cells = [f"`{row['arm']}`", row["label"]]
        for m in exp.measures:
            s = row["measures"][m.name]
            varies = len(s["values"]) > 1 and s["min"] != s["max"]
            spread = f" ± {_num(s['std'], m.fmt)}" if varies else ""
            lo_hi = f" [{_num(s['min'], m.fmt)}, {_num(s['max'], m.fmt)}]" if spread else ""
            bad = len(s["values"]) - s["n"]
            diverged = f" ({bad} not finite)" if bad else ""
            cells.append(f"{_num(s['mean'], m.fmt)}{spread}{lo_hi}{diverged}")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    first = exp.measures[0]
    for v in verdicts(results):
        word = "holds" if v["holds"] else "does NOT hold"
        lines.append(
            f"- Expected `{v['better']}` to beat `{v['worse']}` on {first.name}: {word} "
            f"({_num(v['a'], first.fmt)} vs {_num(v['b'], first.fmt)})."
        )
    for c in results.analysis.get("checks", []):
        mark = "ok" if c["ok"] else "MISMATCH"
        lines.append(
            f"- Check {c['name']}: computed {c['computed']:,}, expected {c['expected']:,}: {mark}."
        )
    for note in results.analysis.get("notes", []):
        lines.append(f"- {note}")
    plots = ["curves.png"] if _has_curves(results) else []
    plots += results.analysis.get("plots", [])
    lines += ["", *[f"![{p}]({p})" for p in plots], ""]
    return "\n".join(lines)


def to_json(results: Results) -> dict[str, Any]:
    """``results.json``: the claim, the table's rows, every run and the analysis."""
    exp = results.experiment
    return {
        "name": exp.name,
        "claim": exp.claim,
        "reference": exp.reference,
        "quick": results.quick,
        "seeds": results.seeds,
        "measures": [{"name": m.name, "higher": m.higher_is_better} for m in exp.measures],
        "arms": table_rows(results),
        "expected": verdicts(results),
        "runs": [
            {
                "arm": r.arm,
                "seed": r.seed,
                "metrics": r.metrics,
                "seconds": r.seconds,
                "run_dir": r.run_dir,
                "history": r.history,
                "extra": r.extra,
            }
            for r in results.runs
        ],
        "analysis": results.analysis,
    }


def _has_curves(results: Results) -> bool:
    return any(c in r.history for r in results.runs for c in results.experiment.curves)


def plot_curves(results: Results, path: Path) -> None:
    """Each arm's history columns (``Experiment.curves``) against the epoch, one panel each."""
    plt = pyplot()
    columns = [c for c in results.experiment.curves if any(c in r.history for r in results.runs)]
    fig, axes = plt.subplots(1, len(columns), figsize=(5.2 * len(columns), 3.6), squeeze=False)
    for ax, column in zip(axes[0], columns, strict=True):
        for arm in results.experiment.arms_to_run(results.quick):
            curves = [r.history[column] for r in results.of(arm.name) if column in r.history]
            if not curves:
                continue
            n = min(len(c) for c in curves)
            by_epoch = [[c[i] for c in curves] for i in range(n)]
            mean = [summarize(v)["mean"] for v in by_epoch]
            epochs = list(range(1, n + 1))
            (line,) = ax.plot(epochs, mean, lw=1.6, label=arm.name)
            if len(curves) > 1:
                lo = [summarize(v)["min"] for v in by_epoch]
                hi = [summarize(v)["max"] for v in by_epoch]
                ax.fill_between(epochs, lo, hi, color=line.get_color(), alpha=0.15)
        if column.endswith("loss"):
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel(column.replace("_", " "))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{results.experiment.name}: {', '.join(columns)} per epoch", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def write(results: Results, out: Path) -> list[Path]:
    """Write ``results.json``, ``results.md`` and ``curves.png`` into ``out``; the paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "results.json", out / "results.md"]
    write_json(written[0], to_json(results), default=float)
    write_text(written[1], markdown(results))
    if _has_curves(results):
        plot_curves(results, out / "curves.png")
        written.append(out / "curves.png")
    written += [out / p for p in results.analysis.get("plots", [])]
    return written
