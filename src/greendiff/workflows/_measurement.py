"""The measurement options every measured job takes (where the hardware is, which devices are metered, which
ledger records it), as one typed value, resolved once into a :class:`MeasureSettings` that makes trackers.

The location stays with the run: a run directory keeps where it was priced in ``location.toml``
(:class:`RunLocation`), and a job on that run (``train --resume``, ``sample``, ``eval``, ``prune``, ``distill``,
``distill-steps``) is priced there unless told otherwise. :func:`resolve_settings` alone decides, in this order:
flags > environment (``GREENDIFF_COUNTRY``/``_CLOUD``/``_GRID``/``_PUE``, the machine's) > the run's stored
location > the world average."""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from greendiff.carbon import (
    BUNDLED_GRIDS, ENV_CLOUD, ENV_COUNTRY, ENV_GRID, ENV_PUE, IntensityProvider, Location, Pue, place_name,
    pue_bounds, resolve_location, resolve_provider, resolve_pue, zone_location,
)
from greendiff.energy import MonitorOptions
from greendiff.errors import UserInputError
from greendiff.ledger import Ledger
from greendiff.names import display_path, shown
from greendiff.numbers import Bounds
from greendiff.tracking import Tracker

PUE = pue_bounds(lo=0, lo_open=True)  #: positive here; resolve_pue says why it must be >= 1.0
CPU_WATTS = Bounds(lo=0, lo_open=True, hi=10_000, why="no CPU package draws 10 kW")
GPU_INDEX = Bounds(integer=True, lo=0, hi=1023)  #: one of --gpus


@dataclass(frozen=True)
class MeasurementOptions:
    """Where and how a job is measured, as given (text is checked by :func:`resolve_settings`).

    Args:
        country: ISO-3 country code of the hardware (env GREENDIFF_COUNTRY when None).
        cloud: ``PROVIDER:REGION``, e.g. ``gcp:europe-west1``.
        grid: a bundled US grid or a ``timestamp,intensity`` CSV.
        pue: data-centre PUE (>= 1); None: the provider's figure or 1.0.
        live: live intensity API: ``none``, ``uk`` or ``electricitymaps``.
        zone: Electricity Maps zone key.
        cpu_watts: CPU package power at full load in W (overrides the TDP table and RAPL).
        gpus: comma-separated visible GPU indices to meter (None: all).
        no_gpu: do not meter GPUs.
        ledger: ledger database file (None: GREENDIFF_LEDGER or the default).

    Example:
        >>> MeasurementOptions(country="FRA", no_gpu=True).argv()
        ['--country', 'FRA', '--no-gpu']
    """

    country: str | None = None
    cloud: str | None = None
    grid: str | None = None
    pue: str | float | None = None
    live: str = "none"
    zone: str | None = None
    cpu_watts: str | float | None = None
    gpus: str | None = None
    no_gpu: bool = False
    ledger: Path | None = None

    def __post_init__(self) -> None:
        """``ledger`` may be given as ``str``; a value of another type is a ``TypeError``."""
        if self.ledger is not None and not isinstance(self.ledger, Path):
            if not isinstance(self.ledger, str):
                raise TypeError(f"MeasurementOptions.ledger must be a Path or str or None, got {type(self.ledger).__name__}")
            object.__setattr__(self, "ledger", Path(self.ledger))

    def argv(self) -> list[str]:
        """These options as ``greendiff`` flags again (for worker processes of the same job)."""
        argv: list[str] = []
        for flag, value in (("--country", self.country), ("--cloud", self.cloud), ("--grid", self.grid),
                            ("--pue", self.pue), ("--live", None if self.live == "none" else self.live),
                            ("--zone", self.zone), ("--cpu-watts", self.cpu_watts), ("--gpus", self.gpus),
                            ("--ledger", self.ledger)):
            if value is not None:
                argv += [flag, str(value)]
        return argv + (["--no-gpu"] if self.no_gpu else [])

    @property
    def place_given(self) -> bool:
        """Whether these options say where the energy is priced (``--country``, ``--cloud``, ``--grid``,
        ``--live`` or ``--zone``): then a run's stored location is not used (``--pue`` alone keeps it)."""
        return any(v is not None for v in (self.country, self.cloud, self.grid, self.zone)) or self.live != "none"


