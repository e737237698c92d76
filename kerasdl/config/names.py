"""The one rule for names that become a folder (and a URL path): ``run.name``, ``run.id`` and
``kerasdl export --name``.

Pure Python (no TensorFlow), so the recipe schema checks a run's name before any work: a name is
one path component of letters, digits, ``_``, ``.`` and ``-``, starting with a letter or digit
(no ``..``, no ``/``, not empty).
"""

from __future__ import annotations

import re

from kerasdl.errors import UserError

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def valid_name(name: object) -> bool:
    """Whether ``name`` is one path component by the rule of :data:`NAME_RE` (whole string)."""
    return isinstance(name, str) and NAME_RE.fullmatch(name) is not None


def check_name(name: str, what: str = "model name") -> str:
    """``name`` if :func:`valid_name`, else a :class:`UserError` naming it (``what``: what it
    names, as in ``Invalid model name '../x': ...``)."""
    if not valid_name(name):
        raise UserError(
            f"Invalid {what} {name!r}: use letters, digits, '_', '.' and '-' "
            "(starting with a letter or digit)."
        )
    return name
