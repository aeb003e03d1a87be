"""Training a small VAE for latent diffusion: an ``AutoencoderKL`` trained on the user's images under one ledger
run (kind ``vae``; phases ``train`` and ``eval``), its scaling factor computed from the data and stored in its
config, its reconstructions scored (MSE, PSNR, FID), saved with ``save_pretrained`` (safetensors) as a folder
that ``greendiff train --vae`` and plain diffusers load. :func:`run_vae_train` is what ``greendiff vae train``
calls.

The folder is written beside its destination and renamed into place once everything is in it: a failed or
interrupted job leaves nothing at ``output_dir`` (nor the parent folders it made).

Example:
    >>> from greendiff.workflows import MeasurementOptions, VaeTrainJob, run_vae_train
    >>> job = VaeTrainJob(output_dir="vaes/digits", dataset="digits", resolution=16, max_steps=200,
    ...                   measurement=MeasurementOptions(no_gpu=True))
    >>> outcome = run_vae_train(job)  # doctest: +SKIP
    >>> outcome.scaling_factor, outcome.psnr_db  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from greendiff.errors import UserInputError
from greendiff.files import staged_folder
from greendiff.names import display_path
from greendiff.numbers import COUNT, SEED, Bounds
from greendiff.tracking import RunSummary
from greendiff.workflows._fields import (
    EVAL_IMAGES, check_instance, checked_float, checked_int, checked_path, set_fields,
)
from greendiff.workflows._inputs import is_bundled
from greendiff.workflows._measurement import MeasurementOptions, MeasureSettings, resolve_settings
from greendiff.workflows._progress import Advance, NullProgress, Progress, check_progress
from greendiff.workflows._rundir import write_emissions, write_file

if TYPE_CHECKING:
    from greendiff.train import Reconstruction, VaeShape

RESOLUTION = Bounds(integer=True, lo=4, hi=4096, why="pixels per side")
BATCH = Bounds(integer=True, lo=1, hi=65_536)
LR = Bounds(lo=0, lo_open=True, hi=1)
CACHE_GB = Bounds(lo=0, hi=1e6, why="a petabyte")
LOADER_WORKERS = Bounds(integer=True, lo=0, hi=256)
RECORD_FILE = "vae_train.json"  #: the folder's record of how the VAE was trained, its results and its cost


@dataclass(frozen=True)
class VaeTrainJob:
    """A VAE to train.

    Args:
        output_dir: the folder to write (new, or empty): the ``AutoencoderKL`` (``config.json``,
            ``diffusion_pytorch_model.safetensors``), ``vae_train.json`` and ``emissions.json``.
        dataset: ``mnist``, ``digits``, an image folder, a ``save_to_disk`` folder or ``.npy``/``.npz``.
        resolution: image side in pixels (a multiple of the preset's downsampling factor, 4).
        max_steps: optimizer steps.
        batch_size: images per step.
        lr: AdamW learning rate (None: the preset's).
        preset: VAE size (:data:`greendiff.train._vae_train.VAE_PRESETS`: nano, tiny, small).
        seed: seed of the weights, data order and posterior noise.
        features: what the reconstruction FID is computed on: ``mnist`` (shipped) or ``inception:PATH``.
        eval_images: images the scaling factor and the reconstruction metrics are computed on (all when fewer).
        skip_bad_images: skip an image folder's unusable files instead of stopping.
        cache_max_gb: hold decoded data up to this many GB in memory, else stream it from disk.
        loader_workers: decoding processes when the data streams.
        measurement: where and how the job is measured.
    """

    output_dir: Path
    dataset: str = "mnist"
    resolution: int = 32
    max_steps: int = 1000
    batch_size: int = 64
    lr: float | None = None
    preset: str = "nano"
    seed: int = 0
    features: str = "mnist"
    eval_images: int = 1000
    skip_bad_images: bool = False
    cache_max_gb: float = 4.0
    loader_workers: int = 2
    measurement: MeasurementOptions = MeasurementOptions()

    def __post_init__(self) -> None:
        """Checked as ``greendiff vae train`` checks its flags (``TypeError`` for a wrong type, the flag's
        one-line :class:`UserInputError` out of range); ``output_dir`` may be a ``str``."""
        for name in ("dataset", "preset", "features"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"VaeTrainJob.{name} must be a str, got {type(getattr(self, name)).__name__}")
        if not isinstance(self.skip_bad_images, bool):
            raise TypeError(f"VaeTrainJob.skip_bad_images must be a bool, got {type(self.skip_bad_images).__name__}")
        set_fields(self, output_dir=checked_path(self.output_dir, "VaeTrainJob.output_dir"),
                   resolution=checked_int(self.resolution, RESOLUTION, "VaeTrainJob.resolution", "--resolution"),
                   max_steps=checked_int(self.max_steps, COUNT, "VaeTrainJob.max_steps", "--max-steps"),
                   batch_size=checked_int(self.batch_size, BATCH, "VaeTrainJob.batch_size", "--batch-size"),
                   lr=None if self.lr is None else checked_float(self.lr, LR, "VaeTrainJob.lr", "--lr"),
                   seed=checked_int(self.seed, SEED, "VaeTrainJob.seed", "--seed"),
                   eval_images=checked_int(self.eval_images, EVAL_IMAGES, "VaeTrainJob.eval_images", "--eval-images"),
                   cache_max_gb=checked_float(self.cache_max_gb, CACHE_GB, "VaeTrainJob.cache_max_gb",
                                              "--cache-max-gb"),
                   loader_workers=checked_int(self.loader_workers, LOADER_WORKERS, "VaeTrainJob.loader_workers",
                                              "--loader-workers"))
        check_instance(self.measurement, MeasurementOptions, "VaeTrainJob.measurement")

    def record(self) -> dict[str, Any]:
        """The job's settings as JSON-ready values (the ledger run's config, the folder's record): a folder or
        array dataset as an absolute path."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "measurement"}
        dataset = self.dataset
        if not is_bundled(dataset) and os.path.exists(dataset):
            out["dataset"] = os.path.abspath(dataset)
        return out | {"output_dir": str(self.output_dir)}


@dataclass(frozen=True)
class VaeTrainOutcome:
    """A trained VAE.

    Attributes:
        folder: where it was saved (the job's ``output_dir``).
        steps: optimizer steps taken.
        final_loss: the last step's loss (per-pixel squared error plus the small KL term).
        scaling_factor: 1 / std of posterior-sampled latents of the data, stored in its config.
        reconstruction: MSE, PSNR (dB) and FID of its reconstructions.
        shape: its latent shape (:class:`~greendiff.train._vae.VaeShape`: channels, downsampling).
        summary: the ledger run's summary (energy_kwh, emissions_kg, phases ``train`` and ``eval``, run_id).
        job: the job it ran.
    """

    folder: Path
    steps: int
    final_loss: float
    scaling_factor: float
    reconstruction: Reconstruction
    shape: VaeShape
    summary: RunSummary
    job: VaeTrainJob

    @property
    def mse(self) -> float:
        return self.reconstruction.mse

    @property
    def psnr_db(self) -> float:
        return self.reconstruction.psnr_db

    @property
    def fid(self) -> float:
        return self.reconstruction.fid

    @property
    def latent_side(self) -> int:
        return self.job.resolution // self.shape.downsample


def check_output_dir(output: Path, flag: str = "--output-dir") -> None:
    """A folder a job will create: not a file, not a folder with anything in it, its nearest existing parent a
    writable folder; one line naming ``flag`` otherwise."""
    shown = display_path(output)
    if output.is_symlink() or (output.exists() and not output.is_dir()):
        raise UserInputError(f"{flag} {shown} is a file: give a new folder")
    try:
        taken = output.is_dir() and any(output.iterdir())
    except OSError as exc:
        raise UserInputError(f"{flag} {shown} cannot be read ({exc.strerror or exc})") from None
    if taken:
        raise UserInputError(f"{flag} {shown} exists and is not empty: give a new folder")
    parent = Path(os.path.abspath(output)).parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UserInputError(f"{flag} {shown}: {display_path(parent)} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserInputError(f"{flag} {shown}: folder {display_path(parent)} is not writable")


@dataclass(frozen=True)
class _Prepared:
    """A :class:`VaeTrainJob` checked and resolved; nothing created yet."""

    job: VaeTrainJob
    lr: float
    settings: MeasureSettings
    data: Any  # greendiff.data ImageSet or StreamedSet
    extractor: Any  # the FID features' module
    features: str  # its name


def prepare_vae_train(job: VaeTrainJob) -> _Prepared:
    """Check everything ``job`` needs (preset, resolution, output folder, features, measurement, data) before
    anything is created or recorded."""
    from greendiff.data import load_dataset
    from greendiff.evaluate import resolve_extractor
    from greendiff.train import VaeShape, latent_size, vae_preset

    preset = vae_preset(job.preset)
    latent_size(VaeShape(1, preset.latent_channels, preset.downsample, 1.0), job.resolution, f"{job.preset} preset")
    check_output_dir(job.output_dir)
    extractor, features = resolve_extractor(job.features)
    settings = resolve_settings(job.measurement)
    data = load_dataset(job.dataset, job.resolution, job.skip_bad_images, cache_max_gb=job.cache_max_gb,
                        workers=job.loader_workers)
    if data.num_images < 4:
        raise UserInputError(f"dataset {display_path(job.dataset)} has {data.num_images} image(s); a VAE needs at "
                             "least 4 (its reconstructions are scored on them)")
    if job.batch_size > data.num_images:
        raise UserInputError(f"--batch-size {job.batch_size} is more than the {data.num_images:,} images of dataset "
                             f"{display_path(job.dataset)}: lower it")
    return _Prepared(job, preset.lr if job.lr is None else job.lr, settings, data, extractor, features)


def command_line(job: VaeTrainJob) -> str:
    """The job as the ``greendiff vae train`` command the ledger records."""
    return (f"greendiff vae train --dataset {display_path(job.dataset)} --resolution {job.resolution} "
            f"--preset {job.preset} --max-steps {job.max_steps} --output-dir {display_path(job.output_dir)}")


def run_vae_train(job: VaeTrainJob, progress: Progress | None = None) -> VaeTrainOutcome:
    """Train, measure and save the VAE of ``job`` under one ledger run (kind ``vae``). ``progress`` gets a
    ``training`` bar of ``max_steps`` steps (each step's loss beside it) and notes (skipped files, where the
    data is held, the location). Bad input: a one-line :class:`UserInputError` before anything is created."""
    check_instance(job, VaeTrainJob, "run_vae_train's job")
    progress = NullProgress() if progress is None else check_progress(progress)
    prepared = prepare_vae_train(job)
    for text, style in ((prepared.settings.note, None), (getattr(prepared.data, "placement", ""), None),
                        (f"skipped {prepared.data.skipped} unreadable image files" if prepared.data.skipped else "",
                         "warning")):
        if text:
            progress.note(text, style)
    with staged_folder(job.output_dir) as folder:
        tracker = prepared.settings.tracker(Path(os.path.abspath(job.output_dir)).name, "vae", command_line(job),
                                            config=prepared.job.record(), run_dir=job.output_dir)
        with tracker:
            vae, result, factor, recon = _train_and_score(prepared, tracker, progress)
            vae.register_to_config(scaling_factor=factor)
            vae.save_pretrained(str(folder), safe_serialization=True)
        summary = tracker.summary
        record = {"job": job.record(), "steps": result.steps, "final_loss": result.final_loss,
                  "scaling_factor": factor, "reconstruction": recon.to_dict(), "ledger_run_id": summary.run_id,
                  "energy_kwh": summary.energy_kwh, "emissions_kg": summary.emissions_kg}
        write_file(folder / RECORD_FILE, json.dumps(record, indent=2))
        write_emissions(folder, summary, 0.0, tracker.ledger)
        shape = _shape_of(vae)
    return VaeTrainOutcome(job.output_dir, result.steps, result.final_loss, factor, recon, shape, summary, job)


def _train_and_score(prepared: _Prepared, tracker, progress: Progress):
    """``(vae, training result, scaling factor, reconstruction)``: trained in the ``train`` window, its scaling
    factor and reconstructions computed in the ``eval`` window (on the same images)."""
    import torch

    from greendiff.train import (
        build_vae, posterior_latents, reconstruct, reconstruction_quality, scaling_factor_of, train_vae,
    )

    job, data = prepared.job, prepared.data
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    vae = build_vae(job.preset, data.channels, job.resolution, job.seed).to(device)
    progress.on_start("training", job.max_steps)
    try:
        with tracker.window("train"):
            result = train_vae(vae, data, job.max_steps, job.batch_size, prepared.lr, job.seed,
                               on_step=lambda step, loss: progress.on_log(Advance(1, f"loss {loss:.4f}")))
    finally:
        progress.on_end()
    with tracker.window("eval"):
        images = data.reference_images(job.eval_images, job.seed)
        factor = scaling_factor_of(posterior_latents(vae, images, torch.Generator().manual_seed(job.seed)))
        recon = reconstruction_quality(images, reconstruct(vae, images), prepared.extractor, prepared.features)
    return vae.cpu(), result, factor, recon


def _shape_of(vae) -> VaeShape:
    from greendiff.train._vae import VaeShape

    c = vae.config
    return VaeShape(c.in_channels, c.latent_channels, 2 ** (len(c.block_out_channels) - 1), float(c.scaling_factor))
