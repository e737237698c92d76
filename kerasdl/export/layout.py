"""TF Serving's model layout, ``<base>/<name>/<integer version>/``, written atomically.

A version is written into a hidden temporary folder in the same parent (``.tmp-<version>-...``)
and renamed into place only when complete, so a crash never leaves a half version: a server (TF
Serving's or kerasdl's) only considers folders whose name is an integer. (Single files are written
atomically by :mod:`kerasdl.io`; a version is a folder, so it is staged and renamed here.)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from kerasdl.errors import UserError

TMP_PREFIX = ".tmp-"


def list_versions(model_dir: str | Path) -> list[int]:
    """The complete versions under ``model_dir`` (integer-named folders), ascending."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def next_version(model_dir: str | Path) -> int:
    """One more than the highest existing version (1 for a new model)."""
    versions = list_versions(model_dir)
    return versions[-1] + 1 if versions else 1


def free_version(model_dir: str | Path, version: int | None) -> int:
    """The version to write: ``version`` if given and free, else the next free integer.

    Raises:
        UserError: ``version`` is not positive or already exists (versions are immutable).
    """
    model_dir = Path(model_dir)
    version = next_version(model_dir) if version is None else int(version)
    if version < 1:
        raise UserError(f"--version must be a positive integer. Received: {version}")
    if (model_dir / str(version)).exists():
        raise UserError(f"Version {version} already exists: {model_dir / str(version)}.")
    return version


@contextlib.contextmanager
def atomic_version_dir(model_dir: str | Path, version: int) -> Iterator[Path]:
    """Yield a temporary folder; on success rename it to ``model_dir/version``.

    On any exception the temporary folder is removed and the version does not appear.

    Example:
        >>> with atomic_version_dir("saved_models/digits", 3) as tmp:
        ...     write_saved_model(tmp)
    """
    model_dir = Path(model_dir)
    if version < 1:
        raise UserError(f"--version must be a positive integer. Received: {version}")
    final = model_dir / str(version)
    if final.exists():
        raise UserError(f"Version {version} already exists: {final} (versions are immutable).")
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{version}-", dir=model_dir))
    try:
        yield tmp
        if final.exists():
            raise UserError(f"Version {version} appeared while exporting: {final}")
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
