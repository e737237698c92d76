"""Drawing DARTS cells and alpha heat maps with matplotlib (no graphviz needed).

:func:`plot_cell` draws one cell of a genotype as a left-to-right DAG: the two cell inputs
``c_{k-2}``, ``c_{k-1}``, the intermediate nodes, and the output ``c_{k}`` that concatenates
them; every edge is labelled with its operation (the paper's figures 4 and 5).
:func:`alpha_heatmap` draws the softmax of a cell's alphas (edges x operations).
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import FancyArrowPatch  # noqa: E402

from kerasdl.io import save_figure  # noqa: E402
from kerasdl.layers.darts_ops import PRIMITIVES  # noqa: E402
from kerasdl.nas.genotype import Genotype  # noqa: E402

OP_COLORS = {
    "sep_conv_3x3": "#1f77b4",
    "sep_conv_5x5": "#17becf",
    "dil_conv_3x3": "#2ca02c",
    "dil_conv_5x5": "#8c564b",
    "max_pool_3x3": "#d62728",
    "avg_pool_3x3": "#ff7f0e",
    "skip_connect": "#7f7f7f",
    "none": "#cccccc",
}


def _positions(steps: int) -> dict[str, tuple[float, float]]:
    pos = {"c_{k-2}": (0.0, 0.75), "c_{k-1}": (0.0, 0.25)}
    for i in range(steps):
        pos[str(i)] = (1.0 + i, 0.9 if i % 2 == 0 else 0.1)
    pos["c_{k}"] = (steps + 1.0, 0.5)
    return pos


def cell_figure(genotype: Genotype, kind: str = "normal") -> plt.Figure:
    """A matplotlib figure of the ``normal`` or ``reduce`` cell of ``genotype``."""
    gene = genotype.normal if kind == "normal" else genotype.reduce
    concat = genotype.normal_concat if kind == "normal" else genotype.reduce_concat
    steps = len(gene) // 2
    names = ["c_{k-2}", "c_{k-1}"] + [str(i) for i in range(steps)]
    pos = _positions(steps)
    fig, ax = plt.subplots(figsize=(2.2 * (steps + 2), 3.6))
    ax.set_xlim(-0.5, steps + 1.5)
    ax.set_ylim(-0.2, 1.2)
    to_display, to_data = ax.transData.transform, ax.transData.inverted().transform
    for node, (op, src) in enumerate(gene):
        dst = names[node // 2 + 2]
        rad = 0.25 if node % 2 else -0.25
        (x0, y0), (x1, y1) = pos[names[src]], pos[dst]
        ax.add_patch(
            FancyArrowPatch(
                (x0, y0),
                (x1, y1),
                connectionstyle=f"arc3,rad={rad}",
                arrowstyle="-|>",
                mutation_scale=14,
                color=OP_COLORS.get(op, "k"),
                lw=1.8,
                shrinkA=18,
                shrinkB=18,
            )
        )
        # The label sits on the arc's midpoint (matplotlib's arc3 control point, in display space).
        (a0, b0), (a1, b1) = to_display((x0, y0)), to_display((x1, y1))
        mx, my = to_data(((a0 + a1) / 2 + rad * (b1 - b0) / 2, (b0 + b1) / 2 - rad * (a1 - a0) / 2))
        ax.text(
            mx,
            my,
            op,
            fontsize=8,
            ha="center",
            va="center",
            color=OP_COLORS.get(op, "k"),
            bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.85),
        )
    for s in concat:
        (x0, y0), (x1, y1) = pos[names[s]], pos["c_{k}"]
        ax.add_patch(
            FancyArrowPatch(
                (x0, y0),
                (x1, y1),
                arrowstyle="-|>",
                mutation_scale=12,
                color="#999999",
                lw=1.0,
                ls="--",
                shrinkA=18,
                shrinkB=18,
            )
        )
    for name, (x, y) in pos.items():
        color = "#c6e2ff" if name.startswith("c_") else "#fff2b3"
        label = f"${name}$" if name.startswith("c_") else name
        ax.text(
            x,
            y,
            label,
            ha="center",
            va="center",
            fontsize=11,
            bbox=dict(boxstyle="round,pad=0.4", fc=color, ec="black"),
        )
    ax.axis("off")
    ax.set_title(f"{kind} cell")
    fig.tight_layout()
    return fig


def plot_cell(genotype: Genotype, kind: str, path: str | Path) -> Path:
    """Draw the ``normal`` or ``reduce`` cell of ``genotype`` to a PNG file at ``path``.

    Example:
        >>> plot_cell(load_genotype("DARTS_V2"), "normal", "normal.png")
    """
    save_figure(cell_figure(genotype, kind), path, dpi=120, format="png")
    return Path(path)


def heatmap_figure(weights: np.ndarray, title: str, steps: int = 4) -> plt.Figure:
    """The softmax weights ``(edges, ops)`` of one cell type as an annotated heat map."""
    weights = np.asarray(weights)
    labels = [f"{j}->{i + 2}" for i in range(steps) for j in range(i + 2)]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(labels) + 1.5))
    im = ax.imshow(weights, cmap="viridis", aspect="auto", vmin=0.0)
    ax.set_xticks(range(len(PRIMITIVES)), PRIMITIVES, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels[: len(weights)], fontsize=8)
    ax.set_title(title)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return fig


def figure_to_png(fig: plt.Figure, dpi: int = 80) -> bytes:
    """PNG bytes of a figure (closes it)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()
