from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone

import pytest

from greendiff.carbon import BUNDLED_GRIDS, TraceProvider, bundled_trace, load_trace, parse_trace_csv
from greendiff.errors import UserInputError

UTC = timezone.utc


def parse(text: str):
    return parse_trace_csv(io.StringIO(text), "t.csv")


@pytest.mark.parametrize("grid", BUNDLED_GRIDS)
def test_bundled_traces_cover_2022_hourly(grid):
    trace = bundled_trace(grid)
    assert len(trace.times) == 8760 and trace.step == timedelta(hours=1)
    assert trace.start == datetime(2022, 1, 1, tzinfo=UTC) and trace.covers_a_year
    assert all(0 < v < 1500 for v in trace.values_g_per_kwh)


def test_bundled_blank_hours_are_interpolated_and_disclosed():
    trace = bundled_trace("CISO")  # 2022-01-05 10:00 is blank in the EIA-930 file
    i = trace.times.index(datetime(2022, 1, 5, 10, tzinfo=UTC))
    assert trace.values_g_per_kwh[i] == pytest.approx((trace.values_g_per_kwh[i - 1] + trace.values_g_per_kwh[i + 1]) / 2)
    assert "3 blank hours interpolated" in trace.source


def test_user_csv_round_trip(tmp_path):
    path = tmp_path / "trace.csv"
    path.write_text("timestamp,intensity\n2024-03-01T00:00:00Z,100\n2024-03-01T01:00:00Z,300\n")
    trace = load_trace(str(path))
    result = TraceProvider(trace).intensity(datetime(2024, 3, 1, 0, 30, tzinfo=UTC), datetime(2024, 3, 1, 1, 30, tzinfo=UTC))
    assert [(s.start.minute, s.intensity_g_per_kwh) for s in result.segments] == [(30, 100.0), (0, 300.0)]
    assert result.mean_g_per_kwh() == pytest.approx(200.0)


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty file"),
    ("time,value\n2024-01-01T00:00Z,1\n", "t.csv:1: no intensity column"),
    ("timestamp,intensity\n2024-01-01T00:00:00Z,100\nyesterday,200\n", "t.csv:3: bad timestamp 'yesterday'"),
    ("timestamp,intensity\n2024-01-01T00:00:00Z,abc\n", "t.csv:2: intensity 'abc' is not a number"),
    ("timestamp,intensity\n2024-01-01T00:00:00Z,-5\n", "t.csv:2: intensity must be a number from 0 to 2000 gCO2e/kWh"),
    ("timestamp,intensity\n2024-01-01T00:00:00Z,nan\n", "t.csv:2: intensity must be a number from 0 to 2000 gCO2e/kWh"),
    ("timestamp,intensity\n2024-01-01T00:00:00Z,\n", "t.csv:2: intensity '' is not a number"),
    ("timestamp,intensity\n2024-01-01T01:00:00Z,1\n2024-01-01T00:00:00Z,1\n", "t.csv:3: timestamp .* is not after"),
    ("timestamp,intensity\n2024-01-01T00:00Z,1\n2024-01-01T01:00Z,1\n2024-01-01T03:00Z,1\n", "t.csv:4: gap or uneven step"),
])
def test_malformed_trace_names_the_line(text, message):
    with pytest.raises(UserInputError, match=message):
        parse(text)


def test_unknown_grid_lists_choices():
    with pytest.raises(UserInputError, match="unknown grid 'XYZ': use one of AZPS"):
        load_trace("XYZ")


def test_full_year_trace_serves_other_years_as_typical_year():
    provider = TraceProvider(bundled_trace("ERCO"))
    moment = datetime(2026, 7, 14, 15, 0, tzinfo=UTC)
    result = provider.intensity(moment, moment + timedelta(hours=2))
    expected = bundled_trace("ERCO").value_at(datetime(2022, 7, 14, 15, tzinfo=UTC))
    assert result.segments[0].intensity_g_per_kwh == expected
    assert "2022 trace used as a typical year for 2026" in result.notes[0]


def test_short_trace_refuses_times_outside_it():
    provider = TraceProvider(parse("timestamp,intensity\n2024-01-01T00:00Z,1\n2024-01-01T01:00Z,2\n"))
    with pytest.raises(UserInputError, match="covers 2024-01-01T00:00:00\\+00:00 to 2024-01-01T02:00:00"):
        provider.intensity(datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, 1, tzinfo=UTC))


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.floats(0, 2000, allow_nan=False), min_size=1, max_size=48),
       step_min=st.sampled_from([15, 30, 60]))
def test_any_valid_trace_round_trips(values, step_min):
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    rows = "".join(f"{(t0 + timedelta(minutes=step_min * i)).isoformat()},{v!r}\n" for i, v in enumerate(values))
    trace = parse("timestamp,intensity\n" + rows)
    assert trace.values_g_per_kwh == values and len(trace.times) == len(values)
    if len(values) > 1:
        assert trace.step == timedelta(minutes=step_min)


@settings(max_examples=150, deadline=None)
@given(values=st.lists(st.floats(0, 2000, allow_nan=False), min_size=3, max_size=20), data=st.data())
def test_any_broken_row_is_an_error_naming_its_line(values, data):
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    rows = [f"{(t0 + timedelta(hours=i)).isoformat()},{v!r}" for i, v in enumerate(values)]
    kind = data.draw(st.sampled_from(["nan", "negative", "text", "timestamp", "gap", "backwards"]))
    # the first two rows set the step, so a gap shows from the third row on
    bad = data.draw(st.integers(2 if kind == "gap" else 1, len(rows) - 1))
    stamp, value = rows[bad].split(",")
    rows[bad] = {"nan": f"{stamp},nan", "negative": f"{stamp},-1", "text": f"{stamp},high",
                 "timestamp": f"yesterday,{value}", "gap": f"{(t0 + timedelta(hours=bad + 1)).isoformat()},{value}",
                 "backwards": f"{t0.isoformat()},{value}"}[kind]
    with pytest.raises(UserInputError, match=rf"^t\.csv:{bad + 2}: "):
        parse("timestamp,intensity\n" + "\n".join(rows) + "\n")
