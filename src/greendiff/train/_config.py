"""Typed, nested training configuration; resolved once (defaults < recipe < TOML file < CLI).

Every efficiency lever is a field of :class:`RecipeConfig`, so an ablation is one flag away.
The resolved config is written to the run directory as ``config.toml``.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from greendiff.carbon import MAX_PLAUSIBLE_G_PER_KWH
from greendiff.errors import UserInputError
from greendiff.names import check_tracking_uri, display_path, shown, unprintable
from greendiff.numbers import (
    COUNT, COUNT0, ENERGY_KWH, HOURS_IN_A_YEAR, SEED, Bounds, parse_float, parse_int,
)

MixedPrecision = Literal["auto", "no", "bf16", "fp16"]
#: Experiment trackers ``run.log_to`` may name (``greendiff.integrations`` implements each); each is also
#: the module it needs and the greendiff extra that installs it.
LOGGERS = ("tensorboard", "mlflow")
#: Longest string a config key takes (a path's limit on Linux is 4096 bytes).
MAX_STRING_CHARS = 4096

_NONNEG = Bounds(lo=0)  # finite, >= 0: weights, thresholds (0 switches a rule off)
_POS = Bounds(lo=0, lo_open=True)
_FRACTION = Bounds(lo=0, hi=1, hi_open=True)  # Adam's betas
_STEPS_T = Bounds(integer=True, lo=1, hi=100_000)  # diffusion timesteps and sampler steps
_MINUTES_IN_A_YEAR = HOURS_IN_A_YEAR * 60


def bounded(default: int | float, bounds: Bounds) -> Any:
    """A config field whose values must be within ``bounds`` (checked by :func:`validate`)."""
    return field(default=default, metadata={"bounds": bounds})


@dataclass(frozen=True)
class DataConfig:
    """Args: dataset (``mnist``, ``digits``, an image folder in the ``datasets`` imagefolder layout, a
    ``save_to_disk`` folder, or .npy/.npz), resolution (pixels, square), skip_bad_images (a folder's
    unusable files are skipped and counted instead of stopping the run), label_column / caption_column
    (the ``metadata.jsonl``/``.csv`` or ``save_to_disk`` column holding each image's class or caption;
    "": class subfolders, else none), cache_max_gb (decoded data up to this many GB is held in memory,
    larger data is streamed from disk), loader_workers (decoding processes when streaming).

    latent_cache: with ``model.vae``, encode the dataset once (a metered ``encode`` phase) and train on the
    stored posteriors, reused by later epochs, resumes, tuning trials and runs (keyed by the data, the VAE's
    weights, the resolution and the augmentation); off: every step encodes its batch. latent_cache_dir: where
    the cache lives ("": ``$GREENDIFF_CACHE_DIR/latents``, else ``~/.cache/greendiff/latents``).
    """

    dataset: str = "mnist"
    resolution: int = bounded(16, Bounds(integer=True, lo=1, hi=4096, why="pixels per side"))
    skip_bad_images: bool = False
    label_column: str = ""
    caption_column: str = ""
    cache_max_gb: float = bounded(4.0, Bounds(lo=0, hi=1e6, why="a petabyte"))
    loader_workers: int = bounded(2, Bounds(integer=True, lo=0, hi=256))
    latent_cache: bool = True
    latent_cache_dir: str = ""


@dataclass(frozen=True)
class ModelConfig:
    """A preset, optionally overridden field by field (``()`` / ``-1`` mean: take the preset's).

    ``init_from``: a diffusers ``UNet2DModel`` folder (``save_pretrained``) whose weights start the run,
    e.g. a pruned model to fine-tune or a teacher a step-distilled student starts from; its
    architecture must be the one this config builds.

    ``conditioning``: ``none`` (unconditional) or ``class`` (the dataset's labels through the UNet's
    class embedding, plus a null class for classifier-free guidance). ``num_classes``: 0 takes the
    dataset's number of classes; the resolved number is saved with the run.

    ``backbone``: ``unet`` (diffusers' ``UNet2DModel``) or ``dit`` (``DiTTransformer2DModel``, class-conditional,
    in latent space; ``patch_size`` is the side of its patches in latent pixels). ``vae``: a local diffusers
    ``AutoencoderKL`` folder; set, the model is trained in its latent space ("": pixel space).
    """

    preset: str = "tiny"
    block_out_channels: tuple[int, ...] = bounded((), Bounds(integer=True, lo=1, hi=8192))  # each width
    layers_per_block: int = bounded(-1, Bounds(integer=True, lo=-1, hi=16))
    attention: Literal["preset", "on", "off"] = "preset"
    init_from: str = ""
    conditioning: Literal["none", "class"] = "none"
    num_classes: int = bounded(0, Bounds(integer=True, lo=0, hi=100_000))
    backbone: Literal["unet", "dit"] = "unet"
    patch_size: int = bounded(2, Bounds(integer=True, lo=1, hi=64))
    vae: str = ""


@dataclass(frozen=True)
class RecipeConfig:
    """The levers. Defaults here are the green recipe; ``recipe = "baseline"`` resets them to diffusers'.

    Sources: Min-SNR-γ weighting, Hang et al., ICCV 2023 (γ = 5); cosine noise schedule, Nichol &
    Dhariwal, ICML 2021; stratified (low-discrepancy) timesteps, Kingma et al., NeurIPS 2021 (VDM):
    one uniform draw per batch, the batch's timesteps spread evenly from it, so each batch covers
    every noise level; EMA with warm-up, diffusers ``EMAModel`` (Karras et al. 2023 study EMA
    length); few-step DDIM sampling, Song et al., ICLR 2021; bf16 autocast, PyTorch AMP.

    ``objective``: what the network predicts (:mod:`greendiff.train._objectives`): ``epsilon`` the noise, ``v``
    the velocity of v-prediction (Salimans & Ho 2022), ``flow`` the rectified-flow velocity (Esser et al.
    2024, SD3), trained at logit-normal times (``flow_logit_mean``, ``flow_logit_std``) and sampled with
    diffusers' ``FlowMatchEulerDiscreteScheduler`` (``sampler``, ``beta_schedule`` and ``timestep_sampling`` are
    for epsilon and v), with uniform loss weights as SD3 unless ``loss_weighting`` is given (min-snr is defined
    for flow too: :class:`~greendiff.train.FlowObjective`).
    ``compile``: ``torch.compile`` the network (opt-in: compiling costs minutes up front).
    """

    mixed_precision: MixedPrecision = "auto"
    objective: Literal["epsilon", "v", "flow"] = "epsilon"
    loss_weighting: Literal["uniform", "min-snr"] = "min-snr"
    timestep_sampling: Literal["uniform", "stratified", "logit-normal", "speed"] = "uniform"
    # timestep_sampling = logit-normal (SD3, Esser et al. 2024): t = floor(sigmoid(mean + std z) T); speed (SpeeD,
    # Wang et al. 2024): t < speed_tau T drawn speed_k times as often, change-aware weights within [1 - l, l], l =
    # speed_lambda (greendiff.train._timesteps)
    timestep_logit_mean: float = bounded(0.0, Bounds(lo=-10, hi=10))
    timestep_logit_std: float = bounded(1.0, Bounds(lo=0, lo_open=True, hi=10))
    speed_k: float = bounded(5.0, Bounds(lo=1, hi=1000))
    speed_tau: float = bounded(0.7, Bounds(lo=0, lo_open=True, hi=1))
    speed_lambda: float = bounded(0.6, Bounds(lo=0.5, hi=1))
    # Immiscible Diffusion (Li et al. 2024): each batch's noise assigned to its images by a linear assignment
    noise_assignment: Literal["random", "immiscible"] = "random"
    snr_gamma: float = bounded(5.0, Bounds(lo=0, lo_open=True, hi=1e4))
    beta_schedule: Literal["linear", "squaredcos_cap_v2"] = "squaredcos_cap_v2"
    num_train_timesteps: int = bounded(1000, _STEPS_T)
    batch_size: int = bounded(64, Bounds(integer=True, lo=1, hi=65_536))
    lr: float = bounded(0.0, Bounds(lo=0, phrase="positive (0: the model preset's)"))  # 0: the model preset's (narrower networks take larger steps); resolved once
    adam_beta1: float = bounded(0.95, _FRACTION)
    adam_beta2: float = bounded(0.999, _FRACTION)
    weight_decay: float = bounded(1e-6, _NONNEG)
    lr_schedule: Literal["cosine", "constant", "linear"] = "cosine"
    warmup_steps: int = bounded(25, COUNT0)
    grad_clip: float = bounded(1.0, _NONNEG)
    ema: bool = True
    ema_max_decay: float = bounded(0.9999, Bounds(lo=0, hi=1, lo_open=True, hi_open=True))
    ema_warmup: bool = True
    ema_power: float = bounded(2 / 3, Bounds(lo=0, lo_open=True, hi=100))
    sampler: Literal["ddpm", "ddim", "dpm-solver", "unipc"] = "ddim"  # dpm-solver: DPM-Solver++ 2M; unipc: UniPC
    sample_steps: int = bounded(50, _STEPS_T)
    channels_last: Literal["auto", "on", "off"] = "auto"
    scale_lr: bool = False  # data-parallel: multiply lr by the number of processes (batch_size is per process)
    # classifier-free guidance (Ho & Salimans 2022): the share of labels dropped to the null class while
    # training, and the scale previews and evaluations sample with (1: conditional only, no extra forward)
    cond_dropout: float = bounded(0.1, Bounds(lo=0, hi=1))
    guidance_scale: float = bounded(2.0, Bounds(lo=0, hi=100))
    flow_logit_mean: float = bounded(0.0, Bounds(lo=-10, hi=10))
    flow_logit_std: float = bounded(1.0, Bounds(lo=0, lo_open=True, hi=10))
    compile: bool = False
    # post-hoc EMA (Karras et al. 2024, EDM2): snapshots of two power-function EMAs (sigma_rel each), any EMA
    # length reconstructed afterwards (greendiff eval --ema-length); 0: off
    ema_snapshots: int = bounded(0, Bounds(integer=True, lo=0, hi=10_000))
    ema_snapshot_stds: tuple[float, ...] = bounded((0.05, 0.10), Bounds(lo=0, lo_open=True, hi=0.3))
    # representation alignment (REPA, Yu et al. 2024; U-REPA for UNets) to a frozen encoder's features
    # (align_encoder, a local folder), or the encoder-free dispersive loss (Wang & He 2025); its weight decays
    # linearly to 0 at align_until x run.max_steps (alignment helps early, can hurt late)
    align: Literal["none", "repa", "dispersive"] = "none"
    align_encoder: str = ""
    align_weight: float = bounded(0.5, _NONNEG)
    align_until: float = bounded(0.5, Bounds(lo=0, lo_open=True, hi=1))
    align_temperature: float = bounded(0.5, Bounds(lo=0, lo_open=True, hi=100))

    @property
    def sampler_name(self) -> str:
        """The sampler previews and evaluations use: ``sampler`` (ddpm, ddim), or ``euler`` for flow."""
        return "euler" if self.objective == "flow" else self.sampler

    @property
    def prediction_type(self) -> str:
        """The objective as diffusers' schedulers name it (``epsilon``, ``v_prediction``, ``flow``)."""
        return {"v": "v_prediction"}.get(self.objective, self.objective)


