"""The ledger of tracked runs (SQLite) and its exports.

Example:
    >>> from greendiff.ledger import Ledger, default_ledger_path
    >>> default_ledger_path({"GREENDIFF_LEDGER": "/tmp/x.sqlite"}).name
    'x.sqlite'
"""

from __future__ import annotations

from greendiff.ledger._db import ENV_LEDGER, MAX_RUN_ID, SCHEMA_VERSION, Ledger, default_ledger_path, process_alive
from greendiff.ledger._records import (
    BadRecordError, RunRecord, Sample, WindowTotal, is_number, load_json_file, parse_carbon_aware, parse_run, parse_sample,
    parse_summary, parse_window,
)
from greendiff.ledger._export import (
    CODECARBON_COLUMNS, codecarbon_csv, codecarbon_row, flat_csv, flat_row, json_summary, model_card_yaml,
)

__all__ = ["CODECARBON_COLUMNS", "codecarbon_csv", "codecarbon_row", "flat_csv", "flat_row", "json_summary", "model_card_yaml",
           "ENV_LEDGER", "MAX_RUN_ID", "SCHEMA_VERSION", "Ledger", "RunRecord", "Sample", "WindowTotal", "default_ledger_path",
           "process_alive", "BadRecordError", "is_number", "load_json_file", "parse_carbon_aware", "parse_run", "parse_sample", "parse_summary", "parse_window"]
