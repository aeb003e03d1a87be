"""Atomic checkpoints on top of accelerate's ``save_state``/``load_state``.

A checkpoint is written to ``checkpoints/.tmp-step-N`` and renamed to ``checkpoints/step-N`` only
when complete, so a crash or a full disk never leaves a half-written checkpoint where resume looks.
Removal is atomic too: a checkpoint being rotated out is first renamed to ``checkpoints/.del-NAME``
and one being replaced (``best``) to ``checkpoints/.old-NAME`` (one ``rename`` each), and only then
deleted; a kill in the middle of a delete leaves a hidden folder, never a partial ``step-N``.
:func:`recover` (run before every resume) puts back an ``.old-`` checkpoint whose replacement never
landed and clears the other leftovers.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from greendiff.errors import UserInputError

STATE_FILE = "train_state.json"


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and (p / STATE_FILE).exists()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


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


def save_checkpoint(accelerator, run_dir: Path, step: int, state: dict, keep: int, name: str | None = None) -> Path:
    """Save model, optimizer, scheduler, EMA (registered objects) and ``state``; keep the newest ``keep``.

    ``name`` (e.g. ``"best"``) saves outside the rotation of ``step-N`` checkpoints. In a multi-process
    job every rank calls this: accelerate writes the model once (main process) and each rank its RNG
    state; only the main process renames and rotates, between barriers.
    """
    root = run_dir / "checkpoints"
    final = root / (name or f"step-{step}")
    tmp = root / f".tmp-{final.name}"
    main = accelerator.is_main_process
    if main:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(tmp), safe_serialization=True)
        accelerator.wait_for_everyone()
        if main:
            (tmp / STATE_FILE).write_text(json.dumps({**state, "step": step}))
            trash = final.with_name(f".old-{final.name}")
            if final.exists():  # e.g. "best": keep the old one under .old- until the new one is in place
                shutil.rmtree(trash, ignore_errors=True)
                os.replace(final, trash)
            os.replace(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
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


def load_latest(accelerator, run_dir: Path) -> dict | None:
    """Restore the newest checkpoint; returns its state dict, or ``None`` if the run has none."""
    if accelerator.is_main_process:
        recover(run_dir)
    accelerator.wait_for_everyone()
    dirs = checkpoint_dirs(run_dir)
    if not dirs:
        return None
    accelerator.load_state(str(dirs[-1]))
    return json.loads((dirs[-1] / STATE_FILE).read_text())
