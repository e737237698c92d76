"""Genotypes: the discrete DARTS cells, their derivation from alphas, presets and JSON files.

A genotype lists, for the normal and the reduction cell, two ``(operation, input)`` pairs per
intermediate node (inputs 0 and 1 are the outputs of the two previous cells, input ``k >= 2`` is
intermediate node ``k - 2``) and the nodes concatenated into the cell output. It is saved as JSON::

    {"normal": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1], ...], "normal_concat": [2, 3, 4, 5],
     "reduce": [["max_pool_3x3", 0], ...], "reduce_concat": [2, 3, 4, 5]}

Reference:
    Liu, Simonyan & Yang, "DARTS: Differentiable Architecture Search", ICLR 2019, section 2.4
    and ``cnn/genotypes.py`` / ``Network.genotype`` in https://github.com/quark0/darts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kerasdl.errors import UserError
from kerasdl.io import write_json
from kerasdl.layers.darts_ops import PRIMITIVES

Gene = list[tuple[str, int]]


@dataclass(frozen=True)
class Genotype:
    """A discrete DARTS architecture (normal and reduction cells).

    Args:
        normal: ``(op, input)`` pairs, two per intermediate node, for the normal cell.
        normal_concat: states concatenated into the normal cell's output.
        reduce: the same for the reduction cell.
        reduce_concat: states concatenated into the reduction cell's output.

    Example:
        >>> g = load_genotype("DARTS_V2")
        >>> g.normal[0]
        ('sep_conv_3x3', 0)
    """

    normal: tuple[tuple[str, int], ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[tuple[str, int], ...]
    reduce_concat: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "normal": [[op, int(i)] for op, i in self.normal],
            "normal_concat": [int(i) for i in self.normal_concat],
            "reduce": [[op, int(i)] for op, i in self.reduce],
            "reduce_concat": [int(i) for i in self.reduce_concat],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "genotype") -> Genotype:
        """Validate and build a genotype from its JSON form (raises :class:`UserError`)."""
        if not isinstance(data, dict):
            raise UserError(f"{where}: expected a mapping. Received: {type(data).__name__}")
        keys = {"normal", "normal_concat", "reduce", "reduce_concat"}
        if set(data) != keys:
            raise UserError(f"{where}: expected keys {sorted(keys)}. Received: {sorted(data)}")
        cells = {}
        for kind in ("normal", "reduce"):
            gene = data[kind]
            if not isinstance(gene, list) or not gene or len(gene) % 2:
                raise UserError(f"{where}.{kind}: expected an even, non-empty list of [op, input]")
            pairs = []
            for n, item in enumerate(gene):
                ok = isinstance(item, (list, tuple)) and len(item) == 2
                if not ok or item[0] not in PRIMITIVES or not isinstance(item[1], int):
                    raise UserError(
                        f"{where}.{kind}[{n}]: expected [op, input] with op one of "
                        f"{', '.join(PRIMITIVES)}. Received: {item!r}"
                    )
                node = n // 2 + 2
                if not 0 <= item[1] < node:
                    raise UserError(
                        f"{where}.{kind}[{n}]: node {node} can take inputs 0..{node - 1}. "
                        f"Received: {item[1]}"
                    )
                pairs.append((str(item[0]), int(item[1])))
            concat = data[f"{kind}_concat"]
            states = len(gene) // 2 + 2
            if (
                not isinstance(concat, list)
                or not concat
                or not all(isinstance(i, int) and 0 <= i < states for i in concat)
            ):
                raise UserError(
                    f"{where}.{kind}_concat: expected a list of state indices in 0..{states - 1}. "
                    f"Received: {concat!r}"
                )
            cells[kind] = (tuple(pairs), tuple(concat))
        return cls(cells["normal"][0], cells["normal"][1], cells["reduce"][0], cells["reduce"][1])

    def save(self, path: str | Path) -> None:
        """Write the genotype as JSON (atomically: temp file, then rename)."""
        write_json(path, self.to_dict(), indent=2)


def _preset(normal: Gene, reduce: Gene) -> Genotype:
    return Genotype(tuple(normal), (2, 3, 4, 5), tuple(reduce), (2, 3, 4, 5))


# Published CIFAR-10 cells (quark0/darts cnn/genotypes.py): first-order (V1), second-order (V2).
PRESETS: dict[str, Genotype] = {
    "DARTS_V1": _preset(
        [
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 0),
            ("skip_connect", 0),
            ("sep_conv_3x3", 1),
            ("skip_connect", 0),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 0),
            ("skip_connect", 2),
        ],
        [
            ("max_pool_3x3", 0),
            ("max_pool_3x3", 1),
            ("skip_connect", 2),
            ("max_pool_3x3", 0),
            ("max_pool_3x3", 0),
            ("skip_connect", 2),
            ("skip_connect", 2),
            ("avg_pool_3x3", 0),
        ],
    ),
    "DARTS_V2": _preset(
        [
            ("sep_conv_3x3", 0),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 0),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1),
            ("skip_connect", 0),
            ("skip_connect", 0),
            ("dil_conv_3x3", 2),
        ],
        [
            ("max_pool_3x3", 0),
            ("max_pool_3x3", 1),
            ("skip_connect", 2),
            ("max_pool_3x3", 1),
            ("max_pool_3x3", 0),
            ("skip_connect", 2),
            ("skip_connect", 2),
            ("max_pool_3x3", 1),
        ],
    ),
}
PRESETS["DARTS"] = PRESETS["DARTS_V2"]


def load_genotype(spec: str | dict[str, Any] | Genotype) -> Genotype:
    """A genotype from a preset name (``"DARTS_V2"``), a JSON file path, or its dict form.

    Raises:
        kerasdl.UserError: unknown name, missing or malformed file.
    """
    if isinstance(spec, Genotype):
        return spec
    if isinstance(spec, dict):
        return Genotype.from_dict(spec)
    if not isinstance(spec, str):
        raise UserError(
            f"genotype: expected a preset name, a JSON path or a mapping. Received: {spec!r}"
        )
    if spec in PRESETS:
        return PRESETS[spec]
    path = Path(spec)
    if not path.is_file():
        raise UserError(
            f"genotype {spec!r}: not a preset ({', '.join(PRESETS)}) and no such file "
            "(a search writes one: kerasdl search RECIPE)"
        )
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"genotype file {spec}: not valid JSON ({err})") from None
    return Genotype.from_dict(data, where=str(spec))


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
