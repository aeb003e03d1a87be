"""The fine-tuning job: a pretrained text-to-image pipeline fine-tuned on captioned images (or DreamBooth's
subject images), measured as a training run is. :func:`run_finetune` is what ``greendiff finetune`` calls.

The job is a :class:`~greendiff.workflows.TrainJob` whose config has ``finetune.pipeline``: it resolves with
``greendiff finetune``'s defaults, loads the pipeline once, checks the data (captions for every image, each
prompt within the tokenizers' length), holds images out for the validation loss, then trains through the same
segment, ledger run and ``emissions.json`` as ``greendiff train``, with the fine-tune's model family. After a
finished run it writes the model card beside the LoRA weights (or the full pipeline).

Example:
    >>> from greendiff.workflows import MeasurementOptions, TrainJob, run_finetune
    >>> job = TrainJob(overrides={"finetune.pipeline": "pipelines/sd-tiny", "data.dataset": "captioned/",
    ...                           "run.max_steps": 20}, measurement=MeasurementOptions(no_gpu=True))
    >>> run_finetune(job).status  # doctest: +SKIP
    'completed'
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from greendiff.errors import UserInputError
from greendiff.names import display_path
from greendiff.workflows._progress import NullProgress, Progress, check_progress
from greendiff.workflows._train import PreparedTrain, TrainJob, TrainOutcome, check_unfinished, run_prepared

#: Held-out images are at most this share of the data (the rest trains).
MAX_HELD_OUT_SHARE = 0.2
#: Fewer images than this hold none out (every subject image of a small DreamBooth set trains).
MIN_FOR_HELD_OUT = 10
#: Validation prompts taken from the captions when none are given.
DEFAULT_PROMPTS = 4


def resolve_finetune_config(job: TrainJob, base=None):
    """``(config, run name)``: a resumed run's saved config (only ``run.max_steps`` may change), else the file
    and overrides over ``greendiff finetune``'s defaults; with ``base`` (the loaded pipeline) the resolution,
    timesteps and objective default to the pipeline's."""
    from greendiff.train import resolve_config
    from greendiff.workflows._rundir import new_run_name
    from greendiff.workflows._train import resolve_train_config

    if job.resume is not None:
        return resolve_train_config(job)
    from greendiff.workflows._inputs import with_absolute_dataset

    config = with_absolute_dataset(resolve_config(job.config_file, dict(job.overrides), defaults=pipeline_defaults(base)))
    if not config.finetune.enabled:
        raise UserInputError("greendiff finetune needs --pipeline DIR (a local diffusers text-to-image pipeline)")
    if base is not None and config.optim.objective != base.objective:
        raise UserInputError(f"the pipeline was trained with the {base.objective} objective; a fine-tune keeps it "
                             f"(got optim.objective = {config.optim.objective})")
    name = new_run_name(config, job.config_file) if config.run.name else "finetune-" + config.finetune.method
    return config, name


def pipeline_defaults(base) -> dict[str, Any] | None:
    """The defaults a loaded pipeline decides: its resolution, timesteps and objective (and flow's weighting)."""
    if base is None:
        return None
    return {"data.resolution": base.default_resolution(), "optim.objective": base.objective,
            "optim.num_train_timesteps": int(base.pipe.scheduler.config.num_train_timesteps),
            "optim.loss_weighting": "uniform" if base.objective == "flow" else "min-snr"}


def load_base(config):
    """The pipeline ``config`` fine-tunes, loaded (:class:`~greendiff.train._base_pipeline.BasePipeline`)."""
    from greendiff.train._base_pipeline import BasePipeline

    return BasePipeline.load(Path(config.finetune.pipeline), "finetune.pipeline")


@dataclass(frozen=True)
class FinetuneInputs:
    """What a fine-tune trains from, checked: its config (with what the data decides written in), the loaded
    pipeline, the training images (captioned) and the held-out ones (None: none)."""

    config: Any
    base: Any
    train: Any
    held_out: Any = None
    clip: Any = None  # a loaded greendiff.evaluate.ClipScorer (finetune.clip_model), or None
    notes: tuple[str, ...] = ()


def finetune_inputs(config, base, new: bool = True) -> FinetuneInputs:
    """Load and check ``config``'s images against ``base``, hold images out (a resumed run, ``new`` False, splits
    exactly as at its start: its saved count and seed), resolve the validation prompts and held-out count; the
    LoRA targets checked against the networks and the CLIP model loaded, before anything is created."""
    train, held_out = split_held_out(_load_images(config, base), config.finetune.validation_images, config.run.seed)
    notes: tuple[str, ...] = ()
    if new:
        config, notes = _resolved(config, train, held_out)
    _check_inputs(config, base, train, held_out)
    return FinetuneInputs(config, base, train, held_out, _checked_networks(config, base), notes)


