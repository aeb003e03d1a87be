"""What training output says while it runs: each in-training evaluation's scores as it happens, the images an
evaluation has sampled, and whether a rate or projection includes the first steps' warm-up."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from greendiff.cli._progress import RichProgress
from greendiff.train import PhaseProgress, TrainerCallback, train
from greendiff.workflows._progress import TrainerProgress
from tests.train.fakes import ChargedGpu, CostlySetup


class Kept(RichProgress):
    """The CLI's progress on an in-memory console, keeping every event it is told."""

    def __init__(self):
        self.file = io.StringIO()
        super().__init__(Console(file=self.file, width=200))
        self.events = []

    def on_log(self, event):
        self.events.append(event)
        super().on_log(event)

    def text(self):
        return " ".join(self.file.getvalue().split())


def test_each_evaluation_prints_its_scores_and_shows_its_sampling(tmp_path, tiny_data, tiny_config, tracker):
    shown = Kept()
    config = tiny_config(run__max_steps=6, stop__eval_every=3, stop__eval_samples=8, stop__spread_seeds=1)
    shown.on_start("train", 6)
    train(config, tmp_path, tiny_data, tracker, callbacks=[TrainerProgress(shown)])
    shown.on_end()
    evals = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"eval"' in line]
    assert [e["step"] for e in evals] == [3, 6]
    for e in evals:  # one line per evaluation, as it happens, with the run's own figures
        assert f"evaluation at step {e['step']}: FID {e['fid']:.2f} · KID {e['kid']:.4f} (8 images, " in shown.text()
    sampled = [(e.done, e.total) for e in shown.events if isinstance(e, PhaseProgress)]
    # each evaluation: a start tick and one per sampler step (4) of its one batch of 8 images
    assert sampled == [(0.0, 8), (2.0, 8), (4.0, 8), (6.0, 8), (8.0, 8)] * 2
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert "progress" not in {r.get("event") for r in records}  # ticks are not records


class Logs(TrainerCallback):
    """Keeps the trainer's log records."""

    def __init__(self):
        self.events = []

    def on_log(self, trainer, event):
        self.events.append(event)


def test_the_trainer_projects_the_energy_from_the_segments_own_steps(tmp_path, tiny_data, tiny_config, tracker_for):
    """6 kWh of reference features before the first step, 10 kWh for the first step (warm-up), 1 kWh for each later
    one, 10 steps: the first record projects from the first step alone and says so (16 + 9 x 10 = 106 kWh); the
    next from the mean since the first step (17 + 8 x 1 = 25 kWh): the setup is counted once, not as a step; the
    bar shows the trainer's figures (the CLI projected on its own before: 16 x 10 = 160 kWh)."""
    gpu = ChargedGpu(10.0, 1.0)
    config = tiny_config(run__max_steps=10, stop__eval_at_end=True, stop__eval_samples=8, stop__spread_seeds=1)
    logs = Logs()
    train(config, tmp_path / "run", tiny_data, tracker_for(gpu), objective=gpu.objective,
          evaluator=CostlySetup(gpu, 6.0), callbacks=[logs])
    first, second = logs.events[:2]
    assert (first.step, first.warmup, first.projected_with_warmup) == (1, True, True)
    assert first.energy_kwh == pytest.approx(16.0) and first.projected_energy_kwh == pytest.approx(106.0)
    assert (second.step, second.warmup, second.projected_with_warmup) == (2, False, False)
    assert second.projected_energy_kwh == pytest.approx(25.0)
    assert logs.events[-1].projected_energy_kwh == pytest.approx(logs.events[-1].energy_kwh)  # at max_steps: the total
    shown = Kept()
    shown.on_start("train", 10)
    assert "img/s incl. warm-up · 16.0 kWh · " in shown._log_info(first)
    assert shown._log_info(first).endswith("CO2e · projected 106 kWh incl. warm-up")
    assert shown._log_info(second).endswith("CO2e · projected 25.0 kWh") and "warm-up" not in shown._log_info(second)
    shown.on_end()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in records if "loss" in r]
    assert [r["projected_energy_kwh"] for r in logged[:2]] == pytest.approx([106.0, 25.0])
    assert [r["projected_with_warmup"] for r in logged[:2]] == [True, False]
