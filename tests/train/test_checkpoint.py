"""Checkpoint removal and replacement are atomic from resume's point of view: a kill in the middle
of any delete leaves a hidden folder, never a partial ``step-N`` or ``best``, and ``recover`` puts
the run back in a state resume can use. Kills are simulated by an ``rmtree`` that stops half-way."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from greendiff.errors import UserInputError
from greendiff.train import _checkpoint
from greendiff.train._checkpoint import (
    STATE_FILE, TrainingObjects, checkpoint_dirs, load_latest, recover, save_checkpoint,
)

SHAPES = {"optim.ema": False}  # the fingerprint these tests' checkpoints carry


class Killed(BaseException):
    pass


class FakeAccelerator(SimpleNamespace):
    is_main_process, process_index, num_processes = True, 0, 1

    def wait_for_everyone(self):
        pass


def objects(version=0.0):
    """A 2x2 linear model whose weights are ``version``, with AdamW (one step taken) and a LambdaLR."""
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    scheduler.step()
    with torch.no_grad():
        model.weight.fill_(version)
    return TrainingObjects(model, optimizer, scheduler)


def save(root, step, version=0.0, name=None, keep=1):
    return save_checkpoint(FakeAccelerator(), objects(version), root, step, {"energy_j": 1.0, "fingerprint": SHAPES},
                           keep=keep, name=name)


def weight(folder):
    return float(load_file(str(folder / "model.safetensors"))["weight"][0, 0])


def make(root, name, version=0):
    folder = save(root, version, float(version), name=None if name.startswith("step-") else name, keep=100)
    assert folder.name == name
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
        save(tmp_path, 2, 2.0)
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
        save(tmp_path, 2, 2.0, name="best")
    monkeypatch.undo()
    assert not (tmp_path / "checkpoints" / "best").exists()
    recover(tmp_path)
    best = tmp_path / "checkpoints" / "best"
    assert weight(best) == 1.0
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best"]


def test_a_kill_while_deleting_the_replaced_one_keeps_the_new_one(tmp_path, monkeypatch):
    make(tmp_path, "best", 1)
    half_rmtree(monkeypatch)
    with pytest.raises(Killed):
        save(tmp_path, 2, 2.0, name="best")
    monkeypatch.undo()
    recover(tmp_path)
    best = tmp_path / "checkpoints" / "best"
    assert weight(best) == 2.0
    assert json.loads((best / STATE_FILE).read_text())["step"] == 2
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best"]


def test_recover_clears_unfinished_writes(tmp_path):
    make(tmp_path, "step-3", 3)
    (tmp_path / "checkpoints" / ".tmp-step-4").mkdir()
    (tmp_path / "checkpoints" / ".tmp-step-4" / "model.safetensors").write_bytes(b"half")
    recover(tmp_path)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-3"]


# -- loading: safetensors and JSON only, checked before anything is applied --------------------------------------------

def test_a_checkpoint_round_trips_without_unpickling_anything(tmp_path, monkeypatch):
    import pickle

    source = objects(3.0)
    save_checkpoint(FakeAccelerator(), source, tmp_path, 7, {"energy_j": 5.0, "fingerprint": SHAPES, "extra": [1]}, keep=1)

    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint load unpickled")
    for module, name in ((pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")):
        monkeypatch.setattr(module, name, refuse)
    target = objects(0.0)
    books = load_latest(FakeAccelerator(), target, tmp_path, SHAPES)
    assert (books["step"], books["energy_j"], books["extra"]) == (7, 5.0, [1])
    assert torch.equal(target.model.weight, source.model.weight)
    a, b = source.optimizer.state_dict(), target.optimizer.state_dict()
    assert a["param_groups"] == b["param_groups"]  # betas a tuple again
    assert all(torch.equal(a["state"][i][k], b["state"][i][k]) for i in a["state"] for k in a["state"][i])
    assert target.lr_scheduler.state_dict() == source.lr_scheduler.state_dict()


@pytest.mark.parametrize("edit, reason", [
    (lambda s: s["lr_scheduler"].pop("last_epoch"), "train_state.json: lr_scheduler lacks last_epoch"),
    (lambda s: s["optimizer"]["param_groups"][0].pop("betas"), "optimizer.param_groups[0] lacks betas"),
    (lambda s: s.pop("files"), "train_state.json lacks files"),
    (lambda s: s["files"].update({"rng-0.safetensors": 3}), "rng-0.safetensors is truncated or altered (")])
def test_a_checkpoint_with_a_missing_key_is_passed_over(tmp_path, caplog, edit, reason):
    save(tmp_path, 1, 1.0, keep=2)
    newest = save(tmp_path, 2, 2.0, keep=2)
    state = json.loads((newest / STATE_FILE).read_text())
    edit(state)
    (newest / STATE_FILE).write_text(json.dumps(state))
    target = objects(0.0)
    assert load_latest(FakeAccelerator(), target, tmp_path, SHAPES)["step"] == 1
    assert float(target.model.weight.detach()[0, 0]) == 1.0
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning.startswith("checkpoint step-2 is unusable (") and reason in warning
    assert warning.endswith("moved aside as .bad-step-2, resuming from step-1")


def test_an_old_accelerate_checkpoint_is_named_and_not_loaded(tmp_path):
    folder = tmp_path / "checkpoints" / "step-5"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"")
    (folder / "custom_checkpoint_0.pkl").write_bytes(b"")
    (folder / STATE_FILE).write_text(json.dumps({"step": 5, "energy_j": 1.0}))
    with pytest.raises(UserInputError, match=r"no usable checkpoint in .*: step-5: an older greendiff's checkpoint "
                                             r"\(accelerate pickles\), which greendiff no longer loads"):
        load_latest(FakeAccelerator(), objects(), tmp_path, SHAPES)


def test_a_checkpoint_of_other_shapes_names_the_keys(tmp_path):
    save(tmp_path, 1)
    changed = {"model.preset": "nano", "optim.ema": False}
    with pytest.raises(UserInputError, match=r"^config no longer matches checkpoint step-1: model.preset unset -> nano; "
                                             r"undo the edit, or start a new run$"):
        load_latest(FakeAccelerator(), objects(), tmp_path, changed)


def test_a_wrong_shape_in_the_file_is_passed_over(tmp_path):
    from safetensors.torch import save_file

    folder = save(tmp_path, 1)
    save_file({"weight": torch.zeros(3, 2), "bias": torch.zeros(2)}, str(folder / "model.safetensors"))
    state = json.loads((folder / STATE_FILE).read_text())
    state["files"]["model.safetensors"] = (folder / "model.safetensors").stat().st_size
    (folder / STATE_FILE).write_text(json.dumps(state))
    with pytest.raises(UserInputError, match=r"step-1: model.safetensors: weight is torch.float32 \[3, 2\], "
                                             r"not torch.float32 \[2, 2\]"):
        load_latest(FakeAccelerator(), objects(), tmp_path, SHAPES)
