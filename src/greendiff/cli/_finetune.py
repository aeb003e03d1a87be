"""``greendiff finetune``: parse, call :func:`greendiff.workflows.run_finetune`, render."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from greendiff.cli._options import FLOAT, INT, name_option, number_option, parse_sets, run_directory, run_option, switch, with_default, with_measurement
from greendiff.cli._progress import RichProgress
from greendiff.cli._train import render_train
from greendiff.names import display_path
from greendiff.workflows import (
    MeasurementOptions, TrainJob, load_base, prepare_finetune, resolve_finetune_config, run_finetune,
)

Opt = typer.Option
PIPE, DATA, LORA, BOOTH, EVAL, RUN = ("Pipeline and data", "Data", "LoRA", "DreamBooth", "Validation and stopping",
                                      "Run and logging")

#: Every ``finetune`` flag that sets one config key, and the key.
FLAG_KEYS: dict[str, str] = {
    "--pipeline": "finetune.pipeline", "--dataset": "data.dataset", "--caption-column": "data.caption_column",
    "--resolution": "data.resolution", "--full": "finetune.method", "--lora-rank": "finetune.lora_rank",
    "--lora-alpha": "finetune.lora_alpha", "--lora-dropout": "finetune.lora_dropout",
    "--lora-targets": "finetune.lora_targets", "--text-encoder-lora": "finetune.text_encoder_lora",
    "--instance-data": "finetune.instance_data", "--instance-prompt": "finetune.instance_prompt",
    "--class-prompt": "finetune.class_prompt", "--num-class-images": "finetune.num_class_images",
    "--prior-loss-weight": "finetune.prior_loss_weight", "--validation-prompt": "finetune.validation_prompts",
    "--validation-images": "finetune.validation_images", "--clip-model": "finetune.clip_model",
    "--gradient-checkpointing": "finetune.gradient_checkpointing", "--merge": "finetune.merge",
    "--no-text-cache": "finetune.text_cache", "--no-latent-cache": "data.latent_cache",
    "--latent-cache-dir": "data.latent_cache_dir", "--batch-size": "optim.batch_size", "--lr": "optim.lr",
    "--max-steps": "run.max_steps", "--seed": "run.seed", "--mixed-precision": "optim.mixed_precision",
    "--guidance-scale": "optim.guidance_scale", "--sample-steps": "optim.sample_steps",
    "--eval-every": "stop.eval_every", "--patience": "stop.patience", "--min-delta": "stop.min_delta",
    "--budget-kwh": "stop.budget_kwh", "--budget-kgco2e": "stop.budget_kgco2e", "--carbon-aware": "carbon.enabled",
    "--max-intensity": "carbon.max_intensity", "--deadline": "carbon.deadline", "--output-dir": "run.output_dir",
    "--name": "run.name", "--log-to": "run.log_to",
}
#: Flags that switch a key off when given (not given: the config decides)
_INVERTED = frozenset({"--no-text-cache", "--no-latent-cache"})


@with_measurement
def finetune_command(
    ctx: typer.Context,
    pipeline: Annotated[Optional[str], Opt("--pipeline", metavar="DIR", rich_help_panel=PIPE, help="Local diffusers text-to-image pipeline folder (Stable Diffusion layout, or SD3-style transformer).")] = None,
    dataset: Annotated[Optional[str], Opt("--dataset", metavar="DIR", rich_help_panel=PIPE, help="Image folder with captions in metadata.jsonl (or .csv).")] = None,
    caption_column: Annotated[Optional[str], Opt("--caption-column", metavar="NAME", rich_help_panel=PIPE, help=with_default("Caption column of metadata.jsonl.", "text"))] = None,
    resolution: Annotated[Optional[int], number_option("--resolution", bounds=INT, rich_help_panel=PIPE, help=with_default("Training resolution in pixels.", "the pipeline's"))] = None,
    config_file: Annotated[Optional[Path], Opt("--config", metavar="FILE", help="TOML config file (flags override it).")] = None,
    resume: Annotated[Optional[str], run_option("--resume", help="Continue a fine-tune (directory or ledger id) from its latest checkpoint.")] = None,
    dry_run: Annotated[bool, Opt("--dry-run", metavar="", help="Print the resolved config as TOML and exit.")] = False,
    full: Annotated[bool, Opt("--full", metavar="", rich_help_panel=LORA, help="Train every denoiser weight instead of LoRA adapters.")] = False,
    lora_rank: Annotated[Optional[int], number_option("--lora-rank", bounds=INT, rich_help_panel=LORA, help=with_default("LoRA rank, >= 1.", "8"))] = None,
    lora_alpha: Annotated[Optional[float], number_option("--lora-alpha", bounds=FLOAT, rich_help_panel=LORA, help=with_default("LoRA alpha.", "the rank"))] = None,
    lora_dropout: Annotated[Optional[float], number_option("--lora-dropout", bounds=FLOAT, rich_help_panel=LORA, help=with_default("Dropout on the LoRA input.", "0"))] = None,
    lora_targets: Annotated[Optional[str], Opt("--lora-targets", metavar="A,B", rich_help_panel=LORA, help=with_default("Module names to adapt.", "to_q,to_k,to_v,to_out.0"))] = None,
    text_encoder_lora: Annotated[bool, Opt("--text-encoder-lora", metavar="", rich_help_panel=LORA, help="Also adapt the text encoder (its embeddings are then not cached).")] = False,
    merge: Annotated[bool, Opt("--merge", metavar="", rich_help_panel=LORA, help="Also write the LoRA merged into a full pipeline folder.")] = False,
    instance_data: Annotated[Optional[str], Opt("--instance-data", metavar="DIR", rich_help_panel=BOOTH, help="DreamBooth: a folder of the subject's images.")] = None,
    instance_prompt: Annotated[Optional[str], Opt("--instance-prompt", metavar="TEXT", rich_help_panel=BOOTH, help="DreamBooth: the caption of every subject image.")] = None,
    class_prompt: Annotated[Optional[str], Opt("--class-prompt", metavar="TEXT", rich_help_panel=BOOTH, help="Prior preservation: the class prompt.")] = None,
    num_class_images: Annotated[Optional[int], number_option("--num-class-images", bounds=INT, rich_help_panel=BOOTH, help="Prior preservation: class images from the base pipeline (cached).")] = None,
    prior_loss_weight: Annotated[Optional[float], number_option("--prior-loss-weight", bounds=FLOAT, rich_help_panel=BOOTH, help=with_default("Weight of the class images' loss.", "1"))] = None,
    validation_prompt: Annotated[Optional[list[str]], Opt("--validation-prompt", metavar="TEXT", rich_help_panel=EVAL, help=with_default("Prompt of the validation images (repeatable).", "the first captions"))] = None,
    validation_images: Annotated[Optional[int], number_option("--validation-images", bounds=INT, rich_help_panel=EVAL, help=with_default("Images held out for the validation loss.", "8, at most a fifth"))] = None,
    clip_model: Annotated[Optional[str], Opt("--clip-model", metavar="DIR", rich_help_panel=EVAL, help="Local CLIP folder: CLIP score of the validation images.")] = None,
    eval_every: Annotated[Optional[int], number_option("--eval-every", bounds=INT, rich_help_panel=EVAL, help=with_default("Validation every N steps.", "25"))] = None,
    patience: Annotated[Optional[int], number_option("--patience", bounds=INT, rich_help_panel=EVAL, help=with_default("Stop after N validations without improvement (0: off).", "4"))] = None,
    min_delta: Annotated[Optional[float], number_option("--min-delta", bounds=FLOAT, rich_help_panel=EVAL, help="Smallest validation-loss improvement that counts.")] = None,
    budget_kwh: Annotated[Optional[float], number_option("--budget-kwh", bounds=FLOAT, rich_help_panel=EVAL, help="Stop before the run uses more kWh than this.")] = None,
    budget_kgco2e: Annotated[Optional[float], number_option("--budget-kgco2e", bounds=FLOAT, rich_help_panel=EVAL, help="Stop before the run emits more kg CO2e than this.")] = None,
    carbon_aware: Annotated[bool, Opt("--carbon-aware", metavar="", rich_help_panel=EVAL, help="Pause while the grid is dirty (with --max-intensity or --deadline).")] = False,
    max_intensity: Annotated[Optional[float], number_option("--max-intensity", bounds=FLOAT, rich_help_panel=EVAL, help="Train only at or below this many gCO2e/kWh.")] = None,
    deadline: Annotated[Optional[str], Opt("--deadline", metavar="TIME", rich_help_panel=EVAL, help="ISO 8601 time training must end by.")] = None,
    no_text_cache: Annotated[bool, Opt("--no-text-cache", metavar="", rich_help_panel=DATA, help="Encode the captions every step, not once.")] = False,
    no_latent_cache: Annotated[bool, Opt("--no-latent-cache", metavar="", rich_help_panel=DATA, help="Encode the images every step, not once.")] = False,
    latent_cache_dir: Annotated[Optional[str], Opt("--latent-cache-dir", metavar="DIR", rich_help_panel=DATA, help=with_default("Cached latents (text embeddings and class images beside).", "~/.cache/greendiff/latents"))] = None,
    gradient_checkpointing: Annotated[bool, Opt("--gradient-checkpointing", metavar="", rich_help_panel=DATA, help="Less memory, more compute per step.")] = False,
    batch_size: Annotated[Optional[int], number_option("--batch-size", bounds=INT, help=with_default("Images per step.", "8"))] = None,
    lr: Annotated[Optional[float], number_option("--lr", bounds=FLOAT, help=with_default("Learning rate.", "1e-4 LoRA, 1e-5 full"))] = None,
    max_steps: Annotated[Optional[int], number_option("--max-steps", bounds=INT, help=with_default("Optimizer steps.", "500"))] = None,
    seed: Annotated[Optional[int], number_option("--seed", bounds=INT, help="Seed of adapters, data order and noise.")] = None,
    mixed_precision: Annotated[Optional[str], Opt("--mixed-precision", metavar="MODE", help=with_default("auto, no, bf16 or fp16.", "auto"))] = None,
    guidance_scale: Annotated[Optional[float], number_option("--guidance-scale", bounds=FLOAT, help=with_default("Guidance of validation images.", "2"))] = None,
    sample_steps: Annotated[Optional[int], number_option("--sample-steps", bounds=INT, help=with_default("Sampler steps of validation images.", "20"))] = None,
    sets: Annotated[list[str], Opt("--set", metavar="KEY=VAL", help="Any config key, e.g. --set finetune.validation_timesteps=8 (repeatable).")] = [],
    output_dir: Annotated[Optional[str], Opt("--output-dir", metavar="DIR", rich_help_panel=RUN, help=with_default("Parent of the run directory.", "runs"))] = None,
    name: Annotated[Optional[str], name_option("--name", help=with_default("Run name.", "finetune-lora or finetune-full"), rich_help_panel=RUN)] = None,
    log_to: Annotated[Optional[list[str]], Opt("--log-to", metavar="NAME", rich_help_panel=RUN, help="Also log to: tensorboard, mlflow (repeatable).")] = None,
    measurement: MeasurementOptions = MeasurementOptions(),
) -> None:
    """Fine-tune a local text-to-image pipeline (LoRA, DreamBooth or full), energy measured per phase."""
    overrides = finetune_overrides(ctx)
    resume_dir = run_directory(resume, measurement.ledger) if resume is not None else None
    job = TrainJob(config_file=config_file, overrides=overrides, resume=resume_dir, measurement=measurement)
    if dry_run:  # the config resolved against the pipeline (its resolution, timesteps, objective)
        from greendiff.train import to_toml

        config = resolve_finetune_config(job)[0]
        if resume_dir is None:
            config = resolve_finetune_config(job, load_base(config))[0]
        typer.echo(to_toml(config), nl=False)
        return
    prepared = prepare_finetune(job)
    console = Console(stderr=True)
    outcome = run_finetune(prepared, RichProgress(console))
    render_train(outcome, console, "finetune")
    if outcome.finished:
        written = [display_path(outcome.run_dir / part) for part in ("lora", "pipeline") if (outcome.run_dir / part).is_dir()]
        console.print(f"written: {', '.join(written)}", highlight=False, markup=False)
    else:
        raise typer.Exit(128 + (outcome.exit_signal or signal.SIGINT))


def finetune_overrides(ctx: typer.Context) -> dict[str, object]:
    """The config overrides a ``finetune`` command line gives (None: not given), then ``--set`` pairs."""
    given = {param.opts[0]: ctx.params[param.name] for param in ctx.command.params if param.opts}
    overrides: dict[str, object] = {}
    for flag, key in FLAG_KEYS.items():
        value = given[flag]
        if flag == "--full":
            value = "full" if value else None
        elif flag in _INVERTED:
            value = False if value else None
        elif isinstance(value, bool):
            value = switch(flag, value, False)
        elif isinstance(value, (list, tuple)):
            value = list(value) or None
        overrides[key] = value
    if overrides["run.log_to"] is not None:
        overrides["run.log_to"] = ",".join(overrides["run.log_to"])
    return overrides | parse_sets(list(given["--set"]))
