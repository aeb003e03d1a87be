from __future__ import annotations

import pytest

from greendiff.cli._app import main

TINY = ["--preset", "nano", "--set", "model.block_out_channels=8,16", "--dataset", "digits", "--resolution", "8",
        "--batch-size", "16", "--sample-steps", "4", "--set", "run.num_samples=4", "--set", "run.log_every=1",
        "--set", "stop.eval_at_end=true", "--set", "stop.eval_samples=16", "--set", "stop.eval_every=3",
        "--set", "stop.spread_seeds=1", "--max-steps", "6", "--country", "FRA"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two finished tiny training runs (different learning rates) in one ledger: their run directories."""
    root = tmp_path_factory.mktemp("runs")
    mp = pytest.MonkeyPatch()
    mp.setenv("GREENDIFF_LEDGER", str(root / "ledger.sqlite"))
    for lr, name in (("2e-3", "a"), ("5e-4", "b")):
        assert main(["train", *TINY, "--lr", lr, "--output-dir", str(root / "runs"), "--name", name]) == 0
    yield root, sorted((root / "runs").iterdir())
    mp.undo()
