"""Shared helpers for the PNG/SVG/PDF files kerasdl writes (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kerasdl.errors import UserError
from kerasdl.io import check_output_file, save_figure

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
    return check_output_file(out)


def save_figure_atomic(fig: Any, path: str | Path, dpi: int = 110) -> None:
    """Save ``fig`` atomically, then close it: :func:`kerasdl.io.save_figure` (kept name)."""
    save_figure(fig, path, dpi=dpi)
