"""``greendiff measure --grid TRACE.csv``: a year-long trace used in another year is priced at its own
resolution and by its own calendar year (issue 18), checked against a recomputation from the ledger."""

from __future__ import annotations

import json
import math
import sys
import time
from datetime import date, datetime, timedelta, timezone

import pytest

from greendiff.cli._app import main
from greendiff.ledger import Ledger

UTC = timezone.utc
STEP = timedelta(minutes=30)
BUSY_UNTIL = "import sys, time\nend = float(sys.argv[1])\nwhile time.time() < end:\n    pass\n"


def same_day_in_year(day: date, year: int) -> date:
    try:
        return day.replace(year=year)
    except ValueError:  # 29 February
        return day.replace(year=year, day=28)


def write_trace(path, first: datetime) -> list[float]:
    """365 days of 30-minute rows from ``first``, alternating 100 and 900 g/kWh."""
    values = [100.0 if i % 2 == 0 else 900.0 for i in range(365 * 48)]
    path.write_text("timestamp,intensity\n" + "".join(f"{(first + STEP * i).isoformat()},{v:g}\n"
                                                      for i, v in enumerate(values)))
    return values


def reference_value(moment: datetime, first: datetime, values: list[float]) -> float:
    """The trace's value for a time outside it: the same month, day and time of day in the year from ``first``."""
    end = first + STEP * len(values)
    for year in (first.year, first.year + 1):
        day = same_day_in_year(moment.date(), year)
        mapped = datetime.combine(day, moment.time(), UTC)
        if first <= mapped < first.replace(year=first.year + 1):
            break
    while mapped >= end:
        mapped -= timedelta(days=1)
    return values[(mapped - first) // STEP]


def recomputed_emissions_g(samples, first: datetime, values: list[float], pue: float) -> float:
    """Energy between samples spread evenly in time, cut wherever the trace's value may change."""
    total_g = 0.0
    for a, b in zip(samples, samples[1:]):
        t0, t1 = a.unix_s, b.unix_s
        joules = sum(b.energy_j.values()) - sum(a.energy_j.values())
        cuts = {t0, t1}
        # the trace's boundaries fall on its own phase of the half hour, and a mapping may jump at midnight
        phase_s = (first - first.replace(hour=0, minute=0, second=0, microsecond=0)).total_seconds() % STEP.total_seconds()
        k = math.ceil((t0 - phase_s) / STEP.total_seconds())
        while k * STEP.total_seconds() + phase_s < t1:
            cuts.add(k * STEP.total_seconds() + phase_s)
            k += 1
        cuts.add(math.ceil(t0 / 86400) * 86400.0)
        pieces = sorted(c for c in cuts if t0 <= c <= t1)
        for p, q in zip(pieces, pieces[1:]):
            value = reference_value(datetime.fromtimestamp(p, UTC), first, values)
            total_g += joules * (q - p) / (t1 - t0) / 3.6e6 * pue * value
    return total_g


@pytest.mark.parametrize("starts", ["1 January", "after today's date"])
def test_measure_prices_a_half_hourly_typical_year_at_its_own_resolution(starts, tmp_path, capsys):
    # a trace boundary (100 -> 900 g or back) falls 3 s from now, while the command is running
    boundary = datetime.fromtimestamp(math.ceil(time.time()) + 3, UTC)
    phase = (boundary - boundary.replace(hour=0, minute=0, second=0)) % STEP
    year = boundary.year - 2
    first_day = date(year, 1, 1) if starts == "1 January" else same_day_in_year(boundary.date() + timedelta(days=15), year)
    first = datetime.combine(first_day, datetime.min.time(), UTC) + phase
    values = write_trace(tmp_path / "trace.csv", first)
    code = main(["measure", "--grid", str(tmp_path / "trace.csv"), "--no-gpu", "--cpu-watts", "50",
                 "--sample-interval", "0.25", "--json", "-", "--",
                 sys.executable, "-c", BUSY_UNTIL, str(boundary.timestamp() + 2.0)])
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out)
    samples = Ledger(tmp_path / "ledger.sqlite").samples(summary["run_id"])
    cut = boundary.timestamp()
    before_j = sum(sum(b.energy_j.values()) - sum(a.energy_j.values()) for a, b in zip(samples, samples[1:]) if b.unix_s <= cut)
    assert samples[0].unix_s < cut < samples[-1].unix_s and 0.2 < before_j / (summary["energy_kwh"] * 3.6e6) < 0.9, \
        "the run must straddle the trace boundary for this test to mean anything"
    expected_g = recomputed_emissions_g(samples, first, values, summary["pue"]["value"])
    assert summary["emissions_kg"] * 1000 == pytest.approx(expected_g, rel=1e-9)
    # neither 100 nor 900 alone: a value per hour, or the trace's first value, gave one of them
    assert 150 < summary["intensity"]["mean_g_per_kwh"] < 850
    assert any("typical year" in note for note in summary["intensity"]["notes"])
