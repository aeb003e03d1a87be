"""Atomic checkpoints in greendiff's own format: tensors in safetensors, everything else in JSON.

``checkpoints/step-N/`` holds:

- ``model.safetensors``: the model's ``state_dict``;
- ``optimizer.safetensors``: the optimizer's state tensors, named ``<parameter index>.<name>``;
- ``ema.safetensors``: the EMA's shadow parameters, named by their index (with ``optim.ema``);
- ``rng-<rank>.safetensors``: each process's torch (and CUDA) RNG states, with its Python and NumPy
  states as JSON in the file's metadata;
- ``train_state.json``, written last: the step, the loop's books (energy, stopping rules, carbon-aware
  controller, non-finite steps), the optimizer's parameter groups and scalar state, the LR schedule,
  the EMA's scalars, the gradient scaler, the fingerprint of the shape-defining config and the size
  of every other file.

Nothing is pickled: run directories are shared between people, and a checkpoint is data, never code.
The loader parses only safetensors and JSON, and it refuses a checkpoint with a file it did not write,
a missing file or key, a file whose size differs from the one recorded (truncated or altered), or a
tensor of another shape. :func:`load_latest` then falls back to the previous checkpoint with a one-line
warning and moves the unusable one aside (``.bad-step-N``). A checkpoint of another shape of model or
data (``config.toml`` edited in the run directory) is an error naming the differing keys, which
:func:`check_resume` raises before anything is created.

Atomicity: a checkpoint is written to ``checkpoints/.tmp-step-N`` and renamed to ``checkpoints/step-N``
only when complete, so a crash or a full disk never leaves a half-written checkpoint where resume
looks. Removal is atomic too: a checkpoint being rotated out is first renamed to
``checkpoints/.del-NAME`` and one being replaced (``best``) to ``checkpoints/.old-NAME`` (one ``rename``
each), and only then deleted. :func:`recover` (run before every resume) puts back an ``.old-``
checkpoint whose replacement never landed and clears the other leftovers.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from greendiff.errors import UserInputError
from greendiff.files import atomic_write_text
from greendiff.train._model import resolve_architecture

logger = logging.getLogger(__name__)

FORMAT = "greendiff-checkpoint/1"
STATE_FILE = "train_state.json"
MODEL, OPTIMIZER, EMA = "model.safetensors", "optimizer.safetensors", "ema.safetensors"
_ADAM_STATE = ("step", "exp_avg", "exp_avg_sq")
_BOOKS = {"step": int, "energy_j": (int, float), "world_size": int, "fingerprint": dict, "files": dict,
          "optimizer": dict, "lr_scheduler": dict}


@dataclass
class TrainingObjects:
    """What a checkpoint restores besides the loop's own books.

    Args:
        model: The unwrapped model (its ``state_dict`` keys are the file's).
        optimizer: The optimizer (accelerate's wrapper delegates ``state_dict``/``load_state_dict``).
        lr_scheduler: The LR scheduler (likewise).
        ema: A diffusers ``EMAModel``, or ``None`` without ``optim.ema``.
        scaler: The fp16 gradient scaler (``accelerator.scaler``), or ``None``.
    """

    model: torch.nn.Module
    optimizer: Any
    lr_scheduler: Any
    ema: Any = None
    scaler: Any = None


class Unusable(Exception):
    """A checkpoint that cannot be loaded (truncated, altered, incomplete, older format); ``str`` is why."""


@dataclass
class _Payload:
    """A checkpoint read and checked in full, not yet applied."""

    books: dict
    model: dict
    optimizer: dict
    lr_scheduler: dict
    ema: dict | None
    scaler: dict | None
    rng: tuple | None


def fingerprint(config, channels: int) -> dict:
    """The config values that decide the shapes a checkpoint holds (the architecture resolved from the preset)."""
    arch = resolve_architecture(config.model)
    return {"model.preset": config.model.preset, "model.block_out_channels": list(arch.block_out_channels),
            "model.layers_per_block": arch.layers_per_block, "model.attention": "on" if arch.attention else "off",
            "data.resolution": config.data.resolution, "data.channels": channels,
            "optim.num_train_timesteps": config.optim.num_train_timesteps, "optim.ema": config.optim.ema}


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """The ``step-N`` checkpoints, oldest first (each was renamed into place only once complete)."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and p.name[5:].isdecimal()]
    return sorted(found, key=_step_of)


def _step_of(folder: Path) -> int:
    """N of ``step-N`` (or of ``.old-step-N``, which :func:`recover` puts back)."""
    tail = folder.name.rpartition("step-")[2]
    return int(tail) if tail.isdecimal() else -1


def _discard(path: Path) -> None:
    """Remove a checkpoint folder atomically from resume's point of view: rename, then delete."""
    trash = path.with_name(f".del-{path.name}")
    shutil.rmtree(trash, ignore_errors=True)
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def recover(run_dir: Path) -> None:
    """Undo what a kill mid-save left: a ``.old-NAME`` whose ``NAME`` is missing goes back (its
    replacement never landed); other ``.old-``, and all ``.del-`` and ``.tmp-`` folders are deleted."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return
    for leftover in sorted(root.glob(".old-*")):
        final = root / leftover.name[len(".old-"):]
        if not final.exists() and (leftover / STATE_FILE).exists():
            os.replace(leftover, final)
        else:
            shutil.rmtree(leftover, ignore_errors=True)
    for leftover in [*root.glob(".tmp-*"), *root.glob(".del-*")]:
        shutil.rmtree(leftover, ignore_errors=True)


# -- saving ------------------------------------------------------------------------------------------

def save_checkpoint(accelerator, objects: TrainingObjects, run_dir: Path, step: int, books: dict, keep: int,
                    name: str | None = None) -> Path:
    """Save ``objects`` and the loop's ``books`` (JSON values) as checkpoint ``step``; keep the newest ``keep``.

    ``name`` (e.g. ``"best"``) saves outside the rotation of ``step-N`` checkpoints. In a multi-process
    job every rank calls this: the main process writes the shared files, each rank its RNG state, and
    only the main process renames and rotates, between barriers.
    """
    root = run_dir / "checkpoints"
    final = root / (name or f"step-{step}")
    tmp = root / f".tmp-{final.name}"
    main = accelerator.is_main_process
    try:
        if main:
            root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            books = {**books, **_write_shared(tmp, objects)}
        accelerator.wait_for_everyone()
        _write_file(tmp / f"rng-{accelerator.process_index}.safetensors", _rng_bytes())
        accelerator.wait_for_everyone()
        if main:
            files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())}
            atomic_write_text(tmp / STATE_FILE, json.dumps({"format": FORMAT, **books, "step": step,
                                                            "world_size": accelerator.num_processes, "files": files}))
            _put_in_place(tmp, final)
    except OSError as exc:
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise UserInputError(f"could not write checkpoint {final}: {exc.strerror or exc}; "
                             "the previous checkpoint is intact") from None
    if main:
        for old in checkpoint_dirs(run_dir)[:-keep]:
            _discard(old)
    accelerator.wait_for_everyone()
    return final


def _put_in_place(tmp: Path, final: Path) -> None:
    """Rename the complete ``tmp`` to ``final``; one being replaced (e.g. ``best``) waits under ``.old-``."""
    trash = final.with_name(f".old-{final.name}")
    if final.exists():
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(final, trash)
    os.replace(tmp, final)
    shutil.rmtree(trash, ignore_errors=True)


def _write_file(path: Path, data: bytes) -> None:
    """The one writer of a checkpoint's files (inside its temporary folder; the folder's rename makes it atomic)."""
    with open(path, "wb") as f:
        f.write(data)


def _tensor_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    from safetensors.torch import save

    return save({k: v.detach().contiguous() for k, v in tensors.items()}, metadata=metadata)


def _write_shared(folder: Path, objects: TrainingObjects) -> dict:
    """Model, optimizer and EMA tensors into ``folder``; returns their JSON part for ``train_state.json``."""
    _write_file(folder / MODEL, _tensor_bytes(objects.model.state_dict()))
    opt = objects.optimizer.state_dict()
    _write_file(folder / OPTIMIZER, _tensor_bytes({f"{i}.{k}": v for i, entry in opt["state"].items()
                                                   for k, v in entry.items() if torch.is_tensor(v)}))
    scalars = {str(i): {k: v for k, v in entry.items() if not torch.is_tensor(v)} for i, entry in opt["state"].items()}
    books = {"optimizer": {"param_groups": opt["param_groups"], "state": scalars},
             "lr_scheduler": objects.lr_scheduler.state_dict(), "ema": None,
             "scaler": objects.scaler.state_dict() if objects.scaler is not None else None}
    if objects.ema is not None:
        ema = objects.ema.state_dict()
        _write_file(folder / EMA, _tensor_bytes({str(i): p for i, p in enumerate(ema.pop("shadow_params"))}))
        books["ema"] = ema
    return books


def _rng_bytes() -> bytes:
    """This process's RNG states: torch's (and CUDA's) as tensors, Python's and NumPy's as JSON metadata."""
    import numpy as np

    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    name, key, pos, has_gauss, gauss = np.random.get_state()
    return _tensor_bytes(tensors, {"python": json.dumps(random.getstate()),
                                   "numpy": json.dumps([name, key.tolist(), int(pos), int(has_gauss), float(gauss)])})


# -- loading -----------------------------------------------------------------------------------------

def check_resume(run_dir: Path, config, channels: int, source: str = "config") -> None:
    """The checks of a resume that need no model, made before anything is created: the run has a
    checkpoint that can be loaded, and its shapes are ``config``'s (``source`` names the config in the
    error, e.g. the run directory's ``config.toml``). One-line :class:`UserInputError` otherwise."""
    expected, passed = fingerprint(config, channels), []
    root = run_dir / "checkpoints"
    returning = [old for old in root.glob(".old-step-*") if not (root / old.name[len(".old-"):]).exists()]
    for folder in sorted([*checkpoint_dirs(run_dir), *returning], key=_step_of, reverse=True):
        try:
            _inspect(folder, expected, source)
            return
        except Unusable as exc:
            passed.append((folder, str(exc)))
    raise UserInputError(_none_usable(run_dir, passed))


def load_latest(accelerator, objects: TrainingObjects, run_dir: Path, expected: dict) -> dict:
    """Restore the newest usable checkpoint into ``objects``; returns its books (``train_state.json``).

    An unusable newer checkpoint is moved aside to ``.bad-NAME`` with a one-line warning, and the one
    before it is used; every process agrees on the checkpoint. One-line :class:`UserInputError` when no
    checkpoint can be used, or when ``expected`` (:func:`fingerprint` of the config) differs from it.
    """
    if accelerator.is_main_process:
        recover(run_dir)
    accelerator.wait_for_everyone()
    passed: list[tuple[Path, str]] = []
    for folder in reversed(checkpoint_dirs(run_dir)):
        try:
            payload, reason = _read(folder, objects, expected, accelerator.process_index), ""
        except Unusable as exc:
            payload, reason = None, str(exc)
        if _everywhere(accelerator, payload is not None):
            if passed and accelerator.is_main_process:
                _set_aside(passed, folder)
            _apply(payload, objects, folder)
            return payload.books
        passed.append((folder, reason or "unusable on another process"))
    raise UserInputError(_none_usable(run_dir, passed))


def _none_usable(run_dir: Path, passed: list[tuple[Path, str]]) -> str:
    root = run_dir / "checkpoints"
    if not passed:
        return f"nothing to resume: {root} has no complete checkpoint"
    return f"no usable checkpoint in {root}: " + "; ".join(f"{folder.name}: {why}" for folder, why in passed)


def _set_aside(passed: list[tuple[Path, str]], used: Path) -> None:
    for folder, _ in passed:
        aside = folder.with_name(f".bad-{folder.name}")
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(folder, aside)
    names = ", ".join(folder.name for folder, _ in passed)
    logger.warning("checkpoint %s is unusable (%s); moved aside as .bad-%s, resuming from %s", names,
                   "; ".join(why for _, why in passed), passed[0][0].name, used.name)


def _everywhere(accelerator, ok: bool) -> bool:
    """``ok`` on every process (one tiny all-reduce in a job)."""
    if accelerator.num_processes == 1:
        return ok
    import torch.distributed as dist

    flag = torch.tensor([1 if ok else 0], device=accelerator.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def _show(name: str) -> str:
    return name if name.isprintable() else ascii(name)


def _inspect(folder: Path, expected: dict, source: str = "config") -> dict:
    """The checkpoint's books, if its files are the ones it recorded, complete and parseable (without
    loading tensors); :class:`Unusable` otherwise, :class:`UserInputError` if its shapes are not ``expected``'s."""
    books = _read_books(folder)
    _check_fingerprint(folder, books["fingerprint"], expected, source)
    files = books["files"]
    present = {p.name for p in folder.iterdir()} - {STATE_FILE}
    if extra := sorted(present - set(files)):
        raise Unusable(f"holds files greendiff did not write: {', '.join(map(_show, extra))}")
    needed = {MODEL, OPTIMIZER} | ({EMA} if expected["optim.ema"] else set())
    if missing := sorted((set(files) - present) | (needed - set(files))):
        raise Unusable(f"{_show(missing[0])} is missing")
    for name, size in files.items():
        actual = (folder / name).stat().st_size
        if actual != size:
            raise Unusable(f"{_show(name)} is truncated or altered ({actual} bytes, {size} written)")
        _tensors(folder / name, header_only=True)
    return books


def _read_books(folder: Path) -> dict:
    path = folder / STATE_FILE
    if not path.is_file():
        raise Unusable(f"{STATE_FILE} is missing")
    try:
        books = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise Unusable(f"{STATE_FILE} is unreadable ({str(exc).splitlines()[0][:80]})") from None
    if not isinstance(books, dict):
        raise Unusable(f"{STATE_FILE} is not a JSON object")
    if books.get("format") != FORMAT:
        raise Unusable("an older greendiff's checkpoint (accelerate pickles), which greendiff no longer loads"
                       if "format" not in books else f"format {_show(str(books['format']))[:40]} is not {FORMAT}")
    for key, kind in _BOOKS.items():
        if not isinstance(books.get(key), kind) or isinstance(books.get(key), bool):
            raise Unusable(f"{STATE_FILE} lacks {key}")
    if not all(isinstance(k, str) and type(v) is int for k, v in books["files"].items()):
        raise Unusable(f"{STATE_FILE}: files should map names to sizes")
    return books


def _check_fingerprint(folder: Path, saved: dict, expected: dict, source: str) -> None:
    def show(value) -> str:
        return "unset" if value is None else value if isinstance(value, str) else json.dumps(value)

    differ = [k for k in expected if saved.get(k) != expected[k]]
    if differ:
        raise UserInputError(f"{source} no longer matches checkpoint {folder.name}: "
                             + ", ".join(f"{k} {show(saved.get(k))} -> {show(expected[k])}" for k in differ)
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
        raise Unusable(f"{_show(path.name)} is unreadable ({str(exc).splitlines()[0][:80]})") from None


def _read(folder: Path, objects: TrainingObjects, expected: dict, rank: int) -> _Payload:
    """The whole checkpoint, read and checked against ``objects`` (names, shapes, keys), nothing applied."""
    books = _inspect(folder, expected)
    model = _tensors(folder / MODEL)
    _same_tensors(MODEL, model, objects.model.state_dict())
    optimizer = _optimizer_state(books["optimizer"], _tensors(folder / OPTIMIZER), objects.optimizer)
    lr_scheduler = _conform(books["lr_scheduler"], objects.lr_scheduler.state_dict(), "lr_scheduler")
    ema = scaler = rng = None
    if objects.ema is not None:
        template = objects.ema.state_dict()
        shadow = template.pop("shadow_params")
        tensors = _tensors(folder / EMA)
        _same_tensors(EMA, tensors, {str(i): p for i, p in enumerate(shadow)})
        ema = {**_conform(books.get("ema"), template, "ema"),
               "shadow_params": [tensors[str(i)].to(p.device) for i, p in enumerate(shadow)]}
    if objects.scaler is not None and books.get("scaler") is not None:
        scaler = _conform(books["scaler"], objects.scaler.state_dict(), "scaler")
    if f"rng-{rank}.safetensors" in books["files"]:
        rng = _rng_state(folder / f"rng-{rank}.safetensors")
    return _Payload(books, model, optimizer, lr_scheduler, ema, scaler, rng)


def _same_tensors(name: str, got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    if missing := sorted(set(want) - set(got)):
        raise Unusable(f"{name} lacks {_show(missing[0])}")
    if extra := sorted(set(got) - set(want)):
        raise Unusable(f"{name} holds an unexpected {_show(extra[0])}")
    for key, tensor in want.items():
        if got[key].shape != tensor.shape or got[key].dtype != tensor.dtype:
            raise Unusable(f"{name}: {_show(key)} is {got[key].dtype} {list(got[key].shape)}, "
                           f"not {tensor.dtype} {list(tensor.shape)}")


def _conform(saved, template, where: str):
    """``saved`` (parsed JSON) with the structure of ``template`` (a fresh ``state_dict``): the same keys and
    lengths, tuples where it has tuples; :class:`Unusable` naming the first difference."""
    if isinstance(template, dict):
        if not isinstance(saved, dict):
            raise Unusable(f"{STATE_FILE}: {where} should be an object")
        if missing := sorted(map(str, set(template) - set(saved))):
            raise Unusable(f"{STATE_FILE}: {where} lacks {_show(missing[0])}")
        if extra := sorted(map(str, set(saved) - set(template))):
            raise Unusable(f"{STATE_FILE}: {where} holds an unexpected {_show(extra[0])[:40]}")
        return {k: _conform(saved[k], template[k], f"{where}.{k}") for k in template}
    if isinstance(template, (list, tuple)):
        if not isinstance(saved, list) or len(saved) != len(template):
            raise Unusable(f"{STATE_FILE}: {where} should be a list of {len(template)}")
        items = [_conform(s, t, f"{where}[{i}]") for i, (s, t) in enumerate(zip(saved, template))]
        return tuple(items) if isinstance(template, tuple) else items
    if isinstance(saved, (dict, list)):
        raise Unusable(f"{STATE_FILE}: {where} should be a single value")
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
            raise Unusable(f"{STATE_FILE}: optimizer.state has an entry for no parameter ({_show(index)[:20]})")
        state[int(index)] = dict(values)
    for key, tensor in tensors.items():
        index, _, name = key.partition(".")
        if not index.isdecimal() or int(index) not in state:
            raise Unusable(f"{OPTIMIZER} holds an unexpected {_show(key)}")
        if tensor.dim() and tensor.shape != params[int(index)].shape:
            raise Unusable(f"{OPTIMIZER}: {_show(key)} has shape {list(tensor.shape)}, not its parameter's")
        state[int(index)][name] = tensor
    for index, values in state.items():
        if missing := [k for k in _ADAM_STATE if k not in values]:
            raise Unusable(f"{OPTIMIZER} lacks {index}.{missing[0]}")
    return {"state": state, "param_groups": groups}


def _rng_state(path: Path) -> tuple:
    """(torch state, CUDA states, Python state, NumPy state) of one process."""
    from safetensors import safe_open

    tensors = _tensors(path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    try:
        version, internal, gauss = json.loads(meta["python"])
        name, key, pos, has_gauss, cached = json.loads(meta["numpy"])
        python = (version, tuple(internal), gauss)
        numpy_state = (name, key, pos, has_gauss, cached)
        random.Random().setstate(python)  # checks it
    except (KeyError, TypeError, ValueError, RecursionError):
        raise Unusable(f"{path.name}: its Python or NumPy RNG state is malformed") from None
    if "torch" not in tensors:
        raise Unusable(f"{path.name} lacks torch")
    cuda = [tensors[f"cuda.{i}"] for i in range(len(tensors) - 1) if f"cuda.{i}" in tensors]
    return tensors["torch"], cuda, python, numpy_state


def _apply(payload: _Payload, objects: TrainingObjects, folder: Path) -> None:
    """Load a checked payload into the objects. The objects themselves may still refuse a value (a
    tampered scalar of the right shape): a one-line error then."""
    import numpy as np

    try:
        objects.model.load_state_dict(payload.model, strict=True)
        objects.optimizer.load_state_dict(payload.optimizer)
        objects.lr_scheduler.load_state_dict(payload.lr_scheduler)
        if payload.ema is not None:
            objects.ema.load_state_dict(payload.ema)
        if payload.scaler is not None:
            objects.scaler.load_state_dict(payload.scaler)
        if payload.rng is not None:
            cpu, cuda, python, numpy_state = payload.rng
            torch.set_rng_state(cpu)
            if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(cuda)
            random.setstate(python)
            name, key, pos, has_gauss, cached = numpy_state
            np.random.set_state((name, np.asarray(key, dtype=np.uint32), pos, has_gauss, cached))
    except (RuntimeError, ValueError, TypeError, KeyError) as exc:
        raise UserInputError(f"checkpoint {folder} could not be restored: {str(exc).splitlines()[0][:120]}") from None
