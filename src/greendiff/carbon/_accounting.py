"""Emissions = energy x PUE x intensity, hour by hour.

Pure functions: energy comes as cumulative samples ``(unix_s, energy_j)`` of one device (or a
total); between two samples energy is taken as spread evenly in time, so energy that straddles an
hour boundary is charged to both hours in proportion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from greendiff.carbon._intensity import Intensity
from greendiff.units import J_PER_KWH


def emissions_g(energy_j: float, intensity_g_per_kwh: float, pue: float) -> float:
    """Grams CO2e of ``energy_j`` of IT energy at a grid intensity and a facility PUE."""
    return energy_j / J_PER_KWH * pue * intensity_g_per_kwh


def energy_between(samples: Sequence[tuple[float, float]], t0: float, t1: float) -> float:
    """Joules used in ``[t0, t1)`` from cumulative samples, interpolating linearly between them.

    Args:
        samples: ``(unix_s, cumulative_energy_j)`` sorted by time; outside them no energy is counted.
    """
    def cumulative_at(t: float) -> float:
        if t <= samples[0][0]:
            return samples[0][1]
        if t >= samples[-1][0]:
            return samples[-1][1]
        lo, hi = 0, len(samples) - 1
        while hi - lo > 1:  # binary search for samples[lo].t <= t < samples[hi].t
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if samples[mid][0] <= t else (lo, mid)
        (ta, ea), (tb, eb) = samples[lo], samples[hi]
        return ea + (eb - ea) * (t - ta) / (tb - ta) if tb > ta else eb

    return cumulative_at(t1) - cumulative_at(t0)


@dataclass(frozen=True)
class SegmentAccount:
    start_unix_s: float
    end_unix_s: float
    energy_j: float
    intensity_g_per_kwh: float
    emissions_g: float


@dataclass(frozen=True)
class CarbonAccount:
    """Emissions of one energy series under one intensity series and PUE."""

    energy_j: float
    emissions_g: float
    pue: float
    segments: tuple[SegmentAccount, ...]

    @property
    def mean_intensity_g_per_kwh(self) -> float:
        """Energy-weighted intensity actually applied (facility overhead excluded)."""
        if self.energy_j <= 0:
            return self.segments[0].intensity_g_per_kwh if self.segments else 0.0
        return self.emissions_g / (self.energy_j / J_PER_KWH * self.pue)


def account(samples: Sequence[tuple[float, float]], intensity: Intensity, pue: float) -> CarbonAccount:
    """Charge the energy of each intensity segment at that segment's intensity.

    Args:
        samples: Cumulative ``(unix_s, energy_j)`` of the work, sorted, at least one.
        intensity: Covering the samples' time span.
        pue: Facility overhead factor applied to IT energy.
    """
    if not samples:
        return CarbonAccount(0.0, 0.0, pue, ())
    parts = []
    for seg in intensity.segments:
        t0, t1 = seg.start.timestamp(), seg.end.timestamp()
        energy_j = energy_between(samples, t0, t1)
        parts.append(SegmentAccount(t0, t1, energy_j, seg.intensity_g_per_kwh,
                                    emissions_g(energy_j, seg.intensity_g_per_kwh, pue)))
    total_j = sum(p.energy_j for p in parts)
    return CarbonAccount(total_j, sum(p.emissions_g for p in parts), pue, tuple(parts))
