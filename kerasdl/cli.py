"""The ``kerasdl`` command: a thin argparse front end over the library.

Each subcommand is a module in ``kerasdl.commands`` that defines::

    COMMAND = "train"                     # the subcommand name
    HELP = "one line for kerasdl --help"
    def add_arguments(parser: argparse.ArgumentParser) -> None: ...
    def run(args: argparse.Namespace) -> int: ...   # exit status

Modules are discovered, so a new subcommand is a new file. A :class:`kerasdl.UserError` raised
anywhere becomes one line on stderr and exit status 2 (no traceback).
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from kerasdl.errors import UserError


def _quiet_tensorflow() -> None:
    """Import TensorFlow with its C++ start-up chatter (CUDA probing, oneDNN notice) hidden.

    Those lines are printed by absl before any log level applies, so stderr is pointed at
    /dev/null while TensorFlow loads and probes devices. ``KERASDL_TF_LOGS=1`` shows them.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if os.environ.get("KERASDL_TF_LOGS"):
        return
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf

        tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every discovered subcommand."""
    import kerasdl.commands as commands

    parser = argparse.ArgumentParser(
        prog="kerasdl",
        description="The deep-learning canon, runnable: train recipes, evaluate runs, list models, "
        "export and serve. Run 'kerasdl COMMAND --help' for a command's options.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"kerasdl.commands.{info.name}")
        p = sub.add_parser(
            module.COMMAND,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", module.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_tensorflow()
    try:
        return int(args._run(args) or 0)
    except UserError as err:
        print(f"kerasdl {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"kerasdl {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
