"""Tracking: energy windows + ledger + carbon pricing around any piece of work.

Example:
    >>> import tempfile, pathlib
    >>> from greendiff.tracking import Tracker
    >>> from greendiff.energy import MonitorOptions
    >>> with Tracker("doc", ledger=pathlib.Path(tempfile.mkdtemp()) / "l.sqlite",
    ...              monitor_options=MonitorOptions(measure_gpus=False)) as t:
    ...     with t.window("work"):
    ...         _ = sum(range(100_000))
    >>> t.summary["status"], t.summary["phases"][0]["name"]
    ('completed', 'work')
"""

from __future__ import annotations

from greendiff.tracking._job import JobTracker, breakdown
from greendiff.tracking._summary import summarize
from greendiff.tracking._tracker import Tracker, assumptions_for, provider_from_assumptions, run_summary

__all__ = ["JobTracker", "Tracker", "assumptions_for", "breakdown", "provider_from_assumptions", "run_summary", "summarize"]