BASELINE = RecipeConfig(
    mixed_precision="no", loss_weighting="uniform", beta_schedule="linear", batch_size=16, lr=1e-4,
    warmup_steps=500, ema=False, ema_power=3 / 4, sampler="ddpm", sample_steps=1000, channels_last="off",
)
RECIPES: dict[str, RecipeConfig] = {"green": RecipeConfig(), "baseline": BASELINE}


@dataclass(frozen=True)
class RunConfig:
    """Steps, seeds, where the run goes, how often it samples and checkpoints, and which experiment
    trackers get its metrics (``log_to``; see ``greendiff.integrations``)."""

    name: str = ""
    output_dir: str = "runs"
    max_steps: int = bounded(2000, COUNT)
    seed: int = bounded(0, SEED)
    log_every: int = bounded(10, COUNT)
    sample_every: int = bounded(500, COUNT)
    num_samples: int = bounded(64, Bounds(integer=True, lo=1, hi=10_000))
    checkpoint_every: int = bounded(500, COUNT)
    keep_checkpoints: int = bounded(2, Bounds(integer=True, lo=1, hi=1000))
    max_bad_steps: int = bounded(20, COUNT)
    log_to: tuple[str, ...] = ()  # experiment trackers: "tensorboard", "mlflow"
    mlflow_uri: str = ""  # MLflow tracking URI; "" is file: the mlruns folder beside the run directory


