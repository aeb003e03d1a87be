"""A job's fields checked when it is made, the way the CLI checks its flags: a wrong type is a ``TypeError``
naming the field and the type it takes (a ``str`` is taken where a ``Path`` is, and converted); a number out
of range is the CLI's own one-line :class:`~greendiff.errors.UserInputError` (the same :class:`Bounds`, the
flag named), so a job from Python fails before any ledger row or file exists, as ``greendiff`` does.

Example:
    >>> IMAGES.parse("64", "--samples")
    64
    >>> checked_int(0, IMAGES, "SampleJob.n", "--samples")
    Traceback (most recent call last):
    ...
    greendiff.errors.UserInputError: --samples must be a positive integer up to 100000, got 0
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from greendiff.numbers import ENERGY_KWH, Bounds

#: The ranges of the numbers a job takes (the CLI's flags read theirs with the same ones).
PROCESSES = Bounds(integer=True, lo=1, hi=1024, phrase="a positive number of processes, at most 1024")
IMAGES = Bounds(integer=True, lo=1, hi=100_000)  #: images a command generates
EVAL_IMAGES = Bounds(integer=True, lo=4, hi=1_000_000)
SAMPLER_STEPS = Bounds(integer=True, lo=1, hi=100_000)
SAMPLER_STEPS0 = Bounds(integer=True, lo=0, hi=100_000)  #: 0: the run's own
CLASS_ID = Bounds(integer=True, lo=0, hi=100_000, phrase="a class id: an integer from 0")
GUIDANCE = Bounds(lo=0, hi=100, phrase="a finite number >= 0 and at most 100 (1: the conditional model alone)")
SEEDS = Bounds(integer=True, lo=1, hi=100)  #: seeds whose spread is reported
KID_SUBSET = Bounds(integer=True, lo=2, hi=1_000_000)
TRIALS = Bounds(integer=True, lo=1, hi=100_000)  #: trials of a study
WORKERS = Bounds(integer=True, lo=1, hi=256, phrase=">= 1 and at most 256")
REPORTS = Bounds(integer=True, lo=1, hi=1000)
STARTUP_TRIALS = Bounds(integer=True, lo=0, hi=100_000)
TRIAL_BUDGET_KWH = dataclasses.replace(ENERGY_KWH, phrase="> 0 (or 0 for no cap in Pareto mode), at most 1e9")


def _type_error(field: str, expected: str, value: object) -> TypeError:
    return TypeError(f"{field} must be {expected}, got {type(value).__name__} {value!r:.60}")


def checked_int(value: object, bounds: Bounds, field: str, flag: str) -> int:
    """``value`` if it is an ``int`` (not a bool) inside ``bounds`` (the error names ``flag``, as the CLI's does)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error(field, "an int", value)
    return bounds.parse(value, flag)


def checked_float(value: object, bounds: Bounds, field: str, flag: str) -> float:
    """``value`` as a float if it is a real number (not a bool) that is finite and inside ``bounds``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _type_error(field, "a float", value)
    return float(bounds.parse(value, flag))


def checked_path(value: object, field: str, optional: bool = False) -> Path | None:
    """``value`` as a :class:`Path` (a ``str`` is converted; None only when ``optional``)."""
    if value is None and optional:
        return None
    if isinstance(value, (str, Path)):
        return Path(value)
    raise _type_error(field, "a Path or str" + (" or None" if optional else ""), value)


def checked_class_ids(value: object, field: str, flag: str) -> tuple[int, ...]:
    """A tuple or list of class ids (ints in :data:`CLASS_ID`) as a tuple."""
    if not isinstance(value, (tuple, list)):
        raise _type_error(field, "a tuple of class ids (ints)", value)
    return tuple(checked_int(c, CLASS_ID, f"{field}[{i}]", flag) for i, c in enumerate(value))


def checked_overrides(value: object, field: str) -> Mapping[str, Any]:
    """A mapping of dotted config keys (``str``) to values."""
    if not isinstance(value, Mapping):
        raise _type_error(field, 'a mapping of config keys to values ({"optim.lr": 1e-3})', value)
    bad = next((k for k in value if not isinstance(k, str)), None)
    if bad is not None:
        raise _type_error(f"{field} key", "a str (a dotted config key)", bad)
    return value


def check_instance(value: object, kind: type, field: str) -> None:
    """``TypeError`` unless ``value`` is a ``kind``."""
    if not isinstance(value, kind):
        raise _type_error(field, f"{'an' if kind.__name__[0] in 'AEIOU' else 'a'} {kind.__name__}", value)


def set_fields(job: object, **values: object) -> None:
    """Store checked (converted) values on a frozen dataclass ``job`` from its ``__post_init__``."""
    for name, value in values.items():
        object.__setattr__(job, name, value)


def job_default(job: type, name: str) -> Any:
    """The default of field ``name`` of the job dataclass ``job``: the one place a job's default is written, read
    by the CLI for its flags and their ``--help``.

    Example:
        >>> from greendiff.workflows import SampleJob
        >>> job_default(SampleJob, "n")
        64
    """
    field = next((f for f in dataclasses.fields(job) if f.name == name), None)
    if field is None or field.default is dataclasses.MISSING:
        raise ValueError(f"{job.__name__} has no field {name!r} with a default")
    return field.default