def _checked_networks(config, base):
    """The LoRA targets checked against the denoiser (and the text encoder); the CLIP scorer, loaded."""
    from greendiff.train._lora import DENOISER_TARGETS, TEXT_TARGETS, check_targets

    ft = config.finetune
    if ft.method == "lora":
        check_targets(base.denoiser, ft.lora_targets or DENOISER_TARGETS)
        if ft.text_encoder_lora:
            check_targets(base.text_encoder, TEXT_TARGETS)
    if not ft.clip_model:
        return None
    from greendiff.evaluate import ClipScorer

    return ClipScorer.load(Path(ft.clip_model), "--clip-model")


@dataclass(frozen=True)
class PreparedFinetune:
    """A fine-tuning job resolved and checked; nothing created yet.

    Attributes:
        train: The job as a :class:`PreparedTrain` (its ``data``: the training images, captioned).
        inputs: The :class:`FinetuneInputs` (config, pipeline, images, held-out images).
    """

    train: PreparedTrain
    inputs: FinetuneInputs

    @property
    def config(self):
        return self.train.config

    @property
    def held_out(self):
        return self.inputs.held_out

    @property
    def base(self):
        return self.inputs.base


def _load_images(config, base):
    """The training images with a caption each (DreamBooth: the instance prompt), in memory, with the VAE's
    channels (greyscale repeated to RGB for an RGB VAE)."""
    from greendiff.data import ImageSet, load_dataset

    ft, d = config.finetune, config.data
    if ft.instance_data:
        try:
            data = load_dataset(ft.instance_data, d.resolution, d.skip_bad_images, cache_max_gb=d.cache_max_gb)
        except UserInputError as exc:
            raise UserInputError(f"--instance-data: {exc}") from None
        data = dataclasses.replace(data, captions=(ft.instance_prompt,) * data.num_images) \
            if isinstance(data, ImageSet) else data
    else:
        data = load_dataset(d.dataset, d.resolution, d.skip_bad_images, caption_column=d.caption_column or "text",
                            cache_max_gb=d.cache_max_gb, workers=d.loader_workers)
    if not isinstance(data, ImageSet):
        raise UserInputError(f"{data.source}: a fine-tune holds its images in memory and they need more than "
                             f"--cache-max-gb {d.cache_max_gb:g}; raise it (the latents are cached once encoded)")
    if data.captions is None:
        raise UserInputError(f"{data.source}: a fine-tune needs a caption for every image (metadata.jsonl with a "
                             f"{d.caption_column or 'text'!r} column; --caption-column NAME), or DreamBooth's "
                             "--instance-data/--instance-prompt")
    wanted = base.vae_shape().image_channels
    if data.channels != wanted:
        if not (data.channels == 1 and wanted == 3):
            raise UserInputError(f"{data.source}: {data.channels}-channel images, but the pipeline's VAE encodes "
                                 f"{wanted}-channel ones")
        data = dataclasses.replace(data, images=data.images.repeat(1, 3, 1, 1))
    return data


def split_held_out(data, count: int, seed: int):
    """``(training images, held-out images)``: ``count`` images (at most a fifth of them; none of fewer than
    :data:`MIN_FOR_HELD_OUT`, e.g. DreamBooth's few subject images) chosen by a seeded permutation, the rest in
    their order; ``(data, None)`` for none."""
    import torch

    count = min(count, int(data.num_images * MAX_HELD_OUT_SHARE)) if data.num_images >= MIN_FOR_HELD_OUT else 0
    if count <= 0:
        return data, None
    order = torch.randperm(data.num_images, generator=torch.Generator().manual_seed(seed + 31_337))
    held, kept = order[:count].sort().values, order[count:].sort().values

    def part(indices):
        return dataclasses.replace(
            data, images=data.images[indices], labels=data.labels[indices] if data.labels is not None else None,
            captions=tuple(data.captions[int(i)] for i in indices) if data.captions is not None else None)

    return part(kept), part(held)


def _resolved(config, train, held_out):
    """The config with what the data decides written in (the held-out count, the validation prompts) and the
    notes to tell: with no image held out, the rules that watch the validation loss are switched off."""
    ft, stop = config.finetune, config.stop
    prompts = ft.validation_prompts or tuple(dict.fromkeys((held_out or train).captions))[:DEFAULT_PROMPTS]
    count = held_out.num_images if held_out is not None else 0
    config = dataclasses.replace(config, finetune=dataclasses.replace(ft, validation_prompts=tuple(prompts),
                                                                      validation_images=count))
    if count or not (stop.patience or stop.target or stop.min_gain_per_kwh):
        return config, ()
    off = dataclasses.replace(stop, patience=0, target=0.0, min_gain_per_kwh=0.0)
    return dataclasses.replace(config, stop=off), (
        f"{train.num_images} images: none held out (fewer than {MIN_FOR_HELD_OUT}), so no validation loss and no "
        "early stopping; evaluations write validation images (and a CLIP score with --clip-model)",)


