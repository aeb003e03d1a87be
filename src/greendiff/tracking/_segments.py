"""One summary for a run in several segments (a run resumed after an interruption: one ledger run per segment).

Pure: the segments' :class:`RunSummary` objects come in, oldest first; the whole run's comes out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from greendiff.tracking._run_summary import DeviceEnergy, PhaseEnergy, RunSummary

#: The name suffix of a resumed segment's ledger run (``greendiff train --resume``).
RESUMED_SUFFIX = " (resumed)"
#: ``extra`` keys of a segment that do not describe the whole run (the energy before the last segment).
_SEGMENT_ONLY = ("prior_energy_kwh",)
_SUMMED = ("duration_s", "cpu_time_s", "energy_j", "energy_kwh", "energy_kwh_low", "energy_kwh_high", "emissions_kg",
           "emissions_kg_low", "emissions_kg_high")


def run_name(name: str) -> str:
    """A segment's ledger name without the resumed marker: the run's own name."""
    return name[:-len(RESUMED_SUFFIX)] if name.endswith(RESUMED_SUFFIX) else name


def _unique(items) -> tuple:
    return tuple(dict.fromkeys(items))


def _devices(segments: Sequence[RunSummary]) -> tuple[DeviceEnergy, ...]:
    """Devices summed by key (energy, emissions); what a device is comes from its last segment."""
    by_key: dict[str, DeviceEnergy] = {}
    for s in segments:
        for d in s.devices:
            seen = by_key.get(d.key)
            by_key[d.key] = d if seen is None else dataclasses.replace(
                d, energy_j=seen.energy_j + d.energy_j, energy_kwh=seen.energy_kwh + d.energy_kwh,
                emissions_g=seen.emissions_g + d.emissions_g)
    return tuple(by_key.values())


def _phases(segments: Sequence[RunSummary]) -> tuple[PhaseEnergy, ...]:
    """Phases summed by name (windows, seconds, joules per device, grams), in order of first appearance."""
    by_name: dict[str, PhaseEnergy] = {}
    for s in segments:
        for p in s.phases:
            seen = by_name.get(p.name)
            if seen is None:
                by_name[p.name] = p
                continue
            by_device = None
            if seen.energy_by_device_j is not None or p.energy_by_device_j is not None:
                by_device = dict(seen.energy_by_device_j or {})
                for key, joules in (p.energy_by_device_j or {}).items():
                    by_device[key] = by_device.get(key, 0.0) + joules
            by_name[p.name] = PhaseEnergy(p.name, seen.count + p.count, seen.duration_s + p.duration_s,
                                          seen.energy_j + p.energy_j, by_device, seen.emissions_g + p.emissions_g)
    return tuple(by_name.values())


def combine_segments(segments: Sequence[RunSummary]) -> RunSummary:
    """The whole run of ``segments`` (its ledger runs, oldest first): times, energy, CO2e and their bands summed;
    devices summed by key and phases by name; the mean intensity weighted by energy (gCO2e/kWh, without PUE);
    started from the first segment, everything else (status, place, PUE, assumptions) from the last; methods
    and notes of all. ``extra`` is the last segment's, less ``prior_energy_kwh``, plus ``ledger_run_ids``.
    One segment comes back as it is.

    Example:
        >>> from greendiff.tracking import RunSummary
        >>> def seg(run_id, name, kwh): return RunSummary.from_dict({"run_id": run_id, "name": name,
        ...     "kind": "train", "status": "completed", "started": None, "ended": None, "duration_s": 10.0,
        ...     "cpu_time_s": 1.0, "energy_j": kwh * 3.6e6, "energy_kwh": kwh, "energy_kwh_low": kwh,
        ...     "energy_kwh_high": kwh, "emissions_kg": kwh * 0.05, "emissions_kg_low": kwh * 0.05,
        ...     "emissions_kg_high": kwh * 0.05, "devices": [], "phases": [], "intensity": {"source": "t",
        ...     "kind": "static", "mean_g_per_kwh": 50.0, "notes": []}, "pue": {"value": 1.0, "source": "x"},
        ...     "methods": ["rapl"], "notes": []})
        >>> whole = combine_segments([seg(7, "intr", 0.5), seg(8, "intr (resumed)", 1.5)])
        >>> whole.name, whole.energy_kwh, whole.duration_s, whole.extra["ledger_run_ids"]
        ('intr', 2.0, 20.0, [7, 8])
    """
    if not segments:
        raise ValueError("a run has at least one segment")
    if len(segments) == 1:
        return segments[0]
    first, last = segments[0], segments[-1]
    sums = {name: sum(getattr(s, name) for s in segments) for name in _SUMMED}
    energy_kwh = sums["energy_kwh"]
    if energy_kwh > 0:
        mean = sum(s.intensity.mean_g_per_kwh * s.energy_kwh for s in segments) / energy_kwh
    else:
        mean = last.intensity.mean_g_per_kwh
    intensity = dataclasses.replace(last.intensity, mean_g_per_kwh=mean,
                                    notes=_unique(n for s in segments for n in s.intensity.notes),
                                    fallback=next((s.intensity.fallback for s in reversed(segments)
                                                   if s.intensity.fallback), None))
    extra = {k: v for k, v in last.extra.items() if k not in _SEGMENT_ONLY}
    return dataclasses.replace(
        last, **sums, name=run_name(first.name), started=first.started, devices=_devices(segments),
        phases=_phases(segments), intensity=intensity, methods=tuple(sorted({m for s in segments for m in s.methods})),
        notes=_unique(n for s in segments for n in s.notes),
        extra={**extra, "ledger_run_ids": [s.run_id for s in segments]})
