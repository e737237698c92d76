"""The one exception type for mistakes a user can make (bad recipe, missing data, unknown name).

The CLI turns a :class:`UserError` into one line on stderr and exit status 2; library users get a
normal exception with the same message.
"""

from __future__ import annotations


class UserError(ValueError):
    """A mistake in the user's input: the message names the problem and the accepted values."""


class UnknownArgumentError(UserError, TypeError):
    """A keyword argument the callee does not take (a ``TypeError`` too, as Python would raise).

    The message names the keyword, suggests the closest accepted one and lists them all.
    """
