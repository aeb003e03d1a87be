from __future__ import annotations

import pytest
import torch

from greendiff.carbon import Location
from greendiff.data import ImageSet, load_dataset
from greendiff.energy import EnergyMonitor, MonitorOptions
from greendiff.tracking import Tracker
from greendiff.train import resolve_config

TINY = {"model.preset": "nano", "model.block_out_channels": "8,16", "data.dataset": "digits", "data.resolution": 8,
        "optim.batch_size": 16, "optim.lr": 2e-3, "optim.warmup_steps": 0, "optim.lr_schedule": "constant",
        "optim.sample_steps": 4, "run.num_samples": 4, "run.log_every": 1, "run.sample_every": 1000,
        "run.checkpoint_every": 1000}


@pytest.fixture(scope="session")
def tiny_data() -> ImageSet:
    """64 scikit-learn digits at 8x8: a fixed tiny set."""
    full = load_dataset("digits", 8)
    return ImageSet(full.images[:64].clone(), "digits[:64]")


@pytest.fixture
def tiny_config():
    def make(**overrides):
        return resolve_config(overrides={**TINY, **{k.replace("__", "."): v for k, v in overrides.items()}})
    return make


@pytest.fixture
def tracker(tmp_path):
    t = Tracker("test", kind="train", ledger=tmp_path / "ledger.sqlite",
                monitor=EnergyMonitor.detect(MonitorOptions(measure_gpus=False))).start()
    yield t
    if t.summary is None:
        t.stop()


@pytest.fixture
def tracker_for(tmp_path):
    """``tracker_for(meter)``: a started tracker of that one (fake) meter, in France at PUE 1, stopped after the
    test if it was not."""
    started = []

    def start(meter):
        started.append(Tracker("metered", kind="train", location=Location(country="FRA"), pue=1.0,
                               ledger=tmp_path / "ledger.sqlite", monitor=EnergyMonitor([meter]),
                               sample_interval_s=0.0).start())
        return started[-1]
    yield start
    for tracker in started:
        if tracker.summary is None:
            tracker.stop()


def pytest_configure(config):
    torch.set_num_threads(1)  # deterministic and fair on a 2-core CI machine
