"""Atomic file writes: the one owner of write-then-rename (no TensorFlow, nothing heavy).

Every file kerasdl writes (run-folder files, plots, checkpoints, reports, genotypes) is written
whole or not at all: the content goes to a temporary file in the same folder, is flushed and
``fsync``-ed, and is renamed onto the final name with ``os.replace`` (atomic on POSIX and Windows
within one file system). A reader sees the old file or the new one, never a half-written one. If
the write fails, the temporary file is removed and the old file is left as it was; a process
killed mid-write can leave a temporary file, whose name starts with ``.`` and contains ``.tmp``
(``.metrics.json.3f9a1c2e.tmp``), which :meth:`kerasdl.runfolder.RunFolder.remove_partial_files`
recognises and deletes when a run resumes.

Folders that must appear whole (an exported SavedModel version) are staged and renamed by their
owner (:func:`kerasdl.export.layout.atomic_version_dir`); this module handles single files.

Example:
    >>> from kerasdl.io import write_json, save_figure
    >>> write_json("runs/x/metrics.json", {"accuracy": 0.98})
    >>> save_figure(fig, "runs/x/confusion_test.png", dpi=100)
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TMP_MARK = ".tmp"  # in the name of every temporary file (what a clean-up looks for)


def temporary_name(path: str | Path, suffix: str = "") -> Path:
    """A fresh hidden name beside ``path``: ``.<name>.<random>.tmp<suffix>``.

    ``suffix`` keeps what a writer needs at the end of the name (``.keras`` for Keras, ``.png``
    for matplotlib's format detection).
    """
    path = Path(path)
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}{TMP_MARK}{suffix}")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_output_file(path: str | Path, option: str = "--out", make_parents: bool = False) -> Path:
    """The file a command will write, checked before its work: not itself a folder, and in an
    existing folder, or (``make_parents``) in one the command makes, under no file (else
    :class:`~kerasdl.errors.UserError` naming ``option``)."""
    from kerasdl.errors import UserError

    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} {path}: is a folder; expected a file name")
    if make_parents:
        check_output_dir(path.parent, option)
    elif not path.parent.is_dir():
        what = "is a file, not a folder" if path.parent.exists() else "does not exist"
        raise UserError(f"{option} {path}: folder {path.parent} {what}")
    return path


def check_output_dir(path: str | Path, option: str = "--out") -> Path:
    """The folder a command will write into (made if missing), checked before its work: neither
    it nor a folder above it may be an existing file (else :class:`~kerasdl.errors.UserError`)."""
    from kerasdl.errors import UserError

    path = Path(path)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                where = "is a file" if p == path else f"is under {p}, which is a file"
                raise UserError(f"{option} {path}: {where}; expected a folder")
            break
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; write it, and it replaces ``path`` on success.

    On leaving the block the temporary file is flushed to disk and renamed onto ``path``; on an
    exception it is removed (``path`` is left untouched) and the exception propagates.

    Args:
        path: the final file.
        suffix: kept at the end of the temporary name (see :func:`temporary_name`).

    Example:
        >>> with atomic_path("table.npz", suffix=".npz") as tmp:
        ...     np.savez(tmp, x=x)
    """
    path = Path(path)
    if path.is_dir():  # os.replace cannot put a file there: say so before the write
        from kerasdl.errors import UserError

        raise UserError(f"Cannot write {path}: it is a folder")
    tmp = temporary_name(path, suffix)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "xb") as f:
        f.write(data)


def write_text(
    path: str | Path, text: str, *, encoding: str = "utf-8", newline: str | None = None
) -> None:
    """Write ``text`` to ``path`` atomically (``newline`` as for :func:`open`)."""
    with atomic_path(path) as tmp, open(tmp, "x", encoding=encoding, newline=newline) as f:
        f.write(text)


def write_json(
    path: str | Path,
    data: Any,
    *,
    indent: int | None = 2,
    sort_keys: bool = False,
    end: str = "",
    default: Any = None,
) -> None:
    """Write ``data`` as JSON atomically (``json.dumps(data, indent, sort_keys) + end``)."""
    text = json.dumps(data, indent=indent, sort_keys=sort_keys, default=default)
    write_text(path, text + end)


def write_yaml(path: str | Path, data: Any, *, sort_keys: bool = False) -> None:
    """Write ``data`` as YAML atomically (``yaml.safe_dump``; keys in their order by default)."""
    import yaml

    write_text(path, yaml.safe_dump(data, sort_keys=sort_keys))


def copy_file(src: str | Path, dst: str | Path) -> None:
    """Copy the content of ``src`` to ``dst`` atomically (``dst`` is never half a copy)."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def save_figure(
    fig: Any, path: str | Path, *, dpi: int = 110, format: str | None = None, close: bool = True
) -> None:
    """Save a matplotlib figure atomically, then close it (unless ``close`` is False).

    The format is ``format``, else the extension of ``path`` (``.png``, ``.svg``, ``.pdf``, ...).
    """
    path = Path(path)
    try:
        with atomic_path(path, suffix=path.suffix) as tmp:
            fig.savefig(tmp, dpi=dpi, format=format)
    finally:
        if close:
            plt = sys.modules.get("matplotlib.pyplot")  # a figure pyplot never saw needs no close
            if plt is not None:
                plt.close(fig)


def save_model(model: Any, path: str | Path) -> None:
    """``model.save(path)`` atomically (Keras ``.keras``; ``.weights.h5`` saves the weights)."""
    path = Path(path)
    if path.name.endswith(".weights.h5"):
        with atomic_path(path, suffix=".weights.h5") as tmp:
            model.save_weights(tmp)
        return
    with atomic_path(path, suffix=path.suffix) as tmp:
        model.save(tmp)


__all__ = [
    "TMP_MARK",
    "atomic_path",
    "copy_file",
    "save_figure",
    "save_model",
    "temporary_name",
    "write_bytes",
    "write_json",
    "write_text",
    "write_yaml",
]
