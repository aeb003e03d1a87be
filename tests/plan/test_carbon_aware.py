from __future__ import annotations

import io
import json
from datetime import datetime, timedelta, timezone

import pytest
import torch

from greendiff.carbon import TraceProvider, bundled_trace, parse_trace_csv
from greendiff.errors import UserInputError
from greendiff.plan import CarbonAwareController, SimulatedClock, controller_for
from greendiff.train import CarbonAwareConfig, train

T0 = datetime(2022, 6, 1, tzinfo=timezone.utc)
#          hours 0-1 clean, 2-4 dirty, 5-6 clean, 7-9 dirty, then clean for a day
HOURS = [100, 100, 500, 500, 500, 120, 120, 600, 600, 600] + [90] * 24


def provider(hours=HOURS):
    rows = "".join(f"{(T0 + timedelta(hours=i)).isoformat()},{v}\n" for i, v in enumerate(hours))
    return TraceProvider(parse_trace_csv(io.StringIO("timestamp,intensity\n" + rows), "test trace"))


def drive(controller, steps, joules_per_step=3.6e3):
    """A stand-in training loop: 1 Wh per step, the controller asked before each step."""
    energy = 0.0
    controller.begin(energy)
    step = 0
    while step < steps:
        until = controller.before_step(step)
        if until is not None:
            waited = controller.wait(until)
            energy += 100.0  # the pause's checkpoint
            controller.after_wait(energy, waited.began)
        energy += joules_per_step
        step += 1
        controller.after_step(step, energy)
    return controller


def test_threshold_policy_runs_only_in_clean_hours_and_accounts_the_saving():
    clock = SimulatedClock(T0, step_s=1200)  # 3 steps per hour
    c = drive(CarbonAwareController(provider(), clock, total_steps=18, max_intensity_g_per_kwh=200, min_pause_s=0), 18)
    dirty = [e for e in c.log if e["intensity_g_per_kwh"] > 200]
    assert not dirty, dirty
    s = c.summary()
    assert s["pauses"] == 2 and s["waited_h"] == pytest.approx(6.0)  # hours 2-4 and 7-9 skipped
    # as run: 6 steps at 100, 6 at 120, 6 at 90 (1 Wh each) plus two 100 J pauses at the dirty hours' mean
    as_run = (6 * 100 + 6 * 120 + 6 * 90) / 1000 + 2 * 100 / 3.6e6 * 500 + 100 / 3.6e6 * 600 - 100 / 3.6e6 * 500
    assert s["emissions_g"] == pytest.approx(as_run, rel=1e-6)
    straight = (6 * 100 + 9 * 500 + 3 * 120) / 1000  # 18 steps back to back from 00:00
    assert s["straight_through_g"] == pytest.approx(straight, rel=1e-9)
    assert s["saved_g"] == pytest.approx(straight - as_run, rel=1e-6) and s["saved_frac"] > 0.6


def test_deadline_wins_over_the_threshold():
    clock = SimulatedClock(T0, step_s=1200)
    never_clean = [500] * 48
    deadline = T0 + timedelta(hours=10)
    c = drive(CarbonAwareController(provider(never_clean), clock, total_steps=15, max_intensity_g_per_kwh=200,
                                    deadline=deadline, margin_frac=0.1, min_pause_s=0), 15)
    s = c.summary()
    assert s["met_deadline"] and s["forced_to_meet_deadline"] and s["pauses"] == 1
    # 3 steps, then wait until the latest start that still fits 12 steps x 20 min x 1.1
    assert clock.now() <= deadline and clock.now() >= deadline - timedelta(minutes=30)


def test_schedule_policy_follows_the_best_interruptible_plan():
    clock = SimulatedClock(T0, step_s=1200)
    deadline = T0 + timedelta(hours=12)
    c = drive(CarbonAwareController(provider(), clock, total_steps=15, deadline=deadline, margin_frac=0.0,
                                    min_pause_s=0, recheck_s=0), 15)
    s = c.summary()
    assert s["met_deadline"] and s["pauses"] == 2  # margin 0: the last 6 steps exactly fill the time left
    # after the 3 steps that measure the rate: the rest of hour 1, the cleaner of hours 5-6, then 10-11;
    # never the dirty hours 2-4 and 7-9
    assert [e["intensity_g_per_kwh"] for e in c.log] == [100.0] * 6 + [120.0] * 3 + [90.0] * 6
    # as run it is the best interruptible plan for the 12 steps left after the first 3
    assert s["emissions_g"] < s["straight_through_g"]


