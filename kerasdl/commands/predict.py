"""``kerasdl predict``: top-k classes for image files with an exported SavedModel."""

from __future__ import annotations

import argparse
from pathlib import Path

COMMAND = "predict"
HELP = "print the top-k classes of image files with an exported model"
DESCRIPTION = """Classify image files (JPEG/PNG/BMP/GIF/WebP) with a SavedModel from 'kerasdl
export'.
MODEL_DIR is a version folder (saved_models/digits/3) or a model folder (its highest version is
used). The images go through the export's serving_bytes signature, which decodes, resizes and
normalizes them exactly as in training.

Example:
  kerasdl predict saved_models/digits photo.png --top-k 3
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="exported model (version) folder")
    parser.add_argument("images", metavar="IMAGE", nargs="+", help="image files")
    parser.add_argument("--top-k", type=int, default=5, help="classes to print (default 5)")


def run(args: argparse.Namespace) -> int:
    from kerasdl.errors import UserError

    if args.top_k < 1:
        raise UserError(f"--top-k must be >= 1. Received: {args.top_k}")
    for image in args.images:
        if not Path(image).is_file():
            raise UserError(f"Image file not found: {image}")
    from kerasdl.export.predictor import Predictor

    predictor = Predictor(args.model_dir)
    for image in args.images:
        top = predictor.top_k(Path(image).read_bytes(), args.top_k, label=image)
        ranked = ", ".join(f"{name} {p:.4f}" for name, p in top)
        print(f"{image}: {ranked}")
    return 0
