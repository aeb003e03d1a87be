from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greendiff.carbon import BUNDLED_GRIDS, HourlyTrace, TraceProvider, bundled_trace, load_trace, parse_trace_csv
from greendiff.carbon._trace import TraceCoverageError
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
    with pytest.raises(TraceCoverageError, match="covers 2024-01-01T00:00:00\\+00:00 to 2024-01-01T02:00:00.*"
                                                 "shorter than a year"):
        provider.intensity(datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, 1, tzinfo=UTC))
    with pytest.raises(TraceCoverageError):  # partly outside is outside too
        provider.intensity(datetime(2024, 1, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, 3, tzinfo=UTC))
    assert issubclass(TraceCoverageError, UserInputError)


def year_trace(first: datetime, step: timedelta, value, days: int = 365):
    """A trace of ``days`` days from ``first`` at ``step``; ``value(moment)`` gives each row's intensity."""
    n = int(timedelta(days=days) / step)
    rows = "".join(f"{(first + step * i).isoformat()},{value(first + step * i)}\n" for i in range(n))
    return parse("timestamp,intensity\n" + rows)


def month_hour(moment: datetime) -> int:
    return moment.month * 100 + moment.hour  # 305: 15 March (any day), 05:00


def test_a_sub_hourly_year_trace_keeps_its_resolution_in_another_year():
    # a 30-minute trace alternating 100/900 g: a typical-year lookup per hour saw only the 100s (issue 18)
    trace = year_trace(datetime(2022, 1, 1, tzinfo=UTC), timedelta(minutes=30),
                       lambda t: 100 if t.minute == 0 else 900)
    result = TraceProvider(trace).intensity(datetime(2026, 3, 10, 10, tzinfo=UTC), datetime(2026, 3, 10, 12, tzinfo=UTC))
    assert [(s.start.minute, s.end - s.start, s.intensity_g_per_kwh) for s in result.segments] == [
        (0, timedelta(minutes=30), 100.0), (30, timedelta(minutes=30), 900.0)] * 2
    assert result.mean_g_per_kwh() == pytest.approx(500.0)


def test_a_year_trace_starting_in_july_maps_by_month_day_and_time_of_day():
    # July 2022 to June 2023: a time in March of another year is March 2023 of the trace, not its first value
    provider = TraceProvider(year_trace(datetime(2022, 7, 1, tzinfo=UTC), timedelta(hours=1), month_hour))
    result = provider.intensity(datetime(2026, 3, 15, 5, 30, tzinfo=UTC), datetime(2026, 3, 15, 7, 30, tzinfo=UTC))
    assert [(s.start.strftime("%H:%M"), s.intensity_g_per_kwh) for s in result.segments] == [
        ("05:30", 305.0), ("06:00", 306.0), ("07:00", 307.0)]
    assert "2022-07-01 00:00–2023-07-01 00:00 UTC trace used as a typical year for 2026" in result.notes[0]
    # across the trace's anniversary: 30 June is its last day, 1 July its first
    result = provider.intensity(datetime(2026, 6, 30, 23, tzinfo=UTC), datetime(2026, 7, 1, 1, tzinfo=UTC))
    assert [s.intensity_g_per_kwh for s in result.segments] == [623.0, 700.0]
    # a time before the trace and a range running into it
    result = provider.intensity(datetime(2022, 6, 30, 23, tzinfo=UTC), datetime(2022, 7, 1, 1, tzinfo=UTC))
    assert [(s.start.hour, s.intensity_g_per_kwh) for s in result.segments] == [(23, 623.0), (0, 700.0)]
    # 29 February, which the trace's year lacks, is read as 28 February
    result = provider.intensity(datetime(2028, 2, 29, 22, tzinfo=UTC), datetime(2028, 3, 1, 1, tzinfo=UTC))
    assert [s.intensity_g_per_kwh for s in result.segments] == [222.0, 223.0, 300.0]


def test_a_365_day_trace_over_a_leap_day_lends_the_day_it_lacks():
    # 1 July 2023 + 365 days ends on 30 June 2024 00:00 (2024 is a leap year): 30 June is not in the trace
    provider = TraceProvider(year_trace(datetime(2023, 7, 1, tzinfo=UTC), timedelta(hours=1),
                                        lambda t: t.day * 10 + t.hour % 2))
    result = provider.intensity(datetime(2026, 6, 30, 10, tzinfo=UTC), datetime(2026, 6, 30, 12, tzinfo=UTC))
    assert [s.intensity_g_per_kwh for s in result.segments] == [290.0, 291.0]  # 29 June, same hours