def _check_inputs(config, base, train, held_out=None) -> None:
    """Prompts within the tokenizers, a batch the data can fill, a CLIP folder that can be read."""
    from greendiff.train import check_data

    ft = config.finetune
    captions = train.captions + (held_out.captions if held_out is not None else ())
    base.check_prompts(tuple(dict.fromkeys(captions)), "caption")
    for what, prompts in (("--validation-prompt", ft.validation_prompts), ("--class-prompt", (ft.class_prompt,))):
        base.check_prompts([p for p in prompts if p], what)
    check_data(config, train)
    if ft.num_class_images and ft.num_class_images < config.optim.batch_size:
        raise UserInputError(f"--num-class-images {ft.num_class_images} is fewer than one batch of "
                             f"{config.optim.batch_size}; give at least {config.optim.batch_size}")
    if ft.clip_model:
        from greendiff.evaluate import check_clip_folder

        check_clip_folder(Path(ft.clip_model), "--clip-model")


def prepare_finetune(job: TrainJob) -> PreparedFinetune:
    """Resolve and check everything ``job`` needs (config, pipeline, data, held-out images, resume); creates
    nothing. One-line errors for a pipeline folder missing a component, images without captions, a prompt longer
    than the tokenizer takes, an empty instance folder, a LoRA rank below 1."""
    from greendiff.parallel import Dist
    from greendiff.train import check_train
    from greendiff.workflows._measurement import resolve_settings

    if job.processes > 1:
        raise UserInputError("greendiff finetune runs as one process (--nproc 1)")
    config, name = resolve_finetune_config(job)  # the keys checked before the pipeline is loaded
    base = load_base(config)
    if job.resume is None:
        config, name = resolve_finetune_config(job, base)
    inputs = finetune_inputs(config, base, new=job.resume is None)
    settings = resolve_settings(job.measurement, run=job.resume)
    check_train(inputs.config, inputs.train.channels, job.resume,
                str(job.resume / "config.toml") if job.resume is not None else "config")
    if job.resume is not None:
        check_unfinished(job.resume, inputs.config.run.max_steps)
    notes = ((settings.note, None),) if settings.note else ()
    notes += tuple((note, "warning") for note in inputs.notes)
    prepared = PreparedTrain(job, inputs.config, name, settings, inputs.train, Dist.from_env(), notes)
    return PreparedFinetune(prepared, inputs)


class FinetuneSetup:
    """What a fine-tune adds to a training run once it is measured: DreamBooth's class images (generated by the
    base pipeline in a metered ``sample`` window, cached), the model family; after a finished run, the model
    card."""

    def __init__(self, inputs: FinetuneInputs) -> None:
        self.inputs = inputs

    def start(self, tracker, progress: Progress):
        """``(data, family)`` of the run."""
        from greendiff.data import ImageSet, PriorPairs
        from greendiff.train import LatentSpace
        from greendiff.train._finetune_family import TextToImageFamily
        from greendiff.train._pipeline_layout import component_sha256
        from greendiff.train._space import cache_root

        config, base = self.inputs.config, self.inputs.base
        ft, data = config.finetune, self.inputs.train
        if ft.num_class_images:
            import torch

            extra = class_images(base, config, tracker, progress)
            data = PriorPairs(ImageSet(torch.cat([data.images, extra]), data.source,
                                       captions=data.captions + (ft.class_prompt,) * extra.shape[0]),
                              instances=data.num_images)
        root = cache_root(config)
        space = LatentSpace(base.vae, base.vae_shape(), component_sha256(base.layout.folder, [base.layout.vae]),
                            config.data.resolution, root if config.data.latent_cache else None, config.data.cache_max_gb)
        family = TextToImageFamily(base, config, space, self.inputs.held_out,
                                   root.parent / "text" if ft.text_cache else None, self.inputs.clip)
        return data, family

    def finish(self, run_dir: Path, summary, result, tracker) -> None:
        """The model card beside what the run wrote (``lora/``, ``pipeline/``); ``result``: the
        :class:`~greendiff.train.TrainResult` (its steps, and the energy of earlier segments)."""
        from greendiff.train._model_card import CardFacts, write_model_card
        from greendiff.units import joules_to_kwh

        config = self.inputs.config
        ft, optim = config.finetune, config.optim
        settings = {"method": ft.method, "learning rate": optim.lr, "steps": result.step,
                    "batch size": optim.batch_size, "resolution (px)": config.data.resolution,
                    "mixed precision": optim.mixed_precision, "objective": optim.objective}
        if ft.method == "lora":
            settings |= {"rank": ft.lora_rank, "alpha": ft.alpha, "dropout": ft.lora_dropout,
                         "targets": list(ft.lora_targets) or "attention projections (to_q, to_k, to_v, to_out.0)"}
        base_model = self.inputs.base.layout.hub_id or Path(ft.pipeline).name
        facts = CardFacts(base_model=base_model, method=ft.method, settings=settings,
                          emissions_g=run_emissions_kg(run_dir, summary, tracker) * 1000,
                          energy_kwh=joules_to_kwh(result.prior_energy_j) + summary.energy_kwh,
                          location=tracker.location.describe(), hardware=", ".join(d.name for d in summary.devices),
                          meter=", ".join(summary.methods), prompts=tuple(ft.validation_prompts),
                          instance_prompt=ft.instance_prompt)
        for folder in (run_dir / "lora", run_dir / "pipeline"):
            if folder.is_dir():
                write_model_card(folder, facts, where=folder.name)


