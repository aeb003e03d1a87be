"""The ``finetune`` section's rules between keys, and ``greendiff finetune``'s own defaults.

A fine-tune starts from a pretrained pipeline, so its defaults differ from training from scratch: a constant
learning rate of 1e-4 for LoRA and 1e-5 for a full fine-tune with no warm-up (diffusers'
``train_text_to_image_lora.py`` and ``train_text_to_image.py``), no EMA (the LoRA scripts keep none), a small
batch, and early stopping on the validation loss at fixed timesteps and noise, evaluated every 25 steps.
"""

from __future__ import annotations

from typing import Any

from greendiff.errors import UserInputError
from greendiff.names import shown

#: ``greendiff finetune``'s defaults, dotted keys applied after the recipe and before a config file.
FINETUNE_DEFAULTS: dict[str, Any] = {
    "optim.batch_size": 8, "optim.ema": False, "optim.warmup_steps": 0, "optim.lr_schedule": "constant",
    "optim.sample_steps": 20, "run.max_steps": 500, "run.sample_every": 100, "run.checkpoint_every": 100,
    "run.num_samples": 4, "stop.metric": "val_loss", "stop.eval_every": 25, "stop.patience": 4,
    "stop.spread_seeds": 1,
}

#: Peak learning rates by method (diffusers' text-to-image scripts: LoRA 1e-4; full fine-tune 1e-5).
FINETUNE_LR = {"lora": 1e-4, "full": 1e-5}


def finetune_lr(method: str) -> float:
    """The default peak learning rate of a fine-tune by ``method`` (lora, full)."""
    return FINETUNE_LR[method]


def _strings(values: tuple[str, ...], key: str) -> None:
    for value in values:
        if not value.strip():
            raise UserInputError(f"{key} has an empty entry; give non-empty text or leave it out")


def validate_finetune(config) -> None:
    """The ``finetune`` keys agree with each other and with the rest of the config (one-line errors); the
    pipeline folder itself, the data and the prompts' lengths are checked when they are read."""
    ft, stop = config.finetune, config.stop
    if not ft.enabled:
        named = [key for key, value in (("finetune.instance_data", ft.instance_data),
                                        ("finetune.clip_model", ft.clip_model),
                                        ("finetune.num_class_images", ft.num_class_images)) if value]
        if named:
            raise UserInputError(f"{named[0]} belongs to a fine-tune: give finetune.pipeline (greendiff finetune "
                                 "--pipeline DIR)")
        if stop.metric == "val_loss":
            raise UserInputError("a fine-tune needs finetune.pipeline (greendiff finetune --pipeline DIR: a local "
                                 "diffusers text-to-image pipeline); stop.metric = val_loss is a fine-tune's metric")
        return
    if stop.metric != "val_loss":
        raise UserInputError(f"a fine-tune stops on its validation loss: set stop.metric = val_loss, not {stop.metric}")
    model = config.model
    if model.vae or model.backbone != "unet" or model.conditioning != "none" or model.init_from:
        raise UserInputError("a fine-tune takes its denoiser, VAE and text encoders from finetune.pipeline: leave "
                             "model.vae, model.backbone, model.conditioning and model.init_from at their defaults")
    if config.distill.kind != "none":
        raise UserInputError("distill.kind must be none for a fine-tune")
    if bool(ft.instance_data) != bool(ft.instance_prompt.strip()):
        raise UserInputError("DreamBooth needs both --instance-data DIR and --instance-prompt TEXT "
                             f"(got {'only the folder' if ft.instance_data else 'only the prompt'})")
    if ft.num_class_images and not (ft.class_prompt.strip() and ft.instance_data):
        raise UserInputError("prior preservation (--num-class-images N) needs --class-prompt TEXT and DreamBooth's "
                             "--instance-data/--instance-prompt")
    if ft.class_prompt and not ft.num_class_images:
        raise UserInputError("--class-prompt needs --num-class-images N (> 0): the class images prior preservation "
                             "trains on")
    if ft.merge and ft.method != "lora":
        raise UserInputError("--merge folds LoRA adapters into the pipeline; a full fine-tune (--full) writes the "
                             "whole pipeline already: drop --merge")
    optim = config.optim
    unused = [f"optim.{key} = {value}" for key, value, off in (
        ("timestep_sampling", optim.timestep_sampling, "uniform"),
        ("noise_assignment", getattr(optim, "noise_assignment", "random"), "random"),
        ("align", optim.align, "none")) if value != off]
    if unused:
        raise UserInputError(f"{unused[0]} is a lever of training from scratch; a fine-tune keeps its base model's "
                             "objective and timestep distribution: leave it at its default")
    if ft.text_encoder_lora and ft.method != "lora":
        raise UserInputError("finetune.text_encoder_lora adds LoRA adapters; a full fine-tune (--full) trains the "
                             "denoiser alone")
    _strings(ft.lora_targets, "finetune.lora_targets")
    _strings(ft.validation_prompts, "finetune.validation_prompts")
    if ft.validation_images == 0 and (stop.patience or stop.target or stop.min_gain_per_kwh):
        raise UserInputError("early stopping on the validation loss needs held-out images: set "
                             f"finetune.validation_images > 0 (got {shown(ft.validation_images)}) or stop.patience = 0")
