"""Command-line interface: parse and validate, then call the library."""

from __future__ import annotations

import sys

from greendiff.cli._app import app, main as _main

__all__ = ["app", "main"]


def main() -> None:
    sys.exit(_main())
