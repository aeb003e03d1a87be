"""``greendiff train`` and ``greendiff sample``: parse, call :func:`greendiff.workflows.run_train`, render."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from greendiff.cli._options import (
    FLOAT, GUIDANCE, IMAGES, INT, PROCESSES, SAMPLER_STEPS, SEED, class_ids, class_option, name_option, number_option,
    parse_sets, with_measurement,
)
from greendiff.cli._progress import RichProgress
from greendiff.cli._render import fmt_energy, fmt_mass, render_summary
from greendiff.names import display_path
from greendiff.workflows import (
    MeasurementOptions, SampleJob, TrainJob, TrainOutcome, prepare_train, resolve_train_config, run_sample, run_train,
)

Opt = typer.Option


@with_measurement
def train_command(
    ctx: typer.Context,
    config_file: Annotated[Optional[Path], Opt("--config", help="TOML config file (CLI flags override it).")] = None,
    recipe: Annotated[Optional[str], Opt("--recipe", help="green (default) or baseline (diffusers' defaults).")] = None,
    preset: Annotated[Optional[str], Opt("--preset", help="Model preset: pico, nano, tiny, small, base.")] = None,
    dataset: Annotated[Optional[str], Opt("--dataset", help="mnist (bundled), digits, an image folder, or .npy/.npz.")] = None,
    skip_bad_images: Annotated[Optional[bool], Opt("--skip-bad-images/--no-skip-bad-images", help="Skip (and count) unusable files of an image folder instead of stopping.")] = None,
    label_column: Annotated[Optional[str], Opt("--label-column", help="metadata.jsonl/.csv column of class ids or names (default: class subfolders) (data.label_column).")] = None,
    caption_column: Annotated[Optional[str], Opt("--caption-column", help="metadata.jsonl/.csv column of captions (data.caption_column).")] = None,
    cache_max_gb: Annotated[Optional[float], number_option("--cache-max-gb", bounds=FLOAT, help="Decoded data up to this many GB is held in memory, larger folders stream from disk (data.cache_max_gb, default 4).")] = None,
    loader_workers: Annotated[Optional[int], number_option("--loader-workers", bounds=INT, help="Decoding processes when the data streams from disk (data.loader_workers, default 2).")] = None,
    conditioning: Annotated[Optional[str], Opt("--conditioning", help="none (unconditional) or class: conditioned on the dataset's labels, for sampling by class with guidance (model.conditioning). The number of classes is read from the dataset when training starts (--dry-run shows model.num_classes = 0 until then); class ids must run 0..K-1, each with images.")] = None,
    cond_dropout: Annotated[Optional[float], number_option("--cond-dropout", bounds=FLOAT, help="Share of labels dropped to the null class in training, so one model samples guided and unguided (optim.cond_dropout, default 0.1).")] = None,
    guidance_scale: Annotated[Optional[float], number_option("--guidance-scale", bounds=FLOAT, help="Classifier-free guidance of the previews and in-training evaluations, >= 0 (optim.guidance_scale, default 2).")] = None,
    resolution: Annotated[Optional[int], number_option("--resolution", bounds=INT, help="Training resolution in pixels.")] = None,
    batch_size: Annotated[Optional[int], number_option("--batch-size", bounds=INT, help="Images per step.")] = None,
    lr: Annotated[Optional[float], number_option("--lr", bounds=FLOAT, help="Peak learning rate (green default: the preset's, e.g. nano 2e-3, tiny 1e-3).")] = None,
    max_steps: Annotated[Optional[int], number_option("--max-steps", bounds=INT, help="Optimizer steps to train.")] = None,
    seed: Annotated[Optional[int], number_option("--seed", bounds=INT, help="Seed of weights, data order and noise.")] = None,
    mixed_precision: Annotated[Optional[str], Opt("--mixed-precision", help="auto, no, bf16, fp16.")] = None,
    loss_weighting: Annotated[Optional[str], Opt("--loss-weighting", help="min-snr or uniform.")] = None,
    beta_schedule: Annotated[Optional[str], Opt("--beta-schedule", help="squaredcos_cap_v2 (cosine) or linear.")] = None,
    ema: Annotated[Optional[bool], Opt("--ema/--no-ema", help="Keep an EMA of the weights for sampling.")] = None,
    sampler: Annotated[Optional[str], Opt("--sampler", help="Preview sampler: ddim or ddpm.")] = None,
    sample_steps: Annotated[Optional[int], number_option("--sample-steps", bounds=INT, help="Sampler steps for previews.")] = None,
    warmup_steps: Annotated[Optional[int], number_option("--warmup-steps", bounds=INT, help="LR warm-up steps.")] = None,
    lr_schedule: Annotated[Optional[str], Opt("--lr-schedule", help="cosine (decays to 0 at --max-steps), linear, or constant (after warm-up; suits early stopping).")] = None,
    eval_every: Annotated[Optional[int], number_option("--eval-every", bounds=INT, help="Evaluate quality (FID/KID) every N steps.")] = None,
    eval_every_kwh: Annotated[Optional[float], number_option("--eval-every-kwh", bounds=FLOAT, help="Evaluate each time this much energy (kWh) is used.")] = None,
    eval_samples: Annotated[Optional[int], number_option("--eval-samples", bounds=INT, help="Generated images per evaluation.")] = None,
    eval_sample_steps: Annotated[Optional[int], number_option("--eval-sample-steps", bounds=INT, help="Sampler steps per evaluation image (default: --sample-steps).")] = None,
    patience: Annotated[Optional[int], number_option("--patience", bounds=INT, help="Stop after N evaluations without improvement.")] = None,
    min_delta: Annotated[Optional[float], number_option("--min-delta", bounds=FLOAT, help="Smallest improvement that counts.")] = None,
    min_gain_per_kwh: Annotated[Optional[float], number_option("--min-gain-per-kwh", bounds=FLOAT, help="Stop when the metric improves less than this per kWh.")] = None,
    target_fid: Annotated[Optional[float], number_option("--target-fid", bounds=FLOAT, help="Stop as soon as FID (or --set stop.metric) reaches this.")] = None,
    budget_kwh: Annotated[Optional[float], number_option("--budget-kwh", bounds=FLOAT, help="Stop before the run uses more energy than this.")] = None,
    budget_kgco2e: Annotated[Optional[float], number_option("--budget-kgco2e", bounds=FLOAT, help="Stop before the run emits more than this.")] = None,
    sets: Annotated[list[str], Opt("--set", help="Any config key, e.g. --set optim.snr_gamma=3 (repeatable).")] = [],
    output_dir: Annotated[Optional[str], Opt("--output-dir", help="Parent of the run directory (default runs).")] = None,
    name: Annotated[Optional[str], name_option("--name", help="Run name (default: recipe-preset).")] = None,
    resume: Annotated[Optional[Path], Opt("--resume", help="Run directory to continue from its latest checkpoint.")] = None,
    dry_run: Annotated[bool, Opt("--dry-run", help="Print the resolved config and exit.")] = False,
    nproc: Annotated[int, number_option("--nproc", bounds=PROCESSES, help="Data-parallel processes on this machine, launched with torchrun (batch size is per process).")] = 1,
    log_to: Annotated[Optional[list[str]], Opt("--log-to", help="Also log metrics, energy and CO2e to: tensorboard, mlflow (repeatable).")] = None,
    mlflow_uri: Annotated[Optional[str], Opt("--mlflow-uri", help="MLflow tracking URI (default: file: the mlruns folder beside the run directory).")] = None,
    carbon_aware: Annotated[Optional[bool], Opt("--carbon-aware/--no-carbon-aware", help="Pause while the grid is dirty (needs --grid or --live uk, and --max-intensity and/or --deadline).")] = None,
    max_intensity: Annotated[Optional[float], number_option("--max-intensity", bounds=FLOAT, help="Carbon-aware: train only at or below this many gCO2e/kWh.")] = None,
    deadline: Annotated[Optional[str], Opt("--deadline", help="Carbon-aware: training must end by this ISO 8601 time (UTC unless a zone is given).")] = None,
    simulate_clock: Annotated[Optional[str], Opt("--simulate-clock", help="Carbon-aware on a simulated clock starting at this ISO time (with --simulated-step-s).", hidden=True)] = None,
    simulated_step_s: Annotated[Optional[float], number_option("--simulated-step-s", bounds=FLOAT, help="Simulated seconds per training step.", hidden=True)] = None,
    measurement: MeasurementOptions = MeasurementOptions(),
) -> None:
    """Train a diffusion model with the green recipe (or the baseline), energy measured per phase."""
    overrides = {"recipe": recipe, "model.preset": preset, "data.dataset": dataset, "data.resolution": resolution,
                 "data.skip_bad_images": skip_bad_images, "data.label_column": label_column,
                 "data.caption_column": caption_column, "data.cache_max_gb": cache_max_gb,
                 "data.loader_workers": loader_workers, "model.conditioning": conditioning,
                 "optim.cond_dropout": cond_dropout, "optim.guidance_scale": guidance_scale,
                 "optim.batch_size": batch_size, "optim.lr": lr, "run.max_steps": max_steps, "run.seed": seed,
                 "optim.mixed_precision": mixed_precision, "optim.loss_weighting": loss_weighting,
                 "optim.beta_schedule": beta_schedule, "optim.ema": ema, "optim.sampler": sampler,
                 "optim.sample_steps": sample_steps, "optim.warmup_steps": warmup_steps,
                 "optim.lr_schedule": lr_schedule, "stop.eval_sample_steps": eval_sample_steps,
                 "run.output_dir": output_dir, "run.name": name, "stop.eval_every": eval_every, "stop.eval_every_kwh": eval_every_kwh,
                 "stop.eval_samples": eval_samples, "stop.patience": patience, "stop.min_delta": min_delta,
                 "stop.min_gain_per_kwh": min_gain_per_kwh, "stop.target": target_fid, "stop.budget_kwh": budget_kwh,
                 "stop.budget_kgco2e": budget_kgco2e, "carbon.enabled": carbon_aware, "carbon.max_intensity": max_intensity,
                 "carbon.deadline": deadline, "carbon.simulate_start": simulate_clock,
                 "carbon.simulated_step_s": simulated_step_s,
                 "run.log_to": ",".join(log_to) if log_to else None, "run.mlflow_uri": mlflow_uri, **parse_sets(sets)}
    job = TrainJob(config_file=config_file, overrides=overrides, resume=resume, measurement=measurement, processes=nproc)
    if dry_run:
        from greendiff.train import to_toml

        typer.echo(to_toml(resolve_train_config(job)[0]), nl=False)
        return
    prepared = prepare_train(job)
    if nproc > 1:
        raise typer.Exit(launch(nproc, ctx.obj["argv"] if ctx.obj else []))
    console = Console(stderr=True, quiet=not prepared.dist.is_main)
    outcome = run_train(prepared, RichProgress(console))
    render_train(outcome, console)
    if not outcome.finished:
        raise typer.Exit(128 + (outcome.exit_signal or signal.SIGINT))  # 143 after SIGTERM, 130 after Ctrl-C


def render_train(outcome: TrainOutcome, console: Console) -> None:
    """The ledger summary, then one line: how it ended, where, and how to resume it."""
    render_summary(outcome.summary, console)
    run_dir = display_path(outcome.run_dir)
    console.print(f"{outcome.status} at step {outcome.step} in {outcome.duration_s:.1f} s · run directory {run_dir}"
                  + (f" · {outcome.stop_reason}" if outcome.stop_reason else "")
                  + ("" if outcome.finished else f" · resume with: greendiff train --resume {run_dir}"),
                  highlight=False, markup=False)


def launch(nproc: int, argv: list[str]) -> int:
    """Run this same ``greendiff train`` as ``nproc`` processes through torchrun; their exit code.
    The processes measure themselves (one ledger run for the job); this one does not."""
    import os
    import subprocess

    from greendiff.parallel import available_cores, torchrun_command, without_nproc

    command = torchrun_command(nproc, without_nproc(argv[1:] if argv[:1] == ["train"] else argv))
    # torchrun would give each process 1 thread; give them the machine's cores, shared (the user's setting wins)
    env = {"OMP_NUM_THREADS": str(max(1, available_cores() // nproc)), **os.environ}
    Console(stderr=True).print(f"launching {nproc} processes: torchrun --standalone --nproc-per-node {nproc} "
                               "-m greendiff train ...", highlight=False)
    try:
        return subprocess.run(command, env=env).returncode
    except KeyboardInterrupt:  # torchrun passes Ctrl-C on to the processes, which checkpoint and stop
        return 130


@with_measurement
def sample_command(
    run: Annotated[Path, Opt("--run", help="Run directory (with pipeline/ and config.toml).")],
    n: Annotated[int, number_option("--n", bounds=IMAGES, help="Number of images; with --class, images per class (one grid row each).")] = 64,
    classes: Annotated[Optional[list[str]], class_option("--class", help="Class ids to sample (class-conditional runs): --class 7, --class 0,3,7 or repeated; --n images of each, in order, a PNG grid row per class. Without it a conditional run samples class-balanced.")] = None,
    guidance_scale: Annotated[Optional[float], number_option("--guidance-scale", bounds=GUIDANCE, help="Classifier-free guidance w >= 0 (1: conditional model alone, 0: unconditional; default: the run's optim.guidance_scale).")] = None,
    steps: Annotated[Optional[int], number_option("--steps", bounds=SAMPLER_STEPS, help="Sampler steps (default: the run's).")] = None,
    out: Annotated[Path, Opt("--out", help="Output .png grid or .npz (uint8 images, and labels for a conditional run).")] = Path("samples.png"),
    seed: Annotated[int, number_option("--seed", bounds=SEED, help="Noise seed.")] = 0,
    measurement: MeasurementOptions = MeasurementOptions(),
) -> None:
    """Sample images from a trained run's EMA weights (by class for a class-conditional run); energy per image
    measured and reported."""
    outcome = run_sample(SampleJob(run=run, n=n, classes=class_ids(classes), guidance_scale=guidance_scale,
                                   steps=steps, out=out, seed=seed, measurement=measurement))
    console = Console(stderr=True)
    render_summary(outcome.summary, console)
    guided = "" if outcome.guidance_scale is None else f", guidance {outcome.guidance_scale:g}"
    console.print(f"{outcome.n} images, {outcome.steps} {outcome.sampler} steps{guided} → {display_path(outcome.out)} · "
                  f"{fmt_energy(outcome.energy_kwh_per_image)} and "
                  f"{fmt_mass(outcome.summary.emissions_kg / outcome.n)} CO2e per image", highlight=False, markup=False)