def test_books_survive_a_checkpoint():
    clock = SimulatedClock(T0, step_s=1200)
    c = drive(CarbonAwareController(provider(), clock, total_steps=9, max_intensity_g_per_kwh=200, min_pause_s=0), 9)
    again = CarbonAwareController(provider(), SimulatedClock(T0, 1200), total_steps=9, max_intensity_g_per_kwh=200)
    again.load_state_dict(json.loads(json.dumps(c.state_dict())))
    assert again.summary() == c.summary() and again.clock.now() == clock.now()


def test_carbon_aware_training_pauses_and_trains_the_same_model(tiny_data, tiny_config, tracker, tmp_path):
    config = tiny_config(run__max_steps=18)
    controller = CarbonAwareController(provider(), SimulatedClock(T0, 1200), 18, max_intensity_g_per_kwh=200, min_pause_s=0)
    result = train(config, tmp_path / "aware", tiny_data, tracker, callbacks=[controller])
    assert result.status == "completed"
    events = [json.loads(line) for line in (tmp_path / "aware" / "metrics.jsonl").read_text().splitlines()]
    pauses = [e for e in events if e.get("event") == "pause"]
    assert [p["step"] for p in pauses] == [6, 12] and controller.summary()["saved_frac"] > 0.3
    assert all(e["intensity_g_per_kwh"] <= 200 for e in controller.log)
    assert {p.name for p in tracker.stop().phases} >= {"wait", "train", "checkpoint"}
    from greendiff.tracking import Tracker
    from greendiff.energy import EnergyMonitor, MonitorOptions

    plain = Tracker("plain", ledger=tmp_path / "l2.sqlite", monitor=EnergyMonitor.detect(MonitorOptions(measure_gpus=False))).start()
    train(config, tmp_path / "plain", tiny_data, plain)
    plain.stop()
    from safetensors.torch import load_file

    a = load_file(tmp_path / "aware" / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors")
    b = load_file(tmp_path / "plain" / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("kwargs, trace, message", [
    ({"deadline": "2022-05-31T00:00"}, "CISO", "is not after the start"),
    ({"deadline": "2022-06-02T00:00"}, "short", "does not cover today"),
])
def test_controller_for_bad_settings(kwargs, trace, message):
    carbon = CarbonAwareConfig(enabled=True, max_intensity=200, simulate_start="2022-06-01T00:00", simulated_step_s=60, **kwargs)
    chosen = TraceProvider(bundled_trace("CISO")) if trace == "CISO" else provider()
    with pytest.raises(UserInputError, match=message):
        controller_for(carbon, chosen, 1.0, 10)


def test_controller_for_builds_a_simulated_clock_and_reads_the_config():
    carbon = CarbonAwareConfig(enabled=True, max_intensity=150, deadline="2022-06-03T00:00", margin=0.2,
                               simulate_start="2022-06-01T00:00", simulated_step_s=60)
    c = controller_for(carbon, TraceProvider(bundled_trace("CISO")), 1.1, 500)
    assert isinstance(c.clock, SimulatedClock) and c.clock.now() == T0 and c.clock.step_s == 60
    assert c.max_intensity == 150 and c.deadline == T0 + timedelta(days=2) and c.margin_frac == 0.2 and c.pue == 1.1


def test_controller_for_needs_an_hourly_series():
    from greendiff.carbon import country_provider

    with pytest.raises(UserInputError, match="needs an hourly intensity series"):
        controller_for(CarbonAwareConfig(enabled=True, max_intensity=100), country_provider("FRA"), 1.0, 10)


def test_a_resumed_run_continues_the_books(tiny_data, tiny_config, tracker, tmp_path):
    def controller():
        return CarbonAwareController(provider(), SimulatedClock(T0, 1200), 18, max_intensity_g_per_kwh=200, min_pause_s=0)

    first = controller()
    train(tiny_config(run__max_steps=9, run__checkpoint_every=9), tmp_path / "run", tiny_data, tracker, callbacks=[first])
    tracker.stop()
    from greendiff.energy import EnergyMonitor, MonitorOptions
    from greendiff.tracking import Tracker

    second = controller()
    again = Tracker("resumed", ledger=tmp_path / "l2.sqlite", monitor=EnergyMonitor.detect(MonitorOptions(measure_gpus=False))).start()
    train(tiny_config(run__max_steps=18), tmp_path / "run", tiny_data, again, resume=True, callbacks=[second])
    again.stop()
    s = second.summary()
    assert s["pauses"] == 2 and s["active_h"] == pytest.approx(6.0) and s["started"] == T0.isoformat()
    assert s["ended"] == (T0 + timedelta(hours=12)).isoformat()  # 6 h of steps and 6 h of waits, one clock


class SteppedWallClock(SimulatedClock):
    """Deterministic stand-in for the wall clock: the controller treats it as real time."""

    simulated = False


def test_a_real_time_controller_charges_the_ledgers_emissions_as_a_callback():
    """As the trainer's callback with the wall clock, the carbon-aware side of the books is the ledger's own
    accounting (the trainer's emissions so far), not a second pricing; straight-through stays priced here."""
    from types import SimpleNamespace

    from greendiff.train import StepOutcome

    c = CarbonAwareController(provider(), SteppedWallClock(T0, step_s=1200), total_steps=3, max_intensity_g_per_kwh=200)
    trainer = SimpleNamespace(step=0, energy_j=100.0, kg=0.002, tracker=SimpleNamespace(sample=lambda: None))
    trainer.energy_so_far_j = lambda: trainer.energy_j
    trainer.emissions_so_far_kg = lambda: trainer.kg
    trainer.interrupt_requested = lambda: False
    assert c.real_time
    for step in range(1, 4):
        c.on_step_begin(trainer)
        trainer.step, trainer.energy_j, trainer.kg = step, trainer.energy_j + 3.6e3, trainer.kg + 0.0005  # 1 Wh, 0.5 g
        c.on_step_end(trainer, StepOutcome(step, 0.1, True, 16))
    s = c.summary()
    assert s["emissions_g"] == pytest.approx(1.5)  # the ledger's 0.5 g per step, from the first step on
    assert s["active_h"] == pytest.approx(1.0) and s["pauses"] == 0
    # no pause: the run went straight through; its own emissions, no saving (not the ledger's figure against the
    # trace's 0.3 g: 3 Wh at 100 g/kWh)
    assert s["straight_through_g"] == s["emissions_g"] and s["saved_g"] == 0.0 and s["saved_frac"] == 0.0


def test_no_pause_is_no_saving_not_float_noise():
    """A run the threshold never paused: its straight-through figure is its own and the saving exactly 0, however
    the two pricings round (the CLI said "saved 0.00000182 mg (0.0%)" after 0 pauses)."""
    clock = SimulatedClock(T0 + timedelta(seconds=7), step_s=0.1 + 0.2)  # times that do not add up exactly
    c = drive(CarbonAwareController(provider(), clock, total_steps=50, max_intensity_g_per_kwh=1000), 50,
              joules_per_step=0.1 + 0.7)
    s = c.summary()
    assert s["pauses"] == 0 and s["saved_g"] == 0.0 and s["saved_frac"] == 0.0
    assert s["straight_through_g"] == s["emissions_g"] == pytest.approx(50 * 0.8 / 3.6e6 * 100)


def test_a_saving_within_float_noise_of_zero_is_zero():
    c = CarbonAwareController(provider(), SimulatedClock(T0, 1.0), total_steps=3, max_intensity_g_per_kwh=200)
    c.state.update(pauses=1, waited_s=60.0, aware_g=0.1 + 0.2, straight_g=0.3)
    assert c.summary()["saved_g"] == 0.0 and c.summary()["saved_frac"] == 0.0
    c.state.update(aware_g=0.2)
    assert c.summary()["saved_g"] == pytest.approx(0.1) and c.summary()["saved_frac"] == pytest.approx(1 / 3)


def _no_window_warnings(caplog) -> int:
    return sum("stays above" in r.getMessage() for r in caplog.records)


def test_no_cleaner_hour_ahead_is_said_once_not_at_every_recheck(caplog):
    """train --carbon-aware --max-intensity 1 said "the grid stays above 1 g/kWh for the next 168 h; running
    anyway" at every recheck (about every step): once per run."""
    clock = SimulatedClock(T0, step_s=600)  # a recheck (every 300 s) before every step
    with caplog.at_level("WARNING", logger="greendiff.plan._carbon_aware"):
        c = drive(CarbonAwareController(provider([500] * 24), clock, total_steps=20, max_intensity_g_per_kwh=1,
                                        min_pause_s=0), 20)
    assert c.summary()["pauses"] == 0 and len(c.log) == 20
    assert _no_window_warnings(caplog) == 1


def test_no_cleaner_hour_ahead_is_said_again_after_a_clean_hour_passed(caplog):
    """Dirty with nothing cleaner in the horizon (said), then a clean hour comes into view and passes (the run
    pauses for it and runs in it), then dirty with nothing ahead again: said a second time."""
    clock = SimulatedClock(T0, step_s=600)
    with caplog.at_level("WARNING", logger="greendiff.plan._carbon_aware"):
        c = drive(CarbonAwareController(provider([500, 500, 500, 40] + [500] * 10), clock, total_steps=40,
                                        max_intensity_g_per_kwh=50, min_pause_s=0, horizon_h=1), 40)
    assert c.summary()["pauses"] == 1 and 40.0 in [e["intensity_g_per_kwh"] for e in c.log]
    assert _no_window_warnings(caplog) == 2


# -- nothing long is silent: a pause says why and until when, shows its wait, and is booked however it ends -------------

class Shown:
    """The CLI's progress (rich) on a wide in-memory console, fed by the trainer's display callback; it also keeps
    every event it was told."""

    def __init__(self):
        import io

        from rich.console import Console

        from greendiff.cli._progress import RichProgress
        from greendiff.workflows._progress import TrainerProgress

        self.file = io.StringIO()
        self.progress = RichProgress(Console(file=self.file, width=200))
        self.events = []
        self.callback = TrainerProgress(self)

    def on_log(self, event):
        self.events.append(event)
        self.progress.on_log(event)

    def note(self, text, style=None):
        self.progress.note(text, style)

    def text(self):
        return " ".join(self.file.getvalue().split())


def test_a_pause_says_why_and_until_when_and_shows_its_waiting(tiny_data, tiny_config, tracker, tmp_path):
    """3 steps an hour: the grid turns 500 g/kWh at 02:00 (step 6) and 600 at 07:00 (step 12); each pause is told
    before it starts (why, until when) without -v, its wait is a progress row, and its end is a line."""
    shown = Shown()
    controller = CarbonAwareController(provider(), SimulatedClock(T0, 1200), 18, max_intensity_g_per_kwh=200, min_pause_s=0)
    shown.progress.on_start("train", 18)
    train(tiny_config(run__max_steps=18), tmp_path / "run", tiny_data, tracker, callbacks=[controller, shown.callback])
    shown.progress.on_end()
    text = shown.text()
    assert ("carbon-aware pause at step 6: the grid is at 500 g/kWh, above the threshold 200 g/kWh; resuming at "
            "2022-06-01 05:00 UTC (in 3.00 h)") in text
    assert "carbon-aware pause at step 12: the grid is at 600 g/kWh, above the threshold 200 g/kWh; resuming at " \
           "2022-06-01 10:00 UTC (in 3.00 h)" in text
    assert text.count("carbon-aware pause over after 3.00 h") == 2
    waits = [(e.done, e.total) for e in shown.events if type(e).__name__ == "PhaseProgress" and e.phase == "wait"]
    assert waits == [(0.0, 10800.0), (10800.0, 10800.0)] * 2  # the simulated clock jumps: a start and an end tick
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    starts = [r for r in records if r.get("event") == "pause_start"]
    assert [(r["step"], r["from"], r["until"]) for r in starts] == [
        (6, "2022-06-01T02:00:00+00:00", "2022-06-01T05:00:00+00:00"),
        (12, "2022-06-01T07:00:00+00:00", "2022-06-01T10:00:00+00:00")]
    assert starts[0]["reason"] == "the grid is at 500 g/kWh, above the threshold 200 g/kWh"


class CtrlCClock(SimulatedClock):
    """A simulated clock whose waits go in 1-hour chunks; Ctrl-C arrives during the second chunk of a wait."""

    chunk_s = 3600.0

    def __init__(self, start, step_s):
        super().__init__(start, step_s)
        self.chunks = 0

    def sleep(self, seconds):
        super().sleep(seconds)
        self.chunks += 1
        if self.chunks == 2:
            raise KeyboardInterrupt


class StopRequestedAt:
    """A stop signal (SIGTERM) as the trainer sees it: requested once the clock reaches ``moment``."""

    def __init__(self, clock, moment):
        self.clock, self.moment = clock, moment

    def should_interrupt(self):
        return self.clock.now() >= self.moment


@pytest.mark.parametrize("how", ["ctrl-c", "stop signal"])
def test_an_interrupted_wait_is_booked_as_a_pause_with_its_time(tiny_data, tiny_config, tracker, tmp_path, how):
    """Ctrl-C (or SIGTERM) 2 h into a 3-hour pause: the run ends interrupted at step 6, and the books say one pause
    and the time it waited (they said 0 pauses, 0 h before)."""
    clock = CtrlCClock(T0, 1200)
    controller = CarbonAwareController(provider(), clock, 18, max_intensity_g_per_kwh=200, min_pause_s=0)
    stops = [StopRequestedAt(clock, T0 + timedelta(hours=3))] if how == "stop signal" else []
    shown = Shown()
    result = train(tiny_config(run__max_steps=18), tmp_path / "run", tiny_data, tracker,
                   callbacks=[*stops, controller, shown.callback])
    assert (result.status, result.step) == ("interrupted", 6)
    waited_h = 2.0 if how == "ctrl-c" else 1.0
    s = controller.summary()
    assert s["pauses"] == 1 and s["waited_h"] == pytest.approx(waited_h) and s["ended"] == (T0 + timedelta(hours=2 + waited_h)).isoformat()
    (pause,) = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if '"pause"' in line]
    assert pause["interrupted"] is True and pause["waited_s"] == pytest.approx(waited_h * 3600)
    assert f"carbon-aware pause interrupted after {'2.00 h' if how == 'ctrl-c' else '1.00 h'}" in shown.text()


def test_a_wait_is_typed_and_the_controller_books_it_and_ends_the_run():
    """Review #18: the controller's wait returns the trainer's typed :class:`~greendiff.train.Waited`; the trainer's
    ``pause`` returns it as it is (no re-raise of its own), and the controller books the wait, then raises the
    Ctrl-C it caught so the loop ends interrupted."""
    from greendiff.train import StepOutcome, Waited

    clock = CtrlCClock(T0 + timedelta(hours=2), 1200)
    controller = CarbonAwareController(provider(), clock, 18, max_intensity_g_per_kwh=200, min_pause_s=0)
    waited = controller.wait(T0 + timedelta(hours=5))
    assert type(waited) is Waited and waited == Waited(T0 + timedelta(hours=2), T0 + timedelta(hours=4), True)

    class PausingTrainer:
        """What the controller asks of the trainer; ``pause`` waits and returns what the wait returned."""

        def __init__(self):
            self.step, self.paused = 6, []

        def sample(self):  # the tracker's ledger sample, every tick of a wait
            pass

        @property
        def tracker(self):
            return self

        def energy_so_far_j(self):
            return 0.0

        def emissions_so_far_kg(self):
            return 0.0

        def interrupt_requested(self):
            return False

        def report_progress(self, *args):
            pass

        def pause(self, until, wait, reason, now):
            self.paused.append(reason)
            return wait()

    trainer = PausingTrainer()
    clock = CtrlCClock(T0, 1200)
    controller = CarbonAwareController(provider(), clock, 18, max_intensity_g_per_kwh=200, min_pause_s=0)
    controller.begin(0.0)
    for step in range(1, 7):
        controller.after_step(step, 0.0)
    with pytest.raises(KeyboardInterrupt):
        controller.on_step_begin(trainer)
    assert trainer.paused == ["the grid is at 500 g/kWh, above the threshold 200 g/kWh"]
    s = controller.summary()
    assert s["pauses"] == 1 and s["waited_h"] == pytest.approx(2.0)
