"""Scoring a trained run: FID/KID/precision/recall of its samples (EMA weights), offline, energy measured;
for a class-conditional run over a class-balanced sample at a guidance scale, with class accuracy (the
bundled MNIST classifier) and per-class FID (against the dataset's images of each class).

Example:
    >>> from greendiff.workflows import EvalJob, MeasurementOptions, run_eval
    >>> outcome = run_eval(EvalJob(run=Path("runs/my-run"), n=64, kid_subset=32))  # doctest: +SKIP
    >>> outcome.results[0].quality.fid  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from greendiff.errors import UserInputError
from greendiff.names import display_path
from greendiff.tracking import RunSummary
from greendiff.workflows._inputs import is_bundled, load_config_data
from greendiff.workflows._fields import (
    EVAL_IMAGES, GUIDANCE, KID_SUBSET, SAMPLER_STEPS0, SEEDS, check_instance, checked_float, checked_int, checked_path,
    set_fields,
)
from greendiff.workflows._measurement import MeasurementOptions, resolve_settings
from greendiff.workflows._progress import NullProgress, Progress, check_progress
from greendiff.workflows._sample import SampleProgress, resolve_guidance

if TYPE_CHECKING:
    from greendiff.evaluate import Quality
    from greendiff.evaluate._classes import ClassQuality


def score(unet, sampler, n: int, steps: int, real, extractor, seed: int = 0, kid_subset: int = 1000,
          conditioning: ClassScoring | None = None, progress: Progress = NullProgress(), space=None) -> EvalResult:
    """FID/KID/precision/recall of ``n`` images sampled with ``steps`` sampler steps from a fixed noise seed;
    with ``conditioning`` (a class-conditional model), a class-balanced sample at its guidance scale, scored
    also by class (``class_accuracy``, ``per_class_fid``, ``mean_class_fid``). The images sampled advance
    ``progress``'s open bar after every sampler step (:class:`SampleProgress`). ``space``: a latent run's
    (its samples are decoded, and the decoding metered with them); None: pixels."""
    import torch

    from greendiff.evaluate import balanced_labels, quality
    from greendiff.train import sample_decoded

    shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    device = next(unet.parameters()).device
    by_class = {}
    if conditioning is not None:
        labels = balanced_labels(n, conditioning.num_classes)
        by_class = {"labels": labels, "guidance_scale": conditioning.guidance_scale}
    fake = sample_decoded(space, unet.eval(), sampler, n, steps, shape, torch.Generator().manual_seed(seed), device,
                          on_step=SampleProgress(progress, n, steps, f"seed {seed}, "), **by_class)
    scored = quality(fake, real, extractor, kid_subset=kid_subset)
    if conditioning is None:
        return EvalResult(seed, steps, scored)
    return EvalResult(seed, steps, scored, conditioning.score(fake, by_class["labels"], extractor),
                      conditioning.guidance_scale)


@dataclass(frozen=True)
class EvalResult:
    """The scores of one noise seed.

    Attributes:
        seed: the noise seed of the sample.
        sampler_steps: sampler steps per image.
        quality: FID, KID (and its std), precision, recall of the ``n`` images.
        classes: a class-conditional run's class accuracy (None when no classifier knows its classes) and
            per-class FID; None for an unconditional run.
        guidance_scale: the guidance of a class-conditional run's samples (None: unconditional).
    """

    seed: int
    sampler_steps: int
    quality: Quality
    classes: ClassQuality | None = None
    guidance_scale: float | None = None

    def to_dict(self) -> dict:
        """JSON-ready, as ``greendiff eval --json`` prints each result: the quality, ``seed``, ``sampler_steps``,
        then (class-conditional) ``class_accuracy`` when known, ``per_class_fid``, ``mean_class_fid``,
        ``guidance_scale``."""
        out = self.quality.to_dict() | {"seed": self.seed, "sampler_steps": self.sampler_steps}
        if self.classes is not None:
            by_class = self.classes.to_dict()
            by_class.pop("n")
            out |= by_class | {"guidance_scale": self.guidance_scale}
        return out


@dataclass(frozen=True)
class ClassScoring:
    """How a class-conditional run is sampled and scored: ``num_classes`` K (a balanced sample over 0..K-1),
    ``guidance_scale``, the real features of each class (``real_by_class``) and the classifier that says which
    class an image shows (``classifier``: images -> (N, K') logits, the bundled ``MnistFeatures.logits``; None
    when the run's classes are not ones it knows: no ``class_accuracy`` then)."""

    num_classes: int
    guidance_scale: float
    real_by_class: dict
    classifier: Callable | None

    def score(self, fake, labels: list[int], extractor) -> ClassQuality:
        """``class_accuracy`` (with a classifier; exact as a float64 share) and the per-class FID of ``fake``
        (``(N, C, H, W)`` in [-1, 1]) generated for ``labels``."""
        from greendiff.evaluate import class_quality

        return class_quality(fake, labels, self.classifier, extractor, self.real_by_class)


def reference_labels(data, num_classes: int, n: int, flag: str = "--samples"):
    """The class of each of ``data.reference_images()`` (``int64 (M,)``), checked before any work: one line when
    ``n`` samples (given as ``flag``: eval's ``--samples``, a compression job's ``--eval-samples``) are too few
    for a per-class FID over ``num_classes``, the data has no labels, or a class has fewer than two real images."""
    import torch

    from greendiff.data import REFERENCE_IMAGES, reference_indices

    if n < 2 * num_classes:
        raise UserInputError(f"{flag} {n} is too few for a per-class FID over {num_classes} classes: at least "
                             f"{2 * num_classes} (2 per class)")
    if data.labels is None:
        raise UserInputError("the run is class-conditional but its dataset has no labels now; per-class FID needs them")
    labels = data.labels[reference_indices(data.num_images, REFERENCE_IMAGES, 0)]
    counts = torch.bincount(labels[labels >= 0], minlength=num_classes)
    thin = next((c for c in range(num_classes) if counts[c] < 2), None)
    if thin is not None:
        raise UserInputError(f"class {thin} has {int(counts[thin])} real image(s) in the dataset; per-class FID needs 2 or more")
    return labels


def accuracy_note(config, data) -> str:
    """Why a class-conditional run gets no ``class_accuracy`` ("" when it does): the bundled classifier knows
    the digits 0-9, so only a run on the bundled ``mnist``/``digits`` or on classes named '0'..'9' in order
    is scored by it."""
    from greendiff.data import DIGIT_CLASSES

    names = tuple(getattr(data, "class_names", ()) or ())
    if is_bundled(config.data.dataset) or names == DIGIT_CLASSES:
        return ""
    shown = ", ".join(map(repr, names[:4])) + (", ..." if len(names) > 4 else "") if names else "bare integer ids"
    return (f"no class accuracy: the bundled classifier knows the digits 0-9, and this run's classes are {shown} "
            "(per-class FID still scores each class)")


def class_scoring(real, labels, num_classes: int, guidance_scale: float, digits: bool = True) -> ClassScoring:
    """The :class:`ClassScoring` of a run: ``real`` are the features of the reference images, ``labels`` their
    classes (:func:`reference_labels`); the classifier is the bundled MNIST one when the classes are the
    ``digits`` (else none)."""
    from greendiff.evaluate import features_by_class, load_mnist_features

    classifier = load_mnist_features().logits if digits else None
    return ClassScoring(num_classes, guidance_scale, features_by_class(real, labels), classifier)


@dataclass(frozen=True)
class EvalJob:
    """Scoring of a trained run.

    Args:
        run: run directory (with ``pipeline/`` and ``config.toml``).
        n: generated images per evaluation (>= 4).
        features: ``mnist`` (shipped) or ``inception:PATH`` (local weights file).
        seeds: noise seeds 0..seeds-1; more than 1 reports the spread.
        steps: sampler steps (0: the run's own).
        kid_subset: KID subset size (at most ``n``); None: min(1000, ``n``), and a note says so when that is ``n``.
        guidance_scale: classifier-free guidance of a class-conditional run's samples (None: the run's
            ``optim.guidance_scale``); an unconditional run takes none (or 1).
        measurement: where and how the scoring is measured.
        ema_length: post-hoc EMA (EDM2; a run trained with ``--ema-snapshots``): the weights are the EMA of this
            relative length ``sigma_rel`` in (0, 0.3], rebuilt from the snapshots; ``"auto"``: the best FID of a
            small evaluation over :data:`EMA_LENGTH_GRID`; None: the pipeline's own EMA weights. A number given
            as ``str`` (the CLI's) is parsed.
    """

    run: Path
    n: int = 2000
    features: str = "mnist"
    seeds: int = 1
    steps: int = 0
    kid_subset: int | None = None
    guidance_scale: float | None = None
    measurement: MeasurementOptions = MeasurementOptions()
    ema_length: float | str | None = None

    def __post_init__(self) -> None:
        """Checked as ``greendiff eval`` checks its flags (``TypeError`` for a wrong type, the flag's one-line
        :class:`UserInputError` out of range); ``run`` may be given as ``str``."""
        guidance = self.guidance_scale
        if not isinstance(self.features, str):
            raise TypeError(f"EvalJob.features must be a str ('mnist' or 'inception:PATH'), got {type(self.features).__name__}")
        set_fields(self, run=checked_path(self.run, "EvalJob.run"),
                   n=checked_int(self.n, EVAL_IMAGES, "EvalJob.n", "--samples"),
                   seeds=checked_int(self.seeds, SEEDS, "EvalJob.seeds", "--seeds"),
                   steps=checked_int(self.steps, SAMPLER_STEPS0, "EvalJob.steps", "--sample-steps"),
                   kid_subset=None if self.kid_subset is None else checked_int(
                       self.kid_subset, KID_SUBSET, "EvalJob.kid_subset", "--kid-subset"),
                   guidance_scale=None if guidance is None else checked_float(
                       guidance, GUIDANCE, "EvalJob.guidance_scale", "--guidance-scale"),
                   ema_length=parse_ema_length(self.ema_length))
        check_instance(self.measurement, MeasurementOptions, "EvalJob.measurement")


#: The EMA lengths (sigma_rel) ``--ema-length auto`` compares: EDM2's range of interest (its Fig. 5), denser where
#: small runs land
EMA_LENGTH_GRID = (0.02, 0.03, 0.05, 0.07, 0.10, 0.13, 0.16, 0.20, 0.25)
EMA_SEARCH_SAMPLES = 200  #: images per length in ``--ema-length auto``'s small evaluation (at most ``--samples``)
EMA_SEARCH_SEED = 10_007  #: its noise seed: not one of the final evaluation's, so the choice does not flatter it


def parse_ema_length(value: object) -> float | str | None:
    """``--ema-length``'s value: None, ``"auto"``, or a sigma_rel in (0, 0.3] (a number, or a ``str`` of one);
    a one-line :class:`UserInputError` otherwise."""
    from greendiff.train._posthoc_ema import check_sigma_rel

    if value is None or value == "auto":
        return value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise UserInputError(f"--ema-length {value!r:.40} is neither a number nor auto: give a sigma_rel in "
                                 "(0, 0.3], e.g. 0.1, or auto") from None
        return check_sigma_rel(number)
    return check_sigma_rel(value)


def load_ema_weights(unet, weights: dict, run: Path) -> None:
    """Copy a reconstructed EMA (``{name: tensor}``) into ``unet``'s parameters of those names; a one-line error
    when they are not its parameters (snapshots of another network, or of a fine-tune's adapters)."""
    import torch

    params = dict(unet.named_parameters())
    wrong = next((k for k, t in weights.items() if k not in params or params[k].shape != t.shape), None)
    if wrong is not None or not weights:
        raise UserInputError(f"--run {display_path(run)}: its EMA snapshots do not fit its pipeline's network "
                             f"(parameter {wrong!r:.80}); --ema-length works on runs trained from scratch")
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor)


def choose_ema_length(job: EvalJob, unet, score_fid: Callable[[int], float],
                      progress: Progress) -> tuple[float | None, tuple[tuple[float, float], ...]]:
    """Put the EMA ``job.ema_length`` asks for into ``unet``: ``(sigma_rel, search)``, ``search`` the ``(sigma_rel,
    FID)`` of each length tried by ``auto`` (``score_fid(n)``: the FID of ``n`` images of the weights in ``unet``
    now, at :data:`EMA_SEARCH_SEED`), the best one loaded last; ``(None, ())`` without ``ema_length``."""
    from greendiff.train._posthoc_ema import reconstruct

    if job.ema_length is None:
        return None, ()
    if job.ema_length != "auto":
        load_ema_weights(unet, reconstruct(job.run, job.ema_length), job.run)
        return job.ema_length, ()
    n = min(EMA_SEARCH_SAMPLES, job.n)
    progress.on_start("choosing the EMA length", n * len(EMA_LENGTH_GRID))
    search = []
    try:
        for sigma_rel in EMA_LENGTH_GRID:
            load_ema_weights(unet, reconstruct(job.run, sigma_rel), job.run)
            search.append((sigma_rel, float(score_fid(n))))
    finally:
        progress.on_end()
    best = min(search, key=lambda row: row[1] if row[1] == row[1] else float("inf"))[0]  # a NaN FID never wins
    load_ema_weights(unet, reconstruct(job.run, best), job.run)
    return best, tuple(search)


@dataclass(frozen=True)
class EvalReport:
    """What ``greendiff eval --json`` prints (:meth:`to_dict`).

    Attributes:
        run: the scored run directory, as given.
        features: the feature extractor's name.
        n: images per seed.
        sampler_steps, sampler: how the images were sampled.
        results: one per seed (0..seeds-1).
        energy_kwh, emissions_kg, ledger_run_id: the scoring's cost and its ledger run.
        num_classes: a class-conditional run's classes (None: unconditional).
        guidance_scale: its samples' guidance (None: unconditional).
        class_accuracy_note: why a class-conditional run has no class accuracy ("" when it has one, or is
            unconditional): the bundled classifier knows only the digits 0-9.
        spread: {metric: std over the seeds} when seeds > 1, else None.
        ema_length: the post-hoc EMA length (sigma_rel) scored (None: the pipeline's own EMA weights).
        ema_search: ``--ema-length auto``'s ``(sigma_rel, FID)`` of each length tried on its small evaluation.
    """

    run: str
    features: str
    n: int
    sampler_steps: int
    sampler: str
    results: tuple[EvalResult, ...]
    energy_kwh: float
    emissions_kg: float
    ledger_run_id: int
    num_classes: int | None = None
    guidance_scale: float | None = None
    class_accuracy_note: str = ""
    spread: dict[str, float] | None = None
    ema_length: float | None = None
    ema_search: tuple[tuple[float, float], ...] = ()

    @property
    def class_accuracy(self) -> float | None:
        """Mean class accuracy over the seeds (rounded to 12 places); None when there is none."""
        if self.num_classes is None or self.class_accuracy_note:
            return None
        return round(sum(r.classes.class_accuracy for r in self.results) / len(self.results), 12)

    def to_dict(self) -> dict:
        """JSON-ready, keys in the order ``greendiff eval --json`` has always printed them."""
        out = {"run": self.run, "features": self.features, "n": self.n, "sampler_steps": self.sampler_steps,
               "sampler": self.sampler, "results": [r.to_dict() for r in self.results],
               "energy_kwh": self.energy_kwh, "emissions_kg": self.emissions_kg, "ledger_run_id": self.ledger_run_id}
        if self.num_classes is not None:
            out |= {"num_classes": self.num_classes, "guidance_scale": self.guidance_scale}
            out |= ({"class_accuracy_note": self.class_accuracy_note} if self.class_accuracy_note
                    else {"class_accuracy": self.class_accuracy})
        if self.spread is not None:
            out["spread"] = self.spread
        if self.ema_length is not None:
            out["ema_length"] = self.ema_length
        if self.ema_search:
            out["ema_search"] = [{"ema_length": s, "fid": fid} for s, fid in self.ema_search]
        return out


@dataclass(frozen=True)
class EvalOutcome:
    """The scores (``report``; its :meth:`EvalReport.to_dict` is ``greendiff eval --json``) and the scoring's
    ledger run summary."""

    report: EvalReport
    summary: RunSummary

    @property
    def results(self) -> tuple[EvalResult, ...]:
        return self.report.results


KID_SUBSET_DEFAULT = 1000  #: KID's subset size when none is given (fewer when fewer images are sampled)


def kid_subset_for(job: EvalJob) -> tuple[int, str]:
    """``(KID subset size, note)``: the one given (one line when it exceeds ``n``), else min(1000, ``n``), with a
    note when that is fewer than 1000."""
    if job.kid_subset is not None:
        if job.kid_subset > job.n:
            raise UserInputError(f"--kid-subset {job.kid_subset} exceeds --samples {job.n}: too few samples for KID; raise --samples")
        return job.kid_subset, ""
    if job.n >= KID_SUBSET_DEFAULT:
        return KID_SUBSET_DEFAULT, ""
    return job.n, (f"KID on subsets of {job.n} (all {job.n} images; the default {KID_SUBSET_DEFAULT:,} needs as many "
                   "samples): --kid-subset sets it")


def run_eval(job: EvalJob, progress: Progress = NullProgress()) -> EvalOutcome:
    """Score ``job.run`` under one ledger run (kind ``eval``); bad input is a one-line error before it opens.
    ``progress`` gets an ``evaluating`` bar of ``n`` x ``seeds`` images, advanced after every sampler step
    (:class:`~greendiff.workflows.Advance`), and notes: the KID subset when it adapted to ``n``, the run's stored
    location when the job is priced there. With ``job.ema_length`` the weights are a post-hoc EMA
    (:func:`choose_ema_length`; ``auto`` first opens a ``choosing the EMA length`` bar), rebuilt inside the
    metered window."""
    from greendiff.evaluate import reference_features, resolve_extractor, seed_spread
    from greendiff.train import load_run_model
    from greendiff.train._artifacts import check_run_matches
    from greendiff.train._posthoc_ema import snapshot_records

    check_instance(job, EvalJob, "run_eval's job")
    progress = check_progress(progress)
    kid_subset, kid_note = kid_subset_for(job)
    model = load_run_model(job.run)
    config, unet, sampler = model.config, model.unet, model.sampler
    guidance = resolve_guidance(model.num_classes, job.guidance_scale, config.optim.guidance_scale)
    extractor, extractor_name = resolve_extractor(job.features)
    settings = resolve_settings(job.measurement, run=job.run)
    data = load_config_data(config)
    check_run_matches(job.run, config, unet, data, model.space)  # before the ledger row
    labels = reference_labels(data, model.num_classes, job.n) if model.num_classes else None
    note = accuracy_note(config, data) if labels is not None else ""
    if job.ema_length is not None:
        snapshot_records(job.run)  # a run without snapshots: one line, before the ledger row
    n_steps = job.steps or config.optim.sample_steps
    for line in (settings.note, kid_note):
        if line:
            progress.note(line)
    command = f"greendiff eval --run {display_path(job.run)} --samples {job.n}" + (
        f" --ema-length {job.ema_length}" if job.ema_length is not None else "")
    with settings.tracker(f"eval {job.run.name}", "eval", command) as tracker:
        with tracker.window("eval"):
            real = reference_features(data.reference_images(), extractor)
            by_class = class_scoring(real, labels, model.num_classes, guidance, not note) if labels is not None else None
            ema_length, search = choose_ema_length(job, unet, lambda n: score(
                unet, sampler, n, n_steps, real, extractor, EMA_SEARCH_SEED, min(kid_subset, n), by_class, progress,
                model.space).quality.fid, progress)
            progress.on_start("evaluating", job.n * job.seeds)
            try:
                results = [score(unet, sampler, job.n, n_steps, real, extractor, seed, kid_subset, by_class, progress,
                                 model.space)
                           for seed in range(job.seeds)]
            finally:
                progress.on_end()
    summary = tracker.summary
    conditional = by_class is not None
    report = EvalReport(str(job.run), extractor_name, job.n, n_steps, config.optim.sampler_name, tuple(results),
                        summary.energy_kwh, summary.emissions_kg, summary.run_id,
                        num_classes=model.num_classes if conditional else None,
                        guidance_scale=guidance if conditional else None, class_accuracy_note=note,
                        spread=seed_spread([r.quality.to_dict() for r in results]) if job.seeds > 1 else None,
                        ema_length=ema_length, ema_search=search)
    return EvalOutcome(report, summary)
