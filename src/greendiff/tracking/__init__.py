"""Tracking: energy windows + ledger + carbon pricing around any piece of work.

Example:
    >>> import tempfile, pathlib
    >>> from greendiff.tracking import Tracker
    >>> from greendiff.energy import MonitorOptions
    >>> with Tracker("doc", ledger=pathlib.Path(tempfile.mkdtemp()) / "l.sqlite",
    ...              monitor_options=MonitorOptions(measure_gpus=False)) as t:
    ...     with t.window("work"):
    ...         _ = sum(range(100_000))
    >>> t.summary.status, t.summary.phases[0].name
    ('completed', 'work')
"""

from __future__ import annotations

from greendiff.tracking._job import JobTracker, breakdown
from greendiff.tracking._command import CommandError, CommandResult, check_command, run_command
from greendiff.tracking._pricing import (
    FallbackProvider, RunPricing, provider_from_assumptions, run_pricing, run_summary, static_provider,
)
from greendiff.tracking._run_summary import DeviceEnergy, IntensityUsed, PhaseEnergy, PueUsed, RunSummary, public_json
from greendiff.tracking._segments import RESUMED_SUFFIX, combine_segments, run_name
from greendiff.tracking._summary import FallbackIntensity, summarize
from greendiff.tracking._tracker import Tracker, assumptions_for

__all__ = ["CommandError", "CommandResult", "DeviceEnergy", "FallbackIntensity", "FallbackProvider", "IntensityUsed",
           "JobTracker", "PhaseEnergy", "PueUsed", "RESUMED_SUFFIX", "RunPricing", "RunSummary", "Tracker",
           "assumptions_for", "breakdown", "check_command", "combine_segments", "provider_from_assumptions",
           "public_json", "run_command", "run_name", "run_pricing", "run_summary", "static_provider", "summarize"]
