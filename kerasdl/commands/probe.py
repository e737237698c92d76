"""``kerasdl probe RUN_DIR``: linear-probe, k-NN and fine-tuning accuracy of a trained backbone."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kerasdl.errors import UserError
from kerasdl.io import check_output_file

COMMAND = "probe"
HELP = "evaluate a (self-supervised) backbone: linear probe, k-NN, fine-tuning"
DESCRIPTION = """\
Evaluate the representation of a trained backbone on the run's data.

TARGET is a run folder (its backbone.keras, else best.keras, and its config.yaml for the data)
or a .keras file (the data: --recipe, else the config.yaml beside it). Protocols: 'linear'
(logistic regression on frozen, standardized pre-logits features), 'knn' (weighted 20-NN, cosine
similarity), 'finetune' (the backbone plus a new head trained end to end). Training labels come
from the train split (optionally only --labels-per-class of them), accuracy from the test split
(val if no test).

examples:
  kerasdl probe runs/simclr_digits/20260101-120000
  kerasdl probe backbone.keras --recipe configs/ssl/simclr_digits.yaml --labels-per-class 10
"""

PROTOCOLS = ("linear", "knn", "finetune")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", help="run folder or .keras file")
    parser.add_argument(
        "--protocol",
        nargs="+",
        choices=PROTOCOLS,
        default=["linear", "knn"],
        help="protocols to run (default: linear knn)",
    )
    parser.add_argument("--recipe", help="recipe whose data section to use (default: the run's)")
    parser.add_argument(
        "--labels-per-class",
        type=int,
        default=None,
        metavar="N",
        help="train the probes on N labels per class (default: all)",
    )
    parser.add_argument(
        "--finetune-epochs",
        type=int,
        default=30,
        metavar="N",
        help="epochs of the 'finetune' protocol (default 30)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the label choice and of fine-tuning (default 0)",
    )
    parser.add_argument(
        "--out",
        metavar="PATH",
        help="write the results as JSON here (default: RUN_DIR/probe.json for a run folder)",
    )
    # --output was this option's name before every command said --out: kept, hidden, deprecated
    parser.add_argument("--output", dest="out", action=_DeprecatedOutput, help=argparse.SUPPRESS)


class _DeprecatedOutput(argparse.Action):
    """``--output PATH``: the old name of ``--out``; works, with a note on stderr."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print("kerasdl probe: note: --output is deprecated; use --out", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _model_path(target: Path) -> Path:
    if target.is_dir():
        from kerasdl.runfolder import RunFolder

        folder = RunFolder(target)
        for path in (folder.backbone, folder.best):
            if path.is_file():
                return path
        raise UserError(f"{target}: no backbone.keras or best.keras in this run folder.")
    if target.suffix != ".keras" or not target.is_file():
        raise UserError(f"{target}: expected a run folder or an existing .keras file.")
    return target


def run(args: argparse.Namespace) -> int:
    target = Path(args.target)
    model_path = _model_path(target)
    if args.labels_per_class is not None and args.labels_per_class < 1:
        raise UserError(f"--labels-per-class must be >= 1. Received: {args.labels_per_class}")
    if "finetune" in args.protocol and args.finetune_epochs < 1:
        raise UserError(f"--finetune-epochs must be >= 1. Received: {args.finetune_epochs}")
    if not 0 <= args.seed < 2**32:
        raise UserError(f"--seed must be an integer from 0 to 2**32 - 1. Received: {args.seed}")
    if args.out:
        check_output_file(args.out, make_parents=True)

    from kerasdl.config import load_run_recipe

    cfg = load_run_recipe(target, args.recipe)  # validated before TensorFlow is imported

    from kerasdl.data import load_data
    from kerasdl.data.pipeline import standardize_array
    from kerasdl.io import write_json
    from kerasdl.methods.probes import run_probes
    from kerasdl.training.evaluation import load_trained_model

    model = load_trained_model(model_path)
    model = getattr(model, "inference_model", model)
    bundle = load_data(cfg.data, seed=cfg.run.seed)
    test = bundle.splits.get("test") or bundle.splits.get("val")
    if test is None:
        raise UserError("The recipe's data has no test or val split to score the probes on.")
    mean, std = list(cfg.data.mean), list(cfg.data.std)

    results = run_probes(
        model,
        bundle.splits["train"],
        test,
        tuple(args.protocol),
        args.labels_per_class,
        args.seed,
        bundle.num_classes,
        lambda x: standardize_array(x, mean, std),
        args.finetune_epochs,
    )
    results = {"model": str(model_path), "labels_per_class": args.labels_per_class, **results}
    for p in args.protocol:
        print(f"{p:>9}: {100 * results[p]:.2f}% accuracy")
    print(f"({results['train_examples']} training, {results['test_examples']} test examples)")
    out = Path(args.out) if args.out else (target / "probe.json" if target.is_dir() else None)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json(out, results)
        print(f"wrote {out}")
    return 0
