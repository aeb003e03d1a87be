from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greendiff.carbon import Intensity, IntensitySegment, account
from greendiff.carbon._accounting import emissions_g, energy_between

UTC = timezone.utc
H0 = datetime(2022, 6, 1, 10, tzinfo=UTC)


def hourly(*values: float) -> Intensity:
    segs = tuple(IntensitySegment(H0 + timedelta(hours=i), H0 + timedelta(hours=i + 1), v) for i, v in enumerate(values))
    return Intensity(segs, "test", "hourly")


def test_emissions_formula_units():
    # 3.6 MJ = 1 kWh at 400 g/kWh with PUE 1.5 -> 600 g
    assert emissions_g(3.6e6, 400.0, 1.5) == pytest.approx(600.0)


def test_energy_over_an_hour_boundary_is_charged_to_both_hours():
    t0 = H0.timestamp()
    # 30 min before 11:00 and 30 min after, 1 kWh total at constant power
    samples = [(t0 + 1800, 0.0), (t0 + 5400, 3.6e6)]
    acc = account(samples, hourly(100.0, 300.0), pue=1.0)
    assert [s.energy_j for s in acc.segments] == pytest.approx([1.8e6, 1.8e6])
    assert acc.emissions_g == pytest.approx(0.5 * 100 + 0.5 * 300)
    assert acc.mean_intensity_g_per_kwh == pytest.approx(200.0)


def test_uneven_power_follows_the_samples():
    t0 = H0.timestamp()
    # 0.9 kWh in the last 10 min of hour one, 0.1 kWh in the first 50 min of hour two
    samples = [(t0 + 3000, 0.0), (t0 + 3600, 0.9 * 3.6e6), (t0 + 6600, 3.6e6)]
    acc = account(samples, hourly(100.0, 500.0), pue=1.2)
    assert acc.emissions_g == pytest.approx(1.2 * (0.9 * 100 + 0.1 * 500))


def test_energy_between_interpolates_and_clamps():
    samples = [(10.0, 0.0), (20.0, 100.0)]
    assert energy_between(samples, 0.0, 15.0) == pytest.approx(50.0)
    assert energy_between(samples, 15.0, 99.0) == pytest.approx(50.0)
    assert energy_between(samples, 12.0, 13.0) == pytest.approx(10.0)


@settings(max_examples=200, deadline=None)
@given(
    increments=st.lists(st.floats(0, 1e6), min_size=1, max_size=20),
    gaps=st.lists(st.floats(1, 5000), min_size=20, max_size=20),
    offset=st.floats(0, 3599),
    values=st.lists(st.floats(0, 1000), min_size=6, max_size=6),
    pue=st.floats(1.0, 2.0),
)
def test_energy_is_conserved_across_hour_splits(increments, gaps, offset, values, pue):
    t = H0.timestamp() + offset
    samples, total = [(t, 0.0)], 0.0
    for inc, gap in zip(increments, gaps):
        t, total = t + gap, total + inc
        samples.append((t, total))
    span_h = int((samples[-1][0] - H0.timestamp()) // 3600) + 1
    intensity = hourly(*(values * (span_h // 6 + 1))[:span_h])
    acc = account(samples, intensity, pue)
    assert acc.energy_j == pytest.approx(total, rel=1e-9, abs=1e-6)
    lo, hi = min(s.intensity_g_per_kwh for s in intensity.segments), max(s.intensity_g_per_kwh for s in intensity.segments)
    assert emissions_g(total, lo, pue) - 1e-6 <= acc.emissions_g <= emissions_g(total, hi, pue) + 1e-6


@settings(max_examples=150, deadline=None)
@given(
    increments=st.lists(st.floats(0, 1e6), min_size=1, max_size=12),
    gaps=st.lists(st.floats(1, 4000), min_size=12, max_size=12),
    values=st.lists(st.floats(0, 1000), min_size=4, max_size=4),
    more_energy=st.floats(1.0, 3.0),
    more_intensity=st.lists(st.floats(0, 300), min_size=4, max_size=4),
)
def test_emissions_are_monotone_in_energy_and_intensity(increments, gaps, values, more_energy, more_intensity):
    t, total, samples = H0.timestamp(), 0.0, [(H0.timestamp(), 0.0)]
    for inc, gap in zip(increments, gaps):
        t, total = t + gap, total + inc
        samples.append((t, total))
    span_h = int((samples[-1][0] - H0.timestamp()) // 3600) + 1
    base = hourly(*(values * (span_h // 4 + 1))[:span_h])
    dirtier = hourly(*[v + d for v, d in zip(values * (span_h // 4 + 1), more_intensity * (span_h // 4 + 1))][:span_h])
    scaled = [(ts, e * more_energy) for ts, e in samples]
    assert account(scaled, base, 1.2).emissions_g >= account(samples, base, 1.2).emissions_g - 1e-9
    assert account(samples, dirtier, 1.2).emissions_g >= account(samples, base, 1.2).emissions_g - 1e-9
