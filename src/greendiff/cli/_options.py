"""Options shared by every command that measures, resolved once into a Tracker's arguments."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from greendiff.carbon import IntensityProvider, Location, parse_positive, resolve_location, resolve_provider, resolve_pue
from greendiff.energy import MonitorOptions
from greendiff.errors import UserInputError
from greendiff.ledger import Ledger
from greendiff.tracking import Tracker

Country = Annotated[Optional[str], typer.Option("--country", help="ISO-3 country code of the hardware (env GREENDIFF_COUNTRY).")]
Cloud = Annotated[Optional[str], typer.Option("--cloud", help="Cloud PROVIDER:REGION, e.g. gcp:europe-west1 (env GREENDIFF_CLOUD).")]
Grid = Annotated[Optional[str], typer.Option("--grid", help="US grid (CISO, PJM, ...) or a timestamp,intensity CSV (env GREENDIFF_GRID).")]
PueOpt = Annotated[Optional[str], typer.Option("--pue", help="Data-centre PUE >= 1 (default: provider figure or 1.0).")]
Live = Annotated[str, typer.Option("--live", help="Live intensity API: none, uk, electricitymaps.")]
Zone = Annotated[Optional[str], typer.Option("--zone", help="Electricity Maps zone key, e.g. FR.")]
CpuWatts = Annotated[Optional[str], typer.Option("--cpu-watts", help="CPU package power at full load in W (overrides the TDP table and RAPL).")]
Gpus = Annotated[Optional[str], typer.Option("--gpus", help="Comma-separated visible GPU indices to meter (default: all).")]
NoGpu = Annotated[bool, typer.Option("--no-gpu", help="Do not meter GPUs.")]
LedgerPath = Annotated[Optional[Path], typer.Option("--ledger", help="Ledger database file (env GREENDIFF_LEDGER).")]


@dataclass(frozen=True)
class MeasureSettings:
    location: Location
    pue: float | None
    live: str
    zone: str | None
    monitor: MonitorOptions
    ledger: Ledger
    provider: IntensityProvider  # resolved once from location, live and zone

    def tracker(self, name: str, kind: str, command: str, dist=None, **kwargs) -> Tracker:
        """A (not yet started) Tracker with these settings; for a rank of a job (``dist``), a JobTracker."""
        common = dict(kind=kind, command=command, location=self.location, pue=self.pue, live=self.live,
                      zone=self.zone, monitor_options=self.monitor, ledger=self.ledger, provider=self.provider,
                      **kwargs)
        if dist is not None and dist.distributed:
            from greendiff.tracking import JobTracker

            return JobTracker(name, dist=dist, **common)
        return Tracker(name, **common)


def resolve_settings(country: str | None, cloud: str | None, grid: str | None, pue: str | None, live: str,
                     zone: str | None, cpu_watts: str | None, gpus: str | None, no_gpu: bool,
                     ledger: Path | None) -> MeasureSettings:
    """Validate flags (one-line errors) and open the ledger, before any work starts."""
    gpu_indices = None
    if gpus is not None:
        try:
            gpu_indices = tuple(int(g) for g in gpus.split(",") if g.strip())
        except ValueError:
            raise typer.BadParameter(f"--gpus must be comma-separated integers, got {gpus!r}") from None
    location = resolve_location(country, cloud, grid)
    pue_value = parse_positive(pue, "--pue") if pue is not None else None
    provider = resolve_provider(location, live, zone)  # an unknown country, region, grid or bad trace fails here
    resolve_pue(pue_value, location)  # and a PUE below 1 (flag or environment)
    return MeasureSettings(
        location=location,
        pue=pue_value,
        live=live,
        zone=zone,
        monitor=MonitorOptions(gpu_indices=gpu_indices, measure_gpus=not no_gpu,
                               cpu_watts=parse_positive(cpu_watts, "--cpu-watts") if cpu_watts is not None else None),
        ledger=Ledger(ledger),
        provider=provider,
    )


def check_output(output: Path, suffixes: tuple[str, ...] = ()) -> None:
    """A file a command may write (``--output``): the right suffix, in a folder that exists and is
    writable; checked before any work, as a one-line error."""
    import os

    if suffixes and output.suffix.lower() not in suffixes:
        raise UserInputError(f"--output must end in {suffixes[0]}, got {output}")
    if not output.parent.is_dir():
        raise UserInputError(f"--output {output}: folder {output.parent} does not exist")
    if not os.access(output.parent, os.W_OK) or (output.exists() and not os.access(output, os.W_OK)):
        raise UserInputError(f"--output {output}: not writable")


def load_config_data(config, config_file: Path | None = None):
    """The training images a resolved config names. An error about a dataset the config file set
    names the file, so the user knows where to fix it."""
    from greendiff.data import load_dataset
    from greendiff.train import read_toml

    try:
        return load_dataset(config.data.dataset, config.data.resolution, config.data.skip_bad_images)
    except UserInputError as exc:
        if config_file is not None and read_toml(config_file).get("data", {}).get("dataset") == config.data.dataset:
            raise UserInputError(f"{config_file}: data.dataset: {exc}") from None
        raise