@dataclass(frozen=True)
class StopConfig:
    """Evaluation during training, early stopping and budgets (0 switches a rule off).

    ``eval_sample_steps``: sampler steps of the evaluation samples (0: the recipe's ``sample_steps``);
    fewer make each evaluation cheaper, and since every evaluation uses the same, they still compare.
    ``eval_at_end``: evaluate once more when the run ends (max_steps, a stopping rule or a budget),
    so its final quality is on record. ``fit_schedule``: with an energy or carbon budget, the
    learning-rate schedule ends where the budget is forecast to run out (re-forecast every step from
    the energy per step so far, evaluations included), so a budget-stopped run has finished its decay.
    ``budget_kwh`` / ``budget_kgco2e`` hold from the first step (the run stops before its next step, with
    room for the closing evaluation, would pass them); ``budget_warmup_steps`` delays only the forecast of
    the run's total and ``fit_schedule``'s horizon, which the first steps' warm-up would inflate.
    """

    eval_every: int = bounded(0, COUNT0)
    eval_every_kwh: float = bounded(0.0, ENERGY_KWH)
    eval_samples: int = bounded(500, Bounds(integer=True, lo=4, hi=1_000_000))
    eval_sample_steps: int = bounded(0, Bounds(integer=True, lo=0, hi=100_000))
    spread_seeds: int = bounded(3, Bounds(integer=True, lo=1, hi=100))
    eval_features: str = "mnist"
    metric: Literal["fid", "kid", "val_loss"] = "fid"
    patience: int = bounded(0, COUNT0)
    min_delta: float = bounded(0.0, _NONNEG)
    min_gain_per_kwh: float = bounded(0.0, _NONNEG)
    gain_window: int = bounded(3, Bounds(integer=True, lo=1, hi=1_000_000))
    target: float = bounded(0.0, _NONNEG)
    budget_kwh: float = bounded(0.0, ENERGY_KWH)
    budget_kgco2e: float = bounded(0.0, Bounds(lo=0, hi=1e9, why="a million tonnes"))
    budget_warmup_steps: int = bounded(20, COUNT0)
    eval_at_end: bool = False
    fit_schedule: bool = True


