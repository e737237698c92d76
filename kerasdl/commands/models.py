"""``kerasdl models [PATTERN] [--markdown] [--refresh] [--out PATH]``
and ``kerasdl models show NAME``.

The packaged count table is read-only; ``python -m kerasdl.commands.models`` refreshes it.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path
from typing import Any

from kerasdl.io import check_output_file

COMMAND = "models"
HELP = "list the registered models (family, paper, parameters, GMACs) or show one's layers"
DESCRIPTION = """List every registered model with its family, paper and year, trainable parameters,
multiply-accumulates (GMACs, one image at the default input size; see docs/models.md for what is
counted), default input size and class count. PATTERN is a shell pattern ('vit_*').

The counts come from a table shipped with kerasdl (models_table.json), so listing takes seconds;
a model missing from the table (or whose registered defaults changed) is built and counted on the
fly. --refresh re-counts the listed models instead of reading the table; --out PATH writes the
counts as JSON in the table's format. The shipped table is never rewritten (developers refresh it
with: python -m kerasdl.commands.models).

  kerasdl models                    all models
  kerasdl models 'resnet*' --markdown
  kerasdl models show vit_b_16      the layer summary of one model
  kerasdl models show resnet18 --input-size 32 --num-classes 10"""

TABLE_PATH = Path(__file__).with_name("models_table.json")
TABLE_VERSION = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "words",
        nargs="*",
        metavar="PATTERN | show NAME",
        help="a shell pattern of model names (default '*'), or 'show NAME'",
    )
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument(
        "--refresh", action="store_true", help="re-count the listed models (ignore the table)"
    )
    parser.add_argument(
        "--out",
        metavar="PATH",
        help="write the counts of the listed models as JSON here (the table's format)",
    )
    parser.add_argument(
        "--input-size",
        type=int,
        help="show: square input side (default: the model's default input)",
    )
    parser.add_argument("--num-classes", type=int, help="show: number of classes")


def _signature(entry) -> str:
    builder = f"{entry.builder.__module__}.{entry.builder.__qualname__}"
    return json.dumps(
        [builder, entry.defaults, list(entry.default_input)], sort_keys=True, default=str
    )


def count_model(name: str) -> dict[str, Any]:
    """Build ``name`` at its default input and count trainable parameters and MACs."""
    import gc

    import keras

    from kerasdl.models.macs import count_macs
    from kerasdl.registry import create_model, get_entry

    entry = get_entry(name)
    model = create_model(name, input_shape=list(entry.default_input))
    row = {
        "signature": _signature(entry),
        "params": int(sum(int(keras.ops.size(w)) for w in model.trainable_weights)),
        "macs": int(count_macs(model)),
        "classes": int(model.outputs[0].shape[-1]),
    }
    del model
    keras.backend.clear_session()
    gc.collect()
    return row


def _load_table(path: Path | None = None) -> dict[str, Any]:
    try:
        data = json.loads((path or TABLE_PATH).read_text())
    except (OSError, ValueError):
        return {}
    if data.get("version") != TABLE_VERSION:
        return {}
    return data.get("models", {})


def store_table(models: dict[str, Any], path: str | Path) -> None:
    """Write count rows ``{name: {"signature", "params", "macs", "classes"}}`` as a table."""
    from kerasdl.io import write_json

    table = {"version": TABLE_VERSION, "models": models}
    write_json(path, table, indent=1, sort_keys=True, end="\n")


def counts(names: list[str], refresh: bool = False) -> tuple[dict[str, Any], list[str]]:
    """The count rows of ``names`` (from the table when current, else counted now) and the
    names counted now."""
    from kerasdl.registry import get_entry

    cached = _load_table()
    rows, computed = {}, []
    for name in names:
        row = cached.get(name)
        if refresh or not row or row.get("signature") != _signature(get_entry(name)):
            print(f"counting {name} ...", file=sys.stderr, flush=True)
            row = count_model(name)
            computed.append(name)
        rows[name] = row
    return rows, computed


def refresh_table(path: str | Path | None = None, recount: bool = False) -> Path:
    """Re-count the registered models missing from the shipped table (or changed since; every
    model with ``recount``) and write the table to ``path`` (default: the shipped one; developers
    run ``python -m kerasdl.commands.models``). Returns the path written."""
    from kerasdl.registry import list_models

    rows, _ = counts(list_models(), refresh=recount)
    path = Path(path or TABLE_PATH)
    store_table(rows, path)
    return path


def _close_matches(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    prefix = [n for n in names if n.startswith(name.split("_")[0])][:5]
    hints = list(dict.fromkeys(close + prefix))
    return f" Did you mean: {', '.join(hints)}?" if hints else " Run 'kerasdl models' for the list."


def model_rows(
    pattern: str = "*", refresh: bool = False, out: str | Path | None = None
) -> list[dict[str, Any]]:
    """One row per registered model matching ``pattern`` (from the shipped table when current).

    ``refresh`` re-counts every listed model; ``out`` writes their counts (the table's format).
    """
    from kerasdl.errors import UserError
    from kerasdl.registry import get_entry, list_models

    names = list_models(pattern)
    if not names:
        raise UserError(
            f"No registered model matches {pattern!r}.{_close_matches(pattern, list_models())}"
        )
    counted, computed = counts(names, refresh)
    rows = []
    for name in names:
        entry, row = get_entry(name), counted[name]
        rows.append(
            {
                "name": name,
                "family": entry.family,
                "paper": entry.paper,
                "year": entry.year,
                "params": row["params"],
                "gmacs": row["macs"] / 1e9,
                "input": "x".join(str(v) for v in entry.default_input),
                "classes": row["classes"],
            }
        )
    if out is not None:
        store_table(counted, out)
    if computed and not refresh:
        print(
            f"note: counted {len(computed)} model(s) missing from the shipped table "
            "(in a source checkout, python -m kerasdl.commands.models stores them).",
            file=sys.stderr,
        )
    return rows


def _gmacs(value: float) -> str:
    return f"{value:.2f}" if value >= 0.01 else f"{value:.1e}"


def format_rows(rows: list[dict[str, Any]], markdown: bool = False) -> str:
    """The model table as aligned text or Markdown."""
    header = ["model", "family", "paper", "year", "params", "GMACs", "input", "classes"]
    body = [
        [
            r["name"],
            r["family"],
            r["paper"],
            str(r["year"] or ""),
            f"{r['params']:,}",
            _gmacs(r["gmacs"]),
            r["input"],
            str(r["classes"]),
        ]
        for r in rows
    ]
    if markdown:
        lines = [
            "| " + " | ".join(header) + " |",
            "|"
            + "|".join("---:" if h in ("params", "GMACs", "classes") else "---" for h in header)
            + "|",
        ]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines)
    widths = [max(len(x) for x in col) for col in zip(header, *body, strict=True)]
    right = {4, 5, 7}

    def fmt(row):
        return "  ".join(
            x.rjust(w) if i in right else x.ljust(w)
            for i, (x, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()

    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in body])


def show(name: str, input_size: int | None, num_classes: int | None) -> None:
    """Print the layer summary of one model."""
    from kerasdl.errors import UserError
    from kerasdl.models.macs import count_macs
    from kerasdl.registry import create_model, get_entry, list_models

    names = list_models()
    if name not in names:
        raise UserError(f"Unknown model {name!r}.{_close_matches(name, names)}")
    entry = get_entry(name)
    shape = list(entry.default_input)
    if input_size is not None:
        if input_size < entry.min_input:
            raise UserError(
                f"--input-size must be >= {entry.min_input} for {name}. Received: {input_size}"
            )
        shape = [input_size, input_size, shape[2]]
    kwargs: dict[str, Any] = {"input_shape": shape}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    model = create_model(name, **kwargs)
    model.summary(expand_nested=False)
    print(
        f"{name}: {entry.family}, {entry.paper}; input {'x'.join(map(str, shape))}; "
        f"{count_macs(model) / 1e9:.3f} GMACs"
    )


def run(args: argparse.Namespace) -> int:
    from kerasdl.errors import UserError

    words = list(args.words)
    if words and words[0] == "show":
        if len(words) != 2:
            raise UserError("usage: kerasdl models show NAME")
        show(words[1], args.input_size, args.num_classes)
        return 0
    if len(words) > 1:
        raise UserError(f"Expected at most one PATTERN. Received: {' '.join(words)}")
    out = check_output_file(args.out) if args.out else None
    rows = model_rows(words[0] if words else "*", refresh=args.refresh, out=out)
    print(format_rows(rows, markdown=args.markdown))
    if out is not None:
        print(f"Saved the counts of {len(rows)} model(s) to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":  # python -m kerasdl.commands.models: refresh the shipped table, from
    from kerasdl.commands.models import refresh_table as _refresh  # the package's module

    print(f"wrote {_refresh()}")
