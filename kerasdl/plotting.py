"""Shared helpers for the PNG/SVG/PDF files kerasdl writes (matplotlib, Agg backend)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kerasdl.errors import UserError

IMAGE_FORMATS = (".png", ".svg", ".pdf", ".jpg", ".jpeg")


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def check_output_image(arg: str) -> Path:
    """The ``--out`` path of a picture: a known format in an existing folder (else UserError)."""
    out = Path(arg)
    if out.suffix.lower() not in IMAGE_FORMATS:
        raise UserError(f"--out {arg}: expected one of {', '.join(sorted(IMAGE_FORMATS))}")
    if not out.parent.is_dir():
        raise UserError(f"--out {arg}: folder {out.parent} does not exist")
    return out


def save_figure_atomic(fig: Any, path: str | Path, dpi: int = 110) -> None:
    """Save ``fig`` to a temporary file renamed into place, then close it."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        fig.savefig(tmp, dpi=dpi)
        os.replace(tmp, path)
    finally:
        pyplot().close(fig)
        if tmp.exists():
            tmp.unlink()
