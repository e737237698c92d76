"""The ``kerasdl`` command: a thin argparse front end over the library.

Each subcommand is a module in ``kerasdl.commands`` that defines::

    COMMAND = "train"                     # the subcommand name
    HELP = "one line for kerasdl --help"
    def add_arguments(parser: argparse.ArgumentParser) -> None: ...
    def run(args: argparse.Namespace) -> int: ...   # exit status

Modules are discovered, so a new subcommand is a new file. A command module imports nothing heavy
at import time (TensorFlow, Keras, matplotlib are imported inside ``run``, after the arguments and
the recipe are validated), so ``kerasdl --help`` and a bad recipe answer at once. A
:class:`kerasdl.UserError` raised anywhere becomes one line on stderr and exit status 2 (no
traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.abc
import importlib.util
import os
import pkgutil
import sys
from collections.abc import Iterator
from typing import Any

from kerasdl.errors import UserError


@contextlib.contextmanager
def _stderr_to_devnull() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null (C++ code writes there, not to ``sys.stderr``)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def quiet_tensorflow() -> None:
    """Import TensorFlow now, with its C++ start-up chatter (CUDA probing, oneDNN notice) hidden.

    Scripts call this before importing Keras or TensorFlow (see the apps); the ``kerasdl``
    command defers the import instead (:func:`quiet_first_tensorflow_import`).
    """
    quiet_first_tensorflow_import()
    import tensorflow  # noqa: F401


class _QuietLoader(importlib.abc.Loader):
    """Runs TensorFlow's own loader with fd 2 silenced, then probes the devices (also silenced)."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        with _stderr_to_devnull():
            self._loader.exec_module(module)
            module.config.list_physical_devices()

    def __getattr__(self, name: str) -> Any:  # resource readers etc. of the real loader
        return getattr(self._loader, name)


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` once, with a loader that keeps its start-up chatter off stderr."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != "tensorflow":
            return None
        _remove_finder()
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def _remove_finder() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _QuietTensorFlowFinder)]


def quiet_first_tensorflow_import() -> None:
    """Make the process's first ``import tensorflow`` (direct, or through Keras) quiet.

    TensorFlow's start-up lines (CUDA probing, with a ``cuInit`` error on a machine without a
    GPU; the oneDNN notice) are printed by absl before any log level applies, so file
    descriptor 2 points at /dev/null while TensorFlow loads and probes its devices. Later C++
    logs are limited to errors (``TF_CPP_MIN_LOG_LEVEL=2`` unless set); ``KERASDL_TF_LOGS=1``
    shows everything. Nothing is imported now: a command that fails on its arguments or its
    recipe never loads TensorFlow, and one that needs it loads it quietly wherever it first
    imports it.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if os.environ.get("KERASDL_TF_LOGS") or "tensorflow" in sys.modules:
        return
    _remove_finder()
    sys.meta_path.insert(0, _QuietTensorFlowFinder())


def version() -> str:
    """The installed distribution's version (the package's own if it is not installed)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("kerasdl")
    except PackageNotFoundError:
        import kerasdl

        return kerasdl.__version__


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every discovered subcommand (imports no TensorFlow)."""
    import kerasdl.commands as commands

    parser = argparse.ArgumentParser(
        prog="kerasdl",
        description="The deep-learning canon, runnable: train recipes, evaluate runs, list models, "
        "export and serve. Run 'kerasdl COMMAND --help' for a command's options.",
    )
    parser.add_argument(
        "--version", action="version", version=f"kerasdl {version()}", help="print the version"
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
    quiet_first_tensorflow_import()
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
