"""``sample`` and ``eval`` show progress (a bar of images advanced a batch at a time, notes), KID's subset adapts
to a small ``n``, and the per-image energy of ``sample`` says what it covers (the first batch's warm-up)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from greendiff.errors import UserInputError
from greendiff.ledger import Ledger
from greendiff.train import load_run_model, sample_images, to_uint8
from greendiff.units import G_PER_KG, joules_to_kwh
from greendiff.workflows import Advance, EvalJob, SampleJob, run_eval, run_sample
from greendiff.workflows._sample import PerImageEnergy, SampleProgress, per_image_energy
from greendiff.tracking import RunSummary
from tests.workflows.conftest import measurement, trained


class Recorder:
    """A :class:`~greendiff.workflows.Progress` that keeps every call in order: ``("start", label, total)``,
    ``("log", event)``, ``("end",)``, ``("note", text, style)``."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def on_start(self, label: str, total: int) -> None:
        self.events.append(("start", label, total))

    def on_log(self, event) -> None:
        self.events.append(("log", event))

    def on_end(self) -> None:
        self.events.append(("end",))

    def note(self, text: str, style: str | None = None) -> None:
        self.events.append(("note", text, style))

    @property
    def notes(self) -> list[str]:
        return [e[1] for e in self.events if e[0] == "note"]

    def bar(self) -> list[tuple]:
        """The bar's events (notes left out)."""
        return [e for e in self.events if e[0] != "note"]


def test_sample_opens_a_sampling_bar_and_advances_it_by_each_batch(tmp_path, parent):
    progress = Recorder()
    outcome = run_sample(SampleJob(run=parent, n=300, steps=1, out=tmp_path / "s.npz",
                                   measurement=measurement(tmp_path / "l.sqlite")), progress)
    assert progress.bar() == [("start", "sampling", 300), ("log", Advance(256, "batch 1/2")),
                              ("log", Advance(44, "batch 2/2")), ("end",)]
    assert outcome.n == 300


def test_sample_per_image_energy_leaves_the_first_batch_out_when_there_are_more(tmp_path, parent):
    outcome = run_sample(SampleJob(run=parent, n=300, steps=1, out=tmp_path / "s.npz",
                                   measurement=measurement(tmp_path / "l.sqlite")))
    phases = {p.name: p for p in outcome.summary.phases}
    assert set(phases) >= {"sample-first-batch", "sample"}
    steady = phases["sample"]
    assert outcome.per_image == PerImageEnergy(joules_to_kwh(steady.energy_j) / 44, steady.emissions_g / G_PER_KG / 44,
                                               44, False, 2)
    assert outcome.per_image.covers == ("sampling only (model loading excluded), steady: batches 2-2 (44 images), the "
                                        "first batch's warm-up left out")


def test_sample_of_one_batch_says_its_figure_includes_the_warm_up(tmp_path, parent):
    outcome = run_sample(SampleJob(run=parent, n=6, steps=1, out=tmp_path / "s.png",
                                   measurement=measurement(tmp_path / "l.sqlite")))
    first = outcome.summary.phase("sample-first-batch")
    assert [p.name for p in outcome.summary.phases] == ["sample-first-batch"]
    assert outcome.per_image == PerImageEnergy(joules_to_kwh(first.energy_j) / 6, first.emissions_g / G_PER_KG / 6,
                                               6, True, 1)
    assert outcome.energy_kwh_per_image == outcome.per_image.energy_kwh
    assert outcome.emissions_kg_per_image == outcome.per_image.emissions_kg
    assert outcome.per_image.covers == ("sampling only (model loading excluded), including the warm-up of the first "
                                        "batch (one batch of 6 images)")


def _summary(phases: list[tuple[str, float, float]]) -> RunSummary:
    """A summary with these ``(name, joules, grams)`` phases."""
    return RunSummary.from_dict({
        "run_id": 1, "name": "s", "kind": "sample", "status": "completed", "started": None, "ended": None,
        "duration_s": 1.0, "cpu_time_s": 1.0, "energy_j": 1.0, "energy_kwh": 1.0, "energy_kwh_low": 1.0,
        "energy_kwh_high": 1.0, "emissions_kg": 1.0, "emissions_kg_low": 1.0, "emissions_kg_high": 1.0,
        "devices": [], "phases": [{"name": n, "count": 1, "duration_s": 1.0, "energy_j": j, "emissions_g": g}
                                  for n, j, g in phases],
        "intensity": {"source": "t", "kind": "static", "mean_g_per_kwh": 1.0, "notes": []},
        "pue": {"value": 1.0, "source": "x"}, "methods": [], "notes": []})


