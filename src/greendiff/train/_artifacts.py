"""Read a finished run back: its config, its EMA model (from ``pipeline/``) and its sampler."""

from __future__ import annotations

from pathlib import Path

from greendiff.errors import UserInputError
from greendiff.train._config import TrainConfig, resolve_config
from greendiff.train._diffusion import make_sampler


def load_run_model(run_dir: Path):
    """``(config, unet, sampler)`` of a run with a saved pipeline; one-line error otherwise."""
    if not (run_dir / "pipeline" / "unet").is_dir() or not (run_dir / "config.toml").is_file():
        raise UserInputError(f"--run {run_dir}: no trained pipeline (expected {run_dir}/pipeline and {run_dir}/config.toml)")
    from diffusers import DDPMScheduler, UNet2DModel

    config: TrainConfig = resolve_config(run_dir / "config.toml")
    unet = UNet2DModel.from_pretrained(str(run_dir / "pipeline" / "unet")).eval()
    sampler = make_sampler(config.optim, DDPMScheduler.from_pretrained(str(run_dir / "pipeline" / "scheduler")))
    return config, unet, sampler
