"""``kerasdl convert``: a torchvision or timm checkpoint to a zoo model saved as ``.keras``."""

from __future__ import annotations

import argparse

from kerasdl.io import check_output_file

COMMAND = "convert"
HELP = "convert a torchvision / timm checkpoint (.safetensors, .pth) to a .keras zoo model"
DESCRIPTION = """Build the zoo model NAME, load the checkpoint PATH into it and save it as a
.keras file. PATH is a torchvision or timm state_dict of the same architecture: .safetensors
(read without torch) or .pth/.pt (needs the torch extra); its layout is recognised from its key
names. A different --num-classes keeps the backbone and re-initialises the classifier. Any other
mismatch (another architecture, missing, unexpected or differently shaped tensors) stops with one
line naming the tensors, and no file is written. The .keras file carries the checkpoint's input
preprocessing (mean/std), which 'kerasdl export' and a recipe's model.weights use. See
docs/models.md ("Weights").

Examples:
  kerasdl convert resnet50.pth --model resnet50 --out resnet50.keras
  kerasdl convert model.safetensors --model vit_b_16 --out vit.keras --num-classes 10
  kerasdl convert efficientnet_b0.safetensors --model efficientnet_b0 --out b0.keras \\
      --input-shape 128 128 3
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="PATH", help="checkpoint (.safetensors, .pth, .pt)")
    parser.add_argument("--model", required=True, metavar="NAME", help="zoo model name")
    parser.add_argument("--out", required=True, metavar="FILE.keras", help="output file")
    parser.add_argument(
        "--num-classes",
        type=int,
        metavar="N",
        help="classes of the new classifier (default: the model's, 1000); 0: no classifier",
    )
    parser.add_argument(
        "--input-shape",
        type=int,
        nargs=3,
        metavar=("H", "W", "C"),
        help="input shape to build the model for (default: the model's reference input)",
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from kerasdl.errors import UserError

    out = Path(args.out)
    if out.suffix != ".keras":
        raise UserError(f"--out must end in .keras. Received: {args.out}")
    check_output_file(out)
    if args.num_classes is not None and args.num_classes < 0:
        raise UserError(f"--num-classes must be >= 0. Received: {args.num_classes}")
    if args.input_shape is not None and min(args.input_shape) < 1:
        raise UserError(f"--input-shape must be positive. Received: {args.input_shape}")
    from kerasdl.config.manifest import accepted_arguments
    from kerasdl.weights.readers import check_exists, kind_of

    check_exists(args.path)
    kind_of(args.path)
    try:
        accepted_arguments(args.model)  # an unknown name fails before TensorFlow loads
    except ValueError as err:
        raise UserError(str(err).replace("model.name: ", "--model: ")) from None
    from kerasdl.registry import create_model
    from kerasdl.weights import report_printed, save_converted

    kwargs = {}
    if args.num_classes is not None:
        kwargs["num_classes"] = args.num_classes
    if args.input_shape is not None:
        kwargs["input_shape"] = tuple(args.input_shape)
    with report_printed():
        model = create_model(args.model, weights=args.path, **kwargs)
    report = model.weights_report
    save_converted(model, out, report)
    print(report.text())
    print(f"wrote {out}")
    return 0
