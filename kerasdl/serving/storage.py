"""Version folders on disk (TF Serving's file-system storage path source, its folder side).

A version is an integer-named folder under a model's base path holding ``saved_model.pb`` (or
``saved_model.pbtxt``); other folders, e.g. an export's ``.tmp-*``, are not versions.
"""

from __future__ import annotations

import os
from pathlib import Path


def complete_versions(model_dir: Path) -> list[int] | None:
    """The version folders holding a ``saved_model.pb``; None when ``model_dir`` is missing."""
    try:
        children = list(model_dir.iterdir())
    except OSError:
        return None
    out = []
    for p in children:
        if p.name.isdigit() and p.is_dir():
            if (p / "saved_model.pb").is_file() or (p / "saved_model.pbtxt").is_file():
                out.append(int(p.name))
    return sorted(out)


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
