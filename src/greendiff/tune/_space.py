"""The search space: trainer config keys and their ranges, read from a TOML file and checked once.

A space file names trainer config keys (the ones ``greendiff train --set`` takes) and gives each a
range or a list of choices::

    [space]
    "optim.lr" = { low = 3e-4, high = 1e-2, log = true }
    "optim.batch_size" = { choices = [16, 32, 64] }
    "optim.warmup_steps" = { low = 0, high = 100, step = 25 }
    "model.preset" = { choices = ["pico", "nano"] }

Nested tables (``[space.optim] lr = { low = ..., high = ... }``) mean the same. Integer and float
keys take ``low``/``high`` (optionally ``log`` or ``step``) or ``choices``; the others take ``choices``.
Every bound and choice is checked against the trainer's own validation before a trial runs.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass
from typing import Any, Literal, get_args, get_origin, get_type_hints

from greendiff.display import plain_number
from greendiff.errors import UserInputError
from greendiff.train import TrainConfig
from greendiff.train._config import _coerce

#: Config keys a study may vary: the recipe's levers, the architecture, and the step limit.
TUNABLE_SECTIONS = ("optim",)
TUNABLE_KEYS = ("model.preset", "model.block_out_channels", "model.layers_per_block", "model.attention", "run.max_steps")
_SPEC_KEYS = {"low", "high", "log", "step", "choices"}


@dataclass(frozen=True)
class Param:
    """One dimension of the space. ``choices`` set: categorical; else a numeric range."""

    key: str
    kind: Literal["int", "float", "categorical"]
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple = ()

    def suggest(self, trial) -> Any:
        """The trial's value (an Optuna ``Trial``, or anything with its ``suggest_*`` methods)."""
        if self.kind == "categorical":
            encoded = trial.suggest_categorical(self.key, [_encode(c) for c in self.choices])
            return _decode(encoded, self.choices)
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, float(self.low), float(self.high), step=self.step, log=self.log)


def _encode(choice: Any) -> Any:
    """Optuna stores None, bool, int, float and str; a list (block_out_channels) becomes "8,16"."""
    return ",".join(map(str, choice)) if isinstance(choice, (list, tuple)) else choice


def _decode(encoded: Any, choices: tuple) -> Any:
    return next(c for c in choices if _encode(c) == encoded)


def _hints() -> dict[str, Any]:
    """Every leaf config key (``section.name``) and its type hint."""
    out, config = {}, TrainConfig()
    for f in fields(config):
        section = getattr(config, f.name)
        if is_dataclass(section):
            hints = get_type_hints(type(section))
            out.update({f"{f.name}.{g.name}": hints[g.name] for g in fields(section)})
    return out


def tunable_keys() -> list[str]:
    return sorted(k for k in _hints() if k.split(".")[0] in TUNABLE_SECTIONS or k in TUNABLE_KEYS)


def _flatten(table: dict, prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": {...}}}`` and ``{"optim.lr": {...}}`` alike -> ``{"optim.lr": {...}}``."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value and not (set(value) & _SPEC_KEYS):
            out.update(_flatten(value, f"{dotted}."))
        else:
            out[dotted] = value
    return out


def parse_space(table: dict, where: str = "the space") -> list[Param]:
    """The parameters of a space file's ``[space]`` table (already parsed TOML), checked for type and
    emptiness; one-line :class:`UserInputError` naming the key otherwise."""
    if not isinstance(table, dict) or not table:
        raise UserInputError(f"{where}: no parameters; add a [space] table, e.g. \"optim.lr\" = {{ low = 1e-4, high = 1e-2, log = true }}")
    hints, allowed = _hints(), set(tunable_keys())
    params = []
    for key, spec in _flatten(table).items():
        if key not in hints:
            raise UserInputError(f"{where}: unknown parameter {key!r}; tunable keys: {', '.join(sorted(allowed))}")
        if key not in allowed:
            raise UserInputError(f"{where}: {key!r} cannot be tuned (it is not a training lever); tunable keys: "
                                 f"optim.*, {', '.join(TUNABLE_KEYS)}")
        if not isinstance(spec, dict) or not spec:
            raise UserInputError(f"{where}: {key} needs a table: {{ low = ..., high = ... }} or {{ choices = [...] }}")
        if extra := set(spec) - _SPEC_KEYS:
            raise UserInputError(f"{where}: {key}: unknown field(s) {', '.join(sorted(extra))}; use low, high, log, step or choices")
        params.append(_param(key, spec, hints[key], where))
    return params


def _param(key: str, spec: dict, hint: Any, where: str) -> Param:
    numeric = "int" if hint is int else "float" if hint is float else None
    if "choices" in spec:
        if set(spec) - {"choices"}:
            raise UserInputError(f"{where}: {key}: give either choices or low/high, not both")
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise UserInputError(f"{where}: {key}: choices must be a non-empty list")
        values = tuple(_coerce(c, hint, f"{where}: {key} choice") for c in choices)
        if len(set(map(_encode, values))) != len(values):
            raise UserInputError(f"{where}: {key}: choices repeat a value")
        return Param(key, "categorical", choices=values)
    if numeric is None:
        kinds = get_args(hint) if get_origin(hint) is Literal else ()
        raise UserInputError(f"{where}: {key} is not numeric: give choices = [...]"
                             + (f" from {', '.join(map(str, kinds))}" if kinds else ""))
    if "low" not in spec or "high" not in spec:
        raise UserInputError(f"{where}: {key}: a range needs both low and high")
    cast = int if numeric == "int" else float
    low, high = (_coerce(spec[b], cast, f"{where}: {key}.{b}") for b in ("low", "high"))
    if not low < high:
        raise UserInputError(f"{where}: {key}: empty range: low ({plain_number(low, 12)}) must be below high ({plain_number(high, 12)})")
    log = _coerce(spec.get("log", False), bool, f"{where}: {key}.log")
    step = _coerce(spec["step"], cast, f"{where}: {key}.step") if "step" in spec else None
    if log and low <= 0:
        raise UserInputError(f"{where}: {key}: a log range needs low > 0, got {plain_number(low, 12)}")
    if step is not None and (step <= 0 or log):
        raise UserInputError(f"{where}: {key}: step must be positive and cannot be combined with log")
    return Param(key, numeric, low=low, high=high, log=log, step=step)


def bounds(param: Param) -> list[Any]:
    """The values that span the parameter (its choices, or both ends), to check against the trainer."""
    return list(param.choices) if param.kind == "categorical" else [param.low, param.high]
