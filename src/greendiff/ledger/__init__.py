"""The ledger of tracked runs (SQLite) and its exports.

Example:
    >>> from greendiff.ledger import Ledger, default_ledger_path
    >>> default_ledger_path({"GREENDIFF_LEDGER": "/tmp/x.sqlite"}).name
    'x.sqlite'
"""

from __future__ import annotations

from greendiff.ledger._db import (
    ENV_LEDGER,
    SCHEMA_VERSION,
    Ledger,
    RunRecord,
    Sample,
    WindowTotal,
    default_ledger_path,
    process_alive,
)
from greendiff.ledger._export import (
    CODECARBON_COLUMNS, codecarbon_csv, codecarbon_row, flat_csv, flat_row, json_summary, model_card_yaml,
)

__all__ = ["CODECARBON_COLUMNS", "codecarbon_csv", "codecarbon_row", "flat_csv", "flat_row", "json_summary", "model_card_yaml",
           "ENV_LEDGER", "SCHEMA_VERSION", "Ledger", "RunRecord", "Sample", "WindowTotal", "default_ledger_path", "process_alive"]