LOCATION_FILE = "location.toml"  #: a run directory's location, written once when the run is made
MAX_LOCATION_BYTES = 65_536  #: a location file is a few lines; anything near this is not one
_PLACE_ENV = (ENV_COUNTRY, ENV_CLOUD, ENV_GRID)
_TEXT_KEYS = ("country", "cloud", "grid", "live", "zone")


@dataclass(frozen=True)
class RunLocation:
    """Where a run's energy is priced, as its run directory keeps it (``location.toml``): the location options
    as resolved when it was priced (flags, or the machine's environment), a grid file as an absolute path.

    Example:
        >>> print(RunLocation(country="FRA", pue=1.2).to_toml(), end="")
        # where this run's energy is priced (greendiff); jobs on the run use it unless given --country/--cloud/--grid
        country = "FRA"
        pue = 1.2
        live = "none"
    """

    country: str | None = None
    cloud: str | None = None
    grid: str | None = None
    pue: float | None = None
    live: str = "none"
    zone: str | None = None

    @property
    def known(self) -> bool:
        """Whether it says anything (an unknown location is not stored)."""
        return any(v is not None for v in (self.country, self.cloud, self.grid, self.pue, self.zone)) or self.live != "none"

    def to_toml(self) -> str:
        """The file's text (keys left out where None)."""
        import tomli_w

        values = {k: getattr(self, k) for k in ("country", "cloud", "grid", "pue", "live", "zone")
                  if getattr(self, k) is not None}
        return ("# where this run's energy is priced (greendiff); jobs on the run use it unless given "
                "--country/--cloud/--grid\n" + tomli_w.dumps(values))

    @classmethod
    def read(cls, run_dir: Path) -> RunLocation | None:
        """``run_dir``'s stored location; None when it has none (a run made before locations were kept). A
        file that cannot be read, is not TOML, or holds values of the wrong kind is one line naming it."""
        path = run_dir / LOCATION_FILE
        if not path.exists() and not path.is_symlink():
            return None
        return _parsed_location(_location_table(path), path)


def _bad_location(path: Path, why: str) -> UserInputError:
    return UserInputError(f"{display_path(path)}: {why}; give --country, --cloud or --grid, or delete the file "
                          "(the run is then priced at the world average)")


def _location_table(path: Path) -> dict:
    """The TOML table of a location file (never more than :data:`MAX_LOCATION_BYTES` read), or one line."""
    if not path.is_file():
        raise _bad_location(path, "not a regular file")
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_LOCATION_BYTES + 1)
    except OSError as exc:
        raise _bad_location(path, f"cannot be read ({exc.strerror or exc})") from None
    if len(raw) > MAX_LOCATION_BYTES:
        raise _bad_location(path, f"larger than {MAX_LOCATION_BYTES:,} bytes, not a location file")
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise _bad_location(path, "not UTF-8 text") from None
    except (tomllib.TOMLDecodeError, RecursionError, ValueError) as exc:
        raise _bad_location(path, f"invalid TOML ({' '.join(str(exc).split())[:120]})") from None


def _parsed_location(table: dict, path: Path) -> RunLocation:
    """The table's values checked for kind (the values themselves are checked when they are resolved)."""
    for key in _TEXT_KEYS:
        value = table.get(key)
        if value is not None and not (isinstance(value, str) and value and len(value) <= 4096):
            raise _bad_location(path, f"{key} should be text, got {shown(value)}")
    pue = table.get("pue")
    if pue is not None and not (isinstance(pue, (int, float)) and not isinstance(pue, bool) and math.isfinite(pue)):
        raise _bad_location(path, f"pue should be a number, got {shown(pue)}")
    return RunLocation(table.get("country"), table.get("cloud"), table.get("grid"),
                       None if pue is None else float(pue), table.get("live") or "none", table.get("zone"))


def _priced_at(location: Location, zone: str | None = None) -> str:
    """Where ``location`` prices energy, in words with its code (:func:`greendiff.carbon.place_name`):
    ``"France (FRA)"``; for an Electricity Maps ``zone`` alone, the bundled grid its table prices it at
    (``"France (FRA), Electricity Maps zone FR"``); ``"the world average"`` when it says nowhere."""
    named = place_name(location, with_code=True)
    if not named and zone:
        table = zone_location(zone)
        return f"{place_name(table, with_code=True) if table is not None else 'the world average'}, Electricity Maps zone {zone}"
    return named or "the world average"


