"""The data failing mid-run (a file deleted or corrupted after the start, a loader worker killed by the OOM
killer): the run ends ``failed`` with a checkpoint of its last completed step, which resumes bit-identically."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from greendiff.errors import UserInputError
from greendiff.train import _step, checkpoint_dirs, train

WORKER_KILLED = "DataLoader worker (pid 4242) is killed by signal: Killed. "


class FailingSet:
    """An in-memory set whose batch streams raise ``error`` when the batch of step index ``at`` is drawn."""

    def __init__(self, data, at: int, error: Exception) -> None:
        self.data, self.at, self.error, self.closed = data, at, error, 0

    def __getattr__(self, name):
        return getattr(self.data, name)

    def batches(self, start_step=0, batch_size=1, world_size=1, rank=0, seed=0, stop_step=None):
        try:
            for step, batch in enumerate(self.data.batches(start_step, batch_size, world_size, rank, seed, stop_step),
                                         start_step):
                if step == self.at:
                    raise self.error
                yield batch
        finally:
            self.closed += 1


def records(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def weights(run_dir) -> dict:
    return load_file(str(checkpoint_dirs(run_dir)[-1] / "model.safetensors"))


@pytest.mark.parametrize("error, reason", [
    (UserInputError("image cat/007.png: cannot decode (truncated file)"),
     "the data failed at step 6: image cat/007.png: cannot decode (truncated file)"),
    (RuntimeError(WORKER_KILLED),
     "a data loader worker was killed (out of memory?) at step 6: DataLoader worker (pid 4242) is killed by signal: Killed."),
])
def test_a_batch_that_fails_ends_the_run_failed_with_a_checkpoint_of_the_last_step(tmp_path, tiny_data, tiny_config,
                                                                                   tracker, error, reason):
    config = tiny_config(run__max_steps=8, run__checkpoint_every=4)
    data = FailingSet(tiny_data, 5, error)
    result = train(config, tmp_path / "run", data, tracker)
    assert (result.status, result.step, result.stop_reason) == ("failed", 5, reason)
    assert [p.name for p in checkpoint_dirs(tmp_path / "run")] == ["step-4", "step-5"]
    assert records(tmp_path / "run")[-1] == {"event": "failed", "step": 5, "reason": reason}
    assert data.closed == 1 and not (tmp_path / "run" / "pipeline").exists()


def test_the_failed_runs_checkpoint_resumes_bit_identically(tmp_path, tiny_data, tiny_config, tracker):
    config = tiny_config(run__max_steps=8, run__checkpoint_every=4)
    train(config, tmp_path / "whole", tiny_data, tracker)
    failed = train(config, tmp_path / "split", FailingSet(tiny_data, 6, RuntimeError(WORKER_KILLED)), tracker)
    assert (failed.status, failed.step) == ("failed", 6)
    resumed = train(config, tmp_path / "split", tiny_data, tracker, resume=True)
    assert (resumed.status, resumed.step) == ("completed", 8)
    whole, split = weights(tmp_path / "whole"), weights(tmp_path / "split")
    assert whole.keys() == split.keys() and all(torch.equal(whole[k], split[k]) for k in whole)


def test_a_worker_death_raised_during_the_loss_keeps_the_last_completed_step(tmp_path, tiny_data, tiny_config, tracker):
    """torch's SIGCHLD handler raises a worker's death wherever the main process is: here in the loss of step 4,
    before the update, so the weights are still those of step 3."""
    from greendiff.train import family_for

    config = tiny_config(run__max_steps=8)
    loss, calls = family_for(config).loss, iter(range(100))

    def dying_loss(*args, **kwargs):
        if next(calls) == 3:
            raise RuntimeError(WORKER_KILLED)
        return loss(*args, **kwargs)
    result = train(config, tmp_path, tiny_data, tracker, objective=dying_loss)
    assert (result.status, result.step) == ("failed", 3)
    assert result.stop_reason.startswith("a data loader worker was killed (out of memory?) at step 4: ")
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step-3"]


def test_a_worker_death_that_cuts_an_update_short_saves_no_half_updated_weights(tmp_path, tiny_data, tiny_config,
                                                                                tracker, monkeypatch):
    real_update, updates = _step.apply_update, iter(range(100))

    def update_then_die(accelerator, unet, objects, loss, grad_clip):
        done = real_update(accelerator, unet, objects, loss, grad_clip)
        if next(updates) == 4:  # step 5's optimizer step is taken, its step count not yet
            raise RuntimeError(WORKER_KILLED)
        return done
    monkeypatch.setattr(_step, "apply_update", update_then_die)
    result = train(tiny_config(run__max_steps=8, run__checkpoint_every=2), tmp_path, tiny_data, tracker)
    assert (result.status, result.step) == ("failed", 4)
    assert result.stop_reason == ("a data loader worker was killed (out of memory?) at step 5: DataLoader worker "
                                  "(pid 4242) is killed by signal: Killed.; it cut the update short, so the newest "
                                  "checkpoint stands")
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step-2", "step-4"]


@pytest.mark.parametrize("message", ["CUDA error: out of memory", "DataLoader worker exited for a reason of its own"])
def test_other_errors_while_drawing_are_not_data_failures(tmp_path, tiny_data, tiny_config, tracker, message):
    with pytest.raises(RuntimeError, match=message):
        train(tiny_config(run__max_steps=4), tmp_path, FailingSet(tiny_data, 2, RuntimeError(message)), tracker)
    assert checkpoint_dirs(tmp_path) == []
