from __future__ import annotations

from greendiff.plan import run_profile
from greendiff.train import LogEvent, StartEvent


class _Seen:
    """A trainer callback keeping the typed events it is given."""

    def __init__(self) -> None:
        self.events = []

    def on_train_start(self, trainer, event) -> None:
        self.events.append(event)

    def on_log(self, trainer, event) -> None:
        self.events.append(event)


def test_a_profile_hands_the_trainer_events_to_its_callbacks_and_forecasts_from_every_step(tmp_path, tiny_data, tiny_config, tracker):
    """run_profile trains with the caller's callbacks (a progress bar) beside its own: they see the typed start
    event and one LogEvent per step, and the forecast is made from all the profiled steps."""
    seen = _Seen()
    forecast = run_profile(tiny_config(run__max_steps=200), tiny_data, tracker, tmp_path / "profile", steps=8, warmup=2,
                           callbacks=[seen])
    assert [type(e) for e in seen.events] == [StartEvent] + [LogEvent] * 8
    assert [e.step for e in seen.events[1:]] == list(range(1, 9))
    assert (forecast.profiled_steps, forecast.steps) == (8, 200)
    assert forecast.energy_per_step_kwh > 0 and forecast.seconds_per_step > 0
    assert forecast.device == seen.events[0].device
