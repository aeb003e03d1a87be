from __future__ import annotations

import itertools
import math
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greendiff.carbon import IntensitySegment, TraceProvider, bundled_trace
from greendiff.errors import UserInputError
from greendiff.plan import Job, plan_window
from greendiff.plan._window import interruptible_slots, schedule_emissions_g

T0 = datetime(2022, 6, 1, tzinfo=timezone.utc)


def hourly(values, start=T0):
    return [IntensitySegment(start + timedelta(hours=i), start + timedelta(hours=i + 1), float(v)) for i, v in enumerate(values)]


def brute_interruptible(values, adjacent, n_full, frac, slot_g, pause_g):
    """Every assignment of {off, full, partial at start, partial at end} to every slot, priced from
    explicit running intervals (hours): one slot = [i, i + 1), a gap after slot i-1 when not adjacent."""
    best = math.inf
    offsets, t = [], 0.0
    for i, joined in enumerate(adjacent):
        t += 0.0 if (i == 0 or joined) else 0.5  # a gap in the series
        offsets.append(t)
        t += 1.0
    choices = ["off", "full"] + (["ps", "pe"] if frac > 0 else [])
    for assign in itertools.product(choices, repeat=len(values)):
        if assign.count("full") != n_full or (frac > 0 and assign.count("ps") + assign.count("pe") != 1):
            continue
        intervals, g = [], 0.0
        for i, how in enumerate(assign):
            a = offsets[i]
            if how == "full":
                intervals.append((a, a + 1, i)); g += values[i] * slot_g
            elif how == "ps":
                intervals.append((a, a + frac, i)); g += values[i] * frac * slot_g
            elif how == "pe":
                intervals.append((a + 1 - frac, a + 1, i)); g += values[i] * frac * slot_g
        runs = []
        for a, b, i in sorted(intervals):
            if runs and abs(a - runs[-1][1]) < 1e-9:
                runs[-1][1] = b
            else:
                runs.append([a, b, i])
        g += sum(values[i] * pause_g for _, _, i in runs[1:])
        best = min(best, g)
    return best


@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.integers(0, 900), min_size=1, max_size=7), data=st.data())
def test_interruptible_equals_brute_force(values, data):
    n = len(values)
    frac = data.draw(st.sampled_from([0.0, 0.25, 0.5, 0.9]))
    n_full = data.draw(st.integers(0, n - (1 if frac else 0)))
    if n_full == 0 and frac == 0:
        n_full = 1
    adjacent = [False] + [data.draw(st.booleans()) or True for _ in range(n - 1)]
    if data.draw(st.booleans()):
        adjacent = [False] + [data.draw(st.booleans()) for _ in range(n - 1)]
    slot_g = data.draw(st.sampled_from([1.0, 2.5]))
    pause_g = data.draw(st.sampled_from([0.0, 0.3, 1.0, 4.0]))
    found = interruptible_slots(values, adjacent, n_full, frac, slot_g, pause_g)
    expected = brute_interruptible(values, adjacent, n_full, frac, slot_g, pause_g)
    assert found is not None
    assert found[0] == pytest.approx(expected, abs=1e-6)
    kinds = [how for _, how in found[1]]
    assert kinds.count("full") == n_full and len(kinds) - n_full == (1 if frac else 0)


