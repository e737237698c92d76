"""``kerasdl tune RECIPE --space SPACE.yaml --trials N [--storage URL] [--study NAME] ...``."""

from __future__ import annotations

import argparse

from kerasdl.commands._args import add_recipe_arguments
from kerasdl.io import check_output_dir

COMMAND = "tune"
HELP = "search a recipe's hyper-parameters with Optuna (several tuners can share one study)"
DESCRIPTION = """Search hyper-parameters of a recipe: every trial is an ordinary training run
with its own run folder, reporting training.monitor after each epoch so that poor trials are
pruned. Tuners started with the same --storage and --study (on one machine or many) work on one
study together; a tuner that is stopped or killed can be started again and continues.

  kerasdl tune configs/quickstart.yaml --space configs/tune/quickstart_space.yml --trials 20
  kerasdl tune ... --storage sqlite:///tune.db --study qs      # start this twice: two tuners
  kerasdl train runs/tune/quickstart/best.yaml                 # the best trial's recipe

At the end, DIR (--out) holds best.yaml, trials.csv, history.png, importance.png and the trials'
run folders (DIR/trials/trial-NNNN; tensorboard --logdir DIR/trials). See docs/tune.md."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_recipe_arguments(parser, recipe_required=True, example="training.epochs=5")
    parser.add_argument(
        "--space", required=True, metavar="SPACE.yaml", help="dotted recipe keys -> distributions"
    )
    parser.add_argument(
        "--trials", type=int, required=True, metavar="N", help="trials of the study (all tuners)"
    )
    parser.add_argument(
        "--storage",
        metavar="URL",
        help="sqlite:///FILE, postgresql://..., mysql+pymysql://... or journal:FILE "
        "(default: sqlite:///DIR/study.db)",
    )
    parser.add_argument("--study", metavar="NAME", help="study name (default: run.name)")
    parser.add_argument(
        "--pruner",
        choices=("median", "hyperband", "none"),
        default="median",
        help="stop poor trials early (default median)",
    )
    parser.add_argument(
        "--startup-trials",
        type=int,
        default=5,
        metavar="K",
        help="trials finished before the median pruner prunes (default 5)",
    )
    parser.add_argument(
        "--out", metavar="DIR", help="summaries and trial runs (default: OUTPUT_DIR/tune/STUDY)"
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from kerasdl.commands._args import load_recipe_arguments
    from kerasdl.errors import UserError
    from kerasdl.tune.space import check_against_study, check_space, load_space

    cfg = load_recipe_arguments(args)
    if args.trials < 1:
        raise UserError(f"--trials: expected 1 or more. Received: {args.trials}")
    if args.startup_trials < 0:
        raise UserError(f"--startup-trials: expected 0 or more. Received: {args.startup_trials}")
    if cfg.training.monitor == "auto":
        raise UserError(
            "training.monitor is auto: name the metric the study optimises, e.g. "
            "--set training.monitor=val_accuracy (a metric ending in 'loss' is minimised)"
        )
    if cfg.distribute.strategy == "multi_worker":
        raise UserError(
            "distribute.strategy multi_worker: kerasdl tune runs each trial in its own process; "
            "use none or mirrored, and start several tuners to use several machines"
        )
    base = cfg.to_dict()
    space = load_space(args.space)
    check_space(space, base, where=f"--space {args.space}")
    study_name = args.study or cfg.run.name
    out = check_output_dir(args.out or Path(cfg.run.output_dir) / "tune" / study_name)
    if args.storage is None:
        out.mkdir(parents=True, exist_ok=True)
    storage = args.storage or f"sqlite:///{out / 'study.db'}"

    try:
        import optuna
    except ImportError:
        raise UserError('kerasdl tune needs Optuna: pip install "optuna>=4,<5"') from None

    from kerasdl.tune.storage import TuneOptions, open_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    opts = TuneOptions(
        trials=args.trials,
        storage=storage,
        study=study_name,
        out=out,
        pruner=args.pruner,
        startup_trials=args.startup_trials,
    )
    study = open_study(opts, cfg.training.monitor, cfg.training.epochs)
    check_against_study(space, study.get_trials(deepcopy=False), where=f"--space {args.space}")
    print(f"Study {study_name!r} in {storage}: {args.trials} trial(s), pruner {args.pruner}")
    from kerasdl.tune.report import write_reports
    from kerasdl.tune.tuner import Tuner

    ran = Tuner(base, space, opts, study).run()
    print(f"This tuner ran {ran} trial(s); the study has {len(study.trials)}")
    for line in write_reports(study, out):
        print(line)
    return 0
