"""Sampling a trained run: images from its EMA weights (by class, with classifier-free guidance, for a
class-conditional run), written as a PNG grid or an ``.npz``, the energy per image measured.

Example:
    >>> from greendiff.workflows import SampleJob, run_sample
    >>> outcome = run_sample(SampleJob(run=Path("runs/mnist-cond"), classes=(7,), n=16, guidance_scale=2.0))  # doctest: +SKIP
    >>> outcome.labels[:3], outcome.grid_rows  # doctest: +SKIP
    ((7, 7, 7), 1)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from greendiff.errors import UserInputError
from greendiff.names import display_path
from greendiff.numbers import SEED
from greendiff.tracking import RunSummary
from greendiff.workflows._fields import (
    GUIDANCE, IMAGES, SAMPLER_STEPS, check_instance, checked_class_ids, checked_float, checked_int, checked_path,
    set_fields,
)
from greendiff.workflows._inputs import check_output
from greendiff.workflows._measurement import MeasurementOptions, resolve_settings
from greendiff.workflows._progress import Advance, NullProgress, Progress, check_progress

SUFFIXES = (".png", ".npz")
FIRST_BATCH_PHASE = "sample-first-batch"  #: the window of the first batch, its warm-up (a sub-phase of ``sample``)


@dataclass(frozen=True)
class SampleJob:
    """Images to sample from a trained run.

    Args:
        run: run directory (with ``pipeline/`` and ``config.toml``).
        n: images; with ``classes``, images *per class* (``classes=(0, 3), n=4``: 8 images, a grid row per class).
        classes: class ids to sample, in order (a class-conditional run only); ``()``: a conditional run samples
            class-balanced (ids round robin), an unconditional one as it always did.
        guidance_scale: classifier-free guidance w (finite, >= 0; 1: the conditional model alone); None: the
            run's ``optim.guidance_scale`` (conditional), 1 (unconditional, which takes no other value).
        steps: sampler steps (None: the run's ``optim.sample_steps``).
        out: a ``.png`` grid or an ``.npz`` (``images`` uint8 (N, H, W, C), and ``labels`` when conditional).
        seed: noise seed.
        measurement: where and how sampling is measured.
    """

    run: Path
    n: int = 64
    classes: tuple[int, ...] = ()
    guidance_scale: float | None = None
    steps: int | None = None
    out: Path = Path("samples.png")
    seed: int = 0
    measurement: MeasurementOptions = MeasurementOptions()

    def __post_init__(self) -> None:
        """Checked as ``greendiff sample`` checks its flags (``TypeError`` for a wrong type, the flag's one-line
        :class:`UserInputError` out of range); ``run`` and ``out`` may be given as ``str``."""
        guidance = self.guidance_scale
        set_fields(self, run=checked_path(self.run, "SampleJob.run"), out=checked_path(self.out, "SampleJob.out"),
                   n=checked_int(self.n, IMAGES, "SampleJob.n", "--samples"),
                   classes=checked_class_ids(self.classes, "SampleJob.classes", "--class"),
                   guidance_scale=None if guidance is None else checked_float(
                       guidance, GUIDANCE, "SampleJob.guidance_scale", "--guidance-scale"),
                   steps=None if self.steps is None else checked_int(self.steps, SAMPLER_STEPS, "SampleJob.steps", "--sample-steps"),
                   seed=checked_int(self.seed, SEED, "SampleJob.seed", "--seed"))
        check_instance(self.measurement, MeasurementOptions, "SampleJob.measurement")


@dataclass(frozen=True)
class PerImageEnergy:
    """What one sampled image cost, and what that figure covers.

    Attributes:
        energy_kwh: energy per image (kWh), of the sampling only: loading the model (before the meter starts)
            and writing the file are not in it.
        emissions_kg: CO2e per image (kg), likewise.
        images: the images it is an average over.
        includes_warmup: whether the first batch is in it. The first forward passes of a freshly loaded model
            cost several times (up to ~10x) later ones, so a figure that includes them overstates the steady
            cost of sampling; with more than one batch the first is left out.
        batches: the batches :func:`greendiff.train.sample_images` drew the sample in.

    Example:
        >>> PerImageEnergy(1e-6, 5e-8, 16, True, 1).covers
        'sampling only (model loading excluded), including the warm-up of the first batch (one batch of 16 images)'
    """

    energy_kwh: float
    emissions_kg: float
    images: int
    includes_warmup: bool
    batches: int

    @property
    def covers(self) -> str:
        """What the figure covers, in words (for the line that prints it)."""
        if self.includes_warmup:
            return ("sampling only (model loading excluded), including the warm-up of the first batch (one batch of "
                    f"{self.images:,} images)")
        return (f"sampling only (model loading excluded), steady: batches 2-{self.batches} ({self.images:,} images), "
                "the first batch's warm-up left out")


@dataclass(frozen=True)
class SampleOutcome:
    """What was sampled: ``out``, ``n`` images, their ``labels`` (None: unconditional), ``grid_rows`` (one per
    requested class; 0: a square grid or an ``.npz``), sampler ``steps`` and ``sampler``, the ``guidance_scale``
    used (None: unconditional), the ledger run's ``summary`` (energy_kwh, emissions_kg, run_id, ...: the whole
    call) and ``per_image``: the energy and CO2e of one image and what they cover (:class:`PerImageEnergy`)."""

    out: Path
    n: int
    labels: tuple[int, ...] | None
    grid_rows: int
    steps: int
    sampler: str
    guidance_scale: float | None
    summary: RunSummary
    per_image: PerImageEnergy

    @property
    def energy_kwh_per_image(self) -> float:
        return self.per_image.energy_kwh

    @property
    def emissions_kg_per_image(self) -> float:
        return self.per_image.emissions_kg


def per_image_energy(summary: RunSummary, n: int, first_batch: int) -> PerImageEnergy:
    """The per-image figure of a sample of ``n`` images drawn in batches of ``first_batch`` (the first metered in
    the :data:`FIRST_BATCH_PHASE` window, the rest in ``sample``): the rest alone when there is a rest."""
    from greendiff.units import G_PER_KG, joules_to_kwh

    batches = -(-n // first_batch)
    steady = next((p for p in summary.phases if p.name == "sample"), None)
    if steady is not None and n > first_batch:
        images, phase, warm = n - first_batch, steady, False
    else:
        images, phase, warm = n, next(p for p in summary.phases if p.name == FIRST_BATCH_PHASE), True
    return PerImageEnergy(joules_to_kwh(phase.energy_j) / images, phase.emissions_g / G_PER_KG / images, images,
                          warm, batches)


class SampleProgress:
    """The ``on_step`` of :func:`greendiff.train.sample_images` (the images done so far, a float, after each
    sampler step) for a sample of ``n`` images in ``steps`` sampler steps per batch: it advances ``progress``'s
    open bar by whole images (:class:`Advance`, its text ``"{label}batch k/K"``) and, used as a context manager
    with a ``tracker``, meters the first batch (its warm-up) in the :data:`FIRST_BATCH_PHASE` window and the
    rest in ``sample``. The batches are ``sample_images``' own: the first one's size is read from its first
    step (images done = size / steps), so no second constant has to match its batch size.

    Example:
        >>> shown = SampleProgress(NullProgress(), n=300, steps=2)
        >>> for done in (128.0, 256.0, 278.0, 300.0):  # sample_images' calls: a batch of 256, then one of 44
        ...     shown(done)
        >>> shown.first_batch, shown.batches, shown.shown
        (256, 2, 300)
    """

    def __init__(self, progress: Progress, n: int, steps: int, label: str = "", tracker=None) -> None:
        self.progress, self.n, self.steps, self.label, self.tracker = progress, n, steps, label, tracker
        self.calls = 0  # sampler steps so far, all batches
        self.shown = 0  # whole images advanced
        self.first_batch = 0  # images in the first batch (known from the first step)
        self.window: str | None = None  # the tracker's open window

    @property
    def batches(self) -> int:
        """Batches the sample is drawn in (0 before its first step)."""
        return -(-self.n // self.first_batch) if self.first_batch else 0

    def __enter__(self) -> SampleProgress:
        self.window = FIRST_BATCH_PHASE
        self.tracker.begin_window(self.window)
        return self

    def __exit__(self, *exc) -> None:
        self.tracker.end_window(self.window)
        self.window = None

    def __call__(self, done: float) -> None:
        self.calls += 1
        if self.calls == 1:
            self.first_batch = round(done * self.steps)
        if self.calls == self.steps and self.window == FIRST_BATCH_PHASE and self.n > self.first_batch:
            self.tracker.end_window(FIRST_BATCH_PHASE)  # the first batch is done: the rest is steady
            self.window = "sample"
            self.tracker.begin_window(self.window)
        whole = min(self.n, int(done + 1e-6))
        if whole > self.shown:
            batch = (self.calls - 1) // self.steps + 1
            self.progress.on_log(Advance(whole - self.shown, f"{self.label}batch {batch}/{self.batches}"))
            self.shown = whole


def sample_labels(num_classes: int, n: int, classes: tuple[int, ...]) -> list[int] | None:
    """The class of every image: ``n`` of each of ``classes`` in order; class-balanced (round robin) without
    ``classes``; None for an unconditional model (``num_classes`` 0), which takes no ``classes``. Ids outside
    0..K-1 are one line."""
    from greendiff.evaluate import balanced_labels
    from greendiff.pipelines import check_class_labels

    if not num_classes:
        if classes:
            raise UserInputError(f"--class {classes[0]}: this run is unconditional (trained with --conditioning none); "
                                 "it takes no class")
        return None
    if not classes:
        return balanced_labels(n, num_classes)
    try:
        check_class_labels(list(classes), num_classes)
    except UserInputError as exc:
        raise UserInputError(f"--class: {exc}") from None
    return [c for c in classes for _ in range(n)]


def resolve_guidance(num_classes: int, given: float | None, run_default: float) -> float | None:
    """The guidance scale to sample with (None: unconditional); one line for a value that is not a finite
    number >= 0, or a scale other than 1 for an unconditional run."""
    from greendiff.pipelines import check_guidance_scale

    if given is not None:
        try:
            check_guidance_scale(given)
        except UserInputError as exc:
            raise UserInputError(f"--guidance-scale: {exc}") from None
    if not num_classes:
        if given is not None and given != 1.0:
            raise UserInputError(f"--guidance-scale {given:g}: this run is unconditional; guidance needs a "
                                 "class-conditional run (--conditioning class)")
        return None
    return float(run_default if given is None else given)


def run_sample(job: SampleJob, progress: Progress = NullProgress()) -> SampleOutcome:
    """Sample ``job`` under one ledger run (kind ``sample``) and write ``job.out``; bad input (a class on an
    unconditional run, an id outside the trained classes, a bad guidance scale or output name) is a
    one-line :class:`UserInputError` before the ledger row or any file exists. ``progress`` gets a
    ``sampling`` bar of ``n`` images, advanced after every sampler step (:class:`SampleProgress`), and a note when the job is
    priced at the run's stored location."""
    import torch

    from greendiff.train import load_run_model

    check_instance(job, SampleJob, "run_sample's job")
    progress = check_progress(progress)
    if job.out.suffix.lower() not in SUFFIXES:
        raise UserInputError(f"-o/--output must end in .png or .npz, got {display_path(job.out)}")
    check_output(job.out, flag="-o/--output")
    model = load_run_model(job.run)
    config = model.config
    labels = sample_labels(model.num_classes, job.n, tuple(job.classes))
    if labels is not None and len(labels) > IMAGES.hi:
        raise UserInputError(f"--samples {job.n} per class x {len(job.classes)} classes is {len(labels):,} images; at most "
                             f"{IMAGES.hi:,} in one call: lower --samples")
    guidance = resolve_guidance(model.num_classes, job.guidance_scale, config.optim.guidance_scale)
    settings = resolve_settings(job.measurement, run=job.run)
    n = len(labels) if labels is not None else job.n
    n_steps = job.steps or config.optim.sample_steps
    command = (f"greendiff sample --run {display_path(job.run)} --samples {job.n}"
               + (f" --class {','.join(map(str, job.classes))}" if job.classes else "") + f" -o {display_path(job.out)}")
    if settings.note:
        progress.note(settings.note)
    with settings.tracker(f"sample {job.run.name}", "sample", command) as tracker:
        shown = SampleProgress(progress, n, n_steps, tracker=tracker)
        progress.on_start("sampling", n)
        try:
            with shown:
                images = model.sample(n, n_steps, torch.Generator().manual_seed(job.seed), labels=labels,
                                      guidance_scale=guidance if guidance is not None else 1.0, on_step=shown)
        finally:
            progress.on_end()
    rows = len(job.classes) if job.classes and job.out.suffix.lower() == ".png" else 0
    _write(images, job.out, labels, rows)
    return SampleOutcome(job.out, n, tuple(labels) if labels is not None else None, rows, n_steps,
                         config.optim.sampler_name, guidance, tracker.summary,
                         per_image_energy(tracker.summary, n, shown.first_batch))


def _write(images, out: Path, labels: list[int] | None, rows: int) -> None:
    """``images`` (N, C, H, W) in [-1, 1] to ``out``: an ``.npz`` (uint8 images, and their labels), or a PNG
    grid of ``rows`` equal rows (0: as square as it gets)."""
    import numpy as np

    from greendiff.train import save_grid, to_uint8

    try:
        if out.suffix.lower() == ".npz":
            arrays = {"images": to_uint8(images)}
            if labels is not None:
                arrays["labels"] = np.asarray(labels, dtype=np.int64)
            np.savez_compressed(out, **arrays)
        elif rows:
            save_grid(images, out, columns=images.shape[0] // rows)
        else:
            save_grid(images, out)
    except OSError as exc:
        raise UserInputError(f"cannot write {display_path(out)}: {exc.strerror}") from None
