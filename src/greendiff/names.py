"""User-given names and file paths: checked before they become paths, quoted when they are shown.

A run, study or trial name becomes a folder (``runs/<stamp>-<name>``, ``runs/tune/<name>``) and a
line in the ledger, a terminal and later command lines. So a name is one path component that stays
where it was put and prints on one line: :func:`check_name` refuses path separators, ``.`` and
``..``, control characters (NUL, newlines, escape sequences, bidirectional overrides), characters
other than letters, digits, spaces and :data:`NAME_PUNCTUATION` (quotes, ``$``, ``;``, ``*``, ``:``
... break shells, TOML files and other file systems), leading or trailing spaces, a leading ``-`` (it
would read as an option) or ``.`` (a hidden folder), and names over :data:`MAX_NAME_CHARS`
characters, with a one-line error, before anything is created.

:func:`display_path` is how every message names a user's file: as typed when it is plain, quoted
with escapes (``'bad\\nname.png'``) when it holds anything that would break the one-line message.

>>> check_name("green-nano_2", "run name")
'green-nano_2'
>>> check_name("../escaped", "run name")
Traceback (most recent call last):
...
greendiff.errors.UserInputError: run name '../escaped' is not a usable name: it contains '/'; use one folder name: letters, digits, spaces and - _ . + @ = , ( ) [ ] #
>>> display_path("data/cat.png"), display_path("data/bad\\nname.png")
('data/cat.png', "'data/bad\\\\nname.png'")
"""

from __future__ import annotations

import os
import reprlib
import unicodedata

from greendiff.errors import UserInputError

#: The characters a folder name may hold besides letters and digits (any script).
NAME_PUNCTUATION = " -_.+@=,()[]#"
#: Longest name accepted (a run directory adds a 16-character time stamp; file systems allow 255 bytes).
MAX_NAME_CHARS = 100
#: Unicode categories that do not print as themselves: control (NUL, newline, ESC), format
#: (bidirectional overrides, zero-width characters), line/paragraph separators, surrogates
#: (undecodable bytes), private use and unassigned.
_UNPRINTABLE = {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"}
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 80
_SHORT.maxlevel = 3


def unprintable(text: str) -> str | None:
    """The first character of ``text`` that does not print as itself (escaped), or None."""
    return next((_escaped(char) for char in text if unicodedata.category(char) in _UNPRINTABLE), None)


def _problem(value: str, path: bool) -> str | None:
    if not value:
        return "it is empty"
    if len(value) > MAX_NAME_CHARS:
        return f"it is {len(value):,} characters long; at most {MAX_NAME_CHARS}"
    bad = unprintable(value)
    if bad is not None:
        return f"it contains the unprintable character {bad}"
    if value != value.strip():
        return "it begins or ends with a space"
    if not path:
        return None
    for sep in ("/", "\\"):
        if sep in value:
            return f"it contains {sep!r}"
    odd = next((c for c in value if not (c.isalnum() or c in NAME_PUNCTUATION)), None)
    if odd is not None:  # quotes, $, ;, |, *, ?, <, >, : ... break shells, TOML files and other systems
        return f"it contains {odd!r}"
    if value in (".", ".."):
        return "it names a folder ('.' or '..')"
    if value.startswith("-"):
        return "it begins with '-' (it would read as an option)"
    if value.startswith("."):
        return "it begins with '.' (a hidden folder)"
    return None


def check_name(value: object, what: str, *, path: bool = True) -> str:
    """``value`` if it is a usable name, else a one-line :class:`UserInputError` naming ``what``.

    Args:
        value: The name as the user gave it (flag, config key, storage).
        what: How the message calls it, e.g. ``"--name"`` or ``"run.name"``.
        path: The name becomes a folder (run, study): also no separators, no ``.``/``..``, no leading
            ``-`` or ``.``. With ``False`` (a label only kept in the ledger, e.g. ``measure --name``)
            only the printing rules apply.
    """
    if not isinstance(value, str):
        raise UserInputError(f"{what} must be a string, got {shown(value)}")
    problem = _problem(value, path)
    if problem is not None:
        hint = f"; use one folder name: letters, digits, spaces and {' '.join(NAME_PUNCTUATION.strip())}" if path else ""
        raise UserInputError(f"{what} {shown(value)} is not a usable name: {problem}{hint}")
    return value


def display_path(path: object) -> str:
    """A user's file or folder as a message names it: as is when it prints on one line as itself,
    else quoted with escapes (newlines, control characters, undecodable bytes, outer spaces)."""
    text = os.fsdecode(path) if isinstance(path, (bytes, os.PathLike)) else str(path)
    if text and unprintable(text) is None and text == text.strip() and not text.startswith("'"):
        return text
    return repr(text)


def _escaped(char: str) -> str:
    if unicodedata.category(char) not in _UNPRINTABLE:
        return char
    return repr(char)[1:-1] if char.isascii() else f"\\u{ord(char):04x}"


def one_line(text: object, limit: int = 200) -> str:
    """``text`` (a message from a library, a value from a file) as one line for a message or a terminal:
    its first non-blank line (the rest is detail), characters that do not print as themselves escaped
    (``\\x1b``, ``\\u202e``), at most ``limit`` characters. ``""`` when there is no text.

    >>> one_line("bad value\\n  at line 3"), one_line("\\x1b[31mred"), one_line(""), one_line("ab" * 10, 9)
    ('bad value', '\\\\x1b[31mred', '', 'ababab...')
    """
    line = next((part.strip() for part in str(text).splitlines() if part.strip()), "")
    shown_line = "".join(map(_escaped, line))
    return shown_line if len(shown_line) <= limit else shown_line[:limit - 3] + "..."


def first_line(exc: BaseException, limit: int = 200) -> str:
    """What an exception says, as :func:`one_line`; its class name when its message is empty
    (``str(exc).splitlines()[0]`` raised IndexError there)."""
    return one_line(str(exc), limit) or type(exc).__name__


def shown(value: object) -> str:
    """``repr(value)`` for a message: control characters escaped, long values and deep nesting cut
    short (``'aaaa...aaa'``, ``[[[...]]]``), so it is always one short line."""
    try:
        return _SHORT.repr(value)
    except RecursionError:  # pragma: no cover - reprlib limits the depth itself
        return f"<{type(value).__name__}>"


def check_tracking_uri(uri: str, what: str = "run.mlflow_uri") -> str:
    """``uri`` if it can be stored and shown: a tracking URI is written into ``config.toml``, the ledger,
    the MLflow run's parameters and ``--dry-run``'s output, so credentials (``https://user:pass@host``)
    are refused with a one-line error that never repeats them; MLflow reads them from its own
    environment variables instead."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(uri)
    except ValueError as exc:  # an unbalanced '[' in the host
        raise UserInputError(f"{what} is not a valid URI ({first_line(exc)})") from None
    if "@" in parts.netloc:
        host = parts.netloc.rpartition("@")[2]
        raise UserInputError(f"{what} holds credentials ({parts.scheme}://***@{one_line(host, 80)}): a URI is saved in "
                             "config.toml and the ledger; remove them and set MLFLOW_TRACKING_USERNAME and "
                             "MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) in the environment instead")
    return uri
