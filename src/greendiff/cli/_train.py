"""``greendiff train`` and ``greendiff sample``: parse, call :func:`greendiff.workflows.run_train`, render."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from greendiff.cli._options import (
    FLOAT, GUIDANCE, IMAGES, INT, PROCESSES, SAMPLER_STEPS, SEED, class_ids, class_option, name_option, number_option,
    parse_sets, renamed, run_directory, run_option, switch, with_default, with_measurement,
)
from greendiff.cli._progress import RichProgress
from greendiff.cli._render import fmt_energy, fmt_mass, render_summary
from greendiff.names import display_path
from greendiff.workflows import (
    MeasurementOptions, SampleJob, TrainJob, TrainOutcome, job_default, prepare_train, resolve_train_config, run_sample,
    run_train,
)

Opt = typer.Option
#: Every ``train`` flag that sets one config key, and the key: the one table :func:`config_overrides` builds the
#: trainer's overrides from and ``--help`` reads each default's key from (in the order a resumed run's refusal
#: lists the keys given). A switch's hidden ``--no-`` form is in :data:`_NEGATIONS`.
FLAG_KEYS: dict[str, str] = {
    "--recipe": "recipe", "--preset": "model.preset", "--dataset": "data.dataset", "--resolution": "data.resolution",
    "--skip-bad-images": "data.skip_bad_images", "--label-column": "data.label_column",
    "--caption-column": "data.caption_column", "--cache-max-gb": "data.cache_max_gb",
    "--loader-workers": "data.loader_workers", "--conditioning": "model.conditioning",
    "--cond-dropout": "optim.cond_dropout", "--guidance-scale": "optim.guidance_scale",
    "--batch-size": "optim.batch_size", "--lr": "optim.lr", "--max-steps": "run.max_steps", "--seed": "run.seed",
    "--mixed-precision": "optim.mixed_precision", "--loss-weighting": "optim.loss_weighting",
    "--beta-schedule": "optim.beta_schedule", "--ema": "optim.ema", "--sampler": "optim.sampler",
    "--sample-steps": "optim.sample_steps", "--warmup-steps": "optim.warmup_steps",
    "--lr-schedule": "optim.lr_schedule", "--eval-sample-steps": "stop.eval_sample_steps",
    "--output-dir": "run.output_dir", "--name": "run.name", "--eval-every": "stop.eval_every",
    "--eval-every-kwh": "stop.eval_every_kwh", "--eval-samples": "stop.eval_samples", "--patience": "stop.patience",
    "--min-delta": "stop.min_delta", "--min-gain-per-kwh": "stop.min_gain_per_kwh", "--target-fid": "stop.target",
    "--budget-kwh": "stop.budget_kwh", "--budget-kgco2e": "stop.budget_kgco2e", "--carbon-aware": "carbon.enabled",
    "--max-intensity": "carbon.max_intensity", "--deadline": "carbon.deadline",
    "--simulate-clock": "carbon.simulate_start", "--simulated-step-s": "carbon.simulated_step_s",
    "--log-to": "run.log_to", "--mlflow-uri": "run.mlflow_uri", "--vae": "model.vae", "--backbone": "model.backbone",
    "--patch-size": "model.patch_size", "--objective": "optim.objective", "--no-latent-cache": "data.latent_cache",
    "--latent-cache-dir": "data.latent_cache_dir", "--compile": "optim.compile",
    "--ema-snapshots": "optim.ema_snapshots", "--align": "optim.align", "--align-encoder": "optim.align_encoder",
    "--align-weight": "optim.align_weight", "--align-until": "optim.align_until",
    "--timestep-sampling": "optim.timestep_sampling", "--noise-assignment": "optim.noise_assignment",
}
#: The switches whose negation is a hidden option of its own (so ``--help`` keeps one column of flag names)
_NEGATIONS = {"--skip-bad-images": "--no-skip-bad-images", "--carbon-aware": "--no-carbon-aware",
              "--compile": "--no-compile"}
#: Flags that switch a key off (given: False; not given: the config decides)
_INVERTED = frozenset({"--no-latent-cache"})


#: The green recipe's value of each config key a ``train`` flag sets, shown by ``--help`` (read here, not from
#: greendiff.train, whose import loads torch; tests/cli/test_help_width.py checks them against the recipe).
GREEN_DEFAULTS: dict[str, object] = {
    "recipe": "green", "model.preset": "tiny", "data.dataset": "mnist", "data.resolution": 16,
    "data.skip_bad_images": False, "data.cache_max_gb": 4.0, "data.loader_workers": 2, "model.conditioning": "none",
    "optim.cond_dropout": 0.1, "optim.guidance_scale": 2.0, "optim.batch_size": 64, "optim.lr": 1e-3,
    "run.max_steps": 2000, "run.seed": 0, "optim.mixed_precision": "auto", "optim.loss_weighting": "min-snr",
    "optim.beta_schedule": "squaredcos_cap_v2", "optim.ema": True, "optim.sampler": "ddim", "optim.sample_steps": 50,
    "optim.warmup_steps": 25, "optim.lr_schedule": "cosine", "stop.eval_every": 0, "stop.eval_every_kwh": 0.0,
    "stop.eval_samples": 500, "stop.patience": 0, "stop.min_delta": 0.0, "stop.min_gain_per_kwh": 0.0,
    "stop.target": 0.0, "stop.budget_kwh": 0.0, "stop.budget_kgco2e": 0.0, "run.output_dir": "runs",
    "carbon.enabled": False, "carbon.max_intensity": 0.0, "model.backbone": "unet", "model.patch_size": 2,
    "optim.objective": "epsilon", "optim.compile": False, "optim.ema_snapshots": 0, "optim.align": "none",
    "optim.align_weight": 0.5, "optim.align_until": 0.5, "optim.timestep_sampling": "uniform",
    "optim.noise_assignment": "random",
}
DATA, MODEL, OPTIM, EVAL, CARBON, LOGGING = ("Data", "Model and sampling", "Optimisation", "Evaluation and stopping",
                                             "Carbon-aware", "Run and logging")


#: Stopping and carbon-aware rules that 0 switches off: --help shows their default as "0 (off)"
_OFF_AT_ZERO = frozenset({"stop.eval_every", "stop.eval_every_kwh", "stop.patience", "stop.min_gain_per_kwh",
                          "stop.target", "stop.budget_kwh", "stop.budget_kgco2e", "carbon.max_intensity"})


def _shown(key: str) -> str:
    """The green recipe's value of ``key`` as the user would type it (``on``/``off`` for a switch)."""
    value = GREEN_DEFAULTS[key]
    if isinstance(value, bool):
        return "on" if value else "off"
    if key in _OFF_AT_ZERO and value == 0:
        return "0 (off)"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _key(flags: str, help: str, panel: str | None, bounds=None, metavar: str | None = None, note: str = "",
         **kwargs):
    """A ``train`` option in help panel ``panel``; when it sets a config key (:data:`FLAG_KEYS`) the recipe
    gives, its help ends with the green recipe's value (:data:`GREEN_DEFAULTS`, then ``note``); ``bounds``: a
    number read by :func:`number_option`; a switch (``--x/--no-x``) shows no type."""
    key = FLAG_KEYS.get(flags.split("/")[0])
    text = with_default(help, _shown(key) + note) if key in GREEN_DEFAULTS else help
    if bounds is not None:
        return number_option(flags, bounds=bounds, help=text, rich_help_panel=panel, **kwargs)
    return Opt(flags, help=text, rich_help_panel=panel, metavar="" if "/" in flags else metavar, **kwargs)


