from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from greendiff.cli._app import main
from greendiff.ledger import Ledger, default_ledger_path
from greendiff.parallel import Dist, split_key, torchrun_command, without_nproc
from greendiff.tracking import DeviceEnergy, breakdown

TINY = ["--preset", "nano", "--set", "model.block_out_channels=8,16", "--dataset", "digits", "--resolution", "8",
        "--batch-size", "8", "--sample-steps", "4", "--set", "run.num_samples=4", "--set", "run.log_every=2",
        "--set", "stop.eval_at_end=true", "--set", "stop.eval_samples=16", "--set", "stop.spread_seeds=1",
        "--country", "FRA", "--set", "optim.warmup_steps=0"]


def test_dist_from_the_launcher_environment():
    assert Dist.from_env({}) == Dist() and not Dist().distributed and Dist().prefix == ""
    d = Dist.from_env({"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4", "GROUP_RANK": "1"})
    assert (d.rank, d.node_rank, d.is_main, d.is_local_main, d.prefix) == (5, 1, False, False, "node1/rank5/")
    assert split_key("node1/rank5/gpu:1") == ("node1", "rank5", "gpu:1") and split_key("cpu:package-0")[2] == "cpu:package-0"


def test_nproc_becomes_a_torchrun_command():
    assert without_nproc(["--max-steps", "5", "--nproc", "2", "--nproc=3", "--name", "x"]) == ["--max-steps", "5", "--name", "x"]
    command = torchrun_command(2, ["--max-steps", "5"])
    assert command[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "greendiff",
                           "train", "--max-steps", "5"]


def test_breakdown_shares_node_energy_by_cpu_time():
    devices = [DeviceEnergy(key, kind, "D", "m", "device", 0.0, None, kwh * 3.6e6, kwh, 0.0)
               for key, kind, kwh in (("node0/rank0/cpu:process-tree", "cpu", 3.0), ("node0/rank0/gpu:0", "gpu", 10.0),
                                      ("node0/rank1/gpu:1", "gpu", 12.0))]
    ranks = [{"rank": 0, "node": 0, "local_rank": 0, "cpu_time_s": 20.0, "node_cpu_time_s": 30.5},
             {"rank": 1, "node": 0, "local_rank": 1, "cpu_time_s": 10.0, "node_cpu_time_s": 0.0}]
    out = breakdown(devices, ranks)
    assert [r["attributed_energy_kwh"] for r in out["ranks"]] == [pytest.approx(12.0), pytest.approx(13.0)]
    assert out["nodes"] == [{"node": "node0", "energy_kwh": 25.0, "ranks": 2, "node_cpu_time_s": 30.5, "ranks_cpu_time_s": 30.0}]


def run(capsys, tmp_path, *extra):
    code = main(["train", *TINY, "--output-dir", str(tmp_path), *map(str, extra)])
    err = capsys.readouterr().err
    assert code == 0, err
    return err


