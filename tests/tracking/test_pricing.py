"""Pricing past a trace's end keeps the trace's own resolution and year in the result (issue 20)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from greendiff.carbon import Location, TraceProvider, load_trace
from greendiff.tracking import FallbackProvider, static_provider

T0 = datetime(2024, 3, 1, 10, tzinfo=timezone.utc)


def _trace(tmp_path, step: timedelta, values: list[float]) -> FallbackProvider:
    """A short trace from 2024-03-01 10:00 UTC at ``step``, with the FRA table as the static fallback."""
    rows = "".join(f"{(T0 + i * step).isoformat()},{v:g}\n" for i, v in enumerate(values))
    path = tmp_path / "trace.csv"
    path.write_text("timestamp,intensity\n" + rows)
    return FallbackProvider(TraceProvider(load_trace(str(path))), static_provider(Location(country="FRA")))


@pytest.mark.parametrize(("step", "label"), [(timedelta(seconds=10), "10-second"),
                                             (timedelta(minutes=30), "half-hourly")])
def test_a_run_past_a_short_trace_keeps_the_traces_resolution(tmp_path, step, label):
    provider = _trace(tmp_path, step, [100.0, 300.0, 200.0, 200.0])  # mean 200 g over its span
    end = T0 + 4 * step
    inside = provider.intensity(T0, end)
    assert (inside.kind, inside.resolution, inside.year) == ("trace", label, 2024)
    partly = provider.intensity(T0 + 2 * step, end + step)  # its last two intervals, then one past its end
    assert (partly.kind, partly.resolution, partly.year) == ("trace", label, 2024)
    assert partly.mean_g_per_kwh() == pytest.approx(200.0) and "outside it priced at the trace's mean" in partly.fallback
    wholly = provider.intensity(end + timedelta(days=1), end + timedelta(days=1, hours=1))  # no overlap at all
    assert (wholly.kind, wholly.resolution, wholly.year) == ("trace", label, 2024)
    assert wholly.mean_g_per_kwh() == pytest.approx(200.0) and wholly.fallback.endswith("(fallback)")
