"""The run folder: every path of a run, finding an unfinished run, resuming one (no TensorFlow).

A run is a folder ``<output_dir>/<name>/<timestamp or id>/``::

    config.yaml       the resolved recipe, written once when the run starts, never rewritten
    preprocess.json   image size, channels, standardization and class names (used by export)
    run_info.json     precision, steps per epoch, distribution, resumes, final weights fingerprint
    logs/             TensorBoard
    backup/           the last two full training states (resume after a crash)
    best.keras        the best model by ``training.monitor``
    history.csv       one row per epoch
    metrics.json      final test metrics of best.keras (its presence marks a finished run)

Every file is written whole or not at all (:mod:`kerasdl.io`: a temporary file renamed into place;
TensorFlow writes a checkpoint's data before the ``checkpoint`` state file that lists it), so a run
killed at any point leaves readable files and, at worst, temporary files that
:meth:`RunFolder.remove_partial_files` deletes when the run is resumed.

This module imports no TensorFlow: ``kerasdl train --resume RUN_DIR`` checks its arguments against
the run's recipe before TensorFlow loads.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kerasdl.errors import UserError
from kerasdl.io import TMP_MARK, write_json, write_text

# The only key a resume may change: more (or fewer) epochs than planned.
RESUMABLE_KEYS = ("training.epochs",)


CONFIG_FILE = "config.yaml"
SPEC_FILE = "preprocess.json"
MODEL_FILE = "best.keras"


@dataclass(frozen=True)
class RunFolder:
    """The paths of one run folder."""

    path: Path

    @property
    def config(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def preprocess(self) -> Path:
        return self.path / SPEC_FILE

    @property
    def run_info(self) -> Path:
        return self.path / "run_info.json"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def backup(self) -> Path:
        return self.path / "backup"

    @property
    def best(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def backbone(self) -> Path:
        """The pretrained backbone of a self-supervised run (its best by the monitor)."""
        return self.path / "backbone.keras"

    @property
    def history(self) -> Path:
        return self.path / "history.csv"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def finished(self) -> bool:
        return self.metrics.exists()

    def read_run_info(self) -> dict[str, Any]:
        """``run_info.json`` (empty when missing or unreadable)."""
        try:
            return json.loads(self.run_info.read_text())
        except (OSError, ValueError):
            return {}

    def remove_partial_files(self) -> list[str]:
        """Delete the temporary files an interrupted write left in the run folder (not in
        ``backup/``, whose leftovers :func:`kerasdl.training.callbacks.remove_partial_files`
        knows). Returns the names removed."""
        removed = []
        if not self.path.is_dir():
            return removed
        for entry in self.path.iterdir():
            if entry.is_file() and TMP_MARK in entry.name:
                entry.unlink(missing_ok=True)
                removed.append(entry.name)
        return sorted(removed)


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write JSON (indented, keys sorted) atomically: :func:`kerasdl.io.write_json`."""
    write_json(path, data, indent=2, sort_keys=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write text atomically: :func:`kerasdl.io.write_text`."""
    write_text(path, text)


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists are leaves)."""
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def differing_keys(saved: dict[str, Any], given: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two resolved recipes."""
    a, b = flatten(saved), flatten(given)
    return sorted(k for k in set(a) | set(b) if a.get(k, "<unset>") != b.get(k, "<unset>"))


def resume_recipe(
    run_dir: str | Path, given: Any | None = None, overrides: list[str] | None = None
) -> Any:
    """The recipe to continue ``run_dir`` with: the run's own ``config.yaml``.

    The epoch count is the one the run last planned (``run_info.json``: a resume may have
    extended it), unless ``given`` sets another.

    Args:
        run_dir: the run folder.
        given: a validated recipe the user passed too (a RECIPE argument and/or ``--set``
            overrides), compared with the run's; or None.
        overrides: ``--set`` assignments applied to the run's own recipe (when no RECIPE is
            given); the result is returned unchecked, for use as ``given``.

    Returns:
        The run's recipe (a ``RecipeConfig``), with ``training.epochs`` taken from ``given``.

    Raises:
        UserError: the folder is not a run, or ``given`` differs in anything but the epochs.
    """
    from kerasdl.config import validate_recipe

    folder = RunFolder(Path(run_dir))
    if not folder.path.is_dir():
        raise UserError(f"--resume: {folder.path} is not a folder")
    if not folder.config.is_file():
        raise UserError(f"--resume: {folder.path} has no config.yaml; it is not a run folder")
    try:
        saved = yaml.safe_load(folder.config.read_text())
    except yaml.YAMLError as err:
        raise UserError(f"--resume: {folder.config} is not valid YAML ({err})") from None
    from kerasdl.config import apply_override

    planned = folder.read_run_info().get("epochs")
    if isinstance(planned, int) and planned > 0 and isinstance(saved, dict):
        saved.setdefault("training", {})["epochs"] = planned
    if overrides:
        for assignment in overrides:
            apply_override(saved, assignment)
        return validate_recipe(saved)
    cfg = validate_recipe(saved)
    if given is None:
        return cfg
    diff = [k for k in differing_keys(cfg.to_dict(), given.to_dict()) if k not in RESUMABLE_KEYS]
    if diff:
        a, b = flatten(cfg.to_dict()), flatten(given.to_dict())
        shown = "; ".join(f"{k}: run {a.get(k)!r}, given {b.get(k)!r}" for k in diff[:6])
        more = f" (and {len(diff) - 6} more)" if len(diff) > 6 else ""
        raise UserError(
            f"--resume {folder.path}: the recipe given differs from the run's config.yaml in "
            f"{', '.join(diff)} ({shown}{more}). A resumed run continues its own recipe; only "
            f"{', '.join(RESUMABLE_KEYS)} may change. Run 'kerasdl train --resume "
            f"{folder.path}' alone, or start a new run without --resume"
        )
    if given.training.epochs == cfg.training.epochs:
        return cfg
    data = cfg.to_dict()
    data["training"]["epochs"] = given.training.epochs
    return validate_recipe(data)


def find_unfinished_run(cfg: Any) -> Path | None:
    """The newest unfinished run folder of this recipe: the same resolved config, no
    metrics.json, and no other process training in it (a folder killed before its first backup
    counts too: it is resumed from the start)."""
    parent = Path(cfg.run.output_dir) / cfg.run.name
    if not parent.is_dir():
        return None
    wanted = cfg.model_dump(mode="json")
    for run_dir in sorted((p for p in parent.iterdir() if p.is_dir()), reverse=True):
        folder = RunFolder(run_dir)
        if folder.finished or not folder.config.is_file() or RunLock.held(run_dir):
            continue
        try:
            saved = yaml.safe_load(folder.config.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if saved == wanted:
            return run_dir
    return None


def run_id(cfg: Any) -> str | None:
    """The fixed folder name of a run: ``run.id``, or for a multi-worker run (whose workers must
    agree on the folder) a hash of the resolved recipe; None means a timestamp."""
    if cfg.run.id:
        return cfg.run.id
    distribute = getattr(cfg, "distribute", None)
    if distribute is not None and distribute.strategy == "multi_worker":
        text = json.dumps(cfg.to_dict(), sort_keys=True)
        return "mw-" + hashlib.sha1(text.encode()).hexdigest()[:10]
    return None


def new_run_dir(cfg: Any) -> Path:
    """A fresh ``<output_dir>/<name>/<timestamp or id>`` path (not created)."""
    parent = Path(cfg.run.output_dir) / cfg.run.name
    fixed = run_id(cfg)
    if fixed is not None:
        if (parent / fixed / "metrics.json").exists():
            raise UserError(
                f"run folder {parent / fixed} already holds a finished run; "
                "set another run.id (or remove the folder)"
            )
        return parent / fixed
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = parent / stamp
    n = 1
    while run_dir.exists():
        run_dir = parent / f"{stamp}-{n}"
        n += 1
    return run_dir


def trim_history(path: str | Path, initial_epoch: int) -> None:
    """Drop the rows of ``history.csv`` from ``initial_epoch`` on (a resumed run redoes them).

    The row of an epoch is written before its backup (a crash between the two must not lose
    the row), so a crash after the row and before the backup leaves a row the resumed run writes
    again; a crash while the row was being written leaves part of it, dropped here too.
    """
    path = Path(path)
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)

    def before(line: str) -> bool:
        head = line.split(",", 1)[0].strip()
        return not head.isdigit() or int(head) < initial_epoch  # keep what is not a row

    kept = lines[:1] + [ln for ln in lines[1:] if before(ln)]
    if kept and not kept[-1].endswith("\n"):  # a row cut short by the crash
        kept = kept[:-1]
    if kept != lines:
        write_text_atomic(path, "".join(kept))


class RunLock:
    """An exclusive lock on a run folder while a process trains in it (``fcntl.flock`` on
    ``.lock``; the system releases it when the process ends, even by ``kill -9``)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock; False when another process holds it."""
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None

    @staticmethod
    def held(run_dir: str | Path) -> bool:
        """Whether another process holds the lock of ``run_dir``."""
        lock = RunLock(run_dir)
        if not lock.path.exists():
            return False
        if lock.acquire():
            lock.release()
            return False
        return True
