"""The trainer's one callback interface: typed events, answers that stop the run, state in checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from greendiff.train import (
    EndEvent, EvalEvent, LogEvent, StartEvent, Stop, Trainer, TrainerCallback, UNetFamily, checkpoint_dirs, train,
)


class Recorder(TrainerCallback):
    """Every event it is told, and the hooks in the order they came."""

    def __init__(self):
        self.events, self.hooks = [], []

    def on_event(self, trainer, event):
        self.events.append(event)

    def on_train_start(self, trainer, event):
        self.hooks.append("start")

    def on_step_end(self, trainer, outcome):
        self.hooks.append(f"step {outcome.step}")

    def on_checkpoint(self, trainer, step, path):
        self.hooks.append(f"checkpoint {path.name}")

    def on_train_end(self, trainer, event):
        self.hooks.append(f"end {event.status}")


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_callbacks_receive_typed_events_whose_dicts_are_the_metrics_records(tmp_path, tiny_data, tiny_config, tracker):
    recorder = Recorder()
    result = train(tiny_config(run__max_steps=3, run__checkpoint_every=2), tmp_path, tiny_data, tracker,
                   callbacks=[recorder])
    assert result.status == "completed"
    assert [type(e) for e in recorder.events] == [StartEvent, LogEvent, LogEvent, LogEvent, EndEvent]
    assert [e.to_dict() for e in recorder.events] == records(tmp_path)  # key for key, value for value
    assert recorder.hooks == ["start", "step 1", "step 2", "checkpoint step-2", "step 3", "checkpoint step-3", "end completed"]
    assert set(recorder.events[1].to_dict()) == {"step", "loss", "lr", "samples_per_s", "energy_kwh", "emissions_kg",
                                                 "ema_decay", "warmup", "projected_energy_kwh", "projected_with_warmup"}
    assert [e.warmup for e in recorder.events[1:4]] == [True, False, False]  # the first interval holds the first step


def test_a_callback_answering_an_evaluation_stops_the_run(tmp_path, tiny_data, tiny_config, tracker, monkeypatch):
    import greendiff.evaluate as evaluate_pkg
    from greendiff.evaluate import Quality

    fids = iter([10.0, 30.0])
    monkeypatch.setattr(evaluate_pkg, "quality", lambda *a, **k: Quality(next(fids), 0.0, 0.0, 1.0, 1.0, 16))

    class Pruner(TrainerCallback):
        def on_evaluation(self, trainer, event: EvalEvent):
            return Stop(f"pruned at fid {event.scores['fid']:g}") if event.scores["fid"] > 20 else None

    config = tiny_config(run__max_steps=40, stop__eval_every=3, stop__eval_samples=8, stop__spread_seeds=1)
    result = train(config, tmp_path, tiny_data, tracker, callbacks=[Pruner()])
    assert (result.status, result.step, result.stop_reason) == ("stopped", 6, "pruned at fid 30")
    stopped = [r for r in records(tmp_path) if r.get("event") == "stopped"]  # one record per stop, the run's last
    assert stopped == [records(tmp_path)[-1]] == [{"event": "stopped", "step": 6, "reason": "pruned at fid 30"}]


class StepCounter(TrainerCallback):
    """A stateful callback: counts applied steps, and asks to be interrupted after ``stop_after`` of them."""

    state_key = "counter"

    def __init__(self, stop_after=None):
        self.count, self.stop_after = 0, stop_after

    def on_step_end(self, trainer, outcome):
        self.count += outcome.updated

    def should_interrupt(self):
        return self.stop_after is not None and self.count >= self.stop_after

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        if type(state["count"]) is not int:
            raise ValueError("count is not a whole number")
        self.count = state["count"]


def test_a_stateful_callback_travels_in_checkpoints(tmp_path, tiny_data, tiny_config, tracker):
    config = tiny_config(run__max_steps=6)
    first = train(config, tmp_path, tiny_data, tracker, callbacks=[StepCounter(stop_after=4)])
    assert (first.status, first.step) == ("interrupted", 4)
    assert json.loads((checkpoint_dirs(tmp_path)[-1] / "train_state.json").read_text())["counter"] == {"count": 4}
    resumed = StepCounter()
    second = train(config, tmp_path, tiny_data, tracker, resume=True, callbacks=[resumed])
    assert (second.status, second.step, resumed.count) == ("completed", 6, 6)


def test_the_checkpoint_books_carry_the_emissions_so_far(tmp_path, tiny_data, tiny_config, tracker):
    train(tiny_config(run__max_steps=2), tmp_path, tiny_data, tracker)
    state = json.loads((checkpoint_dirs(tmp_path)[-1] / "train_state.json").read_text())
    logged = [r for r in records(tmp_path) if "loss" in r][-1]
    assert state["emissions"]["emissions_kg"] >= logged["emissions_kg"] > 0
    trainer = Trainer(tiny_config(run__max_steps=3), tmp_path, tiny_data, tracker, resume=True)
    trainer._start()
    assert trainer.totals.prior_emissions_kg == state["emissions"]["emissions_kg"]
    trainer.writer.close()


def test_the_unet_family_is_unconditional_for_now(tiny_config):
    family, config = UNetFamily(), tiny_config()
    net = family.build(config, channels=1)
    x0 = torch.zeros(2, 1, 8, 8)
    with pytest.raises(ValueError, match="unconditional"):
        family.loss(net, family.noise_scheduler(config.optim), x0, torch.Generator().manual_seed(0), config.optim,
                    labels=torch.tensor([0, 1]))
    sampler = family.sampler(config.optim, family.noise_scheduler(config.optim))
    with pytest.raises(ValueError, match="unconditional"):
        family.sample(net, sampler, 2, 2, (1, 8, 8), torch.Generator(), guidance_scale=3.0)
    images = family.sample(net, sampler, 2, 2, (1, 8, 8), torch.Generator().manual_seed(0))
    assert images.shape == (2, 1, 8, 8) and images.abs().max() <= 1


def test_every_event_hook_is_declared_on_the_callback_interface():
    """A callback author finds every hook the trainer can call on TrainerCallback (each event names its hook)."""
    import greendiff.train._events as events
    from greendiff.train import TrainerCallback

    hooks = {cls.hook for cls in vars(events).values() if isinstance(cls, type) and hasattr(cls, "hook")}
    assert hooks == {"on_train_start", "on_log", "on_evaluation", "on_forecast", "on_pause_start", "on_pause",
                     "on_phase_progress", "on_stopped", "on_ranks_in_sync", "on_train_end"}
    assert all(callable(getattr(TrainerCallback, hook, None)) for hook in hooks)
