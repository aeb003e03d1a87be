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


# -- a job: every rank agrees before a failed save raises -------------------------------------------------------------

def _save_as_rank(rank: int, port: int, root: str, fail: tuple[int, str], out) -> None:
    """One of two gloo processes saving checkpoint 2 together; rank ``fail[0]`` cannot write ``fail[1]`` (ENOSPC)."""
    import errno
    from datetime import timedelta
    from pathlib import Path

    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=30))

    class Rank(FakeAccelerator):
        is_main_process, process_index, num_processes = rank == 0, rank, 2

        def wait_for_everyone(self):
            dist.barrier()

    real_write = _checkpoint._write_file

    def write(path, data):
        if (rank, path.name) == fail:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, data)
    _checkpoint._write_file = write
    try:
        save_checkpoint(Rank(), objects(2.0), Path(root), 2, {"energy_j": 1.0, "fingerprint": SHAPES}, keep=1)
        out.put((rank, "saved"))
    except UserInputError as exc:
        out.put((rank, str(exc)))
    except BaseException as exc:  # noqa: BLE001 -- reported to the test, whatever it is
        out.put((rank, f"{type(exc).__name__}: {exc}"))


@pytest.mark.parametrize("fail", [(0, "model.safetensors"), (1, "rng-1.safetensors")])
def test_a_write_failing_on_one_rank_is_the_same_one_line_error_on_every_rank(tmp_path, fail):
    """Two real processes (gloo) save together; one cannot write its part. Neither waits for ever at the next
    barrier: both raise the one-line error, the partial folder is removed and the previous checkpoint stays."""
    import multiprocessing
    import queue
    import socket

    save(tmp_path, 1, 1.0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    ranks = [context.Process(target=_save_as_rank, args=(rank, port, str(tmp_path), fail, out)) for rank in (0, 1)]
    for p in ranks:
        p.start()
    try:
        results = dict(out.get(timeout=90) for _ in ranks)
    except queue.Empty:
        results = None
    finally:
        for p in ranks:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    assert results is not None, "a rank hung at a barrier"
    failing, other = results[fail[0]], results[1 - fail[0]]
    final = tmp_path / "checkpoints" / "step-2"
    assert failing == f"could not write checkpoint {final}: No space left on device; the previous checkpoint is intact"
    assert other == f"could not write checkpoint {final}: it failed on another process; the previous checkpoint is intact"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-1"]
    assert weight(tmp_path / "checkpoints" / "step-1") == 1.0


def test_an_old_checkpoint_that_cannot_be_removed_is_a_warning_not_a_lost_save(tmp_path, monkeypatch, caplog):
    """The new checkpoint is in place when rotation runs: a removal that fails leaves the old one, with a warning."""
    import errno

    save(tmp_path, 1, 1.0)

    def refuse(path):
        raise PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(_checkpoint, "_discard", refuse)
    assert save(tmp_path, 2, 2.0).name == "step-2"
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step-1", "step-2"]
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning == (f"could not remove the old checkpoint {tmp_path / 'checkpoints' / 'step-1'} (Permission denied); "
                       "it is left beside the newer ones")
    target = objects()
    assert load_latest(FakeAccelerator(), target, tmp_path, SHAPES)["step"] == 2


def _nan_weights(folder):
    """The model file's tensor bytes all 0xFF (NaN in float32), its header and size unchanged."""
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")
    data[start:] = b"\xff" * (len(data) - start)
    path.write_bytes(bytes(data))


def _huge_energy(folder):
    state = json.loads((folder / STATE_FILE).read_text())
    state["energy_j"] = 1e300
    (folder / STATE_FILE).write_text(json.dumps(state))


def _more_bad_steps_than_steps(folder):
    state = json.loads((folder / STATE_FILE).read_text())
    state["divergence"] = {"bad_steps": 10**6, "bad_in_row": 0}
    (folder / STATE_FILE).write_text(json.dumps(state))


@pytest.mark.parametrize("damage, reason", [
    (_nan_weights, "model.safetensors holds values that are not finite"),
    (_more_bad_steps_than_steps, "train_state.json: its non-finite step counts exceed its step 2"),
    (_huge_energy, "train_state.json: energy_j 1e+300 is not an energy (at most 1000000 MWh)")])
def test_a_checkpoint_with_impossible_numbers_is_passed_over(tmp_path, caplog, damage, reason):
    save(tmp_path, 1, 1.0, keep=2)
    newest = save(tmp_path, 2, 2.0, keep=2)
    size = (newest / "model.safetensors").stat().st_size
    damage(newest)
    assert (newest / "model.safetensors").stat().st_size == size
    target = objects(0.0)
    books = load_latest(FakeAccelerator(), target, tmp_path, SHAPES)
    assert books["step"] == 1 and books["energy_j"] == 1.0
    assert float(target.model.weight.detach()[0, 0]) == 1.0
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning.startswith("checkpoint step-2 is unusable (") and reason in warning, warning
    assert warning.endswith("moved aside as .bad-step-2, resuming from step-1")
