"""Typed, nested training configuration; resolved once (defaults < recipe < TOML file < CLI).

Every efficiency lever is a field of :class:`RecipeConfig`, so an ablation is one flag away.
The resolved config is written to the run directory as ``config.toml``.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from greendiff.errors import UserInputError

MixedPrecision = Literal["auto", "no", "bf16", "fp16"]


@dataclass(frozen=True)
class DataConfig:
    """Args: dataset (``mnist``, ``digits``, folder or .npy/.npz), resolution (pixels, square),
    skip_bad_images (a folder's unusable files are skipped and counted instead of stopping the run)."""

    dataset: str = "mnist"
    resolution: int = 16
    skip_bad_images: bool = False


@dataclass(frozen=True)
class ModelConfig:
    """A preset, optionally overridden field by field (``()`` / ``-1`` mean: take the preset's).

    ``init_from``: a diffusers ``UNet2DModel`` folder (``save_pretrained``) whose weights start the run,
    e.g. a pruned model to fine-tune or a teacher a step-distilled student starts from; its
    architecture must be the one this config builds.
    """

    preset: str = "tiny"
    block_out_channels: tuple[int, ...] = ()
    layers_per_block: int = -1
    attention: Literal["preset", "on", "off"] = "preset"
    init_from: str = ""


@dataclass(frozen=True)
class RecipeConfig:
    """The levers. Defaults here are the green recipe; ``recipe = "baseline"`` resets them to diffusers'.

    Sources: Min-SNR-γ weighting, Hang et al., ICCV 2023 (γ = 5); cosine noise schedule, Nichol &
    Dhariwal, ICML 2021; stratified (low-discrepancy) timesteps, Kingma et al., NeurIPS 2021 (VDM):
    one uniform draw per batch, the batch's timesteps spread evenly from it, so each batch covers
    every noise level; EMA with warm-up, diffusers ``EMAModel`` (Karras et al. 2023 study EMA
    length); few-step DDIM sampling, Song et al., ICLR 2021; bf16 autocast, PyTorch AMP.
    """

    mixed_precision: MixedPrecision = "auto"
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon"
    loss_weighting: Literal["uniform", "min-snr"] = "min-snr"
    timestep_sampling: Literal["uniform", "stratified"] = "uniform"
    snr_gamma: float = 5.0
    beta_schedule: Literal["linear", "squaredcos_cap_v2"] = "squaredcos_cap_v2"
    num_train_timesteps: int = 1000
    batch_size: int = 64
    lr: float = 0.0  # 0: the model preset's (narrower networks take larger steps); resolved once
    adam_beta1: float = 0.95
    adam_beta2: float = 0.999
    weight_decay: float = 1e-6
    lr_schedule: Literal["cosine", "constant", "linear"] = "cosine"
    warmup_steps: int = 25
    grad_clip: float = 1.0
    ema: bool = True
    ema_max_decay: float = 0.9999
    ema_warmup: bool = True
    ema_power: float = 2 / 3
    sampler: Literal["ddpm", "ddim"] = "ddim"
    sample_steps: int = 50
    channels_last: Literal["auto", "on", "off"] = "auto"
    scale_lr: bool = False  # data-parallel: multiply lr by the number of processes (batch_size is per process)


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
    max_steps: int = 2000
    seed: int = 0
    log_every: int = 10
    sample_every: int = 500
    num_samples: int = 64
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    max_bad_steps: int = 20
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
    """

    eval_every: int = 0
    eval_every_kwh: float = 0.0
    eval_samples: int = 500
    eval_sample_steps: int = 0
    spread_seeds: int = 3
    eval_features: str = "mnist"
    metric: Literal["fid", "kid"] = "fid"
    patience: int = 0
    min_delta: float = 0.0
    min_gain_per_kwh: float = 0.0
    gain_window: int = 3
    target: float = 0.0
    budget_kwh: float = 0.0
    budget_kgco2e: float = 0.0
    budget_warmup_steps: int = 20
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
    data_weight: float = 1.0
    output_weight: float = 1.0
    feature_weight: float = 0.1
    teacher_steps: int = 0


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
    max_intensity: float = 0.0
    deadline: str = ""
    margin: float = 0.1
    min_pause_min: float = 15.0
    pause_cost_kwh: float = 0.0
    recheck_min: float = 5.0
    simulate_start: str = ""
    simulated_step_s: float = 0.0


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


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = get_origin(hint)
    if origin is Literal:
        if value not in get_args(hint):
            raise UserInputError(f"{where} must be one of {', '.join(map(str, get_args(hint)))}; got {value!r}")
        return value
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace(" ", "").split(",") if v]
        item = get_args(hint)[0]
        if not isinstance(value, (list, tuple)):
            raise UserInputError(f"{where} must be a list of {'names' if item is str else 'integers'}, got {value!r}")
        return tuple(_coerce(v, item, where) for v in value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise UserInputError(f"{where} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)) or (isinstance(value, str) and not value.lstrip("-").isdigit()):
            raise UserInputError(f"{where} must be an integer, got {value!r}")
        return int(value)
    if hint is float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise UserInputError(f"{where} must be a number, got {value!r}") from None
        if isinstance(value, bool) or not math.isfinite(number):
            raise UserInputError(f"{where} must be a finite number, got {value!r}")
        return number
    if hint is str:
        if not isinstance(value, str):
            raise UserInputError(f"{where} must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {hint}")


def _merge(obj: Any, updates: dict[str, Any], prefix: str = "") -> Any:
    """A copy of dataclass ``obj`` with nested ``updates`` applied, types checked, unknown keys refused."""
    hints = get_type_hints(type(obj))
    names = {f.name for f in fields(obj)}
    changes = {}
    for key, value in updates.items():
        where = f"{prefix}{key}"
        if key not in names:
            raise UserInputError(f"unknown config key {where!r}; valid keys here: {', '.join(sorted(names))}")
        current = getattr(obj, key)
        if is_dataclass(current):
            if not isinstance(value, dict):
                raise UserInputError(f"{where} must be a table of settings, got {value!r}")
            changes[key] = _merge(current, value, f"{where}.")
        else:
            changes[key] = _coerce(value, hints[key], where)
    return dataclasses.replace(obj, **changes)


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise UserInputError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserInputError(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise UserInputError(f"{path}: not UTF-8 text (byte {exc.start} is {exc.object[exc.start:exc.start + 1]!r}); "
                             "TOML files must be UTF-8") from None
    except OSError as exc:
        raise UserInputError(f"cannot read {path}: {exc.strerror}") from None


def dotted_to_nested(overrides: dict[str, Any]) -> dict[str, Any]:
    """``{"optim.lr": 1e-3}`` -> ``{"optim": {"lr": 1e-3}}``."""
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        node = nested
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return nested


def resolve_config(file: Path | None = None, overrides: dict[str, Any] | None = None,
                   base: dict[str, Any] | None = None) -> TrainConfig:
    """The one place precedence is decided: defaults < recipe < TOML file (or ``base``) < CLI overrides.

    The recipe (from the CLI, else the file, else ``green``) replaces the lever defaults before the
    file's and the CLI's own values are applied. ``base``: nested settings used in place of a file
    (a run derived from another run's saved config).
    """
    from_file = base if base is not None else read_toml(file) if file is not None else {}
    from_cli = dotted_to_nested({k: v for k, v in (overrides or {}).items() if v is not None})
    recipe = from_cli.get("recipe", from_file.get("recipe", "green"))
    if recipe not in RECIPES:
        raise UserInputError(f"unknown recipe {recipe!r}; use one of {', '.join(RECIPES)}")
    config = TrainConfig(recipe=recipe, optim=RECIPES[recipe])
    try:
        config = _merge(config, from_file)
    except UserInputError as exc:
        raise UserInputError(f"{file}: {exc}" if file is not None else str(exc)) from None
    config = _merge(config, from_cli)
    try:
        validate(config)
    except UserInputError as exc:
        raise UserInputError(_where(str(exc), file, from_file, from_cli)) from None
    if config.optim.lr == 0:  # the preset's learning rate, written into the saved config
        from greendiff.train._model import resolve_architecture

        config = dataclasses.replace(config, optim=dataclasses.replace(config.optim, lr=resolve_architecture(config.model).lr))
    return config


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
    return f"{file}: {message}" if named & (_flat_keys(from_file) - _flat_keys(from_cli)) else message


def validate(config: TrainConfig) -> None:
    """Range checks that types cannot express (one-line errors)."""
    positive_int = {"run.max_steps": config.run.max_steps, "optim.batch_size": config.optim.batch_size,
                    "optim.num_train_timesteps": config.optim.num_train_timesteps,
                    "optim.sample_steps": config.optim.sample_steps, "run.num_samples": config.run.num_samples,
                    "run.keep_checkpoints": config.run.keep_checkpoints, "run.log_every": config.run.log_every,
                    "run.sample_every": config.run.sample_every, "run.checkpoint_every": config.run.checkpoint_every,
                    "data.resolution": config.data.resolution, "run.max_bad_steps": config.run.max_bad_steps}
    for key, value in positive_int.items():
        if value <= 0:
            raise UserInputError(f"{key} must be a positive integer, got {value}")
    for key, value in {"optim.snr_gamma": config.optim.snr_gamma, "optim.ema_power": config.optim.ema_power}.items():
        if value <= 0:
            raise UserInputError(f"{key} must be positive, got {value}")
    if config.optim.lr < 0:
        raise UserInputError(f"optim.lr must be positive (0: the model preset's), got {config.optim.lr}")
    for key in ("warmup_steps", "grad_clip", "weight_decay"):
        if getattr(config.optim, key) < 0:
            raise UserInputError(f"optim.{key} must be >= 0, got {getattr(config.optim, key)}")
    if not 0 < config.optim.ema_max_decay < 1:
        raise UserInputError(f"optim.ema_max_decay must be in (0, 1), got {config.optim.ema_max_decay}")
    if config.optim.sample_steps > config.optim.num_train_timesteps:
        raise UserInputError(f"optim.sample_steps ({config.optim.sample_steps}) cannot exceed "
                             f"optim.num_train_timesteps ({config.optim.num_train_timesteps})")
    stop = config.stop
    if stop.eval_sample_steps < 0 or stop.eval_sample_steps > config.optim.num_train_timesteps:
        raise UserInputError(f"stop.eval_sample_steps must be between 0 (the recipe's sample_steps) and "
                             f"optim.num_train_timesteps ({config.optim.num_train_timesteps}), got {stop.eval_sample_steps}")
    for key, least in (("eval_every", 0), ("patience", 0), ("budget_warmup_steps", 0), ("eval_samples", 4), ("gain_window", 1)):
        if getattr(stop, key) < least:
            raise UserInputError(f"stop.{key} must be >= {least}, got {getattr(stop, key)}")
    if stop.spread_seeds < 1:
        raise UserInputError(f"stop.spread_seeds must be >= 1, got {stop.spread_seeds}")
    for key in ("min_delta", "min_gain_per_kwh", "target", "budget_kwh", "budget_kgco2e", "eval_every_kwh"):
        if getattr(stop, key) < 0:
            raise UserInputError(f"stop.{key} must be >= 0 (0 switches it off), got {getattr(stop, key)}")
    if (stop.patience or stop.min_gain_per_kwh or stop.target) and not (stop.eval_every or stop.eval_every_kwh):
        raise UserInputError("early stopping on quality needs evaluations: set --eval-every N (steps) or --eval-every-kwh X")
    validate_distill(config)
    validate_carbon(config.carbon)
    from greendiff.integrations._loggers import LOGGERS

    unknown = [name for name in config.run.log_to if name not in LOGGERS]
    if unknown:
        raise UserInputError(f"run.log_to: unknown logger {unknown[0]!r}; use {' or '.join(LOGGERS)}")
    if any(c <= 0 for c in config.model.block_out_channels):
        raise UserInputError("model.block_out_channels must be positive integers")
    from greendiff.train._model import check_architecture  # the model module needs this one's types

    check_architecture(config.model, config.data.resolution)


def parse_utc(text: str, key: str):
    """An ISO 8601 time; without a zone it is UTC."""
    from datetime import datetime, timezone

    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UserInputError(f"{key} {text!r} is not a date and time; use ISO 8601, e.g. 2022-06-03T00:00 (UTC) "
                             "or 2022-06-03T00:00+02:00") from None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def validate_carbon(carbon: CarbonAwareConfig) -> None:
    for key in ("max_intensity", "margin", "min_pause_min", "pause_cost_kwh", "recheck_min", "simulated_step_s"):
        if getattr(carbon, key) < 0:
            raise UserInputError(f"carbon.{key} must be >= 0, got {getattr(carbon, key)}")
    if carbon.deadline:
        parse_utc(carbon.deadline, "carbon.deadline")
    if carbon.simulate_start:
        parse_utc(carbon.simulate_start, "carbon.simulate_start")
    if bool(carbon.simulate_start) != (carbon.simulated_step_s > 0):
        raise UserInputError("a simulated clock needs both carbon.simulate_start and carbon.simulated_step_s > 0")
    if carbon.enabled and not (carbon.max_intensity or carbon.deadline):
        raise UserInputError("--carbon-aware needs --max-intensity G (gCO2e/kWh) or --deadline T (or both)")


def validate_distill(config: TrainConfig) -> None:
    distill = config.distill
    if distill.kind == "none":
        return
    if not distill.teacher:
        raise UserInputError(f"distill.kind = {distill.kind!r} needs distill.teacher (a UNet2DModel folder)")
    if min(distill.data_weight, distill.output_weight, distill.feature_weight) < 0:
        raise UserInputError("distill.data_weight, distill.output_weight and distill.feature_weight must be >= 0")
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