@settings(max_examples=150, deadline=None)
@given(values=st.lists(st.integers(1, 900), min_size=2, max_size=9), data=st.data())
def test_plan_equals_brute_force_on_random_series(values, data):
    quarters = data.draw(st.integers(1, 4 * len(values)))  # job length on a 15-minute grid
    duration_h = quarters / 4
    pause_kwh = data.draw(st.sampled_from([0.0, 0.1, 1.0]))
    job = Job(energy_kwh=duration_h * 2.0, duration_h=duration_h, pause_cost_kwh=pause_kwh)
    segments = hourly(values)
    plan = plan_window(segments, job, pue=1.2)
    # contiguous: every start on the 15-minute grid (which holds every boundary-aligned candidate)
    starts = [q / 4 for q in range(4 * len(values) - quarters + 1)]
    brute = min(schedule_emissions_g(segments, [(T0 + timedelta(hours=s), T0 + timedelta(hours=s + duration_h))], job, 1.2)
                for s in starts)
    assert plan.contiguous.emissions_g == pytest.approx(brute, rel=1e-9)
    assert plan.now.emissions_g == pytest.approx(sum(values[q // 4] for q in range(quarters)) / 4 * 2.0 * 1.2, rel=1e-9)
    # interruptible: the slot brute force, or the contiguous window when that is better
    n_full, frac = divmod(quarters, 4)
    split = (brute_interruptible(values, [False] + [True] * (len(values) - 1), n_full, frac / 4, 2.0 * 1.2, pause_kwh * 1.2)
             if n_full + (frac > 0) <= len(values) else math.inf)
    assert plan.interruptible.emissions_g == pytest.approx(min(split, brute), rel=1e-9)
    assert plan.interruptible.emissions_g <= plan.contiguous.emissions_g <= plan.now.emissions_g + 1e-9
    for schedule in (plan.now, plan.contiguous, plan.interruptible):  # the intervals are the schedule priced
        running_h = sum((b - a).total_seconds() for a, b in schedule.intervals) / 3600
        assert running_h == pytest.approx(duration_h)
        assert schedule_emissions_g(segments, schedule.intervals, job, 1.2) == pytest.approx(schedule.emissions_g, rel=1e-9)
        assert T0 <= schedule.start and schedule.end <= segments[-1].end


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.integers(0, 900), min_size=1, max_size=7), data=st.data())
def test_cheapest_slots_equal_brute_force_without_a_pause_cost(values, data):
    from greendiff.plan._window import cheapest_slots

    n = len(values)
    frac = data.draw(st.sampled_from([0.0, 0.25, 0.9]))
    n_full = max(data.draw(st.integers(0, n - (1 if frac else 0))), 0 if frac else 1)
    adjacent = [False] + [data.draw(st.booleans()) for _ in range(n - 1)]
    found_g, used = cheapest_slots(values, adjacent, n_full, frac, 2.0)
    assert found_g == pytest.approx(brute_interruptible(values, adjacent, n_full, frac, 2.0, 0.0), abs=1e-6)
    kinds = [how for _, how in used]
    assert kinds.count("full") == n_full and len(kinds) - n_full == (1 if frac else 0)


def test_a_search_too_large_for_memory_falls_back_to_the_contiguous_window_with_a_note(monkeypatch):
    # a year of 30-minute slots and a job of thousands of them asked the DP for tens of GB
    import greendiff.plan._window as window

    segments = hourly([500, 100, 600, 100, 500])
    monkeypatch.setattr(window, "MAX_SEARCH_CELLS", 5 * 24 - 1)  # 5 slots x 24 states of a 2-slot job
    plan = plan_window(segments, Job(2.0, 2.0, pause_cost_kwh=0.001))
    assert plan.interruptible.intervals == plan.contiguous.intervals
    assert any("the exact search with a pause cost is too large here (5 slots" in n for n in plan.notes)
    free = plan_window(segments, Job(2.0, 2.0))  # no pause cost: the cheapest hours, with no table at all
    assert free.interruptible.emissions_g == pytest.approx(200.0) and free.interruptible.pauses == 1


def test_known_small_case_with_pause_cost():
    segments = hourly([500, 100, 600, 100, 500])
    cheap = plan_window(segments, Job(2.0, 2.0, pause_cost_kwh=0.0))
    assert cheap.interruptible.emissions_g == pytest.approx(200.0) and cheap.interruptible.pauses == 1
    assert cheap.contiguous.emissions_g == pytest.approx(600.0)
    costly = plan_window(segments, Job(2.0, 2.0, pause_cost_kwh=10.0))  # a pause now costs 1000 g at 100 g/kWh
    assert costly.interruptible.emissions_g == pytest.approx(600.0) and costly.interruptible.pauses == 0


def test_misaligned_start_uses_partial_hours():
    start = T0 + timedelta(minutes=30)
    segments = TraceProvider(bundled_trace("CISO")).intensity(start, start + timedelta(hours=24)).segments
    plan = plan_window(list(segments), Job(6.0, 6.0))
    assert plan.now.start == start
    assert plan.interruptible.emissions_g <= plan.contiguous.emissions_g < plan.now.emissions_g
    assert plan.saving_frac(plan.contiguous) > 0


def test_ciso_june_day_defers_to_the_solar_hours():
    segments = TraceProvider(bundled_trace("CISO")).intensity(T0, T0 + timedelta(hours=24)).segments
    plan = plan_window(list(segments), Job(6.0, 6.0))
    # California's solar hours are about 15:00-01:00 UTC (8:00-18:00 PDT); the best 6 h window lies in them
    assert 14 <= plan.contiguous.start.hour <= 19
    assert 0.1 < plan.saving_frac(plan.contiguous) < 0.6


@pytest.mark.parametrize("job, message", [
    (Job(1.0, 30.0), "needs 30.0 h but the window"),
    (Job(-1.0, 2.0), "energy must be a positive number"),
    (Job(1.0, 0.0), "duration must be a positive number"),
    (Job(1.0, 2.0, pause_cost_kwh=-1), "pause cost must be >= 0"),
    (Job(1.0, 1e-300), "duration must be at least 1 s"),  # priced 0 g at any start but the first
])
def test_bad_jobs(job, message):
    with pytest.raises(UserInputError, match=message):
        plan_window(hourly([100] * 24), job)
