from __future__ import annotations

from pathlib import Path

import pytest

from greendiff.workflows import MeasurementOptions, TrainJob, run_train

#: The tiny trainer settings of the CLI tests, as config keys: a 2-level nano UNet on 8x8 digits.
TINY = {"model.preset": "nano", "model.block_out_channels": "16,32", "data.dataset": "digits", "data.resolution": 8,
        "optim.batch_size": 16, "optim.sample_steps": 4, "run.num_samples": 4, "run.log_every": 2}


def measurement(ledger: Path) -> MeasurementOptions:
    return MeasurementOptions(country="FRA", no_gpu=True, ledger=ledger)


def trained(root: Path, overrides: dict) -> Path:
    """A run trained for 4 steps in ``root`` (its own ledger) with ``overrides`` over :data:`TINY`."""
    outcome = run_train(TrainJob(overrides={**TINY, **overrides, "run.max_steps": 4, "run.output_dir": str(root / "runs")},
                                 measurement=measurement(root / "l.sqlite")))
    assert outcome.status == "completed"
    return outcome.run_dir


@pytest.fixture(scope="module")
def parent(tmp_path_factory) -> Path:
    """A trained run (4 steps) that the compression and scoring workflows start from."""
    return trained(tmp_path_factory.mktemp("parent"), {})
