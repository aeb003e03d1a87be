"""The checkpoint format, and the reader that checks a checkpoint in full before anything is applied.

A checkpoint is data, never code: only safetensors and JSON are parsed, nothing is unpickled. Every
value is checked here, in the read phase: the exact file set and sizes, the tensors' names, shapes,
dtypes and finiteness, the JSON states' structure, types and signs against a fresh ``state_dict``, the
books (step, energy), the RNG states (each tried on a scratch generator) and the loop's own parts (each
tried on a copy). A checkpoint that fails any check is :class:`Unusable`, and the caller falls back to
the one before it; nothing of it has been applied by then.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from greendiff.display import energy_text, plain_number
from greendiff.errors import UserInputError
from greendiff.names import display_path, first_line
from greendiff.numbers import MAX_COUNT, MAX_ENERGY_KWH
from greendiff.train._divergence import weights_finite
from greendiff.units import kwh_to_joules

logger = logging.getLogger(__name__)

FORMAT = "greendiff-checkpoint/1"
STATE_FILE = "train_state.json"
MODEL, OPTIMIZER, EMA = "model.safetensors", "optimizer.safetensors", "ema.safetensors"
_ADAM_STATE = ("step", "exp_avg", "exp_avg_sq")
_BOOKS = {"step": int, "energy_j": (int, float), "world_size": int, "fingerprint": dict, "files": dict,
          "optimizer": dict, "lr_scheduler": dict}
#: What a part of the loop's books may raise when it refuses a saved value.
_REFUSED = (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError, RecursionError)
#: Largest whole number a state may hold (every int up to it is exact as a float: no overflow later).
_MAX_EXACT = 2**53


@dataclass
class TrainingObjects:
    """What a checkpoint restores.

    Args:
        model: The unwrapped model (its ``state_dict`` keys are the file's).
        optimizer: The optimizer (accelerate's wrapper delegates ``state_dict``/``load_state_dict``).
        lr_scheduler: The LR scheduler (likewise).
        ema: A diffusers ``EMAModel``, or ``None`` without ``optim.ema``.
        scaler: The fp16 gradient scaler (``accelerator.scaler``), or ``None``.
        parts: The loop's own stateful parts by their key in ``train_state.json`` (stopping rules,
            divergence counts, carbon-aware controller; ``None`` values are left out), each with
            ``state_dict()`` / ``load_state_dict()``.
    """

    model: torch.nn.Module
    optimizer: Any
    lr_scheduler: Any
    ema: Any = None
    scaler: Any = None
    parts: dict[str, Any] = field(default_factory=dict)


class Unusable(Exception):
    """A checkpoint that cannot be loaded (truncated, altered, incomplete, older format); ``str`` is why."""


@dataclass
class Payload:
    """A checkpoint read and checked in full, not yet applied."""

    books: dict
    model: dict
    optimizer: dict
    lr_scheduler: dict
    ema: dict | None
    scaler: dict | None
    rng: tuple | None


def step_of(folder: Path) -> int:
    """N of ``step-N`` (or of ``.old-step-N``, which ``recover`` puts back); -1 for other names (``best``)."""
    tail = folder.name.rpartition("step-")[2]
    return int(tail) if tail.isdecimal() and "step-" in folder.name else -1


def inspect(folder: Path, expected: dict, source: str = "config") -> dict:
    """The checkpoint's books, if its files are the ones it recorded, complete and parseable (without
    loading tensors); :class:`Unusable` otherwise, :class:`UserInputError` if its shapes are not ``expected``'s."""
    books = _read_books(folder)
    _check_fingerprint(folder, books["fingerprint"], expected, source)
    files = books["files"]
    present = {p.name for p in folder.iterdir()} - {STATE_FILE}
    if extra := sorted(present - set(files)):
        raise Unusable(f"holds files greendiff did not write: {', '.join(map(display_path, extra))}")
    needed = {MODEL, OPTIMIZER} | ({EMA} if expected["optim.ema"] else set())
    if missing := sorted((set(files) - present) | (needed - set(files))):
        raise Unusable(f"{display_path(missing[0])} is missing")
    for name, size in files.items():
        actual = (folder / name).stat().st_size
        if actual != size:
            raise Unusable(f"{display_path(name)} is truncated or altered ({actual} bytes, {size} written)")
        _tensors(folder / name, header_only=True)
    return books