@dataclass(frozen=True)
class DistillConfig:
    """Training against a teacher instead of (or besides) the data alone; ``kind = "none"`` switches it off.

    ``output``: knowledge distillation (the student matches the teacher's prediction, weight
    ``output_weight``, and, where block outputs have the same shape, its features, weight
    ``feature_weight``, as BK-SDM does), mixed with the denoising loss (weight ``data_weight``).
    ``steps``: one round of progressive distillation (Salimans & Ho, ICLR 2022): one student DDIM step
    matches two of the teacher's, which samples with ``teacher_steps``; the student samples with half.
    ``teacher``: the teacher's diffusers ``UNet2DModel`` folder.
    """

    kind: Literal["none", "output", "steps"] = "none"
    teacher: str = ""
    data_weight: float = bounded(1.0, _NONNEG)
    output_weight: float = bounded(1.0, _NONNEG)
    feature_weight: float = bounded(0.1, _NONNEG)
    teacher_steps: int = bounded(0, Bounds(integer=True, lo=0, hi=100_000))


@dataclass(frozen=True)
class CarbonAwareConfig:
    """Pause training while the grid is dirty (``greendiff train --carbon-aware``); needs an hourly series
    (``--grid`` or ``--live uk``).

    ``max_intensity``: run only at or below this many gCO2e/kWh (0: no threshold; then ``deadline``
    alone plans the best hours). ``deadline``: ISO 8601 time training must end by; pauses stop when the
    remaining work (forecast, plus ``margin``) would no longer fit. ``min_pause_min``: shorter waits
    are not worth a checkpoint. ``pause_cost_kwh``: energy of one pause, for the deadline planner.
    ``simulate_start`` / ``simulated_step_s``: run on a simulated clock that starts there and advances
    this many seconds per step (tests, demos; a wait then takes no real time).
    """

    enabled: bool = False
    max_intensity: float = bounded(0.0, Bounds(lo=0, hi=MAX_PLAUSIBLE_G_PER_KWH, why="gCO2e/kWh: no grid is dirtier"))
    deadline: str = ""
    margin: float = bounded(0.1, Bounds(lo=0, hi=10))
    min_pause_min: float = bounded(15.0, Bounds(lo=0, hi=_MINUTES_IN_A_YEAR, why="a year"))
    pause_cost_kwh: float = bounded(0.0, ENERGY_KWH)
    recheck_min: float = bounded(5.0, Bounds(lo=0, hi=_MINUTES_IN_A_YEAR, why="a year"))
    simulate_start: str = ""
    simulated_step_s: float = bounded(0.0, Bounds(lo=0, hi=86_400, why="a day"))


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning a pretrained text-to-image pipeline (``greendiff finetune``); off while ``pipeline`` is "".

    pipeline: a local diffusers pipeline folder (Stable Diffusion layout, or an SD3-style transformer one).
    method: ``lora`` (low-rank adapters through peft; Hu et al. 2021) or ``full`` (every denoiser weight).
    lora_rank / lora_alpha (0: the rank, a scale of 1) / lora_dropout / lora_targets (module names; (): the
    attention projections, as diffusers' scripts) / text_encoder_lora (adapters on the text encoder too: its
    embeddings are then computed every step, never cached). instance_data / instance_prompt: DreamBooth
    (Ruiz et al. 2023): a folder of images of one subject, each captioned with the prompt; class_prompt and
    num_class_images > 0 add prior preservation (class images from the base pipeline, generated once in a
    metered ``sample`` phase and cached), weighed by prior_loss_weight. text_cache: encode each caption once
    (a metered ``encode`` phase, stored beside the latent cache) instead of every step. validation_prompts:
    the prompts of the validation images at each evaluation ((): the first captions). validation_images:
    images held out of training for the validation loss at validation_timesteps fixed timesteps and fixed
    noise (stop.metric ``val_loss``). clip_model: a local CLIP folder for a CLIP score of the validation
    images. gradient_checkpointing: recompute activations in the backward pass (less memory, more energy
    per step). merge: also write the LoRA merged into a full pipeline folder.
    """

    pipeline: str = ""
    method: Literal["lora", "full"] = "lora"
    lora_rank: int = bounded(8, Bounds(integer=True, lo=1, hi=4096, why="the rank of a LoRA adapter"))
    lora_alpha: float = bounded(0.0, Bounds(lo=0, hi=1e6, phrase="0 (the rank) or positive"))
    lora_dropout: float = bounded(0.0, Bounds(lo=0, hi=1, hi_open=True))
    lora_targets: tuple[str, ...] = ()
    text_encoder_lora: bool = False
    instance_data: str = ""
    instance_prompt: str = ""
    class_prompt: str = ""
    num_class_images: int = bounded(0, Bounds(integer=True, lo=0, hi=100_000))
    prior_loss_weight: float = bounded(1.0, _NONNEG)
    text_cache: bool = True
    validation_prompts: tuple[str, ...] = ()
    validation_images: int = bounded(8, Bounds(integer=True, lo=0, hi=100_000))
    validation_timesteps: int = bounded(5, Bounds(integer=True, lo=1, hi=1000))
    clip_model: str = ""
    gradient_checkpointing: bool = False
    merge: bool = False

    @property
    def enabled(self) -> bool:
        return bool(self.pipeline)

    @property
    def alpha(self) -> float:
        """LoRA's alpha as used: ``lora_alpha``, or the rank when it is 0 (an update scale alpha / rank of 1)."""
        return self.lora_alpha or float(self.lora_rank)


