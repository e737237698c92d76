"""``kerasdl export``: a run folder to a TF Serving SavedModel version."""

from __future__ import annotations

import argparse

COMMAND = "export"
HELP = "export a trained run as a TF Serving SavedModel (saved_models/<name>/<version>/)"
DESCRIPTION = """Export a run folder (best.keras + preprocess.json) or a .keras file with a
preprocess.json beside it to saved_models/<name>/<version>/, the layout TF Serving and
'kerasdl serve' read. The version is written to a temporary folder and renamed into place.

Signatures: serving_default (input 'images': float32 [batch, H, W, C] pixels in [0, 1]) and
serving_bytes (input 'image_bytes': encoded JPEG/PNG strings). Both return 'probabilities',
'class_id' and 'class_name'. See docs/serving.md.

Example:
  kerasdl export runs/quickstart/20260101-120000 --name digits
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="RUN_DIR", help="run folder, or a .keras file")
    parser.add_argument("--name", help="model name (default: the run's name)")
    parser.add_argument(
        "--version", type=int, help="version number (default: the next free integer)"
    )
    parser.add_argument(
        "--out", default="saved_models", help="model base folder (default: saved_models)"
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from kerasdl.errors import UserError

    if not Path(args.source).exists():  # before TensorFlow loads
        raise UserError(f"No such run folder or .keras file: {args.source}")
    if args.version is not None and args.version < 1:
        raise UserError(f"--version must be a positive integer. Received: {args.version}")
    from kerasdl.export.saved_model import export_run

    path = export_run(args.source, out=args.out, name=args.name, version=args.version)
    print(f"exported {path}")
    return 0
