"""The layout of a local diffusers text-to-image pipeline folder, read from ``model_index.json`` alone.

``greendiff finetune --pipeline DIR`` starts here: which denoiser the pipeline has (a
``UNet2DConditionModel``, the Stable Diffusion layout, or a ``*Transformer2DModel``, the SD3
layout), its VAE, its (text encoder, tokenizer) pairs and its scheduler, and whether the folder holds
every component it lists, with safetensors weights and a denoiser that fits the VAE's latents. No weight
is read; a pickled ``.bin`` is never loaded. Each problem is one line naming the component.

Example (a folder without model_index.json):
    >>> import tempfile
    >>> read_pipeline_layout(Path(tempfile.mkdtemp()), "--pipeline")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    greendiff.errors.UserInputError: --pipeline ...: no model_index.json; give a diffusers pipeline folder ...
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from greendiff.errors import UserInputError
from greendiff.files import read_json_object
from greendiff.names import display_path, shown

INDEX_FILE = "model_index.json"
MAX_JSON_BYTES = 1_000_000
UNET_CLASS = "UNet2DConditionModel"
TRANSFORMER_SUFFIX = "Transformer2DModel"
#: The pipelines greendiff fine-tunes end to end (conditioning, sampling and the LoRA file diffusers loads).
SUPPORTED_PIPELINES = ("StableDiffusionPipeline", "StableDiffusion3Pipeline")
ENCODER_SLOTS = (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2"), ("text_encoder_3", "tokenizer_3"))
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "spiece.model")
PICKLED_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
HASHED_SUFFIXES = (".safetensors", ".json", ".txt", ".model")  # weights, configs, tokenizer files


@dataclass(frozen=True)
class PipelineLayout:
    """What a pipeline folder holds, by component name (a subfolder of ``folder``).

    Attributes:
        folder: the pipeline folder.
        kind: ``"unet"`` (a ``UNet2DConditionModel`` denoiser) or ``"transformer"`` (a ``*Transformer2DModel``).
        pipeline_class: ``model_index.json``'s ``_class_name``, e.g. ``"StableDiffusionPipeline"``.
        denoiser: the denoiser's component name, ``"unet"`` or ``"transformer"``.
        denoiser_class: its class, e.g. ``"SD3Transformer2DModel"``.
        vae: the VAE's component name, ``"vae"``.
        text_encoders: ``(encoder, tokenizer)`` component names present, in order,
            e.g. ``(("text_encoder", "tokenizer"),)``.
        scheduler_class: the scheduler's class, e.g. ``"DDPMScheduler"``.
        hub_id: the Hub id in ``_name_or_path`` (a pipeline saved after loading it from the Hub), or "".
    """

    folder: Path
    kind: Literal["unet", "transformer"]
    pipeline_class: str
    denoiser: str
    denoiser_class: str
    vae: str
    text_encoders: tuple[tuple[str, str], ...]
    scheduler_class: str
    hub_id: str = ""  # where it came from on the Hub (``_name_or_path``), for a model card's base_model


def _bad(what: str, folder: Path, why: str) -> UserInputError:
    return UserInputError(f"{what} {display_path(folder)}: {why}")


def _read_json(path: Path, what: str, folder: Path, name: str) -> dict:
    """The JSON object in ``path`` (``name`` is how messages call it), or one line naming what is wrong."""
    return read_json_object(path, name, lambda why: _bad(what, folder, why), MAX_JSON_BYTES,
                            large_as="a diffusers config")


def _components(index: dict) -> dict[str, str]:
    """Component name -> class name, for the entries ``[library, class]`` that are not ``[null, null]``."""
    return {name: entry[1] for name, entry in index.items()
            if not name.startswith("_") and isinstance(entry, list) and len(entry) == 2
            and isinstance(entry[1], str)}


def _denoiser(components: dict[str, str], what: str, folder: Path) -> tuple[str, str, str]:
    """``(kind, component, class)`` of the pipeline's denoiser, or one line."""
    unet, transformer = components.get("unet"), components.get("transformer")
    if unet == UNET_CLASS:
        return "unet", "unet", unet
    if transformer is not None and transformer.endswith(TRANSFORMER_SUFFIX):
        return "transformer", "transformer", transformer
    found = f"unet {shown(unet)}" if unet else f"transformer {shown(transformer)}" if transformer else "none"
    raise _bad(what, folder, f"{INDEX_FILE} has no supported denoiser (found: {found}); greendiff fine-tunes a "
                             f"'unet' {UNET_CLASS} (Stable Diffusion) or a 'transformer' *{TRANSFORMER_SUFFIX} "
                             "(SD3)")