def run_emissions_kg(run_dir: Path, summary, tracker) -> float:
    """kgCO2e of the whole run: every ledger run ``emissions.json`` lists (earlier segments of a resumed run)."""
    from greendiff.train import read_emissions_json

    total = summary.emissions_kg
    for run_id in read_emissions_json(run_dir / "emissions.json").ledger_run_ids:
        if run_id != summary.run_id:
            total += tracker.ledger.get_run(run_id).summary.get("emissions_kg", 0.0)
    return total


def class_images(base, config, tracker, progress: Progress):
    """``finetune.num_class_images`` images of ``finetune.class_prompt`` by the base pipeline (uint8 (N, C, H, W)),
    generated in a metered ``sample`` window and cached under the cache root (keyed by the pipeline's weights,
    the prompt, the count, the resolution, the seed and the sampler settings), so a resume or a later run reuses
    them. Generated before any weight changes: prior preservation keeps the *base* model's class prior."""
    import torch

    from greendiff.files import atomic_write_bytes
    from greendiff.train._space import cache_root

    ft, optim = config.finetune, config.optim
    from greendiff.train._pipeline_layout import component_sha256

    identity = {"pipeline": base.weights_sha256(), "prompt": ft.class_prompt, "count": ft.num_class_images,
                "resolution": config.data.resolution, "seed": config.run.seed, "steps": optim.sample_steps,
                "guidance": "pipeline default", "scheduler": component_sha256(base.layout.folder, ["scheduler"])}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    path = cache_root(config).parent / "class-images" / f"{key}.safetensors"
    cached = _read_class_images(path, ft.num_class_images)
    if cached is not None:
        progress.note(f"{ft.num_class_images} class images of {ft.class_prompt!r} read from the cache")
        return cached
    progress.note(f"generating {ft.num_class_images} class images of {ft.class_prompt!r} with the base pipeline "
                  "(once; cached)")
    parts, generator = [], torch.Generator().manual_seed(config.run.seed + 77_777)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tracker.window("sample"):
        for start in range(0, ft.num_class_images, 8):
            n = min(8, ft.num_class_images - start)
            images = base.generate([ft.class_prompt] * n, optim.sample_steps, None, config.data.resolution,
                                   generator, device)  # the pipeline's own guidance; (n, C, H, W) in [-1, 1]
            parts.append(((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8))
    images = torch.cat(parts)
    try:
        from safetensors.torch import save

        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, save({"images": images.contiguous()}))
    except OSError as exc:
        progress.note(f"class images not cached ({exc})", "warning")
    return images


def _read_class_images(path: Path, count: int):
    """The cached class images at ``path`` (safetensors, never a pickle), or None (absent or unusable)."""
    import torch
    from safetensors.torch import load_file

    try:
        images = load_file(str(path))["images"]
    except (OSError, KeyError, ValueError, RuntimeError):
        return None
    return images if images.dtype == torch.uint8 and images.ndim == 4 and images.shape[0] == count else None


def run_finetune(job: TrainJob | PreparedFinetune, progress: Progress | None = None) -> TrainOutcome:
    """Fine-tune ``job`` in this process: claim its run directory, train under one ledger run, write
    ``emissions.json``, the LoRA weights (or the pipeline) and the model card. Bad input:
    :class:`UserInputError` before anything is created."""
    if not isinstance(job, (TrainJob, PreparedFinetune)):
        raise TypeError(f"run_finetune takes a TrainJob (or a PreparedFinetune), got {type(job).__name__}")
    progress = NullProgress() if progress is None else check_progress(progress)
    prepared = job if isinstance(job, PreparedFinetune) else prepare_finetune(job)
    if prepared.held_out is None and prepared.train.job.resume is None:
        progress.note("no images held out: the validation loss is off (too few images, or "
                      "finetune.validation_images = 0)", "warning")
    return run_prepared(prepared.train, progress, FinetuneSetup(prepared.inputs))