@dataclass(frozen=True)
class MeasureSettings:
    """:class:`MeasurementOptions` checked and resolved: the location, provider, meters and the open ledger.

    ``stored``: what a run directory made by the job keeps (:func:`write_location`); ``note``: one line saying
    where the location came from when the user did not give it ("" otherwise); ``pue_source``: where an
    inherited PUE came from (None: as :func:`~greendiff.carbon.resolve_pue` says)."""

    location: Location
    pue: float | None
    live: str
    zone: str | None
    monitor: MonitorOptions
    ledger: Ledger
    provider: IntensityProvider  # resolved once from location, live and zone
    stored: RunLocation = RunLocation()
    note: str = ""
    pue_source: str | None = None

    def tracker(self, name: str, kind: str, command: str, dist=None, **kwargs) -> Tracker:
        """A (not yet started) Tracker with these settings; for a rank of a job (``dist``), a JobTracker. An
        inherited PUE goes in with its source (``pue_source``)."""
        pue = Pue(self.pue, self.pue_source) if self.pue is not None and self.pue_source is not None else self.pue
        common = dict(kind=kind, command=command, location=self.location, pue=pue, live=self.live,
                      zone=self.zone, monitor_options=self.monitor, ledger=self.ledger, provider=self.provider,
                      **kwargs)
        if dist is not None and dist.distributed:
            from greendiff.tracking import JobTracker

            return JobTracker(name, dist=dist, **common)
        return Tracker(name, **common)


def _number(bounds: Bounds, value: str | float | None, flag: str) -> float | None:
    if value is None:
        return None
    return bounds.parse(value, flag) if isinstance(value, str) else bounds.parse(repr(float(value)), flag)


@dataclass(frozen=True)
class _Where:
    """The location a job is priced at, decided: what is resolved, what a new run keeps, the note, and the
    run's location file when it came from there (``kept_in``; its values are then checked as its own)."""

    location: Location
    pue: float | None
    live: str
    zone: str | None
    stored: RunLocation
    note: str = ""
    kept_in: Path | None = None
    pue_source: str | None = None


def _explicit_pue(flag_pue: float | None, location: Location, env: Mapping[str, str]) -> float | None:
    """The PUE given (flag, else ``GREENDIFF_PUE``), None when none was: a provider's figure is not stored."""
    return flag_pue if flag_pue is not None else (resolve_pue(None, location, env).value if env.get(ENV_PUE) else None)


def _from_flags(options: MeasurementOptions, run: Path | None, env: Mapping[str, str]) -> _Where:
    """Flags over the environment, field by field (as always); a note when the machine's environment prices
    a run elsewhere than where the run was priced."""
    location = resolve_location(options.country, options.cloud, options.grid, env)
    pue = _number(PUE, options.pue, "--pue")
    stored = RunLocation(location.country, location.cloud, _storable_grid(location.grid),
                         _explicit_pue(pue, location, env), options.live, options.zone)
    return _Where(location, pue, options.live, options.zone, stored, _elsewhere_note(options, run, location, stored, env))


def _elsewhere_note(options: MeasurementOptions, run: Path | None, location: Location, stored: RunLocation,
                    env: Mapping[str, str]) -> str:
    """The note when flags or the machine's environment price a job on a run elsewhere than the run's stored
    location ("" when the run has none, or it is the same place)."""
    kept = _quietly(run) if run is not None else None
    if kept is None or not kept.known or not (options.place_given or location.is_known):
        return ""
    if (kept.country, kept.cloud, kept.grid, kept.zone) == (stored.country, stored.cloud, stored.grid, stored.zone):
        return ""
    was = _priced_at(Location(kept.country, kept.cloud, kept.grid), kept.zone)
    if options.place_given:
        return f"priced at {_priced_at(location, options.zone)} (from your flags); the run was trained at {was}"
    names = ", ".join(v for v in _PLACE_ENV if env.get(v))
    return f"priced at {_priced_at(location)} from {names} (this machine), not at the run's location {was}"