def test_per_image_energy_is_the_steady_batches_alone_or_the_first_with_its_warm_up():
    summary = _summary([("sample-first-batch", 3.6e6, 100.0), ("sample", 7.2e6, 50.0)])
    assert per_image_energy(summary, 1000, 256) == PerImageEnergy(2.0 / 744, 0.05 / 744, 744, False, 4)
    alone = _summary([("sample-first-batch", 3.6e6, 100.0)])
    assert per_image_energy(alone, 200, 200) == PerImageEnergy(1.0 / 200, 0.1 / 200, 200, True, 1)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_sample_writes_the_images_of_one_sample_images_call_and_meters_its_first_batch_apart(tmp_path, parent, sampler):
    """Progress and the first batch's window come from sample_images' own per-step hook, so the images are those
    of one call, bit for bit, and the window closes where its first batch (256 images) ends."""
    from greendiff.train import make_noise_scheduler, make_sampler

    run = parent if sampler == "ddim" else trained(tmp_path / "ddpm", {"optim.sampler": "ddpm"})
    loaded = load_run_model(run)
    config, unet = loaded.config, loaded.unet
    assert config.optim.sampler == sampler
    shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    whole = sample_images(unet, make_sampler(config.optim, make_noise_scheduler(config.optim)), 300, 2, shape,
                          torch.Generator().manual_seed(3))
    progress = Recorder()
    outcome = run_sample(SampleJob(run=run, n=300, steps=2, seed=3, out=tmp_path / "s.npz",
                                   measurement=measurement(tmp_path / "l.sqlite")), progress)
    assert np.array_equal(np.load(tmp_path / "s.npz")["images"], to_uint8(whole))
    assert (outcome.per_image.images, outcome.per_image.batches) == (44, 2)
    assert progress.bar() == [("start", "sampling", 300), ("log", Advance(128, "batch 1/2")),
                              ("log", Advance(128, "batch 1/2")), ("log", Advance(22, "batch 2/2")),
                              ("log", Advance(22, "batch 2/2")), ("end",)]


class _Windows:
    """A tracker that records its windows: ``("begin", name)``, ``("end", name)``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def begin_window(self, name: str) -> None:
        self.calls.append(("begin", name))

    def end_window(self, name: str) -> None:
        self.calls.append(("end", name))


@pytest.mark.parametrize(("n", "dones", "windows", "first"), [
    (300, (128.0, 256.0, 278.0, 300.0), ["sample-first-batch", "sample"], 256),
    (6, (3.0, 6.0), ["sample-first-batch"], 6),
])
def test_sample_progress_reads_the_first_batch_from_the_sampler_s_own_steps(n, dones, windows, first):
    tracker, progress = _Windows(), Recorder()
    with SampleProgress(progress, n, steps=2, tracker=tracker) as shown:
        for done in dones:
            shown(done)
    assert [name for kind, name in tracker.calls if kind == "begin"] == windows
    assert [name for kind, name in tracker.calls if kind == "end"] == windows
    assert (shown.first_batch, shown.shown) == (first, n)
    assert sum(event.units for _, event in progress.bar()) == n


def test_eval_opens_an_evaluating_bar_of_every_seeds_images(tmp_path, parent):
    progress = Recorder()
    run_eval(EvalJob(run=parent, n=8, seeds=2, steps=1, kid_subset=4, measurement=measurement(tmp_path / "l.sqlite")),
             progress)
    assert progress.bar() == [("start", "evaluating", 16), ("log", Advance(8, "seed 0, batch 1/1")),
                              ("log", Advance(8, "seed 1, batch 1/1")), ("end",)]
    assert progress.notes == []  # the flags gave the location; the KID subset was given


def test_eval_of_fewer_than_1000_images_takes_them_all_as_the_kid_subset_and_says_so(tmp_path, parent):
    progress = Recorder()
    outcome = run_eval(EvalJob(run=parent, n=200, steps=1, measurement=measurement(tmp_path / "l.sqlite")), progress)
    assert progress.notes == ["KID on subsets of 200 (all 200 images; the default 1,000 needs as many samples): "
                              "--kid-subset sets it"]
    assert outcome.results[0].quality.kid >= -1  # scored (KID is an unbiased estimate: it may dip below 0)
    assert EvalJob(run=parent).kid_subset is None


def test_an_explicit_kid_subset_above_n_stays_a_one_line_error_before_the_ledger(tmp_path, parent):
    ledger = tmp_path / "l.sqlite"
    with pytest.raises(UserInputError, match=r"^--kid-subset 300 exceeds --samples 200: too few samples for KID; raise --samples$"):
        run_eval(EvalJob(run=parent, n=200, kid_subset=300, measurement=measurement(ledger)))
    assert not ledger.exists() or Ledger(ledger).list_runs() == []


@pytest.mark.parametrize("suffix", [".png", ".npz"])
def test_sample_into_a_folder_that_does_not_exist_is_one_line_and_creates_nothing(tmp_path, parent, suffix):
    """-o follows the one output rule (workflows._inputs.check_output): its folder must exist."""
    ledger, out = tmp_path / "l.sqlite", tmp_path / "missing" / f"s{suffix}"
    with pytest.raises(UserInputError) as caught:
        run_sample(SampleJob(run=parent, n=2, steps=1, out=out, measurement=measurement(ledger)))
    assert str(caught.value) == f"-o/--output {out}: folder {out.parent} does not exist"
    assert not out.parent.exists() and (not ledger.exists() or Ledger(ledger).list_runs() == [])


@pytest.mark.parametrize("job", ["sample", "eval"])
def test_sample_and_eval_refuse_a_progress_that_is_not_one(tmp_path, parent, job):
    with pytest.raises(TypeError, match="progress must be a Progress"):
        if job == "sample":
            run_sample(SampleJob(run=parent, n=2, out=tmp_path / "s.png"), object())
        else:
            run_eval(EvalJob(run=parent, n=8), object())
    assert not Path(tmp_path / "s.png").exists()
