"""A run directory's bookkeeping, in one place: its name, its creation, its lock, ``config.toml``,
``emissions.json`` and the experiment loggers that follow it."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from greendiff.errors import UserInputError
from greendiff.files import atomic_write_text
from greendiff.names import check_name, display_path
from greendiff.tracking import RunSummary
from greendiff.units import joules_to_kwh

if TYPE_CHECKING:
    from greendiff.workflows._measurement import RunLocation

logger = logging.getLogger(__name__)


def new_run_name(config, file: Path | None) -> str:
    """The name a new run's directory is made from: ``run.name`` (checked, one folder name), else
    ``recipe-preset``. ``file``: the config file ``run.name`` came from, named in the error. A saved
    config's name is never checked again (an older run's name stays usable)."""
    if not config.run.name:
        return f"{config.recipe}-{config.model.preset}"
    try:
        return check_name(config.run.name, "run.name")
    except UserInputError as exc:
        raise UserInputError(f"{display_path(file)}: {exc}" if file is not None else str(exc)) from None


def new_run_dir(output_dir: str | Path, name: str) -> Path:
    """``output_dir/<UTC stamp>-<name>``, made now; ``name`` is checked first (nothing is made for a bad one)."""
    check_name(name, "run name")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    run_dir = Path(output_dir) / f"{stamp}-{name}"
    try:
        run_dir.mkdir(parents=True, exist_ok=False)
    except FileExistsError:
        raise UserInputError(f"run directory {display_path(run_dir)} already exists; wait a second or set --name") from None
    except OSError as exc:
        raise UserInputError(f"cannot create run directory {display_path(run_dir)}: {exc.strerror}") from None
    return run_dir


def write_file(path: Path, text: str) -> None:
    """A file of a run directory, written atomically; a failed write is one line."""
    try:
        atomic_write_text(path, text)
    except OSError as exc:
        raise UserInputError(f"cannot write {display_path(path)}: {exc.strerror or exc}") from None


def write_config(run_dir: Path, config) -> Path:
    """The one writer of a run directory's ``config.toml`` (the resolved config, which resumes the run)."""
    from greendiff.train import to_toml

    path = run_dir / "config.toml"
    write_file(path, to_toml(config))
    return path


def write_location(run_dir: Path, location: RunLocation) -> Path | None:
    """``location.toml``: where the run's energy is priced, written once (when the run is made, or by the first
    job that knows a location for a run made before locations were kept); jobs on the run inherit it
    (:func:`~greendiff.workflows.resolve_settings`). Nothing is written for an unknown location, or a grid
    path that is not valid text (a warning). The file, or None when none was written."""
    from greendiff.workflows._measurement import LOCATION_FILE

    path = run_dir / LOCATION_FILE
    if not location.known or path.exists() or path.is_symlink():
        return None
    try:
        text = location.to_toml()
        text.encode("utf-8")
    except (UnicodeEncodeError, TypeError, ValueError) as exc:
        logger.warning("the run's location is not kept in %s (%s): give the location flags again on later jobs",
                       display_path(path), exc)
        return None
    write_file(path, text)
    return path


@contextlib.contextmanager
def removed_unless_made(run_dir: Path) -> Iterator[Path]:
    """A new run directory whose ``config.toml`` is written inside the block: if the block ends by an
    exception (an error, Ctrl-C, a broken pipe) before that, the directory is removed with what it holds, so
    no half-made run (a folder of a ``location.toml`` alone) is left behind."""
    import shutil

    try:
        yield run_dir
    except BaseException:
        if not (run_dir / "config.toml").exists():
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


@contextlib.contextmanager
def claimed_run_dir(config, resume: Path | None, name: str, dist, location: RunLocation | None = None) -> Iterator[Path]:
    """The run's directory, held by the main process (:class:`greendiff.train.RunDirLock`) until the block
    ends: a resumed one is locked before anything in it is touched (its checkpoints tidied, its ledger row),
    a new one as soon as it is made; then ``config.toml`` is written, and ``location`` (where the run is
    priced: :func:`write_location`, once). Every process of a job gets the directory, or the same one-line
    error (none is left waiting for the others)."""
    from greendiff.train import RunDirLock

    with contextlib.ExitStack() as held:
        run_dir, problem = None, None
        if dist.is_main:  # one run directory for the job, made by rank 0 and told to the others
            try:
                run_dir = resume if resume is not None else new_run_dir(config.run.output_dir, name)
                held.enter_context(RunDirLock(run_dir))
                write_config(run_dir, config)
                if location is not None:
                    write_location(run_dir, location)
            except OSError as exc:  # the lock file
                problem = UserInputError(f"cannot write {display_path(run_dir / 'config.toml')}: {exc.strerror or exc}")
            except UserInputError as exc:
                problem = exc
        told, why = dist.broadcast((str(run_dir) if run_dir is not None else None, str(problem) if problem else None))
        if problem is not None:
            raise problem
        if why is not None:
            raise UserInputError(why)
        yield Path(told)


def write_emissions(run_dir: Path, summary: RunSummary, prior_energy_j: float, ledger=None) -> Path:
    """``emissions.json``: this segment's summary, plus the ledger ids and energy of the whole run. Written
    atomically; ``ledger`` (default: the default one) rebuilds an unreadable earlier file's list of runs."""
    path = run_dir / "emissions.json"
    record = {**summary.to_dict(), "ledger_run_ids": [*_earlier_segments(path, summary.run_id, ledger), summary.run_id],
              "run_total_energy_kwh": joules_to_kwh(prior_energy_j) + summary.energy_kwh,
              "run_total_note": "earlier segments (resumed runs) counted from the checkpoint's energy; "
                                "their CO2e is in the ledger runs listed"}
    atomic_write_text(path, json.dumps(record, indent=2))
    return path


def _earlier_segments(path: Path, run_id: int, ledger) -> list[int]:
    """The ledger ids of the run's earlier segments: from ``emissions.json`` or, when that is unreadable
    (cut off, garbage, another shape), from the ledger's runs of this run directory, with a warning."""
    from greendiff.ledger import BadRecordError, Ledger
    from greendiff.train import read_emissions_json

    if not path.exists():
        return []
    try:
        return list(read_emissions_json(path).ledger_run_ids)
    except BadRecordError as exc:
        problem = str(exc)
    here = str(path.parent.resolve())
    ids = sorted(r.id for r in (ledger or Ledger()).list_runs() if r.assumptions.get("run_dir") == here and r.id < run_id)
    logger.warning("%s; its list of the run's ledger runs is rebuilt from the ledger (%s)", problem,
                   ", ".join(map(str, ids)) or "none earlier")
    return ids


def open_loggers(config, run_dir: Path, remove_on_error: Path | None) -> list:
    """The experiment trackers of ``run.log_to``, with the config as parameters. If one cannot be opened,
    the new run directory (``remove_on_error``, nothing trained in it yet) is removed with the error."""
    if not config.run.log_to:
        return []
    import shutil

    from greendiff.integrations import make_loggers
    from greendiff.report import flatten
    from greendiff.train import to_dict

    try:
        return make_loggers(config.run.log_to, run_dir, config.run.mlflow_uri, flatten(to_dict(config)))
    except UserInputError:
        if remove_on_error is not None:
            shutil.rmtree(remove_on_error, ignore_errors=True)
        raise