@with_measurement
def train_command(
    ctx: typer.Context,
    config_file: Annotated[Optional[Path], _key("--config", "TOML config file (flags override it).", None, metavar="FILE")] = None,
    recipe: Annotated[Optional[str], _key("--recipe", "green, or baseline (diffusers' defaults).", None, metavar="NAME")] = None,
    resume: Annotated[Optional[str], run_option("--resume", help="Continue a run (directory or ledger id) from its latest checkpoint.")] = None,
    dry_run: Annotated[bool, Opt("--dry-run", metavar="", help="Print the resolved config as TOML and exit.")] = False,
    nproc: Annotated[int, number_option("--nproc", bounds=PROCESSES, help="Data-parallel processes (torchrun; --batch-size is per process).")] = job_default(TrainJob, "processes"),
    dataset: Annotated[Optional[str], _key("--dataset", "mnist, digits, an image folder, or .npy/.npz.", DATA, metavar="DATA")] = None,
    resolution: Annotated[Optional[int], _key("--resolution", "Training resolution in pixels.", DATA, INT)] = None,
    skip_bad_images: Annotated[bool, _key("--skip-bad-images", "Skip and count an image folder's unusable files (--no-skip-bad-images: stop at the first).", DATA, metavar="")] = False,
    no_skip_bad_images: Annotated[bool, Opt("--no-skip-bad-images", help="Stop at an image folder's first unusable file.", hidden=True)] = False,
    label_column: Annotated[Optional[str], _key("--label-column", "metadata.jsonl/.csv column of class ids or names (default: class subfolders).", DATA, metavar="NAME")] = None,
    caption_column: Annotated[Optional[str], _key("--caption-column", "metadata.jsonl/.csv column of captions.", DATA, metavar="NAME")] = None,
    cache_max_gb: Annotated[Optional[float], _key("--cache-max-gb", "Hold decoded data up to this many GB in memory, else stream it from disk.", DATA, FLOAT)] = None,
    loader_workers: Annotated[Optional[int], _key("--loader-workers", "Decoding processes when the data streams.", DATA, INT)] = None,
    no_latent_cache: Annotated[bool, _key("--no-latent-cache", "With --vae: encode every step, not once.", DATA, metavar="")] = False,
    latent_cache_dir: Annotated[Optional[str], _key("--latent-cache-dir", "Cached latents (default ~/.cache/greendiff/latents).", DATA, metavar="DIR")] = None,
    preset: Annotated[Optional[str], _key("--preset", "Model size: pico, nano, tiny, small, base.", MODEL, metavar="NAME")] = None,
    backbone: Annotated[Optional[str], _key("--backbone", "unet, or dit (class-conditional; needs --vae).", MODEL, metavar="NAME")] = None,
    patch_size: Annotated[Optional[int], _key("--patch-size", "DiT patch side, in latent pixels.", MODEL, INT)] = None,
    vae: Annotated[Optional[str], _key("--vae", "Local AutoencoderKL: train in its latents.", MODEL, metavar="DIR")] = None,
    objective: Annotated[Optional[str], _key("--objective", "epsilon, v, or flow (rectified flow).", MODEL, metavar="KIND")] = None,
    conditioning: Annotated[Optional[str], _key("--conditioning", "none, or class: on the dataset's labels, to sample by class with guidance; class ids run 0..K-1, K read from the dataset when training starts.", MODEL, metavar="KIND")] = None,
    cond_dropout: Annotated[Optional[float], _key("--cond-dropout", "Share of labels dropped to the null class in training.", MODEL, FLOAT)] = None,
    guidance_scale: Annotated[Optional[float], _key("--guidance-scale", "Classifier-free guidance of previews and evaluations, >= 0.", MODEL, FLOAT)] = None,
    ema: Annotated[Optional[bool], _key("--ema/--no-ema", "Keep an EMA of the weights for sampling.", MODEL)] = None,
    sampler: Annotated[Optional[str], _key("--sampler", "Preview/evaluation sampler: ddim, dpm-solver (DPM-Solver++ 2M), unipc or ddpm.", MODEL, metavar="NAME")] = None,
    sample_steps: Annotated[Optional[int], _key("--sample-steps", "Sampler steps of previews.", MODEL, INT)] = None,
    batch_size: Annotated[Optional[int], _key("--batch-size", "Images per step.", OPTIM, INT)] = None,
    lr: Annotated[Optional[float], _key("--lr", "Peak learning rate (the preset's).", OPTIM, FLOAT, note=" (tiny's)")] = None,
    max_steps: Annotated[Optional[int], _key("--max-steps", "Optimizer steps to train.", OPTIM, INT)] = None,
    seed: Annotated[Optional[int], _key("--seed", "Seed of weights, data order and noise.", OPTIM, INT)] = None,
    mixed_precision: Annotated[Optional[str], _key("--mixed-precision", "auto, no, bf16 or fp16.", OPTIM, metavar="MODE")] = None,
    loss_weighting: Annotated[Optional[str], _key("--loss-weighting", "min-snr or uniform.", OPTIM, metavar="KIND")] = None,
    beta_schedule: Annotated[Optional[str], _key("--beta-schedule", "squaredcos_cap_v2 (cosine) or linear.", OPTIM, metavar="KIND")] = None,
    warmup_steps: Annotated[Optional[int], _key("--warmup-steps", "Learning-rate warm-up steps.", OPTIM, INT)] = None,
    timestep_sampling: Annotated[Optional[str], _key("--timestep-sampling", "uniform, stratified, logit-normal (SD3) or speed (SpeeD).", OPTIM, metavar="KIND")] = None,
    noise_assignment: Annotated[Optional[str], _key("--noise-assignment", "random, or immiscible (noise paired to images by assignment).", OPTIM, metavar="KIND")] = None,
    compile: Annotated[bool, _key("--compile", "torch.compile the network (slow to start).", OPTIM, metavar="")] = False,
    no_compile: Annotated[bool, Opt("--no-compile", help="Do not compile the network.", hidden=True)] = False,
    ema_snapshots: Annotated[Optional[int], _key("--ema-snapshots", "Post-hoc EMA: snapshots to reconstruct any EMA length later (eval --ema-length).", OPTIM, INT)] = None,
    align: Annotated[Optional[str], _key("--align", "Representation alignment: none, repa (needs --align-encoder) or dispersive.", OPTIM, metavar="KIND")] = None,
    align_encoder: Annotated[Optional[str], _key("--align-encoder", "Frozen encoder folder REPA aligns to (never the quality network).", OPTIM, metavar="DIR")] = None,
    align_weight: Annotated[Optional[float], _key("--align-weight", "Weight of the alignment loss at the start.", OPTIM, FLOAT)] = None,
    align_until: Annotated[Optional[float], _key("--align-until", "Share of the run after which alignment is off.", OPTIM, FLOAT)] = None,
    lr_schedule: Annotated[Optional[str], _key("--lr-schedule", "cosine (to 0 at --max-steps), linear, or constant (suits early stopping).", OPTIM, metavar="KIND")] = None,
    sets: Annotated[list[str], _key("--set", "Any config key, e.g. --set optim.snr_gamma=3 (repeatable).", OPTIM, metavar="KEY=VAL")] = [],
    eval_every: Annotated[Optional[int], _key("--eval-every", "Evaluate FID/KID every N steps.", EVAL, INT)] = None,
    eval_every_kwh: Annotated[Optional[float], _key("--eval-every-kwh", "Evaluate each time this many kWh are used.", EVAL, FLOAT)] = None,
    eval_samples: Annotated[Optional[int], _key("--eval-samples", "Generated images per evaluation.", EVAL, INT)] = None,
    eval_sample_steps: Annotated[Optional[int], _key("--eval-sample-steps", "Sampler steps per evaluation image (default: --sample-steps).", EVAL, INT)] = None,
    patience: Annotated[Optional[int], _key("--patience", "Stop after N evaluations without improvement.", EVAL, INT)] = None,
    min_delta: Annotated[Optional[float], _key("--min-delta", "Smallest improvement that counts.", EVAL, FLOAT)] = None,
    min_gain_per_kwh: Annotated[Optional[float], _key("--min-gain-per-kwh", "Stop when the metric gains less than this per kWh.", EVAL, FLOAT)] = None,
    target_fid: Annotated[Optional[float], _key("--target-fid", "Stop once FID (or --set stop.metric) reaches this.", EVAL, FLOAT)] = None,
    budget_kwh: Annotated[Optional[float], _key("--budget-kwh", "Stop before the run uses more kWh than this.", EVAL, FLOAT)] = None,
    budget_kgco2e: Annotated[Optional[float], _key("--budget-kgco2e", "Stop before the run emits more kg CO2e than this.", EVAL, FLOAT)] = None,
    carbon_aware: Annotated[bool, _key("--carbon-aware", "Pause while the grid is dirty (needs --grid or --live uk, and --max-intensity or --deadline; --no-carbon-aware: never).", CARBON, metavar="")] = False,
    no_carbon_aware: Annotated[bool, Opt("--no-carbon-aware", help="Never pause for the grid.", hidden=True)] = False,
    max_intensity: Annotated[Optional[float], _key("--max-intensity", "Train only at or below this many gCO2e/kWh.", CARBON, FLOAT)] = None,
    deadline: Annotated[Optional[str], _key("--deadline", "ISO 8601 time training must end by (UTC unless a zone is given).", CARBON, metavar="TIME")] = None,
    simulate_clock: Annotated[Optional[str], Opt("--simulate-clock", help="Carbon-aware on a simulated clock starting at this ISO time (with --simulated-step-s).", hidden=True)] = None,
    simulated_step_s: Annotated[Optional[float], number_option("--simulated-step-s", bounds=FLOAT, help="Simulated seconds per training step.", hidden=True)] = None,
    output_dir: Annotated[Optional[str], _key("--output-dir", "Parent of the run directory.", LOGGING, metavar="DIR")] = None,
    name: Annotated[Optional[str], name_option("--name", help="Run name (default: recipe-preset).", rich_help_panel=LOGGING)] = None,
    log_to: Annotated[Optional[list[str]], _key("--log-to", "Also log to: tensorboard, mlflow (repeatable).", LOGGING, metavar="NAME")] = None,
    mlflow_uri: Annotated[Optional[str], _key("--mlflow-uri", "MLflow tracking URI (default: mlruns beside the run directory).", LOGGING, metavar="URI")] = None,
    measurement: MeasurementOptions = MeasurementOptions(),
) -> None:
    """Train a diffusion model with the green recipe (or the baseline), energy measured per phase."""
    overrides = config_overrides(ctx)
    resume_dir = run_directory(resume, measurement.ledger) if resume is not None else None
    job = TrainJob(config_file=config_file, overrides=overrides, resume=resume_dir, measurement=measurement,
                   processes=nproc)
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


