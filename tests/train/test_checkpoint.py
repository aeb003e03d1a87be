"""Checkpoint removal and replacement are atomic from resume's point of view: a kill in the middle
of any delete leaves a hidden folder, never a partial ``step-N`` or ``best``, and ``recover`` puts
the run back in a state resume can use. Kills are simulated by an ``rmtree`` that stops half-way."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest

from greendiff.train import _checkpoint
from greendiff.train._checkpoint import STATE_FILE, checkpoint_dirs, recover, save_checkpoint


class Killed(BaseException):
    pass


class FakeAccelerator(SimpleNamespace):
    is_main_process = True

    def wait_for_everyone(self):
        pass

    def save_state(self, path, safe_serialization=True):
        from pathlib import Path

        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "model.safetensors").write_bytes(b"weights-" + str(self.version).encode())


def make(root, name, version=0):
    folder = root / "checkpoints" / name
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(f"weights-{version}".encode())
    (folder / STATE_FILE).write_text(json.dumps({"step": version}))
    return folder


def half_rmtree(monkeypatch):
    """An rmtree that deletes one file (the model, so a partial folder still has its state file)
    and is then killed."""
    real_rmtree = shutil.rmtree

    def rmtree(path, ignore_errors=False):
        model = path / "model.safetensors"
        if model.exists():
            model.unlink()
            raise Killed
        real_rmtree(path, ignore_errors=True)
    monkeypatch.setattr(_checkpoint.shutil, "rmtree", rmtree)


def test_a_kill_while_rotating_leaves_no_partial_step(tmp_path, monkeypatch):
    make(tmp_path, "step-1", 1)
    half_rmtree(monkeypatch)
    with pytest.raises(Killed):
        save_checkpoint(FakeAccelerator(version=2), tmp_path, 2, {}, keep=1)
    monkeypatch.undo()
    # the half-deleted step-1 is hidden as .del-step-1; step-2 is complete
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step-2"]
    assert all((p / "model.safetensors").is_file() for p in (tmp_path / "checkpoints").glob("step-*"))
    recover(tmp_path)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-2"]


def test_a_kill_between_the_renames_of_a_replacement_puts_the_old_one_back(tmp_path, monkeypatch):
    make(tmp_path, "best", 1)
    real_replace = _checkpoint.os.replace

    def replace(src, dst):
        real_replace(src, dst)
        if str(dst).endswith(".old-best"):
            raise Killed
    monkeypatch.setattr(_checkpoint.os, "replace", replace)
    with pytest.raises(Killed):
        save_checkpoint(FakeAccelerator(version=2), tmp_path, 2, {}, keep=1, name="best")
    monkeypatch.undo()
    assert not (tmp_path / "checkpoints" / "best").exists()
    recover(tmp_path)
    best = tmp_path / "checkpoints" / "best"
    assert (best / "model.safetensors").read_bytes() == b"weights-1"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best"]


def test_a_kill_while_deleting_the_replaced_one_keeps_the_new_one(tmp_path, monkeypatch):
    make(tmp_path, "best", 1)
    half_rmtree(monkeypatch)
    with pytest.raises(Killed):
        save_checkpoint(FakeAccelerator(version=2), tmp_path, 2, {}, keep=1, name="best")
    monkeypatch.undo()
    recover(tmp_path)
    best = tmp_path / "checkpoints" / "best"
    assert (best / "model.safetensors").read_bytes() == b"weights-2"
    assert json.loads((best / STATE_FILE).read_text())["step"] == 2
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best"]


def test_recover_clears_unfinished_writes(tmp_path):
    make(tmp_path, "step-3", 3)
    (tmp_path / "checkpoints" / ".tmp-step-4").mkdir()
    (tmp_path / "checkpoints" / ".tmp-step-4" / "model.safetensors").write_bytes(b"half")
    recover(tmp_path)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-3"]
