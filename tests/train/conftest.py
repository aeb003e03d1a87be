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


# -- fine-tuning (issue 22): tiny pipelines and captioned digits, built once per session ---------------------------

#: Caption words of the digits (the tiny tokenizers know "seven" whole and spell the others in letters).
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def write_captioned_digits(folder, count: int, caption_every: int = 1):
    """``count`` 16x16 scikit-learn digits as ``0.png``.. in ``folder`` with a ``metadata.jsonl`` captioning
    each ``caption_every``-th one "a handwritten digit <name>" (1: all of them). Returns ``folder``."""
    import json
    from pathlib import Path

    from PIL import Image

    from greendiff.data import load_digits

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    digits, rows = load_digits(16), []
    for i in range(count):
        Image.fromarray(digits.images[i, 0].numpy()).save(folder / f"{i}.png")
        if i % caption_every == 0:
            rows.append(json.dumps({"file_name": f"{i}.png",
                                    "text": f"a handwritten digit {DIGIT_NAMES[int(digits.labels[i])]}"}))
    (folder / "metadata.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory):
    """A tiny Stable-Diffusion-layout pipeline folder (read-only: copy it before changing it)."""
    from tests.train.tiny_pipelines import save_tiny_sd_pipeline

    return save_tiny_sd_pipeline(tmp_path_factory.mktemp("tiny-sd") / "pipe")


@pytest.fixture(scope="session")
def tiny_sd3(tmp_path_factory):
    """A tiny Stable Diffusion 3 pipeline folder (read-only)."""
    from tests.train.tiny_pipelines import save_tiny_sd3_pipeline

    return save_tiny_sd3_pipeline(tmp_path_factory.mktemp("tiny-sd3") / "pipe")


@pytest.fixture(scope="session")
def captioned_digits(tmp_path_factory):
    """24 captioned 16x16 digits (an image folder with metadata.jsonl; read-only)."""
    return write_captioned_digits(tmp_path_factory.mktemp("captioned") / "digits", 24)