def _read_books(folder: Path) -> dict:
    path = folder / STATE_FILE
    if not path.is_file():
        raise Unusable(f"{STATE_FILE} is missing")
    try:
        books = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise Unusable(f"{STATE_FILE} is unreadable ({first_line(exc, 80)})") from None
    if not isinstance(books, dict):
        raise Unusable(f"{STATE_FILE} is not a JSON object")
    if books.get("format") != FORMAT:
        raise Unusable("an older greendiff's checkpoint (accelerate pickles), which greendiff no longer loads"
                       if "format" not in books else f"format {display_path(str(books['format']))[:40]} is not {FORMAT}")
    for key, kind in _BOOKS.items():
        if not isinstance(books.get(key), kind) or isinstance(books.get(key), bool):
            raise Unusable(f"{STATE_FILE} lacks {key}")
    if not all(isinstance(k, str) and type(v) is int for k, v in books["files"].items()):
        raise Unusable(f"{STATE_FILE}: files should map names to sizes")
    step, energy_j = books["step"], books["energy_j"]
    if not 0 <= step <= MAX_COUNT or (step_of(folder) >= 0 and step != step_of(folder)):
        raise Unusable(f"{STATE_FILE}: step {step} is not this checkpoint's")
    if not (math.isfinite(energy_j) and 0 <= energy_j <= kwh_to_joules(MAX_ENERGY_KWH)):
        raise Unusable(f"{STATE_FILE}: energy_j {energy_j!r:.30} is not an energy (at most {energy_text(MAX_ENERGY_KWH)})")
    counts = books.get("divergence")
    if isinstance(counts, dict) and any(type(v) is int and v > step for v in counts.values()):
        raise Unusable(f"{STATE_FILE}: its non-finite step counts exceed its step {step}")
    if not 1 <= books["world_size"] <= 1 << 20:
        raise Unusable(f"{STATE_FILE}: world_size {books['world_size']} is not a number of processes")
    return books


#: what a resume may change: how far to train, and how often the loop writes (not what it learns)
MAY_CHANGE = frozenset({"run.max_steps", "run.checkpoint_every", "run.keep_checkpoints", "run.sample_every", "run.log_every",
                        "data.latent_cache", "data.latent_cache_dir", "optim.compile",
                        "model.vae"})  # a latent run's VAE is pinned by its weights' digest (model.vae_sha256)


def _upgraded(saved: dict) -> dict:
    """A checkpoint's flat config as today's keys read it: renamed keys under their new name
    (:func:`~greendiff.train._config.upgrade_settings`), and keys added since at their default (the run was
    trained as the default says)."""
    from greendiff.train._checkpoint import _flat
    from greendiff.train._config import TrainConfig, to_dict, upgrade_settings

    nested: dict = {}
    for key, value in saved.items():
        *parents, leaf = key.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    try:
        upgraded = _flat(upgrade_settings(nested))
    except UserInputError:  # a value no version wrote: compare it as it is (it will differ)
        upgraded = dict(saved)
    defaults = _flat(json.loads(json.dumps(to_dict(TrainConfig()))))
    return {**{k: v for k, v in defaults.items() if k not in upgraded}, **upgraded}


def _check_fingerprint(folder: Path, saved: dict, expected: dict, source: str) -> None:
    def shown(value) -> str:
        return "unset" if value is None else value if isinstance(value, str) else json.dumps(value)

    differ = [(k, saved.get(k), expected[k]) for k in expected if k != "config" and saved.get(k) != expected[k]]
    old, new = saved.get("config"), expected.get("config")
    if isinstance(old, dict) and isinstance(new, dict):  # a checkpoint of an older greendiff records the shapes only
        old = _upgraded(old)
        seen = {k for k, _, _ in differ}
        differ += [(k, old.get(k), new.get(k)) for k in sorted({*old, *new} - seen - MAY_CHANGE)
                   if old.get(k) != new.get(k)]
    if differ:
        raise UserInputError(f"{source} no longer matches checkpoint {folder.name}: "
                             + ", ".join(f"{k} {shown(was)} -> {shown(now)}" for k, was, now in differ)
                             + "; undo the edit, or start a new run")


def _tensors(path: Path, header_only: bool = False) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        if header_only:
            with safe_open(str(path), framework="pt") as f:
                f.metadata()
            return {}
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise Unusable(f"{display_path(path.name)} is unreadable ({first_line(exc, 80)})") from None



