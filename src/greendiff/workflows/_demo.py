"""The demo: a short built-in CPU workload measured under one ledger run, and the same energy priced at other
places (:data:`COMPARE`) to show how much the grid matters.

Example:
    >>> from greendiff.workflows import DemoJob, MeasurementOptions, run_demo
    >>> outcome = run_demo(DemoJob(seconds=1.0, measurement=MeasurementOptions(no_gpu=True)))  # doctest: +SKIP
    >>> [row.label for row in outcome.comparison][:2]  # doctest: +SKIP
    ['France (yearly)', 'Germany (yearly)']
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from greendiff.carbon import Location, Pue, resolve_provider
from greendiff.errors import UserInputError
from greendiff.tracking import RunSummary, summarize
from greendiff.workflows._measurement import MeasurementOptions, resolve_settings
from greendiff.workflows._progress import NullProgress, Progress, check_progress

#: Locations the demo prices the same energy at, to show how much the grid matters.
COMPARE = (("France (yearly)", Location(country="FRA")), ("Germany (yearly)", Location(country="DEU")),
           ("India (yearly)", Location(country="IND")), ("gcp:europe-north1 (2024)", Location(cloud="gcp:europe-north1")),
           ("California CISO (hourly 2022)", Location(grid="CISO")), ("world average", Location()))


def cpu_workload_step(size: int = 256) -> float:
    """One step of the built-in workload: a float32 matrix product chain on the CPU (torch)."""
    import torch

    a = torch.randn(size, size)
    for _ in range(8):
        a = torch.tanh(a @ a / size)
    return float(a.sum())


@dataclass(frozen=True)
class DemoJob:
    """Args:
        seconds: how long to run the workload, in (0, 3600].
        measurement: where and how it is measured, and its ledger.
    """

    seconds: float = 5.0
    measurement: MeasurementOptions = field(default_factory=MeasurementOptions)


@dataclass(frozen=True)
class WorkloadStep:
    """The demo's workload finished its ``step``-th step (a progress event; the bar's total is unknown)."""

    step: int


@dataclass(frozen=True)
class LocationCost:
    """The demo's energy priced at one place (PUE 1.0): its mean intensity (g/kWh) and emissions (kg)."""

    label: str
    intensity_g_per_kwh: float
    emissions_kg: float


@dataclass(frozen=True)
class DemoOutcome:
    """The run's ``summary``, the workload ``steps`` done, the same energy at each of :data:`COMPARE`, and the
    ledger run (``run_id`` in ``ledger_path``)."""

    summary: RunSummary
    steps: int
    comparison: tuple[LocationCost, ...]
    run_id: int
    ledger_path: Path


def run_demo(job: DemoJob, progress: Progress | None = None) -> DemoOutcome:
    """Run the workload for ``job.seconds`` under a tracker (a ``step`` window each), then price its energy at
    each of :data:`COMPARE` by the ledger's own accounting (:func:`greendiff.tracking.summarize`)."""
    progress = check_progress(progress) if progress is not None else NullProgress()
    if not 0 < job.seconds <= 3600:
        raise UserInputError(f"--seconds must be in (0, 3600], got {job.seconds}")
    settings = resolve_settings(job.measurement)
    tracker = settings.tracker("demo-cpu-workload", "demo", f"greendiff demo --seconds {job.seconds:g}",
                               sample_interval_s=1.0)
    steps = 0
    with tracker:
        progress.on_start("workload", 0)
        try:
            deadline = time.monotonic() + job.seconds
            while time.monotonic() < deadline:
                with tracker.window("step"):
                    cpu_workload_step()
                steps += 1
                progress.on_log(WorkloadStep(steps))
        finally:
            progress.on_end()
    ledger, run_id = tracker.ledger, tracker.run_id
    record, samples, windows = ledger.get_run(run_id), ledger.samples(run_id), ledger.windows(run_id)
    comparison = []
    for label, location in COMPARE:
        s = summarize(record, samples, windows, resolve_provider(location), Pue(1.0, "demo comparison"))
        comparison.append(LocationCost(label, s.intensity.mean_g_per_kwh, s.emissions_kg))
    return DemoOutcome(tracker.summary, steps, tuple(comparison), run_id, ledger.path)
