"""Turn a run's samples and phase totals into energy and emissions, with every assumption.

Pure: the ledger rows, the intensity provider and the PUE come in; a :class:`RunSummary` comes out
(its ``to_dict()`` is the JSON the ledger stores and ``emissions.json`` holds). The same function
serves a run that just finished and one that crashed (from its last sample).
"""

from __future__ import annotations

import dataclasses
import math
from datetime import datetime, timezone

from greendiff.tracking._run_summary import DeviceEnergy, IntensityUsed, PhaseEnergy, PueUsed, RunSummary

from greendiff.carbon import Intensity, IntensityProvider, Pue, account
from greendiff.ledger import RunRecord, Sample, WindowTotal
from greendiff.units import G_PER_KG, J_PER_KWH


@dataclasses.dataclass(frozen=True)
class FallbackIntensity(Intensity):
    """An :class:`Intensity` that is (partly) a fallback; ``fallback`` says which part and why (the
    summary records it as ``intensity.fallback``)."""

    fallback: str = ""


def _iso(unix_s: float | None) -> str | None:
    return None if unix_s is None else datetime.fromtimestamp(unix_s, timezone.utc).isoformat(timespec="seconds")


def summarize(record: RunRecord, samples: list[Sample], windows: list[WindowTotal],
              provider: IntensityProvider, pue: Pue) -> RunSummary:
    """Energy, emissions and assumptions of one run.

    Energy per device is its last cumulative sample. Emissions are charged segment by segment of
    the intensity series (hourly traces: per hour). Phase emissions use the run's energy-weighted
    mean intensity. Uncertainty bands add each device's method band linearly (worst case).
    """
    start_s = samples[0].unix_s if samples else record.started_unix_s
    end_s = samples[-1].unix_s if samples else start_s
    end_s = max(end_s, start_s + 1e-6)
    # one second of margin: datetimes keep microseconds, and a rounded edge would drop energy
    intensity = provider.intensity(datetime.fromtimestamp(math.floor(start_s) - 1, timezone.utc),
                                   datetime.fromtimestamp(math.ceil(end_s) + 1, timezone.utc))
    per_device = _devices(record, samples, intensity, pue)
    energy_j = sum(d.energy_j for d in per_device)
    emissions_g = sum(d.emissions_g for d in per_device)
    low_j = sum(d.energy_j * (1 - d.uncertainty_frac) for d in per_device)
    high_j = sum(d.energy_j * (1 + d.uncertainty_frac) for d in per_device)
    g_per_j = emissions_g / energy_j if energy_j > 0 else intensity.mean_g_per_kwh() * pue.value / J_PER_KWH
    phases = tuple(PhaseEnergy(w.name, w.count, w.duration_s, sum(w.energy_j.values()), w.energy_j,
                               sum(w.energy_j.values()) * g_per_j) for w in windows)
    return RunSummary(
        run_id=record.id, name=record.name, kind=record.kind, status=record.status, command=record.command,
        started=_iso(record.started_unix_s), ended=_iso(record.ended_unix_s if record.ended_unix_s else end_s),
        duration_s=end_s - start_s, cpu_time_s=samples[-1].cpu_time_s if samples else 0.0,
        energy_j=energy_j, energy_kwh=energy_j / J_PER_KWH,
        energy_kwh_low=low_j / J_PER_KWH, energy_kwh_high=high_j / J_PER_KWH,
        emissions_kg=emissions_g / G_PER_KG,
        emissions_kg_low=low_j * g_per_j / G_PER_KG, emissions_kg_high=high_j * g_per_j / G_PER_KG,
        devices=per_device, phases=phases,
        location=record.assumptions.get("location", {}), host=record.assumptions.get("host", {}),
        intensity=IntensityUsed(
            source=intensity.source, kind=intensity.kind, resolution=intensity.resolution, year=intensity.year,
            mean_g_per_kwh=(emissions_g / (energy_j / J_PER_KWH) / pue.value) if energy_j > 0 else intensity.mean_g_per_kwh(),
            notes=tuple(intensity.notes),
            fallback=intensity.fallback if isinstance(intensity, FallbackIntensity) else None),
        pue=PueUsed(pue.value, pue.source),
        methods=tuple(sorted({d.method for d in per_device})),
        notes=tuple(record.assumptions.get("meter_notes", [])),
        uncertainty=UNCERTAINTY,
    )


UNCERTAINTY = ("energy band = sum over devices of energy x (1 +/- method uncertainty); "
               "emissions band scales it at the run's mean intensity; intensity data error not included")


def _devices(record: RunRecord, samples: list[Sample], intensity: Intensity, pue: Pue) -> tuple[DeviceEnergy, ...]:
    """Each recorded device's energy (last cumulative sample minus first) and its emissions, hour by hour."""
    per_device = []
    for info in {d["key"]: d for d in record.devices}.values():
        key = info["key"]
        series = [(s.unix_s, s.energy_j.get(key, 0.0)) for s in samples]
        acc = account(series, intensity, pue.value)
        energy_j = series[-1][1] - series[0][1] if series else 0.0
        per_device.append(DeviceEnergy(
            key=key, kind=info["kind"], name=info["name"], method=info["method"], scope=info["scope"],
            uncertainty_frac=info["uncertainty_frac"], note=info.get("note", ""),
            energy_j=energy_j, energy_kwh=energy_j / J_PER_KWH, emissions_g=acc.emissions_g))
    return tuple(per_device)
