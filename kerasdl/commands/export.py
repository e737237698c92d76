"""``kerasdl export``: a run folder to a TF Serving SavedModel version, or an ONNX / LiteRT file."""

from __future__ import annotations

import argparse

from kerasdl.io import check_output_dir

COMMAND = "export"
HELP = "export a trained run as a SavedModel (TF Serving), an ONNX or a LiteRT file"
DESCRIPTION = """Export a run folder (best.keras + preprocess.json) or a .keras file with a
preprocess.json beside it to <out>/<name>/<version>/. The version is written to a temporary
folder and renamed into place, so a failed export leaves nothing behind.

--format saved_model (default; --out defaults to saved_models): the layout TF Serving and
'kerasdl serve' read. Signatures serving_default (input 'images': float32 [batch, H, W, C]
pixels in [0, 1]) and serving_bytes (input 'image_bytes': encoded JPEG/PNG strings), both
returning 'probabilities', 'class_id' and 'class_name'. See docs/serving.md.

--format onnx | litert (--out defaults to exports): model.onnx (tf2onnx, run by onnxruntime) or
model.tflite (TFLite builtin ops, run by the LiteRT interpreter), plus preprocess.json and
class_names.txt. Input 'images' as above (the file standardizes with the run's mean/std);
outputs 'logits' and 'probabilities'. The file is run on random images and compared with the
Keras model before it is kept (relative error <= 1e-4; --no-verify skips this). See
docs/export.md.

Examples:
  kerasdl export runs/quickstart/20260101-120000 --name digits
  kerasdl export runs/quickstart/20260101-120000 --format onnx --out exports
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="RUN_DIR", help="run folder, or a .keras file")
    parser.add_argument(
        "--format",
        default="saved_model",
        metavar="FORMAT",
        help="saved_model (default), onnx or litert (alias tflite)",
    )
    parser.add_argument("--name", help="model name (default: the run's name)")
    parser.add_argument(
        "--version", type=int, help="version number (default: the next free integer)"
    )
    parser.add_argument(
        "--out",
        help="base folder (default: saved_models for saved_model, exports for onnx/litert)",
    )
    parser.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="onnx/litert: do not compare the file's outputs with the Keras model's",
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from kerasdl.errors import UserError
    from kerasdl.export.formats import check_format

    fmt = check_format(args.format)  # before TensorFlow loads
    if not Path(args.source).exists():
        raise UserError(f"No such run folder or .keras file: {args.source}")
    from kerasdl.export.formats import DEFAULT_OUT

    check_output_dir(args.out or DEFAULT_OUT[fmt])
    if args.version is not None and args.version < 1:
        raise UserError(f"--version must be a positive integer. Received: {args.version}")
    from kerasdl.export.formats import export

    path = export(
        args.source,
        fmt=fmt,
        out=args.out,
        name=args.name,
        version=args.version,
        verify=args.verify,
    )
    print(f"exported {path}")
    return 0