def saved_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors a checkpoint holds of ``model``: its whole ``state_dict``, or, when some parameters are
    frozen (a LoRA fine-tune's base weights, which never change and come from the pipeline folder), the
    trainable parameters' entries alone."""
    state = model.state_dict()
    named = dict(model.named_parameters())
    if all(p.requires_grad for p in named.values()):
        return state
    return {name: state[name] for name, p in named.items() if p.requires_grad and name in state}


def read(folder: Path, objects: TrainingObjects, expected: dict, rank: int) -> Payload:
    """The whole checkpoint, read and checked against ``objects`` (names, shapes, keys, values), nothing applied."""
    books = inspect(folder, expected)
    model = _tensors(folder / MODEL)
    _same_tensors(MODEL, model, saved_state(objects.model))
    if not weights_finite(model.values()):  # saved weights are always finite: NaN/Inf is damage, not a divergence
        raise Unusable(f"{MODEL} holds values that are not finite")
    optimizer = _optimizer_state(books["optimizer"], _tensors(folder / OPTIMIZER), objects.optimizer)
    lr_scheduler = _conform(books["lr_scheduler"], objects.lr_scheduler.state_dict(), "lr_scheduler")
    ema = scaler = rng = None
    if objects.ema is not None:
        template = objects.ema.state_dict()
        shadow = template.pop("shadow_params")
        tensors = _tensors(folder / EMA)
        _same_tensors(EMA, tensors, {str(i): p for i, p in enumerate(shadow)})
        if not weights_finite(tensors.values()):
            raise Unusable(f"{EMA} holds values that are not finite")
        ema = {**_conform(books.get("ema"), template, "ema"),
               "shadow_params": [tensors[str(i)].to(p.device) for i, p in enumerate(shadow)]}
    if objects.scaler is not None and books.get("scaler") is not None:
        scaler = _conform(books["scaler"], objects.scaler.state_dict(), "scaler")
    if f"rng-{rank}.safetensors" in books["files"]:
        rng = _rng_state(folder / f"rng-{rank}.safetensors")
    _try_parts(books, objects.parts)
    return Payload(books, model, optimizer, lr_scheduler, ema, scaler, rng)


def _same_tensors(name: str, got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    if missing := sorted(set(want) - set(got)):
        raise Unusable(f"{name} lacks {display_path(missing[0])}")
    if extra := sorted(set(got) - set(want)):
        raise Unusable(f"{name} holds an unexpected {display_path(extra[0])}")
    for key, tensor in want.items():
        if got[key].shape != tensor.shape or got[key].dtype != tensor.dtype:
            raise Unusable(f"{name}: {display_path(key)} is {got[key].dtype} {list(got[key].shape)}, "
                           f"not {tensor.dtype} {list(tensor.shape)}")
    if not weights_finite(got.values()):
        raise Unusable(f"{name} holds values that are not finite")


def _conform(saved, template, where: str):
    """``saved`` (parsed JSON) with the structure of ``template`` (a fresh ``state_dict``): the same keys and
    lengths, tuples where it has tuples, and at each leaf a value of the template's type (an int may stand
    for a float), finite, and not negative where the template's is not; :class:`Unusable` naming the first
    difference."""
    if isinstance(template, dict):
        if not isinstance(saved, dict):
            raise Unusable(f"{STATE_FILE}: {where} should be an object")
        if missing := sorted(map(str, set(template) - set(saved))):
            raise Unusable(f"{STATE_FILE}: {where} lacks {display_path(missing[0])}")
        if extra := sorted(map(str, set(saved) - set(template))):
            raise Unusable(f"{STATE_FILE}: {where} holds an unexpected {display_path(extra[0])[:40]}")
        return {k: _conform(saved[k], template[k], f"{where}.{k}") for k in template}
    if isinstance(template, (list, tuple)):
        if not isinstance(saved, list) or len(saved) != len(template):
            raise Unusable(f"{STATE_FILE}: {where} should be a list of {len(template)}")
        items = [_conform(s, t, f"{where}[{i}]") for i, (s, t) in enumerate(zip(saved, template))]
        return tuple(items) if isinstance(template, tuple) else items
    return _leaf(saved, template, where)


def _leaf(saved, template, where: str):
    kind = type(template)
    flags = (bool, type(None))  # torch's optional switches (fused, foreach): None and a bool stand for each other
    same = type(saved) is kind or (kind is float and type(saved) is int) or (kind in flags and type(saved) in flags)
    if not same:
        raise Unusable(f"{STATE_FILE}: {where} should be {'null' if template is None else kind.__name__}, "
                       f"got {json.dumps(saved)[:30]}")
    if kind in (int, float):
        if isinstance(saved, float) and not math.isfinite(saved) and math.isfinite(template):
            raise Unusable(f"{STATE_FILE}: {where} is {saved}, not a finite number")
        if isinstance(saved, int) and abs(saved) > _MAX_EXACT:
            raise Unusable(f"{STATE_FILE}: {where} is too large ({str(saved)[:12]}...)")
        if saved < 0 <= template:
            raise Unusable(f"{STATE_FILE}: {where} is negative ({plain_number(saved, 6)})")
        return float(saved) if kind is float else saved
    return saved


def _optimizer_state(saved: dict, tensors: dict[str, torch.Tensor], optimizer) -> dict:
    """The optimizer's ``state_dict`` from its JSON part and its tensors, checked against ``optimizer``."""
    template = optimizer.state_dict()
    groups = _conform(saved.get("param_groups"), template["param_groups"], "optimizer.param_groups")
    if [g["params"] for g in groups] != [g["params"] for g in template["param_groups"]]:
        raise Unusable(f"{STATE_FILE}: the optimizer's parameters are not the model's")
    params = [p for group in optimizer.param_groups for p in group["params"]]
    scalars = saved.get("state")
    if not isinstance(scalars, dict):
        raise Unusable(f"{STATE_FILE}: optimizer.state is missing")
    state: dict[int, dict] = {}
    for index, values in scalars.items():
        if not index.isdecimal() or int(index) >= len(params) or not isinstance(values, dict):
            raise Unusable(f"{STATE_FILE}: optimizer.state has an entry for no parameter ({display_path(index)[:20]})")
        if any(k not in _ADAM_STATE or not _is_count(v) for k, v in values.items()):
            raise Unusable(f"{STATE_FILE}: optimizer.state.{index} holds a value AdamW does not keep")
        state[int(index)] = dict(values)
    for key, tensor in tensors.items():
        index, _, name = key.partition(".")
        if not index.isdecimal() or int(index) not in state or name not in _ADAM_STATE:
            raise Unusable(f"{OPTIMIZER} holds an unexpected {display_path(key)}")
        if tensor.dim() and tensor.shape != params[int(index)].shape:
            raise Unusable(f"{OPTIMIZER}: {display_path(key)} has shape {list(tensor.shape)}, not its parameter's")
        state[int(index)][name] = tensor
    for index, values in state.items():
        if missing := [k for k in _ADAM_STATE if k not in values]:
            raise Unusable(f"{OPTIMIZER} lacks {index}.{missing[0]}")
    if not weights_finite(tensors.values()):
        raise Unusable(f"{OPTIMIZER} holds values that are not finite")
    if any(bool((values["step"] < 0).any()) if torch.is_tensor(values["step"]) else values["step"] < 0
           for values in state.values()) or any(bool((v["exp_avg_sq"] < 0).any()) for v in state.values()):
        raise Unusable(f"{OPTIMIZER} holds a negative step count or second moment")
    return {"state": state, "param_groups": groups}


def _is_count(value) -> bool:
    return type(value) in (int, float) and math.isfinite(value) and value >= 0


def _rng_state(path: Path) -> tuple:
    """(torch state, CUDA states, Python state, NumPy state) of one process, each tried on a scratch
    generator (a state the generator would refuse is refused here, before anything is applied)."""
    import numpy as np
    from safetensors import safe_open

    tensors = _tensors(path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    try:
        version, internal, gauss = json.loads(meta["python"])
        name, key, pos, has_gauss, cached = json.loads(meta["numpy"])
        python = (version, tuple(internal), gauss)
        random.Random().setstate(python)
        if not (name == "MT19937" and isinstance(key, list) and len(key) == 624
                and all(type(k) is int and 0 <= k < 1 << 32 for k in key) and type(pos) is int and 0 <= pos <= 624
                and type(has_gauss) is int and has_gauss in (0, 1) and type(cached) in (int, float)
                and math.isfinite(cached)):
            raise ValueError("not an MT19937 state")
        numpy_state = (name, np.asarray(key, dtype=np.uint32), pos, has_gauss, float(cached))
        np.random.RandomState().set_state(numpy_state)
    except (KeyError, TypeError, ValueError, OverflowError, RecursionError):
        raise Unusable(f"{path.name}: its Python or NumPy RNG state is malformed") from None
    if "torch" not in tensors:
        raise Unusable(f"{path.name} lacks torch")
    try:
        torch.Generator().set_state(tensors["torch"])
    except (RuntimeError, TypeError, ValueError):
        raise Unusable(f"{path.name}: its torch RNG state is malformed") from None
    cuda = [tensors[f"cuda.{i}"] for i in range(len(tensors) - 1) if f"cuda.{i}" in tensors]
    if len(cuda) != len(tensors) - 1 or any(t.dtype != torch.uint8 or t.dim() != 1 for t in cuda):
        raise Unusable(f"{path.name} holds tensors that are not RNG states")
    return tensors["torch"], cuda, python, numpy_state


def _try_parts(books: dict, parts: dict[str, Any]) -> None:
    """Each part of the loop's books loads its saved state into a copy of itself: a value it refuses
    (a count of ``Infinity``, a string for a number) makes the checkpoint unusable, not a traceback later."""
    for key, part in parts.items():
        if part is None or key not in books:
            continue
        try:
            trial = copy.deepcopy(part)
        except Exception as exc:  # noqa: BLE001 -- a part that cannot be copied is checked when applied
            logger.debug("the %s state is not tried before it is applied: %s", key, exc)
            continue
        try:
            trial.load_state_dict(books[key])
        except _REFUSED as exc:
            raise Unusable(f"{STATE_FILE}: its {key} state is malformed ({first_line(exc, 80)})") from None
