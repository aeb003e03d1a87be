"""What training output says while it runs: each in-training evaluation's scores as it happens, the images an
evaluation has sampled, and whether a rate or projection includes the first steps' warm-up."""

from __future__ import annotations

import io
import json

from rich.console import Console

from greendiff.cli._progress import RichProgress
from greendiff.train import LogEvent, PhaseProgress, train
from greendiff.workflows._progress import TrainerProgress


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
    assert not any(isinstance(e, PhaseProgress) for e in [json.loads(line) for line in
                                                           (tmp_path / "metrics.jsonl").read_text().splitlines()])


def log(step, energy_kwh, warmup):
    return LogEvent(step, 0.5, 1e-3, 400.0 if warmup else 1000.0, energy_kwh, energy_kwh * 0.05, None, warmup)


def test_the_first_rate_and_projection_say_they_include_the_warmup():
    """The first record holds the first step (10x a later one): its rate and the projection from it say so; the
    next projection uses the energy per step since that record (1 Wh a step) and is the steady state."""
    shown = Kept()
    shown.on_start("train", 100)
    shown.on_log(log(10, 0.019, True))  # 10 Wh for the first step, 1 Wh for each of the next 9
    first = shown._log_info(log(10, 0.019, True))
    assert "400 img/s incl. warm-up" in first and "projected 190 Wh incl. warm-up" in first
    later = shown._log_info(log(20, 0.029, False))
    assert "1000 img/s ·" in later and "projected 109 Wh" in later and "warm-up" not in later
    shown.on_end()
