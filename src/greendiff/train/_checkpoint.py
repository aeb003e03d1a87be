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
The reader (``_checkpoint_read``) parses only safetensors and JSON and checks every value before
anything is applied: it refuses a checkpoint with a file it did not write, a missing file or key, a file
whose size differs from the one recorded (truncated or altered), a tensor of another shape or with
non-finite values, a state value of the wrong type, sign or size, or an RNG state a generator would
refuse. :func:`load_latest` then falls back to the previous checkpoint with a one-line warning and moves
the unusable one aside (``.bad-step-N``). A checkpoint of another shape of model or
data (``config.toml`` edited in the run directory) is an error naming the differing keys, which
:func:`check_resume` raises before anything is created.

Atomicity: a checkpoint is written to ``checkpoints/.tmp-step-N`` and renamed to ``checkpoints/step-N``
only when complete, so a crash or a full disk never leaves a half-written checkpoint where resume
looks. Removal is atomic too: a checkpoint being rotated out is first renamed to
``checkpoints/.del-NAME`` and one being replaced (``best``) to ``checkpoints/.old-NAME`` (one ``rename``
each), and only then deleted. :func:`recover` (run before every resume) puts back an ``.old-``
checkpoint whose replacement never landed and clears the other leftovers.

In a multi-process job every rank takes part in each stage of a save or a load, and the ranks agree
(:meth:`greendiff.parallel.Dist.all_true`) after each stage before going on: a rank whose write failed
(a full disk) makes every rank raise the same one-line error, never a rank waiting for ever.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from greendiff.errors import UserInputError
from greendiff.files import atomic_write_text
from greendiff.names import display_path, first_line
from greendiff.parallel import Dist
from greendiff.train._checkpoint_read import (
    EMA, FORMAT, MAY_CHANGE, MODEL, OPTIMIZER, STATE_FILE, Payload, TrainingObjects, Unusable, inspect, read, saved_state,
    step_of,
)
from greendiff.train._model import resolve_architecture

logger = logging.getLogger(__name__)

__all__ = ["EMA", "FORMAT", "MODEL", "OPTIMIZER", "STATE_FILE", "TrainingObjects", "Unusable", "check_resume",
           "checkpoint_dirs", "fingerprint", "load_latest", "recover", "remove_tree", "save_checkpoint"]


def fingerprint(config, channels: int) -> dict:
    """The config values that decide the shapes a checkpoint holds (the architecture resolved from the
    preset) and, under ``"config"``, every other value of the resolved config but :data:`MAY_CHANGE` (a run
    continued on another dataset or objective would be two runs in one)."""
    from greendiff.train._config import to_dict

    arch = resolve_architecture(config.model)
    whole = {key: value for key, value in _flat(json.loads(json.dumps(to_dict(config)))).items() if key not in MAY_CHANGE}
    if config.model.vae:  # a latent run: the VAE's weights decide what it learns, wherever the folder is
        from greendiff.train._vae import vae_weights_sha256

        whole["model.vae_sha256"] = vae_weights_sha256(Path(config.model.vae))
    if config.optim.align == "repa" and config.optim.align_encoder:  # what the projector learned to match
        from greendiff.train._pipeline_layout import component_sha256

        encoder = Path(config.optim.align_encoder)
        whole["optim.align_encoder_sha256"] = component_sha256(encoder.parent, [encoder.name])
    if config.finetune.pipeline:  # a fine-tune: the base pipeline's weights, wherever its folder is
        from greendiff.train._pipeline_layout import pipeline_weights_sha256

        whole["finetune.pipeline_sha256"] = pipeline_weights_sha256(Path(config.finetune.pipeline))
    return {"model.preset": config.model.preset, "model.block_out_channels": list(arch.block_out_channels),
            "model.layers_per_block": arch.layers_per_block, "model.attention": "on" if arch.attention else "off",
            "data.resolution": config.data.resolution, "data.channels": channels,
            "optim.num_train_timesteps": config.optim.num_train_timesteps, "optim.ema": config.optim.ema,
            "config": whole}


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """The ``step-N`` checkpoints, oldest first (each was renamed into place only once complete)."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        if not (p.name.startswith("step-") and p.name[5:].isdecimal()):
            continue
        if p.is_symlink():  # greendiff never writes one: a planted link to a folder elsewhere is not a checkpoint
            logger.warning("checkpoints/%s is a symbolic link, not a checkpoint; passed over", p.name)
        elif p.is_dir():
            found.append(p)
    return sorted(found, key=step_of)


def remove_tree(path: Path) -> None:
    """Delete ``path`` if it is there: a symbolic link is unlinked (never followed, whatever it points
    to), a folder deleted with its contents. Errors are ignored (a leftover is tidied up next time)."""
    try:
        if path.is_symlink() or path.is_file():
            path.unlink()
            return
    except OSError:
        return
    shutil.rmtree(path, ignore_errors=True)


def _discard(path: Path) -> None:
    """Remove a checkpoint folder atomically from resume's point of view: rename, then delete."""
    trash = path.with_name(f".del-{path.name}")
    remove_tree(trash)
    os.replace(path, trash)
    remove_tree(trash)


