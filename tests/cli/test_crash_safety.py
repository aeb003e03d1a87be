"""Crash safety: ``greendiff train`` killed with SIGKILL twenty times at random moments, resumed each time."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import torch
from safetensors.torch import load_file

from greendiff.ledger import Ledger
from greendiff.train import checkpoint_dirs
from greendiff.tracking import run_summary

EXE = os.path.join(os.path.dirname(sys.executable), "greendiff")
ARGS = ["--preset", "nano", "--set", "model.block_out_channels=8,16", "--dataset", "digits", "--resolution", "8",
        "--batch-size", "64", "--sample-steps", "2", "--set", "run.num_samples=4", "--set", "run.log_every=1",
        "--set", "run.checkpoint_every=1", "--set", "run.keep_checkpoints=2", "--set", "run.sample_every=1000",
        "--lr-schedule", "constant", "--max-steps", "150", "--no-gpu", "--country", "FRA"]
KILLS = 20


def test_twenty_kills_lose_nothing(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GREENDIFF_LEDGER": str(tmp_path / "ledger.sqlite")}
    subprocess.run([EXE, "train", *ARGS, "--output-dir", str(tmp_path / "whole")], check=True, env=env, capture_output=True)
    rng = random.Random()
    first = [EXE, "train", *ARGS, "--output-dir", str(tmp_path / "killed"), "--name", "k"]
    kills, starts, run_dir = 0, 0, None
    while True:
        command = first if run_dir is None else [EXE, "train", "--resume", str(run_dir), "--no-gpu", "--country", "FRA"]
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        starts += 1
        if kills == KILLS:
            assert proc.wait(timeout=300) == 0
            break
        # wait for training to be under way (new metrics lines, and a first checkpoint to resume from), then kill
        # somewhere in a step, a checkpoint write (one after every step) or a ledger write
        metrics = (lambda: next(iter((tmp_path / "killed").glob("*/metrics.jsonl")), None))
        lines_before = len(metrics().read_text().splitlines()) if metrics() else 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            path = metrics()
            if (path is not None and len(path.read_text().splitlines()) > lines_before + 1
                    and checkpoint_dirs(path.parent)):
                break
            time.sleep(0.01)
        if proc.poll() is not None:  # it finished first: the run is done
            assert proc.returncode == 0, f"start {starts} exited with {proc.returncode}"
            break
        time.sleep(rng.uniform(0.0, 0.25))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        (run_dir,) = (tmp_path / "killed").iterdir()
        for checkpoint in (run_dir / "checkpoints").glob("step-*"):  # never a half-written one where resume looks
            assert (checkpoint / "train_state.json").is_file() and (checkpoint / "model.safetensors").is_file(), checkpoint
        Ledger(tmp_path / "ledger.sqlite").list_runs()  # the ledger stays readable
    assert kills == KILLS, f"only {kills} kills landed before the run finished"
    (whole,) = (tmp_path / "whole").iterdir()
    a, b = (load_file(str(checkpoint_dirs(d)[-1] / "model.safetensors")) for d in (whole, run_dir))
    assert checkpoint_dirs(run_dir)[-1].name == "step-150" and all(torch.equal(a[k], b[k]) for k in a)
    ledger = Ledger(tmp_path / "ledger.sqlite")
    segments = [r for r in ledger.list_runs() if r.assumptions.get("run_dir", "").endswith(run_dir.name)]
    assert len(segments) == starts  # every start, killed or not, is a ledger run
    assert sum(r.status == "completed" for r in segments) == 1
    emissions = __import__("json").loads((run_dir / "emissions.json").read_text())
    final_kwh = emissions["energy_kwh"]
    # the total carried through the checkpoints covers the surviving work of every segment ...
    assert emissions["run_total_energy_kwh"] > final_kwh
    # ... and the ledger holds at least that much: every checkpoint also writes a ledger sample, so each killed
    # segment's ledger energy reaches its last checkpoint (10 % for the meters' start offsets at these tiny energies)
    ledger_kwh = sum(run_summary(ledger, r).energy_kwh for r in segments)
    assert ledger_kwh >= 0.9 * emissions["run_total_energy_kwh"]
