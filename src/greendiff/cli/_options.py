"""Options shared by every command that measures, resolved once into a Tracker's arguments; and the
option kinds every command declares its numbers and names with (:func:`number_option`,
:func:`name_option`), so a flag is read by one grammar and one range check before the command runs."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from greendiff import numbers
from greendiff.errors import UserInputError
from greendiff.names import check_name
from greendiff.workflows._fields import REPORTS, STARTUP_TRIALS, TRIAL_BUDGET_KWH, WORKERS  # noqa: F401 (tune's flags)
from greendiff.numbers import Bounds
from greendiff.workflows import CPU_WATTS, GPU_INDEX, PUE, MeasurementOptions
from greendiff.workflows._compress_session import BATCH, EVAL_IMAGES0, RATIO, ROUNDS, TEACHER_STEPS, THRESHOLD
from greendiff.workflows._fields import (
    CLASS_ID, EVAL_IMAGES, GUIDANCE, IMAGES, KID_SUBSET, PROCESSES, SAMPLER_STEPS, SAMPLER_STEPS0, SEEDS,
)
from greendiff.workflows._inputs import check_output

__all__ = ["CPU_WATTS", "GPU_INDEX", "PUE", "check_output"]  # re-exported for the commands

# typer >= 0.20 vendors click; a flag's parser raises its UsageError, which passes through typer's
# validation untouched and is printed by the CLI as one line (a ValueError would be reworded). The one
# lookup of that class: cli._app catches it too.
_UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


class FlagError(_UsageError):
    """A flag whose value is refused by its parser; the message names the flag."""


def _parser(flag: str, check, keep_text: bool):
    def parse(value: Any) -> Any:
        if not isinstance(value, str):  # a default value, already of its type
            return value
        try:
            checked = check(value, flag)
        except UserInputError as exc:
            raise FlagError(str(exc)) from None
        return value if keep_text else checked
    return parse


def number_option(*flags: str, bounds: Bounds, help: str, keep_text: bool = False, **kwargs) -> Any:
    """A typer option whose value is read by :meth:`Bounds.parse`: ASCII digits, finite, in range; refused
    with one line naming the flag. ``keep_text``: the command receives the checked text (for options it
    parses again itself), else the number."""
    metavar = "INTEGER" if bounds.integer else "NUMBER"
    return typer.Option(*flags, parser=_parser(flags[0], bounds.parse, keep_text), metavar=metavar, help=help, **kwargs)


def number_argument(label: str, bounds: Bounds, help: str, **kwargs) -> Any:
    """A positional argument read like :func:`number_option` (``label``: how messages call it)."""
    metavar = label.upper().replace("-", "_")
    return typer.Argument(parser=_parser(label, bounds.parse, False), metavar=metavar, help=help, **kwargs)


def name_option(*flags: str, help: str, path: bool = True, **kwargs) -> Any:
    """A typer option holding a name (:func:`greendiff.names.check_name`): one folder name when ``path``
    (runs, studies), else a label that prints on one line (a ledger run's name)."""
    return typer.Option(*flags, parser=_parser(flags[0], lambda v, f: check_name(v, f, path=path), True),
                        metavar="NAME", help=help, **kwargs)


def _class_list(value: str, flag: str) -> str:
    """``--class`` text (``7`` or ``0,3,7``) checked: each id read by the number grammar (:data:`CLASS_ID`)."""
    for piece in value.split(","):
        CLASS_ID.parse(piece, flag)
    return value


def class_option(*flags: str, help: str, **kwargs) -> Any:
    """A repeatable option of class ids, each occurrence one id or a comma-separated list (``--class 0,3``);
    the command receives the checked texts (:func:`class_ids` reads them)."""
    return typer.Option(*flags, parser=_parser(flags[0], _class_list, True), metavar="IDS", help=help, **kwargs)


def class_ids(values: list[str] | None) -> tuple[int, ...]:
    """The ids of a :func:`class_option`'s values, in order (``["0,3", "7"]`` -> ``(0, 3, 7)``)."""
    return tuple(CLASS_ID.parse(piece, "--class") for value in values or () for piece in value.split(","))


# -- number kinds: each a quantity's accepted range (a job's own, e.g. IMAGES, are greendiff.workflows') ------
INT = Bounds(integer=True)  #: a trainer config key's flag: read here, its range checked by the config key's
FLOAT = Bounds()  #: likewise, for a float key
SEED, COUNT, COUNT0, RUN_ID = numbers.SEED, numbers.COUNT, numbers.COUNT0, numbers.ROW_ID
ENERGY_KWH = dataclasses.replace(numbers.ENERGY_KWH, lo_open=True)  #: a job's energy: positive
ENERGY0_KWH = dataclasses.replace(numbers.ENERGY_KWH, phrase=f"a positive number or 0, at most {numbers.MAX_ENERGY_KWH:g}")
YEAR_HOURS = numbers.YEAR_HOURS
ROWS = Bounds(integer=True, lo=1, hi=100_000)  #: rows of a table or trials of a study
#: measure's ledger samples: more often than every 50 ms would flood a shared ledger with writes
SAMPLE_INTERVAL = Bounds(lo=0.05, hi=86_400, why="a sample at least once a day")
DEMO_SECONDS = Bounds(lo=0, lo_open=True, hi=3600, phrase="in (0, 3600]")
HARDWARE_STEPS = dataclasses.replace(COUNT, phrase=f"positive, at most {numbers.MAX_COUNT}")
SLOWDOWN = Bounds(lo=0, hi=10, hi_open=True, phrase="a fraction >= 0 (0.1 = 10 %), below 10")
TRIAL_NUMBER = COUNT0
WORKER_SLOT = dataclasses.replace(WORKERS, lo=0, phrase=">= 0 and at most 256")  #: --worker N: the N-th of --workers (0: none)

MEASUREMENT_PANEL = "Measurement"  #: the --help panel of the options every measuring command shares
_panel = {"rich_help_panel": MEASUREMENT_PANEL}
Country = Annotated[Optional[str], typer.Option("--country", metavar="ISO3", help="Country of the hardware, e.g. FRA (env GREENDIFF_COUNTRY).", **_panel)]
Cloud = Annotated[Optional[str], typer.Option("--cloud", metavar="P:R", help="Cloud provider:region, e.g. gcp:europe-west1 (env GREENDIFF_CLOUD).", **_panel)]
Grid = Annotated[Optional[str], typer.Option("--grid", metavar="GRID", help="US grid (CISO, PJM...) or a time,intensity CSV (env GREENDIFF_GRID).", **_panel)]
PueOpt = Annotated[Optional[str], number_option("--pue", bounds=PUE, keep_text=True, help="Data-centre PUE >= 1 (default: the provider's, or 1.0).", **_panel)]
Live = Annotated[str, typer.Option("--live", metavar="API", help="Live intensity API: none, uk, electricitymaps.", **_panel)]
Zone = Annotated[Optional[str], typer.Option("--zone", metavar="ZONE", help="Electricity Maps zone key, e.g. FR.", **_panel)]
CpuWatts = Annotated[Optional[str], number_option("--cpu-watts", bounds=CPU_WATTS, keep_text=True, help="CPU package power at full load in W (over TDP table, RAPL).", **_panel)]
Gpus = Annotated[Optional[str], typer.Option("--gpus", metavar="IDS", help="GPU indices to meter, e.g. 0,2 (default: all visible).", **_panel)]
NoGpu = Annotated[bool, typer.Option("--no-gpu", metavar="", help="Do not meter GPUs.", **_panel)]
LedgerPath = Annotated[Optional[Path], typer.Option("--ledger", metavar="FILE", help="Ledger database file (env GREENDIFF_LEDGER).", **_panel)]


#: The measurement options every measuring command takes, in the order --help lists them: (name, type, default).
MEASUREMENT_PARAMETERS = (("country", Country, None), ("cloud", Cloud, None), ("grid", Grid, None), ("pue", PueOpt, None),
                          ("live", Live, "none"), ("zone", Zone, None), ("cpu_watts", CpuWatts, None),
                          ("gpus", Gpus, None), ("no_gpu", NoGpu, False), ("ledger", LedgerPath, None))


def with_measurement(command):
    """A typer command taking the shared measurement options: its ``measurement: MeasurementOptions`` parameter
    becomes ``--country --cloud --grid --pue --live --zone --cpu-watts --gpus --no-gpu --ledger`` on the
    command line, and the command receives them as one :class:`~greendiff.workflows.MeasurementOptions`.

    Example::

        @with_measurement
        def eval_command(run: Annotated[Path, Opt("--run")], measurement: MeasurementOptions) -> None: ...
    """
    signature = inspect.signature(command, eval_str=True)
    parameters = []
    for p in signature.parameters.values():
        if p.name != "measurement":
            parameters.append(p)
            continue
        parameters += [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=kind)
                       for name, kind, default in MEASUREMENT_PARAMETERS]

    @functools.wraps(command)
    def call(*args, **kwargs):
        given = {name: kwargs.pop(name) for name, _, _ in MEASUREMENT_PARAMETERS if name in kwargs}
        return command(*args, measurement=MeasurementOptions(**given), **kwargs)

    call.__signature__ = signature.replace(parameters=parameters)
    call.__annotations__ = {p.name: p.annotation for p in parameters}
    return call