def config_overrides(ctx: typer.Context) -> dict[str, object]:
    """The trainer's overrides a ``train`` command line gives: every :data:`FLAG_KEYS` flag's value under its
    config key (None: not given, the config decides), then the ``--set KEY=VALUE`` pairs. A switch is read
    with its hidden ``--no-`` form (:func:`~greendiff.cli._options.switch`), ``--log-to`` (repeatable) as one
    comma-separated value."""
    given = {param.opts[0]: ctx.params[param.name] for param in ctx.command.params if param.opts}
    overrides: dict[str, object] = {}
    for flag, key in FLAG_KEYS.items():
        value = given[flag]
        if flag in _NEGATIONS:
            value = switch(flag, value, given[_NEGATIONS[flag]])
        elif flag in _INVERTED:
            value = False if value else None
        elif isinstance(value, (list, tuple)):
            value = ",".join(value) or None
        overrides[key] = value
    return overrides | parse_sets(list(given["--set"]))


def render_train(outcome: TrainOutcome, console: Console, command: str = "train") -> None:
    """The ledger summary, then one line: how it ended, where, and how to resume it."""
    render_summary(outcome.summary, console)
    run_dir = display_path(outcome.run_dir)
    console.print(f"{outcome.status} at step {outcome.step} in {outcome.duration_s:.1f} s · run directory {run_dir}"
                  + (f" · {outcome.stop_reason}" if outcome.stop_reason else "")
                  + ("" if outcome.finished else f" · resume with: greendiff {command} --resume {run_dir}"),
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
    run: Annotated[str, run_option("--run", help="Trained run: its directory or ledger id.")],
    samples: Annotated[Optional[int], number_option("--samples", bounds=IMAGES, help=with_default("Images; with --class, images per class (a grid row each).", job_default(SampleJob, "n")))] = None,
    classes: Annotated[Optional[list[str]], class_option("--class", help="Class ids of a class-conditional run (--class 7, --class 0,3,7, or repeated), in grid rows; without it, class-balanced.")] = None,
    guidance_scale: Annotated[Optional[float], number_option("--guidance-scale", bounds=GUIDANCE, help="Classifier-free guidance w >= 0 (1: conditional model alone, 0: unconditional; default: the run's).")] = None,
    sample_steps: Annotated[Optional[int], number_option("--sample-steps", bounds=SAMPLER_STEPS, help="Sampler steps (default: the run's).")] = None,
    output: Annotated[Optional[Path], Opt("--output", "-o", metavar="FILE", help=with_default("A .png grid or an .npz (uint8 images, and labels if conditional).", job_default(SampleJob, "out")))] = None,
    seed: Annotated[int, number_option("--seed", bounds=SEED, help="Noise seed.")] = job_default(SampleJob, "seed"),
    n: Annotated[Optional[int], number_option("--n", bounds=IMAGES, help="Old name of --samples.", hidden=True)] = None,
    steps: Annotated[Optional[int], number_option("--steps", bounds=SAMPLER_STEPS, help="Old name of --sample-steps.", hidden=True)] = None,
    out: Annotated[Optional[Path], Opt("--out", help="Old name of --output.", hidden=True)] = None,
    measurement: MeasurementOptions = MeasurementOptions(),
) -> None:
    """Sample images from a trained run's EMA weights (by class for a class-conditional run); energy per image
    measured and reported."""
    samples = renamed(("--samples", samples), ("--n", n), job_default(SampleJob, "n"))
    sample_steps = renamed(("--sample-steps", sample_steps), ("--steps", steps), None)
    output = renamed(("--output", output), ("--out", out), job_default(SampleJob, "out"))
    console = Console(stderr=True)
    outcome = run_sample(SampleJob(run=run_directory(run, measurement.ledger), n=samples, classes=class_ids(classes),
                                   guidance_scale=guidance_scale, steps=sample_steps, out=output, seed=seed,
                                   measurement=measurement), RichProgress(console))
    render_summary(outcome.summary, console)
    guided = "" if outcome.guidance_scale is None else f", guidance {outcome.guidance_scale:g}"
    console.print(f"{outcome.n} images, {outcome.steps} {outcome.sampler} steps{guided} → {display_path(outcome.out)} · "
                  f"{fmt_energy(outcome.energy_kwh_per_image)} and "
                  f"{fmt_mass(outcome.summary.emissions_kg / outcome.n)} CO2e per image", highlight=False, markup=False)
