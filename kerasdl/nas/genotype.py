"""Deriving genotypes from a DARTS search: the discrete cells from the alphas.

The genotype data structure, the published presets and JSON loading are
:mod:`kerasdl.models.genotype` (the evaluation network ``darts_net`` reads them; models do not
import the search). They are re-exported here for the search's callers.

Reference:
    Liu, Simonyan & Yang, "DARTS: Differentiable Architecture Search", ICLR 2019, section 2.4
    and ``Network.genotype`` in https://github.com/quark0/darts.
"""

from __future__ import annotations

import numpy as np

from kerasdl.layers.darts_ops import PRIMITIVES
from kerasdl.models.genotype import PRESETS, Gene, Genotype, load_genotype

__all__ = [
    "PRESETS",
    "Gene",
    "Genotype",
    "derive_genotype",
    "load_genotype",
    "parse_cell",
    "softmax",
]


def parse_cell(weights: np.ndarray, steps: int, primitives: tuple[str, ...] = PRIMITIVES) -> Gene:
    """Discretize one cell: per node the two strongest incoming edges and their strongest op.

    An edge's strength is its largest mixing weight over the non-``none`` operations; the op kept
    on the edge is that strongest non-``none`` operation (``Network.genotype`` in the reference).

    Args:
        weights: ``(edges, ops)`` softmax of the cell's alphas, edges ordered node by node
            (node 2: inputs 0, 1; node 3: inputs 0, 1, 2; ...).
        steps: intermediate nodes.
        primitives: the op names, index = column of ``weights``.
    """
    weights = np.asarray(weights, dtype=np.float64)
    keep = [k for k, p in enumerate(primitives) if p != "none"]
    gene: Gene = []
    start = 0
    for i in range(steps):
        n_in = i + 2
        w = weights[start : start + n_in][:, keep]
        strength = w.max(axis=1)
        # Stable sort: ties keep the lower input index first (Python's sorted(), as the reference).
        edges = sorted(range(n_in), key=lambda j: -strength[j])[:2]
        for j in edges:
            gene.append((primitives[keep[int(np.argmax(w[j]))]], j))
        start += n_in
    return gene


def derive_genotype(
    alphas_normal: np.ndarray, alphas_reduce: np.ndarray, steps: int = 4, multiplier: int = 4
) -> Genotype:
    """The genotype of a search network from its architecture parameters (logits).

    Args:
        alphas_normal: ``(edges, ops)`` alpha logits of the normal cell.
        alphas_reduce: the same for the reduction cell.
        steps: intermediate nodes per cell.
        multiplier: how many of the last states the cell concatenates.
    """
    concat = tuple(range(2 + steps - multiplier, steps + 2))
    normal = parse_cell(softmax(alphas_normal), steps)
    reduce = parse_cell(softmax(alphas_reduce), steps)
    return Genotype(tuple(normal), concat, tuple(reduce), concat)


def softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise softmax in NumPy."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)
