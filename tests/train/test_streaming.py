"""The trainer on data streamed from disk: the same weights as in memory, bit-identical resume, one stream per
run segment started at its step and closed however the run ends."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from greendiff.data import ImageSet, StreamedSet, load_dataset
from greendiff.train import checkpoint_dirs, train
from tests.train.fakes import InterruptAfter


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory):
    """48 scikit-learn digits as 8x8 grey PNGs in class subfolders 0..9."""
    root = tmp_path_factory.mktemp("digits")
    digits = load_dataset("digits", 8)
    for i in range(48):
        path = root / str(int(digits.labels[i])) / f"{i:03d}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(digits.images[i, 0].numpy().astype(np.uint8)).save(path)
    return root


def saved(run_dir, name: str = "model") -> dict:
    return load_file(str(checkpoint_dirs(run_dir)[-1] / f"{name}.safetensors"))


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and len(a) > 0 and all(torch.equal(a[k], b[k]) for k in a)


def start_record(run_dir) -> dict:
    return next(r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r.get("event") == "start")


def test_a_streamed_run_trains_the_same_weights_as_in_memory(tmp_path, digit_folder, tiny_config, tracker):
    config = tiny_config(run__max_steps=6, optim__batch_size=8)
    memory = load_dataset(str(digit_folder), 8)
    streamed = load_dataset(str(digit_folder), 8, cache_max_gb=0.0, workers=1)
    assert isinstance(memory, ImageSet) and isinstance(streamed, StreamedSet)
    train(config, tmp_path / "memory", memory, tracker)
    train(config, tmp_path / "streamed", streamed, tracker)  # 6 steps of 8 of 48: one epoch and its reshuffle
    for name in ("model", "ema", "optimizer"):
        assert same(saved(tmp_path / "memory", name), saved(tmp_path / "streamed", name)), name
    assert start_record(tmp_path / "streamed")["placement"] == streamed.placement
    assert start_record(tmp_path / "streamed")["placement"].endswith("streamed from disk with 1 worker")
    assert start_record(tmp_path / "memory")["placement"].endswith(": in memory")


def test_a_resumed_streamed_run_is_bit_identical_to_an_uninterrupted_one(tmp_path, digit_folder, tiny_config, tracker):
    config = tiny_config(run__max_steps=9, optim__batch_size=8)
    data = load_dataset(str(digit_folder), 8, cache_max_gb=0.0, workers=1)
    train(config, tmp_path / "whole", data, tracker)
    first = train(config, tmp_path / "split", data, tracker, callbacks=[InterruptAfter(4)])
    assert (first.status, first.step) == ("interrupted", 4)
    second = train(config, tmp_path / "split", data, tracker, resume=True)  # the stream starts at step 4, mid-epoch
    assert (second.status, second.step) == ("completed", 9)
    for name in ("model", "ema", "optimizer"):
        assert same(saved(tmp_path / "whole", name), saved(tmp_path / "split", name)), name


class RecordedSet:
    """An in-memory set whose batch streams record where they start and whether they were closed."""

    def __init__(self, data: ImageSet) -> None:
        self.data, self.starts, self.closed, self.drawn = data, [], [], 0

    def __getattr__(self, name):
        return getattr(self.data, name)

    def batches(self, start_step=0, batch_size=1, world_size=1, rank=0, seed=0, stop_step=None):
        self.starts.append((start_step, stop_step))
        try:
            for batch in self.data.batches(start_step, batch_size, world_size, rank, seed, stop_step):
                self.drawn += 1
                yield batch
        finally:
            self.closed.append(start_step)


def test_one_stream_per_segment_from_its_step_closed_however_the_run_ends(tmp_path, tiny_data, tiny_config, tracker,
                                                                         monkeypatch):
    config = tiny_config(run__max_steps=6)
    data = RecordedSet(tiny_data)
    assert train(config, tmp_path, data, tracker, callbacks=[InterruptAfter(2)]).status == "interrupted"
    assert (data.starts, data.closed, data.drawn) == ([(0, 6)], [0], 2)
    assert train(config, tmp_path, data, tracker, resume=True).status == "completed"
    assert (data.starts, data.closed, data.drawn) == ([(0, 6), (2, 6)], [0, 2], 6)

    from greendiff.train import _family

    def broken(*args, **kwargs):
        raise RuntimeError("a loss that fails")
    monkeypatch.setattr(_family, "diffusion_loss", broken)
    failing = RecordedSet(tiny_data)
    with pytest.raises(RuntimeError, match="a loss that fails"):
        train(config, tmp_path / "failing", failing, tracker)
    assert (failing.starts, failing.closed) == ([(0, 6)], [0])