def parse_sets(sets: list[str]) -> dict[str, str]:
    """``--set KEY=VALUE`` (repeatable) as dotted config keys."""
    out = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserInputError(f"--set expects KEY=VALUE (e.g. optim.snr_gamma=3), got {item!r}")
        out[key.strip()] = value.strip()
    return out



def renamed(new: tuple[str, Any], old: tuple[str, Any], default: Any) -> Any:
    """The value of a renamed flag given as ``(flag, value)`` under its ``new`` name and its ``old`` name (a
    hidden option kept as an alias, declared with default None): the new name's value, else the old's, else
    ``default``; both given: a one-line :class:`UserInputError`.

    Example:
        >>> renamed(("--output", None), ("--out", "grid.png"), "samples.png")
        'grid.png'
    """
    (new_flag, new_value), (old_flag, old_value) = new, old
    if new_value is not None and old_value is not None:
        raise UserInputError(f"{old_flag} is the old name of {new_flag}: give one of them")
    if new_value is not None:
        return new_value
    return default if old_value is None else old_value


def with_default(help: str, default: Any) -> str:
    """``help`` ending in ``[default: DEFAULT]`` as typer shows a default, for an option whose declared default
    is None because another layer decides it (the recipe, the run, a renamed flag's old name)."""
    return f"{help} [dim]\\[default: {default}][/dim]"


def run_option(flag: str, help: str, **kwargs) -> Any:
    """An option naming a finished run (``--run``, ``--teacher``, ``--resume``): a run directory or a ledger id,
    read by :func:`run_directory`."""
    return typer.Option(flag, metavar="RUN", help=help, **kwargs)


def run_directory(ref: str, ledger: Path | None) -> Path:
    """The run directory a :func:`run_option` names (:func:`greendiff.train.resolve_run_dir`, the one resolver):
    the directory itself, or the one ledger run ``ref`` of ``ledger`` (None: GREENDIFF_LEDGER or the default)
    records; a one-line error when it has none, or when ``ref`` is both an id and a folder here."""
    from greendiff.train import resolve_run_dir  # torch: once a command runs, not for --help

    return resolve_run_dir(ref, ledger)


def switch(flag: str, on: bool, off: bool) -> bool | None:
    """A switch given as ``--x`` (True) or ``--no-x`` (False), or neither (None: the config decides); both: a
    one-line error. (``--no-x`` is a hidden option of its own, so ``--help`` keeps one column of flag names.)"""
    if on and off:
        raise UserInputError(f"give {flag} or --no-{flag[2:]}, not both")
    return True if on else False if off else None
