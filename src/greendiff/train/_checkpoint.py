"""Atomic checkpoints on top of accelerate's ``save_state``/``load_state``.

A checkpoint is written to ``checkpoints/.tmp-step-N`` and renamed to ``checkpoints/step-N`` only
when complete, so a crash or a full disk never leaves a half-written checkpoint where resume looks.
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
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
    except OSError as exc:
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise UserInputError(f"could not write checkpoint {final}: {exc.strerror or exc}; "
                             "the previous checkpoint is intact") from None
    if main:
        for old in checkpoint_dirs(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_latest(accelerator, run_dir: Path) -> dict | None:
    """Restore the newest checkpoint; returns its state dict, or ``None`` if the run has none."""
    dirs = checkpoint_dirs(run_dir)
    if not dirs:
        return None
    accelerator.load_state(str(dirs[-1]))
    return json.loads((dirs[-1] / STATE_FILE).read_text())