def weights(run_dir):
    return load_file(run_dir / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors")


def test_two_processes_train_one_model_and_one_ledger_run(capsys, tmp_path):
    err = run(capsys, tmp_path / "runs", "--max-steps", "6", "--nproc", "2", "--name", "ddp")
    assert "launching 2 processes" in err  # (the processes' own output goes to the terminal, not to capsys)
    (run_dir,) = (tmp_path / "runs").iterdir()
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    start = events[0]
    assert start["processes"] == 2 and start["effective_batch_size"] == 16 and start["lr_scaling"] == "none"
    (sync,) = [e for e in events if e.get("event") == "ranks_in_sync"]
    assert sync["equal"] and len(sync["checksums"]) == 2  # the replicas are identical after training
    assert sum(1 for e in events if e.get("event") == "start") == 1  # only rank 0 writes
    assert [e for e in events if e.get("event") == "eval"][-1]["final"]
    (record,) = Ledger(default_ledger_path()).list_runs()  # one run for the job
    s = record.summary
    assert s["world_size"] == 2 and [r["rank"] for r in s["ranks"]] == [0, 1] and len(s["nodes"]) == 1
    assert all(d["key"].startswith("node0/rank0/") for d in s["devices"])  # CPU/RAM once, by local rank 0
    assert sum(r["attributed_energy_kwh"] for r in s["ranks"]) == pytest.approx(s["energy_kwh"])
    # the total is the meters' whole span, not the sum of the phases: time between phases (waiting at a
    # collective, rank 0 writing while rank 1 waits, start-up) is in it
    in_phases_kwh = sum(p["energy_j"] for p in s["phases"]) / 3.6e6
    assert s["energy_kwh"] > in_phases_kwh > 0
    node = s["nodes"][0]
    # the node's CPU time (the launcher's tree) against the sum of the two processes' own: the tree adds the
    # torchrun agent (a few tens of ms measured) and the processes' start-up before their meters began
    assert node["ranks_cpu_time_s"] > 0
    assert abs(node["node_cpu_time_s"] - node["ranks_cpu_time_s"]) <= 0.1 * node["ranks_cpu_time_s"] + 1.0
    assert s["cpu_time_s"] == pytest.approx(node["node_cpu_time_s"], abs=0.5)
    assert (run_dir / "pipeline").is_dir() and (run_dir / "emissions.json").is_file()
    assert json.loads((run_dir / "emissions.json").read_text())["world_size"] == 2


def test_a_two_process_run_resumes_to_the_same_model(capsys, tmp_path):
    # a constant learning rate: a 3-step run's cosine schedule would end at 0 where the 6-step one is halfway
    same = ["--nproc", "2", "--set", "run.checkpoint_every=3", "--lr-schedule", "constant"]
    run(capsys, tmp_path / "whole", "--max-steps", "6", *same)
    run(capsys, tmp_path / "split", "--max-steps", "3", *same)
    (split,) = (tmp_path / "split").iterdir()
    code = main(["train", "--resume", str(split), "--max-steps", "6", "--nproc", "2"])
    assert code == 0, capsys.readouterr().err
    (whole,) = (tmp_path / "whole").iterdir()
    a, b = weights(whole), weights(split)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert len(json.loads((split / "emissions.json").read_text())["ledger_run_ids"]) == 2


@pytest.mark.parametrize("args, message", [
    (["--nproc", "0"], "--nproc must be a positive number"),
    (["--nproc", "2", "--carbon-aware", "--max-intensity", "100", "--grid", "CISO"], "does not support several processes"),
    (["--nproc", "200", "--batch-size", "16"], "on each of 200 processes"),
])
def test_bad_parallel_input(capsys, tmp_path, args, message):
    code = main(["train", *TINY, "--output-dir", str(tmp_path / "runs"), *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and not (tmp_path / "runs").exists()


def test_two_nodes_rendezvous_into_one_ledger_run(tmp_path):
    """Two torchrun "nodes" (one process each) on this machine, joined by a c10d rendezvous on loopback:
    one ledger run, each node's CPU and RAM metered by its own local rank 0, a breakdown per node."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "GREENDIFF_LEDGER": str(tmp_path / "ledger.sqlite")}
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                               "--node-rank", str(rank), "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
                               "--rdzv-id", "greendiff-test", "-m", "greendiff", "train", *TINY, "--max-steps", "4",
                               "--output-dir", str(tmp_path / "runs")],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    for node in nodes:
        _, err = node.communicate(timeout=300)
        assert node.returncode == 0, err[-2000:]
    (record,) = Ledger(tmp_path / "ledger.sqlite").list_runs()
    s = record.summary
    assert s["world_size"] == 2 and [n["node"] for n in s["nodes"]] == ["node0", "node1"]
    assert {d["key"].rsplit("/", 1)[0] for d in s["devices"]} == {"node0/rank0", "node1/rank1"}
    for node in s["nodes"]:  # each node's launcher tree against its one process
        assert abs(node["node_cpu_time_s"] - node["ranks_cpu_time_s"]) <= 0.1 * node["ranks_cpu_time_s"] + 1.0
    assert len(list((tmp_path / "runs").iterdir())) == 1  # one run directory, made by rank 0


def test_accelerate_launch_runs_the_same_job(tmp_path):
    """``accelerate launch --multi_gpu`` (torchrun underneath; gloo here, as there is no GPU) trains unchanged."""
    import os
    import shutil
    import subprocess
    import sys

    accelerate = shutil.which("accelerate") or os.path.join(os.path.dirname(sys.executable), "accelerate")
    env = {**os.environ, "GREENDIFF_LEDGER": str(tmp_path / "ledger.sqlite")}
    proc = subprocess.run([accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "greendiff", "train", *TINY,
                           "--max-steps", "4", "--output-dir", str(tmp_path / "runs")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (record,) = Ledger(tmp_path / "ledger.sqlite").list_runs()
    assert record.summary["world_size"] == 2 and len(record.summary["nodes"]) == 1
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert '"equal": true' in (run_dir / "metrics.jsonl").read_text()
