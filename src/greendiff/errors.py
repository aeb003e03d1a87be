"""User-facing errors.

A :class:`UserInputError` is a mistake the user can fix (a bad flag, an unknown region, an
unwritable path). The CLI prints its message on one line and exits with code 2; library callers
get an ordinary exception with the same message.
"""

from __future__ import annotations


class UserInputError(ValueError):
    """Bad input from the user: one actionable line, no traceback, exit code 2 in the CLI."""