@settings(max_examples=60, deadline=None)
@given(step_min=st.sampled_from([10, 15, 45, 60, 90, 1440]), first_day=st.integers(0, 364),
       first_min=st.integers(0, 1439), days=st.sampled_from([365, 366, 400]), year=st.integers(1990, 2150),
       offset_min=st.integers(0, 366 * 1440), length_min=st.integers(1, 3 * 1440))
def test_typical_year_segments_match_a_minute_by_minute_lookup(step_min, first_day, first_min, days, year,
                                                               offset_min, length_min):
    step = timedelta(minutes=step_min)
    first = datetime(2021, 1, 1, tzinfo=UTC) + timedelta(days=first_day, minutes=first_min)
    n = int(timedelta(days=days) / step)
    values = [float((i * 7919) % 2000) for i in range(n)]
    trace = HourlyTrace([first + step * i for i in range(n)], values, "t")
    start = datetime(year, 1, 1, tzinfo=UTC) + timedelta(minutes=offset_min)
    end = start + timedelta(minutes=length_min)
    segments = TraceProvider(trace).intensity(start, end).segments
    assert segments[0].start == start and segments[-1].end == end
    assert all(a.end == b.start for a, b in zip(segments, segments[1:]))

    def reference(moment):  # the trace's value for a moment: itself inside, else the same date and time in its year
        if trace.start <= moment < trace.end:
            return values[int((moment - trace.start) / step)]
        for y in (first.year, first.year + 1):
            try:
                mapped = moment.replace(year=y)
            except ValueError:
                mapped = moment.replace(year=y, day=28)
            if first <= mapped < first.replace(year=first.year + 1):
                break
        while mapped >= trace.end:
            mapped -= timedelta(days=1)
        return values[int((mapped - trace.start) / step)]

    for s in segments:  # each segment is one value of the trace: its start and its last minute agree
        assert s.intensity_g_per_kwh == reference(s.start)
        assert s.intensity_g_per_kwh == reference(s.end - timedelta(microseconds=1))
        assert s.end - s.start <= step
    minutes = [reference(start + timedelta(minutes=m)) for m in range(length_min)]  # every minute, priced alone
    assert sum(s.intensity_g_per_kwh * (s.end - s.start) / timedelta(minutes=1) for s in segments) == pytest.approx(sum(minutes))




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


@pytest.mark.parametrize(("step", "label"), [
    (timedelta(hours=1), "hourly"), (timedelta(minutes=30), "half-hourly"), (timedelta(minutes=15), "15-minute"),
    (timedelta(seconds=10), "10-second"), (timedelta(hours=2), "2-hour"), (timedelta(days=1), "daily"),
])
def test_a_trace_is_labelled_by_its_own_resolution(step, label):
    t0 = datetime(2024, 3, 1, tzinfo=UTC)
    rows = "".join(f"{(t0 + i * step).isoformat()},{100 + i}\n" for i in range(4))
    result = TraceProvider(parse("timestamp,intensity\n" + rows)).intensity(t0, t0 + 2 * step)
    assert (result.kind, result.resolution) == ("trace", label)
    typical = TraceProvider(parse("timestamp,intensity\n" + rows)).intensity  # kind stays one of three words
    assert typical(t0, t0 + step).kind in ("static", "trace", "live")


def test_the_bundled_traces_are_hourly():
    result = TraceProvider(bundled_trace("CISO")).intensity(datetime(2022, 6, 1, tzinfo=UTC),
                                                            datetime(2022, 6, 1, 2, tzinfo=UTC))
    assert (result.kind, result.resolution) == ("trace", "hourly")


def test_a_yearly_table_says_its_resolution():
    from greendiff.carbon import country_provider

    result = country_provider("FRA").intensity(datetime(2022, 6, 1, tzinfo=UTC), datetime(2022, 6, 1, 2, tzinfo=UTC))
    assert (result.kind, result.resolution) == ("static", "yearly")
