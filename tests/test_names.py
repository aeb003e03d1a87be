"""Names and messages (``greendiff.names``): one line from any text."""

from __future__ import annotations

import pytest

from greendiff.names import first_line, one_line


@pytest.mark.parametrize(("text", "shown"), [
    ("plain message", "plain message"),
    ("first\nsecond\nthird", "first"),  # the rest is detail (a traceback's frames, a library's hints)
    ("\n\n  \nafter blank lines\n", "after blank lines"),
    ("carriage\rreturn", "carriage"),
    ("escape \x1b[2J here", "escape \\x1b[2J here"),
    ("bidi \u202eevil", "bidi \\u202eevil"),
    ("nul\x00byte", "nul\\x00byte"),
    ("", ""),
    ("\n", ""),
    ("x" * 500, "x" * 197 + "..."),
])
def test_one_line_is_the_first_line_escaped_and_cut(text, shown):
    assert one_line(text) == shown


def test_first_line_of_an_exception_never_fails():
    """str(exc).splitlines()[0] raised IndexError for an exception without a message."""
    assert first_line(ValueError()) == "ValueError"
    assert first_line(OSError("\n")) == "OSError"
    assert first_line(RuntimeError("boom\n  at frame 2")) == "boom"
    assert first_line(KeyError("k")) == "'k'"
    assert first_line(ValueError("y" * 100), limit=10) == "yyyyyyy..."