@dataclass(frozen=True)
class TrainConfig:
    recipe: str = "green"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: RecipeConfig = field(default_factory=RecipeConfig)
    run: RunConfig = field(default_factory=RunConfig)
    stop: StopConfig = field(default_factory=StopConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    carbon: CarbonAwareConfig = field(default_factory=CarbonAwareConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """``value`` (from TOML or a ``--set`` string) as the field's type; ranges are :func:`validate`'s."""
    origin = get_origin(hint)
    if origin is Literal:
        if value not in get_args(hint):
            raise UserInputError(f"{where} must be one of {', '.join(map(str, get_args(hint)))}; got {shown(value)}")
        return value
    if origin is tuple:
        item = get_args(hint)[0]
        if isinstance(value, str):  # a --set comma list
            value = _comma_list(value, item, where)
        elif isinstance(value, (list, tuple)):  # a TOML array: real integers (or strings), no "32"
            wrong = next((v for v in value if not isinstance(v, item) or isinstance(v, bool)), None)
            if wrong is not None:
                raise UserInputError(f"{where} must be a list of {'names' if item is str else 'integers'}; "
                                     f"the item {shown(wrong)} is not {'a name' if item is str else 'an integer'}")
        else:
            raise UserInputError(f"{where} must be a list of {'names' if item is str else 'integers'}, got {shown(value)}")
        return tuple(_coerce(v, item, where) for v in value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise UserInputError(f"{where} must be true or false, got {shown(value)}")
    if hint is int:
        return parse_int(value, where)
    if hint is float:
        return parse_float(value, where)
    if hint is str:
        return _check_string(value, where)
    raise TypeError(f"unsupported config type {hint}")


def _comma_list(text: str, item: type, where: str) -> list[str]:
    """The items of a ``--set`` comma list (spaces ignored); an empty item (``16,,32``) is an error, and
    so is an empty list of integers (leave the key out for the preset's widths). An empty list of names
    (``run.log_to=``) means none."""
    items = text.replace(" ", "").split(",")
    if items == [""]:
        if item is str:
            return []
        raise UserInputError(f"{where} is empty: give the integers separated by commas (e.g. 32,64), or leave "
                             "the key out for the preset's")
    if "" in items:
        raise UserInputError(f"{where} {shown(text)} has an empty item: give the values separated by single commas")
    return items


def _check_string(value: Any, where: str) -> str:
    """A config string (a path, name, time or URI): printable, so that it is a valid path and the
    saved ``config.toml`` and every message naming it stay one line; at most MAX_STRING_CHARS long."""
    if not isinstance(value, str):
        raise UserInputError(f"{where} must be a string, got {shown(value)}")
    if len(value) > MAX_STRING_CHARS:
        raise UserInputError(f"{where} is {len(value):,} characters long; at most {MAX_STRING_CHARS:,}")
    bad = unprintable(value)
    if bad is not None:
        raise UserInputError(f"{where} {shown(value)} contains the unprintable character {bad} (NUL, a newline, "
                             "a control or format character): not a usable path, name or time")
    return value


def _unknown_key(where: str, key: str, names: set[str]) -> UserInputError:
    near = [n for n in names if n.lower() == key.lower().replace("-", "_")]
    hint = f"; keys are lower case with '_': did you mean {shown(where[:-len(key)] + near[0])}?" if near else ""
    return UserInputError(f"unknown config key {shown(where)}{hint}; valid keys here: {', '.join(sorted(names))}")


def _merge(obj: Any, updates: dict[str, Any], prefix: str = "") -> Any:
    """A copy of dataclass ``obj`` with nested ``updates`` applied, types checked, unknown keys refused."""
    hints = get_type_hints(type(obj))
    names = {f.name for f in fields(obj)}
    changes = {}
    for key, value in updates.items():
        where = f"{prefix}{key}"
        if key not in names:
            raise _unknown_key(where, key, names)
        current = getattr(obj, key)
        if is_dataclass(current):
            if not isinstance(value, dict):
                raise UserInputError(f"{where} must be a table of settings, got {shown(value)}")
            changes[key] = _merge(current, value, f"{where}.")
        else:
            changes[key] = _coerce(value, hints[key], where)
    return dataclasses.replace(obj, **changes)


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file's tables, or a one-line :class:`UserInputError` naming the file."""
    shown_path = display_path(path)
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise UserInputError(f"config file {shown_path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserInputError(f"{shown_path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise UserInputError(f"{shown_path}: not UTF-8 text (byte {exc.start} is {exc.object[exc.start:exc.start + 1]!r}); "
                             "TOML files must be UTF-8") from None
    except RecursionError:  # tomllib parses nested arrays and inline tables recursively
        raise UserInputError(f"{shown_path}: invalid TOML: arrays or inline tables nested too deeply") from None
    except IsADirectoryError:
        raise UserInputError(f"config file {shown_path} is a folder, not a TOML file") from None
    except OSError as exc:
        raise UserInputError(f"cannot read {shown_path}: {exc.strerror}") from None
    except ValueError as exc:  # an integer past Python's int-string limit, or an embedded NUL in the path
        if "int" in str(exc) and "digits" in str(exc):
            raise UserInputError(f"{shown_path}: invalid TOML: an integer has too many digits (at most 40)") from None
        raise UserInputError(f"cannot read {shown_path}: {exc}") from None


def dotted_to_nested(overrides: dict[str, Any]) -> dict[str, Any]:
    """``{"optim.lr": 1e-3}`` -> ``{"optim": {"lr": 1e-3}}``."""
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        node = nested
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise UserInputError(f"config key {shown(key)} is inside {shown(p)}, which is set to a value, "
                                     "not a table of settings")
        if isinstance(node.get(leaf), dict):
            raise UserInputError(f"config key {shown(key)} is a table of settings; set the keys inside it")
        node[leaf] = value
    return nested


def resolve_config(file: Path | None = None, overrides: dict[str, Any] | None = None,
                   base: dict[str, Any] | None = None, defaults: dict[str, Any] | None = None) -> TrainConfig:
    """The one place precedence is decided: defaults < recipe < TOML file (or ``base``) < CLI overrides.

    The recipe (from the CLI, else the file, else ``green``) replaces the lever defaults before the
    file's and the CLI's own values are applied. ``base``: nested settings used in place of a file
    (a run derived from another run's saved config). ``defaults``: dotted keys applied after the recipe and
    before the file (a command's own defaults); a config naming ``finetune.pipeline`` gets
    ``greendiff finetune``'s (:data:`~greendiff.train._finetune_config.FINETUNE_DEFAULTS`) this way.
    """
    from_file = base if base is not None else read_toml(file) if file is not None else {}
    from_cli = dotted_to_nested({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        from_file = upgrade_settings(from_file)
    except UserInputError as exc:
        raise UserInputError(f"{display_path(file)}: {exc}" if file is not None else str(exc)) from None
    from_cli = upgrade_settings(from_cli)
    recipe = from_cli.get("recipe", from_file.get("recipe", "green"))
    if not isinstance(recipe, str) or recipe not in RECIPES:
        raise UserInputError(f"unknown recipe {shown(recipe)}; use one of {', '.join(RECIPES)}")
    config = TrainConfig(recipe=recipe, optim=RECIPES[recipe])
    named = {**_table(from_file, "finetune"), **_table(from_cli, "finetune")}
    if named.get("pipeline"):  # a fine-tune: greendiff finetune's defaults, wherever the config is resolved
        from greendiff.train._finetune_config import FINETUNE_DEFAULTS

        defaults = {**FINETUNE_DEFAULTS, **(defaults or {})}
    if defaults:
        config = _merge(config, upgrade_settings(dotted_to_nested(defaults)))
    try:
        config = _merge(config, from_file)
    except UserInputError as exc:
        raise UserInputError(f"{display_path(file)}: {exc}" if file is not None else str(exc)) from None
    config = _merge(config, from_cli)
    try:
        validate(config)
    except UserInputError as exc:
        raise UserInputError(_where(str(exc), file, from_file, from_cli)) from None
    if config.optim.lr == 0:  # the preset's (or the fine-tune method's) learning rate, written into the saved config
        from greendiff.train._finetune_config import finetune_lr

        lr = finetune_lr(config.finetune.method) if config.finetune.enabled else preset_lr(config.model)
        config = dataclasses.replace(config, optim=dataclasses.replace(config.optim, lr=lr))
    given = {**from_file.get("optim", {}), **from_cli.get("optim", {})}
    if config.optim.objective == "flow" and "loss_weighting" not in given:  # SD3 trains flow with uniform weights
        config = dataclasses.replace(config, optim=dataclasses.replace(config.optim, loss_weighting="uniform"))
    return config


#: Keys of earlier greendiff versions and how their values read now (a saved config.toml outlives the version).
_RENAMED = {("optim", "prediction_type"): ("objective", {"epsilon": "epsilon", "v_prediction": "v"})}


def upgrade_settings(nested: dict[str, Any]) -> dict[str, Any]:
    """``nested`` settings with the keys of earlier versions renamed: ``optim.prediction_type`` (epsilon,
    v_prediction) is ``optim.objective`` (epsilon, v). Giving both is a one-line error; ``nested`` is not changed.

    Example:
        >>> upgrade_settings({"optim": {"prediction_type": "v_prediction", "lr": 1e-3}})
        {'optim': {'lr': 0.001, 'objective': 'v'}}
    """
    out = dict(nested)
    for (section, old), (new, values) in _RENAMED.items():
        table = out.get(section)
        if not isinstance(table, dict) or old not in table:
            continue
        table = dict(table)
        value = table.pop(old)
        if new in table:
            raise UserInputError(f"{section}.{old} is the old name of {section}.{new}; give only {section}.{new}")
        if value not in values:
            raise UserInputError(f"{section}.{old} (the old name of {section}.{new}) must be one of "
                                 f"{', '.join(values)}; got {shown(value)}")
        table[new] = values[value]
        out[section] = table
    return out


def _table(nested: dict[str, Any], section: str) -> dict[str, Any]:
    table = nested.get(section)
    return table if isinstance(table, dict) else {}


def preset_lr(model: ModelConfig) -> float:
    """The green recipe's peak learning rate for the model's preset, for its backbone (UNet or DiT)."""
    if model.backbone == "dit":
        from greendiff.train._dit import DIT_PRESETS

        return DIT_PRESETS[model.preset].lr
    from greendiff.train._model import resolve_architecture

    return resolve_architecture(model).lr


def _flat_keys(nested: dict[str, Any], prefix: str = "") -> set[str]:
    keys = set()
    for key, value in nested.items():
        keys |= _flat_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}"}
    return keys


def _where(message: str, file: Path | None, from_file: dict[str, Any], from_cli: dict[str, Any]) -> str:
    """Prefix a range error with the config file when a key it names was set there (and not on the
    command line), so the user knows where to look."""
    if file is None:
        return message
    sections = "|".join(f.name for f in fields(TrainConfig))
    named = set(re.findall(rf"\b(?:{sections})\.\w+", message))
    return f"{display_path(file)}: {message}" if named & (_flat_keys(from_file) - _flat_keys(from_cli)) else message


def check_bounds(obj: Any, prefix: str = "") -> None:
    """Every numeric field of a config (section) within its :func:`bounded` range (one-line errors)."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        if is_dataclass(value):
            check_bounds(value, f"{prefix}{f.name}.")
        elif "bounds" in f.metadata:
            for number in value if isinstance(value, tuple) else (value,):
                f.metadata["bounds"].check(number, f"{prefix}{f.name}")


def validate(config: TrainConfig) -> None:
    """Range checks that types cannot express (one-line errors): each key's :func:`bounded` range, then
    the rules between keys."""
    check_bounds(config)
    # run.name is checked where a new run directory is made from it (the train command, a derived run),
    # not here: a saved config.toml is read again by every resume, sample and eval of an existing run
    if config.optim.sample_steps > config.optim.num_train_timesteps:
        raise UserInputError(f"optim.sample_steps ({config.optim.sample_steps}) cannot exceed "
                             f"optim.num_train_timesteps ({config.optim.num_train_timesteps})")
    stop = config.stop
    if stop.eval_sample_steps > config.optim.num_train_timesteps:
        raise UserInputError(f"stop.eval_sample_steps must be between 0 (the recipe's sample_steps) and "
                             f"optim.num_train_timesteps ({config.optim.num_train_timesteps}), got {stop.eval_sample_steps}")
    if (stop.patience or stop.min_gain_per_kwh or stop.target) and not (stop.eval_every or stop.eval_every_kwh):
        raise UserInputError("early stopping on quality needs evaluations: set --eval-every N (steps) or --eval-every-kwh X")
    check_blank_paths(config)
    validate_sampling(config.optim)
    validate_conditioning(config)
    validate_latent(config)
    validate_distill(config)
    from greendiff.train._finetune_config import validate_finetune  # it reads this module's types

    validate_finetune(config)
    validate_carbon(config.carbon)
    check_tracking_uri(config.run.mlflow_uri)  # no credentials into config.toml, the ledger or MLflow's params

    unknown = [name for name in config.run.log_to if name not in LOGGERS]
    if unknown:
        raise UserInputError(f"run.log_to: unknown logger {shown(unknown[0])}; use {' or '.join(LOGGERS)}")
    from greendiff.train._model import PRESETS, check_architecture  # the model module needs this one's types

    if config.model.preset not in PRESETS:
        raise UserInputError(f"unknown model preset {config.model.preset!r}; use one of {', '.join(PRESETS)}")
    if config.model.backbone == "unet" and not config.model.vae:  # in latent space: at the latent side (check_train)
        check_architecture(config.model, config.data.resolution)


def validate_sampling(optim: RecipeConfig) -> None:
    """The timestep sampling and the sampler suit the objective: flow draws its own logit-normal times
    (``optim.flow_logit_*``) and samples with its Euler scheduler; the others are for epsilon and v."""
    if optim.objective != "flow":
        return
    if optim.timestep_sampling in ("logit-normal", "speed"):
        raise UserInputError(f"--timestep-sampling {optim.timestep_sampling} is for --objective epsilon or v; flow "
                             "draws logit-normal times already (set optim.flow_logit_mean / flow_logit_std)")
    if optim.sampler in ("dpm-solver", "unipc"):
        raise UserInputError(f"--sampler {optim.sampler} samples epsilon and v models; --objective flow samples with "
                             "its Euler scheduler (leave --sampler out)")


def check_blank_paths(config: TrainConfig) -> None:
    """An empty or all-space path would be read as ``.`` (the dataset scan walking the current folder,
    a run directory made in it): data.dataset and run.output_dir must name something; model.init_from
    and distill.teacher are empty for none, never only spaces."""
    must = {"data.dataset": config.data.dataset, "run.output_dir": config.run.output_dir}
    optional = {"model.init_from": config.model.init_from, "distill.teacher": config.distill.teacher,
                "model.vae": config.model.vae, "data.latent_cache_dir": config.data.latent_cache_dir,
                "finetune.pipeline": config.finetune.pipeline, "finetune.instance_data": config.finetune.instance_data,
                "finetune.clip_model": config.finetune.clip_model}
    for key, value in must.items():
        if not value.strip():
            raise UserInputError(f"{key} is {'empty' if not value else 'only spaces'}: give a dataset or folder name")
    for key, value in optional.items():
        if value and not value.strip():
            raise UserInputError(f"{key} is only spaces: give a folder, or leave it empty for none")


def parse_utc(text: str, key: str):
    """An ISO 8601 time in UTC (without a zone it is UTC), inside the years greendiff handles (1900 to
    2199: :func:`greendiff.carbon.check_supported`); anything else is a one-line error naming ``key``.
    Every time a user gives (``--deadline``, ``--start``, ``--simulate-clock``, ``carbon.*``) is read here."""
    from datetime import datetime, timezone

    from greendiff.carbon import check_supported

    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UserInputError(f"{key} {shown(text)} is not a date and time; use ISO 8601, e.g. 2022-06-03T00:00 (UTC) "
                             "or 2022-06-03T00:00+02:00") from None
    # check_supported also turns the OverflowError of a zone offset that moves year 1 or 9999 out of range
    return check_supported(moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment, key)


def validate_carbon(carbon: CarbonAwareConfig) -> None:
    check_bounds(carbon, "carbon.")
    if carbon.deadline:
        parse_utc(carbon.deadline, "carbon.deadline")
    if carbon.simulate_start:
        parse_utc(carbon.simulate_start, "carbon.simulate_start")
    if bool(carbon.simulate_start) != (carbon.simulated_step_s > 0):
        raise UserInputError("a simulated clock needs both carbon.simulate_start and carbon.simulated_step_s > 0")
    if carbon.enabled and not (carbon.max_intensity or carbon.deadline):
        raise UserInputError("--carbon-aware needs --max-intensity G (gCO2e/kWh) or --deadline T (or both)")


def validate_conditioning(config: TrainConfig) -> None:
    """The conditioning keys agree with each other (the dataset's labels are checked when it is loaded)."""
    if config.model.conditioning == "none" and config.model.num_classes:
        raise UserInputError(f"model.num_classes = {config.model.num_classes} needs model.conditioning = class "
                             "(--conditioning class)")
    if config.model.conditioning == "class" and config.distill.kind != "none":
        raise UserInputError(f"distill.kind = {config.distill.kind} trains unconditional students only, and "
                             "model.conditioning is class: set model.conditioning = none (--conditioning none) "
                             "or distill.kind = none")


def validate_latent(config: TrainConfig) -> None:
    """The backbone, latent space and objective agree with each other and with the rest of the config (the VAE
    folder itself and the patch size against its latent side are checked when it is read: ``check_train``)."""
    model, optim = config.model, config.optim
    if model.backbone == "dit":
        if not model.vae:
            raise UserInputError("model.backbone = dit trains in a VAE's latent space: give --vae DIR (a local "
                                 "AutoencoderKL folder; `greendiff vae train` makes one)")
        if model.conditioning != "class":
            raise UserInputError("model.backbone = dit is class-conditional: add --conditioning class")
        if model.init_from:
            raise UserInputError("model.init_from starts UNet2DModel runs only; leave it empty with "
                                 "model.backbone = dit")
        unet_keys = [key for key, value in (("block_out_channels", model.block_out_channels),
                                            ("layers_per_block", model.layers_per_block >= 0),
                                            ("attention", model.attention != "preset")) if value]
        if unet_keys:
            raise UserInputError(f"model.{unet_keys[0]} shapes the UNet backbone; with model.backbone = dit size the "
                                 "DiT by model.preset (and model.patch_size)")
    lever = "model.vae" if model.vae else "model.backbone = dit" if model.backbone == "dit" else \
        "optim.objective = flow" if optim.objective == "flow" else ""
    if lever and config.distill.kind != "none":
        raise UserInputError(f"distill.kind = {config.distill.kind} distils pixel-space UNets trained with epsilon or "
                             f"v, and {lever} is set: set distill.kind = none")


def validate_distill(config: TrainConfig) -> None:
    distill = config.distill
    if distill.kind == "none":
        return
    if not distill.teacher:
        raise UserInputError(f"distill.kind = {distill.kind!r} needs distill.teacher (a UNet2DModel folder)")
    if distill.kind == "output" and not (distill.data_weight > 0 or distill.output_weight > 0 or distill.feature_weight > 0):
        raise UserInputError("distill.data_weight, distill.output_weight and distill.feature_weight are all 0: the "
                             "student would learn nothing; give one a positive weight (--data-weight, --output-weight, "
                             "--feature-weight)")
    if distill.kind == "steps":
        n = distill.teacher_steps
        if n < 2 or n % 2 or config.optim.num_train_timesteps % n:
            raise UserInputError(f"distill.teacher_steps must be even and divide optim.num_train_timesteps "
                                 f"({config.optim.num_train_timesteps}) so the halved step grid is nested; got {n}")
        if config.optim.sampler != "ddim" or config.optim.sample_steps != n // 2:
            raise UserInputError(f"a step-distillation round samples with DDIM at half the teacher's steps: set "
                                 f"optim.sampler = ddim and optim.sample_steps = {n // 2}")


def to_dict(config: TrainConfig) -> dict[str, Any]:
    def convert(value: Any) -> Any:
        if isinstance(value, tuple):
            return list(value)
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        return value

    return convert(dataclasses.asdict(config))


def to_toml(config: TrainConfig) -> str:
    import tomli_w

    return tomli_w.dumps(to_dict(config))