def _from_run(options: MeasurementOptions, run: Path, kept: RunLocation, env: Mapping[str, str]) -> _Where:
    """The run's stored location, with its PUE unless ``--pue`` or ``GREENDIFF_PUE`` gives one."""
    path = run / LOCATION_FILE
    try:
        location = resolve_location(kept.country, kept.cloud, kept.grid, env={})
    except UserInputError as exc:
        raise _bad_location(path, str(exc)) from None
    flag_pue = _number(PUE, options.pue, "--pue")
    inherit_pue = flag_pue is None and not env.get(ENV_PUE) and kept.pue is not None
    pue = kept.pue if inherit_pue else flag_pue
    if inherit_pue:
        try:
            resolve_pue(pue, location, env={})
        except UserInputError as exc:
            raise _bad_location(path, str(exc)) from None
    stored = RunLocation(kept.country, kept.cloud, kept.grid, kept.pue if inherit_pue else _explicit_pue(flag_pue, location, env),
                         kept.live, kept.zone)
    extra = (f", PUE {kept.pue:g}" if inherit_pue else "") + (f", live {kept.live}" if kept.live != "none" else "")
    note = (f"priced at {_priced_at(location, kept.zone)}{extra}, the run's location ({display_path(path)}); give --country, "
            "--cloud or --grid to price elsewhere")
    return _Where(location, pue, kept.live, kept.zone, stored, note, path,
                  f"the run's location ({display_path(path)})" if inherit_pue else None)


def _quietly(run: Path) -> RunLocation | None:
    """The run's stored location for a note only: None when it has none or it is unreadable."""
    try:
        return RunLocation.read(run)
    except UserInputError:
        return None


def _storable_grid(grid: str | None) -> str | None:
    """A bundled grid's name as it is, a grid file as an absolute path (found again from any folder)."""
    if grid is None or grid.upper() in BUNDLED_GRIDS:
        return grid
    return os.path.abspath(grid)


def _where(options: MeasurementOptions, run: Path | None, env: Mapping[str, str]) -> _Where:
    """Flags > the machine's environment > the run's stored location > the world average (the one place
    this is decided)."""
    if run is None or options.place_given or any(env.get(v) for v in _PLACE_ENV):
        return _from_flags(options, run, env)
    kept = RunLocation.read(run)
    if kept is None or not kept.known:
        return _from_flags(options, run, env)
    return _from_run(options, run, kept, env)


def resolve_settings(options: MeasurementOptions, run: Path | None = None,
                     env: Mapping[str, str] | None = None) -> MeasureSettings:
    """Check ``options`` (one-line :class:`UserInputError`) and open the ledger, before any work starts.

    Args:
        options: the measurement options as given.
        run: the run directory the job works on (a resumed run, the run sampled, scored, pruned, the teacher):
            when no flag names a place and the environment (``env``) names none, the job is priced at the
            run's stored location (:class:`RunLocation`), and ``note`` says so.
        env: the environment (default ``os.environ``).
    """
    env = os.environ if env is None else env
    gpu_indices = None
    if options.gpus is not None:
        try:
            gpu_indices = tuple(GPU_INDEX.parse(g.strip(), "--gpus") for g in options.gpus.split(",") if g.strip())
        except UserInputError as exc:
            raise UserInputError(f"--gpus must be comma-separated GPU indices (0, 1, ...), got {shown(options.gpus)}"
                                 + (" (too many digits)" if "too many digits" in str(exc) else "")) from None
    where = _where(options, run, env)
    try:  # an unknown country, region, grid or bad trace fails here (a stored one named as the run's file)
        provider = resolve_provider(where.location, where.live, where.zone, env=env)
    except UserInputError as exc:
        if where.kept_in is None:
            raise
        raise _bad_location(where.kept_in, str(exc)) from None
    resolve_pue(where.pue, where.location, {} if where.pue_source else env)  # a PUE below 1 (flag or environment)
    return MeasureSettings(
        location=where.location, pue=where.pue, live=where.live, zone=where.zone,
        monitor=MonitorOptions(gpu_indices=gpu_indices, measure_gpus=not options.no_gpu,
                               cpu_watts=_number(CPU_WATTS, options.cpu_watts, "--cpu-watts")),
        ledger=Ledger(options.ledger), provider=provider, stored=where.stored, note=where.note,
        pue_source=where.pue_source,
    )
