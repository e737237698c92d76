"""The one exception type for mistakes a user can make (bad recipe, missing data, unknown name).

The CLI turns a :class:`UserError` into one line on stderr and exit status 2; library users get a
normal exception with the same message.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(ValueError):
    """A mistake in the user's input: the message names the problem and the accepted values."""


def suggest(given: object, accepted: Iterable[str]) -> str:
    """The tail of an unknown-name message: ``" Did you mean 'y'? Expected one of: a, b."`` (the
    question only when a close match exists; ``accepted`` listed in the order given)."""
    names = [str(a) for a in accepted]
    close = difflib.get_close_matches(str(given), names, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"{hint} Expected one of: {', '.join(names)}."


class UnknownArgumentError(UserError, TypeError):
    """A keyword argument the callee does not take (a ``TypeError`` too, as Python would raise).

    The message names the keyword, suggests the closest accepted one and lists them all.
    """
