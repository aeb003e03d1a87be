"""Scoring a trained run: FID/KID/precision/recall of its samples (EMA weights), offline, energy measured;
for a class-conditional run over a class-balanced sample at a guidance scale, with class accuracy (the
bundled MNIST classifier) and per-class FID (against the dataset's images of each class).

Example:
    >>> from greendiff.workflows import EvalJob, MeasurementOptions, run_eval
    >>> outcome = run_eval(EvalJob(run=Path("runs/my-run"), n=64, kid_subset=32))  # doctest: +SKIP
    >>> outcome.results[0]["fid"]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from greendiff.errors import UserInputError
from greendiff.tracking import RunSummary
from greendiff.workflows._inputs import load_config_data
from greendiff.workflows._measurement import MeasurementOptions, resolve_settings
from greendiff.workflows._sample import resolve_guidance


def score(unet, sampler, n: int, steps: int, real, extractor, seed: int = 0, kid_subset: int = 1000,
          conditioning: ClassScoring | None = None) -> dict:
    """FID/KID/precision/recall of ``n`` images sampled with ``steps`` sampler steps from a fixed noise seed;
    with ``conditioning`` (a class-conditional model), a class-balanced sample at its guidance scale, scored
    also by class (``class_accuracy``, ``per_class_fid``, ``mean_class_fid``)."""
    import torch

    from greendiff.evaluate import balanced_labels, quality
    from greendiff.train import sample_images

    shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    device = next(unet.parameters()).device
    by_class = {}
    if conditioning is not None:
        labels = balanced_labels(n, conditioning.num_classes)
        by_class = {"labels": labels, "guidance_scale": conditioning.guidance_scale}
    fake = sample_images(unet.eval(), sampler, n, steps, shape, torch.Generator().manual_seed(seed), device, **by_class)
    result = quality(fake, real, extractor, kid_subset=kid_subset).to_dict() | {"seed": seed, "sampler_steps": steps}
    if conditioning is not None:
        result |= conditioning.score(fake, by_class["labels"], extractor)
    return result


@dataclass(frozen=True)
class ClassScoring:
    """How a class-conditional run is sampled and scored: ``num_classes`` K (a balanced sample over 0..K-1),
    ``guidance_scale``, the real features of each class (``real_by_class``) and the classifier that says which
    class an image shows (``classifier``: images -> (N, K') logits, the bundled ``MnistFeatures.logits``)."""

    num_classes: int
    guidance_scale: float
    real_by_class: dict
    classifier: Callable

    def score(self, fake, labels: list[int], extractor) -> dict:
        """``class_accuracy``, ``per_class_fid`` ({class id as text: FID}), ``mean_class_fid``, ``guidance_scale``."""
        from greendiff.evaluate import class_quality

        quality = class_quality(fake, labels, self.classifier, extractor, self.real_by_class).to_dict()
        return {"class_accuracy": quality["class_accuracy"], "per_class_fid": quality["per_class_fid"],
                "mean_class_fid": quality["mean_class_fid"], "guidance_scale": self.guidance_scale}


def reference_labels(data, num_classes: int, n: int):
    """The class of each of ``data.reference_images()`` (``int64 (M,)``), checked before any work: one line when
    ``n`` samples are too few for a per-class FID over ``num_classes``, the data has no labels, or a class
    has fewer than two real images."""
    import torch

    from greendiff.data import REFERENCE_IMAGES, reference_indices

    if n < 2 * num_classes:
        raise UserInputError(f"--n {n} is too few for a per-class FID over {num_classes} classes: at least "
                             f"{2 * num_classes} (2 per class)")
    if data.labels is None:
        raise UserInputError("the run is class-conditional but its dataset has no labels now; per-class FID needs them")
    labels = data.labels[reference_indices(data.num_images, REFERENCE_IMAGES, 0)]
    counts = torch.bincount(labels[labels >= 0], minlength=num_classes)
    thin = next((c for c in range(num_classes) if counts[c] < 2), None)
    if thin is not None:
        raise UserInputError(f"class {thin} has {int(counts[thin])} real image(s) in the dataset; per-class FID needs 2 or more")
    return labels


def class_scoring(real, labels, num_classes: int, guidance_scale: float) -> ClassScoring:
    """The :class:`ClassScoring` of a run: ``real`` are the features of the reference images, ``labels`` their
    classes (:func:`reference_labels`); the classifier is the bundled MNIST one."""
    from greendiff.evaluate import features_by_class, load_mnist_features

    return ClassScoring(num_classes, guidance_scale, features_by_class(real, labels), load_mnist_features().logits)


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
        guidance_scale: classifier-free guidance of a class-conditional run's samples (None: the run's
            ``optim.guidance_scale``); an unconditional run takes none (or 1).
        measurement: where and how the scoring is measured.
    """

    run: Path
    n: int = 2000
    features: str = "mnist"
    seeds: int = 1
    steps: int = 0
    kid_subset: int = 1000
    guidance_scale: float | None = None
    measurement: MeasurementOptions = MeasurementOptions()


@dataclass(frozen=True)
class EvalOutcome:
    """The scores. ``report``: what ``greendiff eval --json`` prints (run, features, n, sampler_steps,
    sampler, results (one per seed), energy_kwh, emissions_kg, ledger_run_id, spread when seeds > 1); for a
    class-conditional run also ``num_classes``, ``guidance_scale`` and ``class_accuracy`` (mean over the seeds),
    and in each result ``class_accuracy``, ``per_class_fid``, ``mean_class_fid``."""

    report: dict
    summary: RunSummary

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
    model = load_run_model(job.run)
    config, unet, sampler = model
    guidance = resolve_guidance(model.num_classes, job.guidance_scale, config.optim.guidance_scale)
    extractor, extractor_name = resolve_extractor(job.features)
    settings = resolve_settings(job.measurement)
    data = load_config_data(config)
    check_run_matches(job.run, config, unet, data)  # before the ledger row
    labels = reference_labels(data, model.num_classes, job.n) if model.num_classes else None
    n_steps = job.steps or config.optim.sample_steps
    with settings.tracker(f"eval {job.run.name}", "eval", f"greendiff eval --run {job.run} --n {job.n}") as tracker:
        with tracker.window("eval"):
            real = reference_features(data.reference_images(), extractor)
            by_class = class_scoring(real, labels, model.num_classes, guidance) if labels is not None else None
            results = [score(unet, sampler, job.n, n_steps, real, extractor, seed, job.kid_subset, by_class)
                       for seed in range(job.seeds)]
    summary = tracker.summary
    report = {"run": str(job.run), "features": extractor_name, "n": job.n, "sampler_steps": n_steps,
              "sampler": config.optim.sampler, "results": results,
              "energy_kwh": summary.energy_kwh, "emissions_kg": summary.emissions_kg, "ledger_run_id": summary.run_id}
    if by_class is not None:
        report |= {"num_classes": model.num_classes, "guidance_scale": guidance,
                   "class_accuracy": sum(r["class_accuracy"] for r in results) / len(results)}
    if job.seeds > 1:
        report["spread"] = seed_spread(results)
    return EvalOutcome(report, summary)