def read_pipeline_layout(folder: Path, what: str = "--pipeline") -> PipelineLayout:
    """The layout of the pipeline in ``folder``, from ``model_index.json`` only (no weights, no subfolder read).

    Args:
        folder: a diffusers pipeline folder (``model_index.json`` + one subfolder per component).
        what: how messages name it (the flag or config key that gave it).

    Raises:
        UserInputError: one line for no such folder, no or invalid ``model_index.json``, no denoiser of a
            supported class, no VAE, no scheduler, or no (text encoder, tokenizer) pair.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise _bad(what, folder, "no such folder" if not folder.exists() else "not a folder")
    if not (folder / INDEX_FILE).is_file():
        raise _bad(what, folder, f"no {INDEX_FILE}; give a diffusers pipeline folder (saved by "
                                 "DiffusionPipeline.save_pretrained)")
    index = _read_json(folder / INDEX_FILE, what, folder, INDEX_FILE)
    components = _components(index)
    kind, denoiser, denoiser_class = _denoiser(components, what, folder)
    pipeline_class = str(index.get("_class_name", ""))
    if pipeline_class not in SUPPORTED_PIPELINES:
        raise _bad(what, folder, f"{INDEX_FILE} names a {shown(pipeline_class)}; greendiff fine-tunes "
                                 f"{' and '.join(SUPPORTED_PIPELINES)} pipelines")
    if "vae" not in components:
        raise _bad(what, folder, f"{INDEX_FILE} lists no 'vae' component; a text-to-image pipeline needs a VAE")
    if "scheduler" not in components:
        raise _bad(what, folder, f"{INDEX_FILE} lists no 'scheduler' component")
    pairs = []
    for encoder, tokenizer in ENCODER_SLOTS:
        if (encoder in components) != (tokenizer in components):
            has, lacks = (encoder, tokenizer) if encoder in components else (tokenizer, encoder)
            raise _bad(what, folder, f"{INDEX_FILE} lists component '{has}' without its '{lacks}'")
        if encoder in components:
            pairs.append((encoder, tokenizer))
    if not pairs:
        raise _bad(what, folder, f"{INDEX_FILE} lists no text encoder with its tokenizer ('text_encoder', "
                                 "'tokenizer'); greendiff fine-tunes text-to-image pipelines")
    return PipelineLayout(folder, kind, pipeline_class, denoiser, denoiser_class, "vae", tuple(pairs),
                          components["scheduler"], _hub_id(index))


def _hub_id(index: dict) -> str:
    """The Hub id the pipeline was loaded from (``_name_or_path`` when it is one, not a local path), or ""."""
    name = index.get("_name_or_path")
    if not isinstance(name, str) or name.count("/") != 1 or name.startswith((".", "/", "~")) or Path(name).exists():
        return ""
    return name


def _config_file(class_name: str) -> str:
    if "Scheduler" in class_name:
        return "scheduler_config.json"
    if "ImageProcessor" in class_name or "FeatureExtractor" in class_name:
        return "preprocessor_config.json"
    return "config.json"


def _check_component(folder: Path, name: str, class_name: str, what: str) -> None:
    """One listed component: its subfolder, its config (or tokenizer files), one line naming it if absent."""
    sub = folder / name
    label = f"component '{name}' ({class_name})"
    if not sub.is_dir():
        raise _bad(what, folder, f"{label} is listed in {INDEX_FILE} but its folder {name}/ is missing")
    if "Tokenizer" in class_name:
        if not any((sub / file).is_file() for file in TOKENIZER_FILES):
            raise _bad(what, folder, f"{label}: {name}/ has no tokenizer files (one of "
                                     f"{', '.join(TOKENIZER_FILES)})")
        return
    config = _config_file(class_name)
    if not (sub / config).is_file():
        raise _bad(what, folder, f"{label}: {name}/ has no {config}")


def _check_weights(folder: Path, name: str, what: str) -> None:
    """A model component must hold ``*.safetensors`` weights; pickled ones are never loaded."""
    sub = folder / name
    if any(sub.glob("*.safetensors")):
        return
    pickled = sorted(p.name for p in sub.iterdir() if p.suffix in PICKLED_SUFFIXES)
    if pickled:
        raise _bad(what, folder, f"component '{name}' has only pickled weights ({pickled[0]}), which greendiff "
                                 "never loads: re-save the pipeline with save_pretrained(folder, "
                                 "safe_serialization=True)")
    raise _bad(what, folder, f"component '{name}' has no *.safetensors weights in {name}/")


def _channels(folder: Path, name: str, key: str, what: str) -> int:
    config = _read_json(folder / name / "config.json", what, folder, f"{name}/config.json")
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _bad(what, folder, f"{name}/config.json: {key} must be a positive integer, got {shown(value)}")
    return value


def check_pipeline_folder(folder: Path, what: str = "--pipeline") -> PipelineLayout:
    """:func:`read_pipeline_layout`, then the folder checked against it, still without loading any weight.

    Args:
        folder: a diffusers pipeline folder.
        what: how messages name it.

    Returns:
        The layout, once every component listed in ``model_index.json`` is present.

    Raises:
        UserInputError: one line, naming the component, for anything :func:`read_pipeline_layout` rejects,
            a listed component whose folder, config or tokenizer files are missing, a denoiser, VAE or text
            encoder without ``*.safetensors`` weights, or a denoiser whose ``in_channels`` differ from the
            VAE's ``latent_channels`` (mismatched components).
    """
    layout = read_pipeline_layout(folder, what)
    folder = layout.folder
    index = _read_json(folder / INDEX_FILE, what, folder, INDEX_FILE)
    for name, class_name in _components(index).items():
        _check_component(folder, name, class_name, what)
    for name in (layout.denoiser, layout.vae, *(encoder for encoder, _ in layout.text_encoders)):
        _check_weights(folder, name, what)
    in_channels = _channels(folder, layout.denoiser, "in_channels", what)
    latent_channels = _channels(folder, layout.vae, "latent_channels", what)
    if in_channels != latent_channels:
        raise _bad(what, folder, f"mismatched components: '{layout.denoiser}' ({layout.denoiser_class}) takes "
                                 f"in_channels {in_channels} but 'vae' makes latent_channels {latent_channels}")
    return layout


def component_sha256(folder: Path, names) -> str:
    """One sha256 (hex) of the files of the components ``names`` under ``folder``: weights (safetensors),
    configs and tokenizer files (each file read once per version: path, size and modification time)."""
    import hashlib

    from greendiff.train._vae import _file_sha256

    digest = hashlib.sha256()
    for name in names:
        for path in sorted(p for p in (Path(folder) / name).glob("*") if p.suffix in HASHED_SUFFIXES and p.is_file()):
            stat = path.stat()
            digest.update(f"{name}/{path.name}:".encode())
            digest.update(_file_sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns).encode())
    return digest.hexdigest()


def pipeline_weights_sha256(folder: Path) -> str:
    """The digest of a pipeline's denoiser, VAE and text encoders (:func:`component_sha256`): what identifies
    the base model of a fine-tune in its checkpoints and caches."""
    layout = read_pipeline_layout(Path(folder))
    return component_sha256(layout.folder, (layout.denoiser, layout.vae, *(enc for enc, _ in layout.text_encoders)))
