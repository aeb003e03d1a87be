"""Scoring a trained run: FID/KID/precision/recall of its samples (EMA weights), offline, energy measured.

Example:
    >>> from greendiff.workflows import EvalJob, MeasurementOptions, run_eval
    >>> outcome = run_eval(EvalJob(run=Path("runs/my-run"), n=64, kid_subset=32))  # doctest: +SKIP
    >>> outcome.results[0]["fid"]  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from greendiff.errors import UserInputError
from greendiff.workflows._inputs import load_config_data
from greendiff.workflows._measurement import MeasurementOptions, resolve_settings


def score(unet, sampler, n: int, steps: int, real, extractor, seed: int = 0, kid_subset: int = 1000) -> dict:
    """FID/KID/precision/recall of ``n`` images sampled with ``steps`` sampler steps from a fixed noise seed."""
    import torch

    from greendiff.evaluate import quality
    from greendiff.train import sample_images

    shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    device = next(unet.parameters()).device
    fake = sample_images(unet.eval(), sampler, n, steps, shape, torch.Generator().manual_seed(seed), device)
    return quality(fake, real, extractor, kid_subset=kid_subset).to_dict() | {"seed": seed, "sampler_steps": steps}


@dataclass(frozen=True)
class EvalJob:
    """Scoring of a trained run.

    Args:
        run: run directory (with ``pipeline/`` and ``config.toml``).
        n: generated images per evaluation (>= 4).
        features: ``mnist`` (shipped) or ``inception:PATH`` (local weights file).
        seeds: noise seeds 0..seeds-1; more than 1 reports the spread.
        steps: sampler steps (0: the run's own).
        kid_subset: KID subset size (at most ``n``).
        measurement: where and how the scoring is measured.
    """

    run: Path
    n: int = 2000
    features: str = "mnist"
    seeds: int = 1
    steps: int = 0
    kid_subset: int = 1000
    measurement: MeasurementOptions = MeasurementOptions()


@dataclass(frozen=True)
class EvalOutcome:
    """The scores. ``report``: what ``greendiff eval --json`` prints (run, features, n, sampler_steps,
    sampler, results (one per seed), energy_kwh, emissions_kg, ledger_run_id, spread when seeds > 1)."""

    report: dict
    summary: dict

    @property
    def results(self) -> list[dict]:
        return self.report["results"]


def run_eval(job: EvalJob) -> EvalOutcome:
    """Score ``job.run`` under one ledger run (kind ``eval``); bad input is a one-line error before it opens."""
    from greendiff.evaluate import reference_features, resolve_extractor, seed_spread
    from greendiff.train import load_run_model
    from greendiff.train._artifacts import check_run_matches

    if job.n < 4 or job.seeds < 1 or job.steps < 0 or job.kid_subset < 2:
        raise UserInputError("--n must be >= 4, --seeds >= 1, --steps >= 0, --kid-subset >= 2")
    if job.kid_subset > job.n:
        raise UserInputError(f"--kid-subset {job.kid_subset} exceeds --n {job.n}: too few samples for KID; raise --n")
    config, unet, sampler = load_run_model(job.run)
    extractor, extractor_name = resolve_extractor(job.features)
    settings = resolve_settings(job.measurement)
    data = load_config_data(config)
    check_run_matches(job.run, config, unet, data)  # before the ledger row
    n_steps = job.steps or config.optim.sample_steps
    with settings.tracker(f"eval {job.run.name}", "eval", f"greendiff eval --run {job.run} --n {job.n}") as tracker:
        with tracker.window("eval"):
            real = reference_features(data.images, extractor)
            results = [score(unet, sampler, job.n, n_steps, real, extractor, seed, job.kid_subset)
                       for seed in range(job.seeds)]
    summary = tracker.summary
    report = {"run": str(job.run), "features": extractor_name, "n": job.n, "sampler_steps": n_steps,
              "sampler": config.optim.sampler, "results": results,
              "energy_kwh": summary["energy_kwh"], "emissions_kg": summary["emissions_kg"], "ledger_run_id": summary["run_id"]}
    if job.seeds > 1:
        report["spread"] = seed_spread(results)
    return EvalOutcome(report, summary)