def recover(run_dir: Path) -> None:
    """Undo what a kill mid-save left: a ``.old-NAME`` whose ``NAME`` is missing goes back (its
    replacement never landed); other ``.old-``, and all ``.del-`` and ``.tmp-`` folders are deleted."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return
    for leftover in sorted(root.glob(".old-*")):
        final = root / leftover.name[len(".old-"):]
        if not final.exists() and not leftover.is_symlink() and (leftover / STATE_FILE).exists():
            os.replace(leftover, final)
        else:
            remove_tree(leftover)
    for leftover in [*root.glob(".tmp-*"), *root.glob(".del-*")]:
        remove_tree(leftover)


def _dist(accelerator) -> Dist:
    return Dist(rank=accelerator.process_index, world_size=accelerator.num_processes)


def _agreed(dist: Dist, stage: Callable[[], None], what: str, undo: Callable[[], None] = lambda: None,
            after: str = "the previous checkpoint is intact") -> None:
    """Run this rank's part of ``stage``, then agree with the others: if it failed anywhere, every rank
    undoes its part and raises (one line, ``what: why; after``, for an ``OSError`` and on the ranks where
    nothing failed)."""
    failure: Exception | None = None
    try:
        stage()
    except Exception as exc:  # noqa: BLE001 -- re-raised below, once every rank knows
        failure = exc
    if dist.all_true(failure is None):
        return
    undo()
    if isinstance(failure, OSError):
        raise UserInputError(f"{what}: {failure.strerror or failure}; {after}") from None
    if failure is not None:
        raise failure
    raise UserInputError(f"{what}: it failed on another process; {after}")


# -- saving ------------------------------------------------------------------------------------------

def save_checkpoint(accelerator, objects: TrainingObjects, run_dir: Path, step: int, books: dict, keep: int,
                    name: str | None = None) -> Path:
    """Save ``objects`` (and their parts' states) and the loop's ``books`` (JSON values) as checkpoint
    ``step``; keep the newest ``keep``.

    ``name`` (e.g. ``"best"``) saves outside the rotation of ``step-N`` checkpoints. In a multi-process
    job every rank calls this: the main process writes the shared files, each rank its RNG state, and
    only the main process renames and rotates; the ranks agree after each stage, so a failed write on
    any rank is the same one-line error on all of them.
    """
    root = run_dir / "checkpoints"
    final = root / (name or f"step-{step}")
    tmp = root / f".tmp-{final.name}"
    main, dist = accelerator.is_main_process, _dist(accelerator)
    books = {**books, **{key: part.state_dict() for key, part in objects.parts.items() if part is not None}}

    def shared() -> None:
        nonlocal books
        if main:
            root.mkdir(parents=True, exist_ok=True)
            remove_tree(tmp)
            tmp.mkdir()  # new, so nothing written into it follows a planted link
            books = {**books, **_write_shared(tmp, objects)}

    def state_and_rename() -> None:
        if main:
            files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())}
            atomic_write_text(tmp / STATE_FILE, json.dumps({"format": FORMAT, **books, "step": step,
                                                            "world_size": accelerator.num_processes, "files": files}))
            _put_in_place(tmp, final)

    def undo() -> None:
        if main:
            remove_tree(tmp)

    what = f"could not write checkpoint {final}"
    _agreed(dist, shared, what, undo)
    _agreed(dist, lambda: _write_file(tmp / f"rng-{accelerator.process_index}.safetensors", _rng_bytes()), what, undo)
    _agreed(dist, state_and_rename, what, undo)
    if main:
        _rotate(run_dir, keep)
    accelerator.wait_for_everyone()
    return final


def _rotate(run_dir: Path, keep: int) -> None:
    """Remove all but the newest ``keep`` checkpoints. The new one is in place already, so a removal that
    fails only leaves an old checkpoint behind (a warning), never an error."""
    for old in checkpoint_dirs(run_dir)[:-keep]:
        try:
            _discard(old)
        except OSError as exc:
            logger.warning("could not remove the old checkpoint %s (%s); it is left beside the newer ones",
                           old, exc.strerror or exc)


def _put_in_place(tmp: Path, final: Path) -> None:
    """Rename the complete ``tmp`` to ``final``; one being replaced (e.g. ``best``) waits under ``.old-``."""
    trash = final.with_name(f".old-{final.name}")
    if final.exists() or final.is_symlink():
        remove_tree(trash)
        os.replace(final, trash)
    os.replace(tmp, final)
    remove_tree(trash)


def _write_file(path: Path, data: bytes) -> None:
    """The one writer of a checkpoint's files (inside its temporary folder; the folder's rename makes it atomic)."""
    with open(path, "wb") as f:
        f.write(data)


def _tensor_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    from safetensors.torch import save

    return save({k: v.detach().contiguous() for k, v in tensors.items()}, metadata=metadata)


def _write_shared(folder: Path, objects: TrainingObjects) -> dict:
    """Model, optimizer and EMA tensors into ``folder``; returns their JSON part for ``train_state.json``."""
    _write_file(folder / MODEL, _tensor_bytes(saved_state(objects.model)))
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
    for name in ("metrics.jsonl", "samples", "pipeline", "checkpoints"):
        if (run_dir / name).is_symlink():
            raise UserInputError(f"{display_path(run_dir / name)} is a symbolic link; greendiff writes only real files "
                                 "in a run directory: remove the link, or start a new run")
    returning = [old for old in root.glob(".old-step-*")
                 if not old.is_symlink() and not (root / old.name[len(".old-"):]).exists()]
    for folder in sorted([*checkpoint_dirs(run_dir), *returning], key=step_of, reverse=True):
        try:
            inspect(folder, expected, source)
            return
        except Unusable as exc:
            passed.append((folder, str(exc)))
    raise UserInputError(_none_usable(run_dir, passed))


def load_latest(accelerator, objects: TrainingObjects, run_dir: Path, expected: dict) -> dict:
    """Restore the newest usable checkpoint into ``objects`` (and their parts); returns its books
    (``train_state.json``).

    Each checkpoint is read and checked in full before anything of it is applied. An unusable newer
    checkpoint is moved aside to ``.bad-NAME`` with a one-line warning, and the one before it is used;
    every process agrees on the checkpoint. One-line :class:`UserInputError` when no checkpoint can be
    used, or when ``expected`` (:func:`fingerprint` of the config) differs from it.
    """
    main, dist = accelerator.is_main_process, _dist(accelerator)
    _agreed(dist, lambda: recover(run_dir) if main else None, f"could not tidy up {run_dir / 'checkpoints'}",
            after="nothing was resumed")
    passed: list[tuple[Path, str]] = []
    for folder in reversed(checkpoint_dirs(run_dir)):
        try:
            payload, reason = read(folder, objects, expected, accelerator.process_index), ""
        except Unusable as exc:
            payload, reason = None, str(exc)
        if dist.all_true(payload is not None):
            if passed and main:
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
    names = ", ".join(folder.name for folder, _ in passed)
    try:
        for folder, _ in passed:
            aside = folder.with_name(f".bad-{folder.name}")
            remove_tree(aside)
            os.replace(folder, aside)
        moved = f"moved aside as .bad-{passed[0][0].name}"
    except OSError as exc:  # it stays where it is, and is passed over again next time
        moved = f"could not be moved aside ({exc.strerror or exc})"
    logger.warning("checkpoint %s is unusable (%s); %s, resuming from %s", names,
                   "; ".join(why for _, why in passed), moved, used.name)


def _apply(payload: Payload, objects: TrainingObjects, folder: Path) -> None:
    """Load a payload that :func:`read` checked in full into the objects and their parts."""
    import numpy as np

    try:
        # every saved tensor was checked against saved_state's names and shapes; frozen weights are not saved
        objects.model.load_state_dict(payload.model, strict=len(payload.model) == len(objects.model.state_dict()))
        objects.optimizer.load_state_dict(payload.optimizer)
        objects.lr_scheduler.load_state_dict(payload.lr_scheduler)
        if payload.ema is not None:
            objects.ema.load_state_dict(payload.ema)
        if payload.scaler is not None:
            objects.scaler.load_state_dict(payload.scaler)
        for key, part in objects.parts.items():
            if part is not None and key in payload.books:
                part.load_state_dict(payload.books[key])
        if payload.rng is not None:
            cpu, cuda, python, numpy_state = payload.rng
            torch.set_rng_state(cpu)
            if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(cuda)
            random.setstate(python)
            np.random.set_state(numpy_state)
    except (RuntimeError, ValueError, TypeError, KeyError, OverflowError) as exc:  # checked already: not expected
        raise UserInputError(f"checkpoint {folder} could not be restored: {first_line(exc, 120)}") from None
