"""Inputs every workflow reads the same way."""

from __future__ import annotations

from pathlib import Path

from greendiff.errors import UserInputError
from greendiff.names import display_path


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
        if config_file is not None and read_toml(config_file).get("data", {}).get("dataset") == config.data.dataset:
            raise UserInputError(f"{display_path(config_file)}: data.dataset: {exc}") from None
        raise


def check_output(output: Path, suffixes: tuple[str, ...] = ()) -> None:
    """A file a job may write (``--output``): the right suffix, in a folder that exists and is
    writable; checked before any work, as a one-line error."""
    import os

    shown = display_path(output)
    if suffixes and output.suffix.lower() not in suffixes:
        raise UserInputError(f"--output must end in {suffixes[0]}, got {shown}")
    if not output.parent.is_dir():
        raise UserInputError(f"--output {shown}: folder {display_path(output.parent)} does not exist")
    if not os.access(output.parent, os.W_OK) or (output.exists() and not os.access(output, os.W_OK)):
        raise UserInputError(f"--output {shown}: not writable")
