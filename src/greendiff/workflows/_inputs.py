"""Inputs every workflow reads the same way."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from greendiff.data import BUILTIN
from greendiff.errors import UserInputError
from greendiff.files import atomic_write_text
from greendiff.names import display_path


def is_bundled(dataset: str) -> bool:
    """``dataset`` names a bundled dataset (``greendiff.data.BUILTIN``, the digits 0-9; read before any file of
    that name, as ``load_dataset`` does)."""
    return dataset.lower() in BUILTIN


def with_absolute_dataset(config):
    """``config`` with a folder or array ``data.dataset`` made absolute (against the current folder), so the
    saved ``config.toml`` finds it again from any folder (``train --resume``, ``eval``, ``sample``); a bundled
    name, or a path that does not exist (``load_dataset`` says so), stays as given. ``model.vae`` (if it
    exists), ``data.latent_cache_dir`` and a fine-tune's folders (pipeline, instance images, CLIP model) are made
    absolute the same way."""
    dataset, vae, cache = config.data.dataset, config.model.vae, config.data.latent_cache_dir
    ft = config.finetune
    folders = {key: os.path.abspath(value) for key in ("pipeline", "instance_data", "clip_model")
               if (value := getattr(ft, key)) and os.path.exists(value)}
    if folders:
        config = dataclasses.replace(config, finetune=dataclasses.replace(ft, **folders))
    if vae and os.path.exists(vae):  # a latent run's VAE and latent cache, too
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, vae=os.path.abspath(vae)))
    if cache:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, latent_cache_dir=os.path.abspath(cache)))
    if is_bundled(dataset) or not os.path.exists(dataset):  # False for a NUL or an overlong name too
        return config
    return dataclasses.replace(config, data=dataclasses.replace(config.data, dataset=os.path.abspath(dataset)))


def load_config_data(config, config_file: Path | None = None):
    """The training data a resolved config names (``data.*``: labels, captions, the memory budget that
    chooses in memory or streamed, loader workers), an :class:`~greendiff.data.ImageSet` or a
    :class:`~greendiff.data.StreamedSet` (its ``placement``: the line saying where it is held and why, for the
    workflow to note once nothing can fail). An error about a dataset the config file set names the file, so
    the user knows where to fix it."""
    from greendiff.data import load_dataset
    from greendiff.train import read_toml

    d = config.data
    try:
        return load_dataset(d.dataset, d.resolution, d.skip_bad_images, label_column=d.label_column,
                            caption_column=d.caption_column, cache_max_gb=d.cache_max_gb, workers=d.loader_workers)
    except UserInputError as exc:
        named = read_toml(config_file).get("data", {}).get("dataset") if config_file is not None else None
        if isinstance(named, str) and config.data.dataset in (named, os.path.abspath(named)):
            raise UserInputError(f"{display_path(config_file)}: data.dataset: {exc}") from None
        raise


def check_output(output: Path, suffixes: tuple[str, ...] = (), flag: str = "--output") -> None:
    """A file a job may write (``flag``, e.g. ``--output``): the right suffix, not a folder, in a folder that
    exists and is writable; checked before any work, as a one-line error naming ``flag``."""
    shown = display_path(output)
    if suffixes and output.suffix.lower() not in suffixes:
        raise UserInputError(f"{flag} must end in {suffixes[0]}, got {shown}")
    if output.is_dir():
        raise UserInputError(f"{flag} {shown} is a folder: give a file name")
    if not output.parent.is_dir():
        raise UserInputError(f"{flag} {shown}: folder {display_path(output.parent)} does not exist")
    if not os.access(output.parent, os.W_OK) or (output.exists() and not os.access(output, os.W_OK)):
        raise UserInputError(f"{flag} {shown}: not writable")


def default_job_note(config, command: str) -> str:
    """What a command given no ``--config`` measures: the default recipe, its preset, dataset, size and batch."""
    return (f"no --config: {command} the default job: recipe {config.recipe}, preset {config.model.preset}, "
            f"dataset {config.data.dataset} at {config.data.resolution} px, batch {config.optim.batch_size}, "
            f"{config.run.max_steps:,} steps (--config FILE or --set KEY=VALUE for yours)")


def write_output(path: Path, report: dict) -> None:
    """``report`` as JSON at ``path`` (atomically; a file there is replaced: the caller says so)."""
    try:
        atomic_write_text(path, json.dumps(report, indent=2))
    except OSError as exc:
        raise UserInputError(f"cannot write {path}: {exc.strerror}") from None
