"""The ledger of tracked runs: one SQLite file (:func:`default_ledger_path`, or ``GREENDIFF_LEDGER``) holding
every run's devices, assumptions, periodic energy samples, phase windows and summary, written safely by
several processes at once; and its exports other tools read (CodeCarbon's ``emissions.csv``, Hugging Face
model-card metadata, a flat CSV) with the words they use (hardware, the intensity's citation; places are
:func:`greendiff.carbon.place_name`'s).

Example:
    >>> import pathlib, tempfile
    >>> from greendiff.ledger import Ledger
    >>> ledger = Ledger(pathlib.Path(tempfile.mkdtemp()) / "ledger.sqlite")
    >>> run_id = ledger.start_run("demo", "library", "", {}, [])
    >>> ledger.add_sample(run_id, 1.0, 0.5, {"cpu:process-tree": 2.0})
    >>> ledger.finish_run(run_id, "completed", {"energy_j": 2.0})
    >>> [(run.name, run.status) for run in ledger.list_runs()]
    [('demo', 'completed')]
"""

from __future__ import annotations

from greendiff.ledger._db import MAX_RUN_ID, Ledger, default_ledger_path, process_alive
from greendiff.ledger._export import (
    CODECARBON_COLUMNS, CODECARBON_TIME_FORMAT, TRAINING_TYPES, append_codecarbon_csv, codecarbon_csv, flat_csv,
    METHOD_WORDS, hardware_text, intensity_citation, methods_text, model_card_data, model_card_markdown, model_card_yaml,
    without_cli_hints,
)
from greendiff.ledger._records import (
    BadRecordError, RunRecord, Sample, WindowTotal, is_number, load_json_file, parse_carbon_aware, parse_summary,
)

__all__ = [
    # the store and its rows
    "Ledger", "RunRecord", "Sample", "WindowTotal", "default_ledger_path", "process_alive", "MAX_RUN_ID",
    # reading stored records back, checked
    "BadRecordError", "is_number", "load_json_file", "parse_carbon_aware", "parse_summary",
    # exports, and the words they use for hardware and for the intensity's source
    "CODECARBON_COLUMNS", "CODECARBON_TIME_FORMAT", "TRAINING_TYPES", "append_codecarbon_csv", "codecarbon_csv",
    "flat_csv", "model_card_data", "model_card_yaml", "hardware_text", "intensity_citation", "without_cli_hints",
    "METHOD_WORDS", "methods_text", "model_card_markdown",
]
