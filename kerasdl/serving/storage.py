"""Version folders on disk (TF Serving's file-system storage path source, its folder side).

A version is an integer-named folder under a model's base path holding ``saved_model.pb`` (or
``saved_model.pbtxt``); other folders, e.g. an export's ``.tmp-*``, are not versions.
"""

from __future__ import annotations

import os
from pathlib import Path

from kerasdl.export.layout import version_folders


def complete_versions(model_dir: Path) -> dict[int, Path] | None:
    """Version -> folder, for the version folders holding a ``saved_model.pb``.

    A folder's version is read as TF Serving reads it (``0006`` is version 6, loaded from
    ``0006``; :func:`kerasdl.export.layout.version_number`). None when ``model_dir`` is missing.
    """
    try:
        os.listdir(model_dir)
    except OSError:  # missing, or not readable: the same to a server
        return None
    out = {}
    for version, p in version_folders(model_dir).items():
        if (p / "saved_model.pb").is_file() or (p / "saved_model.pbtxt").is_file():
            out[version] = p
    return out


def fingerprint(path: Path) -> tuple:
    """Names, sizes and modification times of every file under ``path`` (empty if missing)."""
    out = []
    for root, _, files in os.walk(path):
        for f in files:
            try:
                st = os.stat(os.path.join(root, f))
            except OSError:
                continue
            out.append((os.path.relpath(os.path.join(root, f), path), st.st_size, st.st_mtime_ns))
    return tuple(sorted(out))
