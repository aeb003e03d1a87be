"""One tolerant parser per kind of ledger record: shape and types checked, a typed result or a named error.

A ledger is shared: other tools, older greendiff versions and hand edits write into it. Every reader
goes through these functions, so a bad row never reaches a renderer as a crash:

- :func:`parse_run` turns a ``runs`` row into a :class:`RunRecord`. A row that cannot be shown at all
  (no valid start time, an unknown status, a missing name) raises :class:`BadRecordError` naming the
  run id; damage a reader can work around (an unreadable summary, assumptions or device list) is kept
  in ``RunRecord.problems`` and the field is dropped, so the run is re-priced from its samples.
- :func:`parse_sample` and :func:`parse_window` check one ``samples`` / ``windows`` row.
- :func:`parse_summary` checks a stored run summary (the dict every renderer and export reads).

Numbers must be finite: SQLite and Python's ``json`` both accept ``Infinity`` and ``NaN``, which
would otherwise reach the tables and charts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from greendiff.carbon import LATEST_SUPPORTED
from greendiff.errors import UserInputError
from greendiff.names import first_line

STATUSES = ("running", "completed", "failed", "interrupted", "diverged")
#: The last Unix second greendiff accounts in (2200-01-01, the limit of the carbon layer).
_MAX_UNIX_S = LATEST_SUPPORTED.timestamp()


class BadRecordError(UserInputError):
    """A ledger row or run-directory file that cannot be read; the message names the row or file."""


@dataclass(frozen=True)
class RunRecord:
    """One row of ``runs``, decoded. ``status`` is the effective status (a dead writer is interrupted).

    ``problems`` lists what was wrong with the row but could be worked around (for example an
    unreadable stored summary, dropped so that the run is re-priced from its samples)."""

    id: int
    name: str
    kind: str
    status: str
    started_unix_s: float
    ended_unix_s: float | None
    heartbeat_unix_s: float
    host: str
    pid: int
    command: str
    exit_code: int | None
    assumptions: dict
    devices: list[dict]
    summary: dict | None
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class Sample:
    unix_s: float
    cpu_time_s: float
    energy_j: dict[str, float]


@dataclass(frozen=True)
class WindowTotal:
    """All windows of one name (a phase): how many, how long, how many joules per device."""

    name: str
    count: int
    duration_s: float
    energy_j: dict[str, float]


# -- shape checks ----------------------------------------------------------------------------------

class _Shape(ValueError):
    """A value that does not have the expected shape; the message says where and what."""


NUMBER = "number"  # a finite int or float (not a bool)


@dataclass(frozen=True)
class Opt:
    """An optional key of an object spec (absent or ``None`` is fine)."""

    spec: object


@dataclass(frozen=True)
class ListOf:
    spec: object
    min_len: int = 0


@dataclass(frozen=True)
class DictOf:
    """A JSON object whose values all follow ``spec`` (keys are strings)."""

    spec: object = field(default=None)


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check(value: object, spec: object, where: str) -> None:
    """Raise :class:`_Shape` naming ``where`` unless ``value`` follows ``spec``.

    A spec is :data:`NUMBER`, a type (``str``, ``int``, ``dict`` for any object), a tuple of specs
    (any one), ``None`` (JSON null), a :class:`ListOf`, a :class:`DictOf`, or a dict of key specs
    (an object with those keys; :class:`Opt` marks optional ones; other keys are allowed).
    """
    if isinstance(spec, tuple):
        errors = []
        for option in spec:
            try:
                return check(value, option, where)
            except _Shape as exc:
                errors.append(str(exc))
        raise _Shape(errors[0])
    if spec is None:
        if value is not None:
            raise _Shape(f"{where} should be null")
    elif spec == NUMBER:
        if not is_number(value):
            raise _Shape(f"{where} should be a finite number, got {_show(value)}")
    elif isinstance(spec, type):
        if not isinstance(value, spec) or (spec is int and isinstance(value, bool)):
            raise _Shape(f"{where} should be {_TYPE_NAMES.get(spec, spec.__name__)}, got {_show(value)}")
    elif isinstance(spec, ListOf):
        if not isinstance(value, list) or len(value) < spec.min_len:
            raise _Shape(f"{where} should be a list, got {_show(value)}")
        for i, item in enumerate(value):
            check(item, spec.spec, f"{where}[{i}]")
    elif isinstance(spec, DictOf):
        if not isinstance(value, dict):
            raise _Shape(f"{where} should be an object, got {_show(value)}")
        if spec.spec is not None:
            for key, item in value.items():
                check(item, spec.spec, f"{where}.{key}")
    elif isinstance(spec, Mapping):
        if not isinstance(value, dict):
            raise _Shape(f"{where} should be an object, got {_show(value)}")
        for key, sub in spec.items():
            if isinstance(sub, Opt):
                if value.get(key) is not None:
                    check(value[key], sub.spec, f"{where}.{key}")
            elif key not in value:
                raise _Shape(f"{where} lacks {key!r}")
            else:
                check(value[key], sub, f"{where}.{key}")
    else:  # pragma: no cover - a spec bug
        raise TypeError(f"bad spec {spec!r}")


_TYPE_NAMES = {str: "text", int: "an integer", dict: "an object", list: "a list", float: "a number"}


def _show(value: object) -> str:
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def load_json(text: object, where: str) -> object:
    """Parse a JSON column or file body; :class:`_Shape` naming ``where`` if it is not JSON."""
    if isinstance(text, bytes):
        try:
            text = text.decode()
        except UnicodeDecodeError:
            raise _Shape(f"{where} is not UTF-8 text") from None
    if not isinstance(text, str):
        raise _Shape(f"{where} is {'NULL' if text is None else type(text).__name__}, not JSON text")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise _Shape(f"{where} is not valid JSON ({first_line(exc)})") from None


def _timestamp(value: object, where: str) -> float:
    if not is_number(value) or not 0 <= value <= _MAX_UNIX_S:
        raise _Shape(f"{where} should be a Unix time, got {_show(value)}")
    return float(value)


# -- records ---------------------------------------------------------------------------------------

DEVICE = {"key": str, "kind": str, "name": str, "method": str, "scope": str, "uncertainty_frac": NUMBER, "note": Opt(str)}
_ENERGY = DictOf(NUMBER)

_SUMMARY_DEVICE = {**DEVICE, "energy_j": NUMBER, "energy_kwh": NUMBER, "emissions_g": NUMBER}
_PHASE = {"name": str, "count": int, "duration_s": NUMBER, "energy_j": NUMBER, "emissions_g": NUMBER,
          "energy_by_device_j": Opt(_ENERGY)}
_INTENSITY = {"source": str, "kind": str, "year": Opt(int), "mean_g_per_kwh": NUMBER, "notes": ListOf(str),
              "fallback": Opt(str), "resolution": Opt(str)}
_CARBON_AWARE = {"policy": str, "pauses": int, "waited_h": NUMBER, "active_h": NUMBER, "emissions_g": NUMBER,
                 "straight_through_g": NUMBER, "saved_g": NUMBER, "saved_frac": NUMBER, "deadline": (str, None),
                 "met_deadline": (bool, None)}
SUMMARY = {
    "run_id": int, "name": str, "kind": str, "status": str, "command": Opt(str), "started": (str, None),
    "ended": (str, None), "duration_s": NUMBER, "cpu_time_s": NUMBER, "energy_j": NUMBER, "energy_kwh": NUMBER,
    "energy_kwh_low": NUMBER, "energy_kwh_high": NUMBER, "emissions_kg": NUMBER, "emissions_kg_low": NUMBER,
    "emissions_kg_high": NUMBER, "devices": ListOf(_SUMMARY_DEVICE), "phases": ListOf(_PHASE),
    "location": Opt({"country": Opt(str), "cloud": Opt(str), "grid": Opt(str)}), "host": Opt(dict),
    "intensity": _INTENSITY, "pue": {"value": NUMBER, "source": str}, "methods": ListOf(str), "notes": ListOf(str),
    "carbon_aware": Opt(_CARBON_AWARE),
}


def parse_summary(value: object, where: str = "summary") -> dict:
    """A stored run summary whose every field a renderer or export reads has the right type.

    Raises:
        BadRecordError: naming ``where`` and the first field that is wrong.
    """
    try:
        check(value, SUMMARY, where)
    except _Shape as exc:
        raise BadRecordError(str(exc)) from None
    return value  # type: ignore[return-value]


def parse_carbon_aware(value: object, where: str = "carbon_aware") -> dict:
    """The carbon-aware books of a run (``summary.carbon_aware``), checked; :class:`BadRecordError` naming ``where``."""
    try:
        check(value, _CARBON_AWARE, where)
    except _Shape as exc:
        raise BadRecordError(str(exc)) from None
    return value  # type: ignore[return-value]


def _text(value: object, where: str, default: str | None = None) -> str:
    if isinstance(value, str):
        return value
    if value is None and default is not None:
        return default
    raise _Shape(f"{where} should be text, got {'NULL' if value is None else _show(value)}")


def _device_list(value: object, problems: list[str]) -> list[dict]:
    """The valid entries of ``devices_json``; the others are dropped with a problem noted."""
    try:
        devices = load_json(value, "devices_json")
        check(devices, list, "devices_json")
    except _Shape as exc:
        problems.append(f"{exc}; its devices are unknown")
        return []
    kept = []
    for i, device in enumerate(devices):
        try:
            check(device, DEVICE, f"devices_json[{i}]")
            kept.append(device)
        except _Shape as exc:
            problems.append(f"{exc}; that device's energy is not counted")
    return kept


def _json_object(value: object, column: str, what_then: str, problems: list[str], required: bool) -> dict | None:
    """A JSON-object column; ``None`` (with a problem noted unless it may be NULL) when it is not one."""
    try:
        obj = None if value is None else load_json(value, column)
        if obj is None:
            if required:
                raise _Shape(f"{column} is NULL")
            return None
        check(obj, dict, column)
        return obj
    except _Shape as exc:
        problems.append(f"{exc}; {what_then}")
        return None


def parse_run(row: tuple) -> RunRecord:
    """A ``runs`` row (columns as :data:`RUN_COLUMNS`) as a :class:`RunRecord`, or :class:`BadRecordError`
    naming the run id. The effective status of a ``running`` row is decided by the caller."""
    (id_, name, kind, status, started, ended, heartbeat, host, pid, command, exit_code,
     assumptions, devices, summary) = row
    problems: list[str] = []
    try:
        if status not in STATUSES:
            raise _Shape(f"unknown status {_show(status)} (expected one of {', '.join(STATUSES)})")
        started_s = _timestamp(started, "started_unix_s")
        ended_s = None if ended is None else _timestamp(ended, "ended_unix_s")
        heartbeat_s = started_s if heartbeat is None else _timestamp(heartbeat, "heartbeat_unix_s")
        record_name, record_kind = _text(name, "name"), _text(kind, "kind")
        record_host, record_command = _text(host, "host", ""), _text(command, "command", "")
        if pid is not None and not isinstance(pid, int):
            raise _Shape(f"pid should be an integer, got {_show(pid)}")
        if exit_code is not None and not isinstance(exit_code, int):
            problems.append(f"exit_code {_show(exit_code)} is not an integer; shown as unknown")
            exit_code = None
    except _Shape as exc:
        raise BadRecordError(f"ledger run {id_}: {exc}") from None
    assumptions_obj = _json_object(assumptions, "assumptions_json", "priced as an unknown location", problems, True)
    summary_obj = _json_object(summary, "summary_json", "re-priced from its samples", problems, False)
    if summary_obj is not None:
        try:
            summary_obj = parse_summary(summary_obj, "summary_json")
        except BadRecordError as exc:
            problems.append(f"{exc}; re-priced from its samples")
            summary_obj = None
    return RunRecord(id_, record_name, record_kind, status, started_s, ended_s, heartbeat_s, record_host,
                     pid if pid is not None else 0, record_command, exit_code, assumptions_obj or {},
                     _device_list(devices, problems), summary_obj, tuple(problems))


def parse_sample(row: tuple) -> Sample:
    """A ``samples`` row ``(unix_s, cpu_time_s, energy_json)``; :class:`_Shape` if it is unusable."""
    unix_s, cpu_time_s, energy = row
    energy_j = load_json(energy, "energy_json")
    check(energy_j, _ENERGY, "energy_json")
    if not is_number(cpu_time_s):
        raise _Shape(f"cpu_time_s should be a finite number, got {_show(cpu_time_s)}")
    return Sample(_timestamp(unix_s, "unix_s"), float(cpu_time_s), {k: float(v) for k, v in energy_j.items()})


def parse_window(row: tuple) -> WindowTotal:
    """A ``windows`` row ``(name, count, duration_s, energy_json)``; :class:`_Shape` if it is unusable."""
    name, count, duration_s, energy = row
    check(name, str, "name")
    check(count, int, "count")
    check(duration_s, NUMBER, "duration_s")
    energy_j = load_json(energy, "energy_json")
    check(energy_j, _ENERGY, "energy_json")
    return WindowTotal(name, count, float(duration_s), {k: float(v) for k, v in energy_j.items()})


RecordShapeError = _Shape


def load_json_file(path) -> object:
    """A JSON file's content, or :class:`BadRecordError` naming the file (unreadable, not UTF-8, not JSON)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BadRecordError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        return load_json(data, str(path))
    except _Shape as exc:
        raise BadRecordError(str(exc)) from None
