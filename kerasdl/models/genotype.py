"""Genotypes: the discrete DARTS cells that ``darts_net`` is built from, presets and JSON files.

A genotype lists, for the normal and the reduction cell, two ``(operation, input)`` pairs per
intermediate node (inputs 0 and 1 are the outputs of the two previous cells, input ``k >= 2`` is
intermediate node ``k - 2``) and the nodes concatenated into the cell output. It is saved as JSON::

    {"normal": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1], ...], "normal_concat": [2, 3, 4, 5],
     "reduce": [["max_pool_3x3", 0], ...], "reduce_concat": [2, 3, 4, 5]}

The search (:mod:`kerasdl.nas`) derives genotypes from its architecture parameters
(:func:`kerasdl.nas.genotype.derive_genotype`); the model zoo only reads them, so this data
structure lives with the model and the search imports it from here.

Reference:
    Liu, Simonyan & Yang, "DARTS: Differentiable Architecture Search", ICLR 2019, section 2.4
    and ``cnn/genotypes.py`` in https://github.com/quark0/darts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
