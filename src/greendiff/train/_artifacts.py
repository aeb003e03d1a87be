"""A finished run's artifacts: its exported pipeline (a ``DDPMPipeline`` or a class-conditional one,
written atomically), and read back: its config, its EMA model (from ``pipeline/``), its sampler, and the records of its
run directory (``emissions.json``, ``metrics.jsonl``).

Run directories are shared and outlive the greendiff that wrote them, so each reader here checks the
shape of what it reads and names the file when it cannot use it. Nothing here unpickles: the model
is read from safetensors only.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch

from greendiff.errors import UserInputError
from greendiff.names import first_line
from greendiff.ledger import MAX_RUN_ID, BadRecordError, is_number, load_json_file, parse_carbon_aware
from greendiff.pipelines import num_classes_of
from greendiff.train._checkpoint import remove_tree
from greendiff.train._config import TrainConfig, resolve_config
from greendiff.train._diffusion import make_sampler

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"


# -- emissions.json --------------------------------------------------------------------------------

@dataclass(frozen=True)
class EmissionsFile:
    """What readers use of a run directory's ``emissions.json``.

    Attributes:
        ledger_run_ids: The ledger runs of the run's segments, oldest first.
        run_total_energy_kwh: Energy of the whole run (all resumed segments), if recorded (a file
            written before segments were counted: its one segment's ``energy_kwh``).
        carbon_aware: The carbon-aware controller's books, if any (shape checked).
    """

    ledger_run_ids: tuple[int, ...]
    run_total_energy_kwh: float | None = None
    carbon_aware: dict | None = None


def read_emissions_json(path: Path) -> EmissionsFile:
    """Parse ``emissions.json``; :class:`BadRecordError` naming the file if it is not a JSON object with a
    list of ledger run ids. A damaged optional part (total, carbon-aware books) is dropped with a warning."""
    raw = load_json_file(path)
    if not isinstance(raw, dict):
        raise BadRecordError(f"{path}: should be a JSON object, got {type(raw).__name__}")
    ids = raw.get("ledger_run_ids", [])
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) and 1 <= i <= MAX_RUN_ID
                                            for i in ids):
        raise BadRecordError(f"{path}: ledger_run_ids should be a list of run ids, got {json.dumps(ids)[:60]}")
    key = "run_total_energy_kwh" if "run_total_energy_kwh" in raw else "energy_kwh"  # older files: one segment
    total = raw.get(key)
    if total is not None and not (is_number(total) and total >= 0):
        logger.warning("%s: %s %r is not an energy; ignored", path, key, total)
        total = None
    carbon_aware = raw.get("carbon_aware")
    if carbon_aware is not None:
        try:
            carbon_aware = parse_carbon_aware(carbon_aware, f"{path}: carbon_aware")
        except BadRecordError as exc:
            logger.warning("%s; ignored", exc)
            carbon_aware = None
    return EmissionsFile(tuple(ids), float(total) if total is not None else None, carbon_aware)


# -- metrics.jsonl ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class MetricsLog:
    """``metrics.jsonl``: its events (JSON objects) and the numbers of the lines that were not one."""

    events: list[dict] = field(default_factory=list)
    bad_lines: tuple[int, ...] = ()

    def points(self, x: str, y: str, event: str | None = None) -> list[tuple[float, float]]:
        """``(x, y)`` of the events that hold both as finite numbers (``event``: of that event only)."""
        return [(e[x], e[y]) for e in self.events
                if (event is None or e.get("event") == event) and is_number(e.get(x)) and is_number(e.get(y))]


def read_metrics(path: Path) -> MetricsLog:
    """Parse ``metrics.jsonl`` line by line. A line that is not a JSON object (cut by a crash, garbage)
    is skipped; one warning names the file and the lines."""
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        logger.warning("%s: cannot be read (%s); no metrics shown", path, exc.strerror or exc)
        return MetricsLog()
    events, bad = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except (ValueError, RecursionError):
            event = None
        if isinstance(event, dict):
            events.append(event)
        else:
            bad.append(number)
    if bad:
        shown = ", ".join(map(str, bad[:5])) + (", ..." if len(bad) > 5 else "")
        logger.warning("%s: %d line%s not a JSON record (line %s); skipped", path, len(bad),
                       "" if len(bad) == 1 else "s", shown)
    return MetricsLog(events, tuple(bad))


# -- the model ---------------------------------------------------------------------------------------

def check_safetensors(path: Path) -> None:
    """A safetensors file whose header is readable and whose tensors all lie inside the file;
    :class:`BadRecordError` naming it otherwise (a truncated copy, another format)."""
    try:
        with path.open("rb") as f:
            size = path.stat().st_size
            head = f.read(8)
            header_len = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
            raw = f.read(header_len) if 2 <= header_len <= min(size - 8, 100_000_000) else None
    except OSError as exc:
        raise BadRecordError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if raw is None:
        raise BadRecordError(f"{path}: not a safetensors file, or truncated ({size} bytes)")
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError):
        raise BadRecordError(f"{path}: its safetensors header is damaged") from None
    tensors = [t for k, t in header.items() if k != "__metadata__"] if isinstance(header, dict) else [None]
    offsets = [t.get("data_offsets") if isinstance(t, dict) else None for t in tensors]
    if not all(isinstance(o, list) and len(o) == 2 and all(isinstance(e, int) and e >= 0 for e in o) for o in offsets):
        raise BadRecordError(f"{path}: its safetensors header is damaged")
    ends = [o[1] for o in offsets]
    needed = 8 + header_len + max(ends, default=0)
    if size < needed:
        raise BadRecordError(f"{path}: truncated ({size} bytes, its header needs {needed})")


def _check_json_object(path: Path) -> None:
    if not isinstance(load_json_file(path), dict):
        raise BadRecordError(f"{path}: should be a JSON object")


#: What greendiff reads of a pipeline's JSON configs, key by key: (type, lowest, highest); a missing key
#: takes diffusers' default, except ``sample_size``. Bounds are the trainer config's (resolution <= 4096).
_UNET_RULES = {"sample_size": (int, 1, 4096), "in_channels": (int, 1, 4), "out_channels": (int, 1, 4),
               "layers_per_block": (int, 1, 16), "num_class_embeds": (int, 2, 100_001)}
#: Keys that may be null (diffusers writes ``num_class_embeds: null`` for an unconditional UNet).
_NULLABLE = frozenset({"num_class_embeds"})
_SCHEDULER_RULES = {"num_train_timesteps": (int, 1, 100_000)}


def _check_values(path: Path, raw: dict, rules: dict, required: tuple[str, ...] = ()) -> None:
    """One-line :class:`UserInputError` naming the file and key of a value outside ``rules`` (written by
    another tool, or edited): checked before diffusers builds anything from it, or a ledger row is opened."""
    for key, (kind, lo, hi) in rules.items():
        if key not in raw:
            if key in required:
                raise UserInputError(f"{path}: {key} is missing")
            continue
        value = raw[key]
        if value is None and key in _NULLABLE:
            continue
        if not isinstance(value, kind) or isinstance(value, bool):
            raise UserInputError(f"{path}: {key} must be an integer, got {json.dumps(value)[:60]}")
        if not lo <= value <= hi:
            raise UserInputError(f"{path}: {key} must be between {lo} and {hi:,}, got {value}")
    widths = raw.get("block_out_channels", [1]) if rules is _UNET_RULES else [1]
    if not (isinstance(widths, list) and 1 <= len(widths) <= 8
            and all(isinstance(w, int) and not isinstance(w, bool) and 1 <= w <= 8192 for w in widths)):
        raise UserInputError(f"{path}: block_out_channels must be a list of 1 to 8 integers between 1 and 8192, "
                             f"got {json.dumps(widths)[:60]}")


def check_unet_config(path: Path) -> None:
    """A UNet2DModel ``config.json``: a JSON object whose sizes greendiff can build and sample."""
    raw = load_json_file(path)
    if not isinstance(raw, dict):
        raise BadRecordError(f"{path}: should be a JSON object")
    _check_values(path, raw, _UNET_RULES, required=("sample_size",))
    if raw.get("class_embed_type") is not None:
        raise UserInputError(f"{path}: class_embed_type {json.dumps(raw['class_embed_type'])[:40]} is not one greendiff "
                             "samples; class-conditional UNets use the learned embedding (class_embed_type null, "
                             "num_class_embeds K + 1)")


def check_scheduler_config(path: Path) -> None:
    raw = load_json_file(path)
    if not isinstance(raw, dict):
        raise BadRecordError(f"{path}: should be a JSON object")
    _check_values(path, raw, _SCHEDULER_RULES)


def check_run_matches(run_dir: Path, config: TrainConfig, unet, data, space=None) -> None:
    """The run's ``config.toml`` and its pipeline describe the same model (a config.toml cut down or
    edited since): the resolution is the UNet's sample_size and the data's channels its in_channels (in latent
    space: the resolution is the network's sample_size times the VAE's downsampling, the channels the VAE's)."""
    if space is not None and space.latent:
        where = f"--run {run_dir}: config.toml and pipeline/ disagree"
        side = unet.config.sample_size * space.shape.downsample
        if config.data.resolution != side:
            raise UserInputError(f"{where}: data.resolution is {config.data.resolution}, the network's latent side "
                                 f"{unet.config.sample_size} x the VAE's downsampling {space.shape.downsample} is {side}")
        if data.channels != space.shape.image_channels:
            raise UserInputError(f"{where}: the dataset {config.data.dataset!r} has {data.channels} channel(s), the "
                                 f"VAE's in_channels is {space.shape.image_channels}")
        return
    where = f"--run {run_dir}: config.toml and pipeline/unet/config.json disagree"
    if config.data.resolution != unet.config.sample_size:
        raise UserInputError(f"{where}: data.resolution is {config.data.resolution}, the UNet's sample_size "
                             f"{unet.config.sample_size}")
    if data.channels != unet.config.in_channels:
        raise UserInputError(f"{where}: the dataset {config.data.dataset!r} has {data.channels} channel(s), the "
                             f"UNet's in_channels is {unet.config.in_channels}")


def load_unet(folder: Path, what: str):
    """The ``UNet2DModel`` saved in ``folder`` (``save_pretrained``), from its safetensors weights only: a
    pickled ``.bin`` is never read. ``what`` names the folder's role in the one-line error (e.g.
    ``"model.init_from"``, ``"teacher"``)."""
    config_file, weights = folder / "config.json", folder / WEIGHTS_FILE
    if not config_file.is_file():
        raise UserInputError(f"{what} {folder}: not a saved UNet2DModel (no config.json)")
    if not weights.is_file():
        raise UserInputError(f"{what} {folder}: no {WEIGHTS_FILE} (greendiff reads safetensors weights only, "
                             "never pickled .bin files)")
    check_unet_config(config_file)
    check_safetensors(weights)
    from diffusers import UNet2DModel

    try:
        return UNet2DModel.from_pretrained(str(folder), use_safetensors=True)
    except Exception as exc:  # noqa: BLE001 - any failure of diffusers/safetensors on these files: they are damaged
        first = first_line(exc)
        raise UserInputError(f"{what} {folder}: the model cannot be loaded ({first[:200]})") from None


#: The pipelines a run directory may hold (``model_index.json``'s ``_class_name``), and whether each one's
#: UNet is class-conditional.
PIPELINE_CLASSES = {"DDPMPipeline": False, "ClassConditionalPipeline": True}


class RunModel(NamedTuple):
    """A finished run's model: its config, network (a UNet or a DiT: ``unet``), sampler and space (pixels, or
    the latent space of the VAE saved in its pipeline); says whether and on how many classes the network is
    conditioned, and samples images (:meth:`sample`, decoded in latent space)."""

    config: TrainConfig
    unet: object
    sampler: object
    space: object = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images the model makes."""
        if self.space is not None and self.space.latent:
            res = self.config.data.resolution
            return (self.space.shape.image_channels, res, res)
        return (self.unet.config.in_channels, self.unet.config.sample_size, self.unet.config.sample_size)

    def sample(self, n: int, steps: int, generator: torch.Generator, labels=None, guidance_scale: float = 1.0,
               on_step=None) -> torch.Tensor:
        """``n`` images (n, C, H, W) in [-1, 1] (:func:`~greendiff.train.sample_images` in the model's space, then
        decoded), seeded by ``generator``; ``labels`` and ``guidance_scale`` as there."""
        from greendiff.train._space import sample_decoded

        config = self.unet.config
        return sample_decoded(self.space, self.unet, self.sampler, n, steps,
                              (config.in_channels, config.sample_size, config.sample_size), generator,
                              labels=labels, guidance_scale=guidance_scale, on_step=on_step)

    @property
    def num_classes(self) -> int:
        """K, the classes to sample (ids 0..K-1); 0 for an unconditional model."""
        return num_classes_of(self.unet)

    @property
    def null_class(self) -> int | None:
        """The null class id (K) of a class-conditional model, None for an unconditional one."""
        return self.num_classes if self.num_classes else None


def check_pipeline_index(run_dir: Path, path: Path, unet_config: Path) -> None:
    """``model_index.json`` (if there: older runs may lack it) names a pipeline greendiff writes, and its
    UNet is conditional exactly when the pipeline is the class-conditional one; one line otherwise."""
    if not path.is_file():
        return
    raw = load_json_file(path)
    name = raw.get("_class_name") if isinstance(raw, dict) else None
    if name not in PIPELINE_CLASSES:
        raise UserInputError(f"--run {run_dir}: {path} names the pipeline {json.dumps(name)[:60]}; greendiff reads "
                             f"{' or '.join(PIPELINE_CLASSES)}")
    embeds = load_json_file(unet_config).get("num_class_embeds")
    if PIPELINE_CLASSES[name] != (embeds is not None):
        has = f"a class embedding ({embeds} rows)" if embeds is not None else "no class embedding"
        raise UserInputError(f"--run {run_dir}: {path} names {name} but {unet_config} has {has}; the pipeline is "
                             "inconsistent")


def load_run_model(run_dir: Path) -> RunModel:
    """The :class:`RunModel` of a run with a saved pipeline (a ``DDPMPipeline`` or greendiff's
    ``ClassConditionalPipeline`` in pixel space; a ``DiTPipeline`` or greendiff's ``LatentPipeline`` in latent
    space; :attr:`RunModel.num_classes` tells whether it is conditional); a one-line error naming the file
    otherwise."""
    from greendiff.train._latent_artifacts import LATENT_PIPELINES, pipeline_class

    pipeline = run_dir / "pipeline"
    if pipeline_class(pipeline / "model_index.json") in LATENT_PIPELINES and (run_dir / "config.toml").is_file():
        return _load_latent_run(run_dir, pipeline)
    if not (pipeline / "unet").is_dir() or not (run_dir / "config.toml").is_file():
        raise UserInputError(f"--run {run_dir}: no trained pipeline (expected {run_dir}/pipeline and {run_dir}/config.toml)")
    files = [pipeline / "unet" / "config.json", pipeline / "unet" / WEIGHTS_FILE, pipeline / "scheduler" / "scheduler_config.json"]
    for path in files:
        if not path.is_file():
            raise UserInputError(f"--run {run_dir}: {path} is missing; the pipeline is incomplete")
    check_unet_config(files[0])
    check_safetensors(files[1])
    check_scheduler_config(files[2])
    check_pipeline_index(run_dir, pipeline / "model_index.json", files[0])
    from diffusers import DDPMScheduler, UNet2DModel

    config: TrainConfig = resolve_config(run_dir / "config.toml")
    try:  # safetensors only: a .bin (pickle) beside it is never read
        unet = UNet2DModel.from_pretrained(str(pipeline / "unet"), use_safetensors=True).eval()
        scheduler = DDPMScheduler.from_pretrained(str(pipeline / "scheduler"))
    except Exception as exc:  # noqa: BLE001 - any failure of diffusers/safetensors on these files: they are damaged
        first = first_line(exc)
        raise UserInputError(f"--run {run_dir}: its pipeline cannot be loaded ({first[:200]})") from None
    return RunModel(config, unet, make_sampler(config.optim, scheduler))


def _load_latent_run(run_dir: Path, pipeline: Path) -> RunModel:
    """A latent run's :class:`RunModel`: its network and sampler, and its space from the VAE in its pipeline."""
    from greendiff.train._latent_artifacts import load_latent_network, pipeline_class
    from greendiff.train._space import LatentSpace
    from greendiff.train._vae import load_vae, read_vae_shape, vae_weights_sha256

    config: TrainConfig = resolve_config(run_dir / "config.toml")
    net, scheduler = load_latent_network(run_dir, pipeline, pipeline_class(pipeline / "model_index.json"),
                                         config.model.num_classes)
    what = f"--run {run_dir}: pipeline/vae"
    shape = read_vae_shape(pipeline / "vae", what)
    if shape.latent_channels != net.config.in_channels:
        raise UserInputError(f"--run {run_dir}: its VAE makes {shape.latent_channels}-channel latents and its network takes "
                             f"{net.config.in_channels} channels; the pipeline is inconsistent")
    space = LatentSpace(load_vae(pipeline / "vae", what), shape, vae_weights_sha256(pipeline / "vae"),
                        config.data.resolution)
    return RunModel(config, net, make_sampler(config.optim, scheduler), space)


# -- writing the pipeline ----------------------------------------------------------------------------

def ema_model(unet, ema) -> torch.nn.Module:
    """A contiguous fp32 CPU copy of ``unet`` holding the EMA weights (``ema``: diffusers' ``EMAModel``, or
    None for the raw weights); ``unet`` itself is untouched."""
    model = copy.deepcopy(unet).to(memory_format=torch.contiguous_format).float().cpu()
    if ema is not None:
        ema.copy_to(model.parameters())
    return model


def save_pipeline_atomically(pipeline, path: Path) -> None:
    """``pipeline.save_pretrained`` (safetensors) into ``path``, written beside it and renamed into place:
    a kill mid-export leaves the previous pipeline (of a resumed run), never half of one; a link planted
    at the temporary name is unlinked, never written through."""
    tmp, old = path.with_name(f".tmp-{path.name}"), path.with_name(f".old-{path.name}")
    remove_tree(tmp)
    pipeline.save_pretrained(str(tmp), safe_serialization=True)
    if path.exists() or path.is_symlink():
        remove_tree(old)
        os.replace(path, old)
    os.replace(tmp, path)
    remove_tree(old)


def export_pipeline(unet, ema, noise_scheduler, path: Path) -> None:
    """An unconditional run's ``DDPMPipeline`` with the EMA weights (``ema`` None: the raw ones), saved
    atomically to ``path`` (:func:`save_pipeline_atomically`); plain diffusers loads it."""
    from diffusers import DDPMPipeline

    save_pipeline_atomically(DDPMPipeline(unet=ema_model(unet, ema), scheduler=noise_scheduler), path)


def export_class_pipeline(unet, ema, noise_scheduler, path: Path, class_names: Sequence[str] | None = None) -> None:
    """A class-conditional run's :class:`~greendiff.pipelines.ClassConditionalPipeline` with the EMA
    weights and the name of each class id 0..K-1 (``class_names``, kept in its ``model_index.json``; None:
    ids only), saved atomically to ``path`` (the counterpart of ``export_pipeline``'s ``DDPMPipeline``);
    ``ClassConditionalPipeline.from_pretrained(path)`` reads it back."""
    from greendiff.pipelines import ClassConditionalPipeline

    if not num_classes_of(unet):
        raise ValueError("export_class_pipeline needs a class-conditional UNet (num_class_embeds set)")
    save_pipeline_atomically(ClassConditionalPipeline(unet=ema_model(unet, ema), scheduler=noise_scheduler,
                                                      class_names=class_names), path)
