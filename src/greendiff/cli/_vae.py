"""``greendiff vae train``: parse, call :func:`greendiff.workflows.run_vae_train`, render."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from greendiff.cli._options import COUNT, SEED, number_option, with_default, with_measurement
from greendiff.cli._progress import RichProgress
from greendiff.cli._render import fmt_energy, fmt_mass, render_summary
from greendiff.names import display_path
from greendiff.workflows import MeasurementOptions, VaeTrainJob, VaeTrainOutcome, job_default, run_vae_train
from greendiff.workflows._fields import EVAL_IMAGES
from greendiff.workflows._vae import BATCH, CACHE_GB, LOADER_WORKERS, LR, RESOLUTION

Opt = typer.Option
DATA = "Data"

vae_app = typer.Typer(help="Train a small VAE on your images, for latent diffusion (train --vae).",
                      no_args_is_help=True)


def _default(name: str) -> object:
    return job_default(VaeTrainJob, name)


@vae_app.command("train")
@with_measurement
def vae_train_command(
    output_dir: Annotated[Path, Opt("--output-dir", metavar="DIR", help="New (or empty) folder to save the VAE in.")],
    dataset: Annotated[str, Opt("--dataset", metavar="DATA", help="mnist, digits, an image folder, or .npy/.npz.", rich_help_panel=DATA)] = _default("dataset"),
    resolution: Annotated[int, number_option("--resolution", bounds=RESOLUTION, help="Image side in pixels (a multiple of 4).", rich_help_panel=DATA)] = _default("resolution"),
    skip_bad_images: Annotated[bool, Opt("--skip-bad-images", metavar="", help="Skip and count an image folder's unusable files.", rich_help_panel=DATA)] = False,
    cache_max_gb: Annotated[float, number_option("--cache-max-gb", bounds=CACHE_GB, help="Hold decoded data up to this many GB in memory, else stream it.", rich_help_panel=DATA)] = _default("cache_max_gb"),
    loader_workers: Annotated[int, number_option("--loader-workers", bounds=LOADER_WORKERS, help="Decoding processes when the data streams.", rich_help_panel=DATA)] = _default("loader_workers"),
    preset: Annotated[str, Opt("--preset", metavar="NAME", help="VAE size: nano, tiny, small.")] = _default("preset"),
    max_steps: Annotated[int, number_option("--max-steps", bounds=COUNT, help="Optimizer steps.")] = _default("max_steps"),
    batch_size: Annotated[int, number_option("--batch-size", bounds=BATCH, help="Images per step.")] = _default("batch_size"),
    lr: Annotated[Optional[float], number_option("--lr", bounds=LR, help=with_default("AdamW learning rate.", "the preset's"))] = None,
    seed: Annotated[int, number_option("--seed", bounds=SEED, help="Seed of weights, data order and noise.")] = _default("seed"),
    features: Annotated[str, Opt("--features", metavar="SPEC", help="Reconstruction FID features: mnist or inception:PATH.")] = _default("features"),
    eval_images: Annotated[int, number_option("--eval-images", bounds=EVAL_IMAGES, help="Images the scaling factor and the scores are computed on.")] = _default("eval_images"),
    measurement: MeasurementOptions = MeasurementOptions(),
) -> None:
    """Train a small AutoencoderKL on a dataset, metered; its latent scaling factor is computed from the data and
    saved in its config, its reconstructions scored (MSE, PSNR, FID)."""
    job = VaeTrainJob(output_dir=output_dir, dataset=dataset, resolution=resolution, max_steps=max_steps,
                      batch_size=batch_size, lr=lr, preset=preset, seed=seed, features=features,
                      eval_images=eval_images, skip_bad_images=skip_bad_images, cache_max_gb=cache_max_gb,
                      loader_workers=loader_workers, measurement=measurement)
    console = Console(stderr=True)
    render_vae(run_vae_train(job, RichProgress(console)), console)


def render_vae(outcome: VaeTrainOutcome, console: Console) -> None:
    """The ledger summary, then what was saved, its scaling factor and scores, its cost, and the next command."""
    render_summary(outcome.summary, console)
    job, shape, recon = outcome.job, outcome.shape, outcome.reconstruction
    side, folder = outcome.latent_side, display_path(outcome.folder)
    lines = (
        f"VAE {job.preset} saved to {folder}: {job.resolution}x{job.resolution} images -> "
        f"{shape.latent_channels}x{side}x{side} latents, {outcome.steps} steps, final loss {outcome.final_loss:.4f}",
        f"scaling factor {outcome.scaling_factor:.4f} (1/std of the latents of {recon.images:,} images; in its "
        "config.json)",
        f"reconstruction of {recon.images:,} images: MSE {recon.mse:.5f} · PSNR {recon.psnr_db:.2f} dB · "
        f"FID {recon.fid:.2f} ({recon.features} features)",
        f"cost {fmt_energy(outcome.summary.energy_kwh)}, {fmt_mass(outcome.summary.emissions_kg)} CO2e "
        f"(ledger run {outcome.summary.run_id})",
        f"next: greendiff train --vae {folder} --dataset {display_path(job.dataset)} --resolution {job.resolution}",
    )
    for line in lines:
        console.print(line, highlight=False, markup=False)
