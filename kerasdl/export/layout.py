"""TF Serving's model layout, ``<base>/<name>/<integer version>/``, written atomically.

A version is written into a hidden temporary folder in the same parent (``.tmp-<version>-...``)
and renamed into place only when complete, so a crash never leaves a half version: a server (TF
Serving's or kerasdl's) only considers folders whose name is an integer. (Single files are written
atomically by :mod:`kerasdl.io`; a version is a folder, so it is staged and renamed here.)
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from kerasdl.errors import UserError

TMP_PREFIX = ".tmp-"


_INT64_MAX = 2**63 - 1


def version_number(name: str) -> int | None:
    """The version a folder named ``name`` stands for, or None when it is not a version.

    As TF Serving reads it (``absl::SimpleAtoi`` into an int64): ``6`` and ``0006`` are both
    version 6. Only ASCII digits count (a folder such as ``.tmp-6-...`` or ``²`` is no version).
    """
    if not name.isascii() or not name.isdigit():
        return None
    number = int(name)
    return number if number <= _INT64_MAX else None


def version_folders(model_dir: str | Path) -> dict[int, Path]:
    """Version -> its folder under ``model_dir``, for every integer-named folder.

    Two folders of one number (``6`` and ``0006``) hold one version: the folder spelt as the
    number is used, else the first by name (TF Serving also keeps one, with a warning).
    """
    model_dir = Path(model_dir)
    try:
        children = sorted(model_dir.iterdir())
    except OSError:
        return {}
    out: dict[int, Path] = {}
    for p in children:
        number = version_number(p.name)
        if number is None or not p.is_dir():
            continue
        if number not in out or p.name == str(number):
            out[number] = p
    return out


def list_versions(model_dir: str | Path) -> list[int]:
    """The versions under ``model_dir`` (integer-named folders), ascending."""
    return sorted(version_folders(model_dir))


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
    taken = version_folders(model_dir).get(version)
    if taken is not None or (model_dir / str(version)).exists():
        raise UserError(f"Version {version} already exists: {taken or model_dir / str(version)}.")
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
    taken = version_folders(model_dir).get(version)
    if taken is not None or final.exists():
        raise UserError(
            f"Version {version} already exists: {taken or final} (versions are immutable)."
        )
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = _staging_dir(model_dir, version)
    try:
        yield tmp
        taken = version_folders(model_dir).get(version)
        if taken is not None or final.exists():
            raise UserError(f"Version {version} appeared while exporting: {taken or final}")
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _staging_dir(model_dir: Path, version: int) -> Path:
    """A new hidden folder for the version being written, with the umask's permissions.

    Not ``tempfile.mkdtemp``: its folders are private (0700) and the rename keeps that, so a
    server running as another user (TF Serving's or kerasdl's) could not read the version.
    """
    for _ in range(100):
        path = model_dir / f"{TMP_PREFIX}{version}-{secrets.token_hex(4)}"
        try:
            path.mkdir(mode=0o777)  # less the umask, as every other folder of the export
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"No free staging folder name in {model_dir}")
