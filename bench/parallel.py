"""Data-parallel training on this machine: 1 process against 2, the same effective batch.

`greendiff train` on the bundled MNIST (tiny UNet, 16x16) for ``--steps`` steps with an effective
batch of ``--batch`` images: one process with the whole batch, then ``--nproc 2`` with half each
(torchrun, gloo). Interleaved, ``--repeats`` times. The energy is the ledger's (one run per job,
every process counted); throughput is the images of the training steps over the time in them
(rank 0's ``train`` windows, which include waiting for the other rank).

    python bench/parallel.py [--steps 150] [--repeats 2] [--write-benchmarks]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, today, write_section  # noqa: E402

from greendiff.units import kwh_to_joules  # noqa: E402

EXE = os.path.join(os.path.dirname(sys.executable), "greendiff")
HERE = Path(__file__).resolve().parent


def one(nproc: int, steps: int, batch: int, tmp: Path, tag: str) -> dict:
    env = {**os.environ, "GREENDIFF_LEDGER": str(tmp / f"{tag}.sqlite"), "GREENDIFF_COUNTRY": "FRA"}
    out = tmp / tag
    cmd = [EXE, "train", "--preset", "tiny", "--max-steps", str(steps), "--batch-size", str(batch // nproc),
           "--set", f"run.sample_every={steps + 1}", "--set", f"run.checkpoint_every={steps + 1}",
           "--set", "run.log_every=25", "--output-dir", str(out), "--name", tag]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    (run_dir,) = out.iterdir()
    s = json.loads((run_dir / "emissions.json").read_text())
    train = next(p for p in s["phases"] if p["name"] == "train")
    images = steps * batch
    return {"nproc": nproc, "images": images, "train_s": train["duration_s"], "wall_s": s["duration_s"],
            "images_per_s": images / train["duration_s"], "energy_kwh": s["energy_kwh"],
            "j_per_image": kwh_to_joules(s["energy_kwh"]) / images, "cpu_time_s": s["cpu_time_s"],
            "ranks": s.get("ranks"), "methods": s["methods"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=64, help="Effective batch (split across processes).")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--write-benchmarks", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for nproc in (1, 2):
                rows.append(one(nproc, args.steps, args.batch, Path(tmp), f"p{nproc}-r{r}"))
                print(json.dumps({k: v for k, v in rows[-1].items() if k != "ranks"}), flush=True)
    out = HERE / "results" / "parallel.json"
    out.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))

    def mean(nproc: int, key: str) -> float:
        return statistics.fmean(r[key] for r in rows if r["nproc"] == nproc)

    lines = ["## Data-parallel training: 1 against 2 processes on this machine", "",
             f"`python bench/parallel.py --steps {args.steps} --repeats {args.repeats} --write-benchmarks` · {today()} · "
             f"{machine()}", "",
             f"Tiny UNet, MNIST 16×16, {args.steps} steps at an effective batch of {args.batch} (2 processes: "
             f"{args.batch // 2} each, torchrun + gloo), no evaluation; interleaved, {args.repeats} repeats. Energy: the "
             "ledger's one run per job (CPU-time estimate over the launcher's process tree).", "",
             "| processes | images/s (train steps) | wall time | energy / image | CPU time |",
             "|---:|---:|---:|---:|---:|"]
    for nproc in (1, 2):
        lines.append(f"| {nproc} | {mean(nproc, 'images_per_s'):.0f} | {mean(nproc, 'wall_s'):.1f} s | "
                     f"{mean(nproc, 'j_per_image') * 1e3:.2f} mJ | {mean(nproc, 'cpu_time_s'):.1f} s |")
    speed = mean(2, "images_per_s") / mean(1, "images_per_s")
    energy = mean(2, "j_per_image") / mean(1, "j_per_image")
    lines += ["", f"2 processes: {speed:.2f}x the throughput, {energy:.2f}x the energy per image. "
              "No GPU was lent to this task: the single-GPU figure is not measured (run this script's "
              "`greendiff train --nproc` on a GPU machine)."]
    print("\n".join(lines))
    if args.write_benchmarks:
        write_section("parallel", "\n".join(lines))


if __name__ == "__main__":
    main()
