"""GPU check: power-limit sweep of a 32x32 training config on an NVIDIA GPU (H100/H200 class).

Runs ``greendiff hardware`` on ``cuda:0`` for a 32x32 config (preset ``--preset``, MNIST upsampled
to 32 px, batch ``--batch-size``) with limits 700 -> 300 W in 100 W steps (clipped to what the GPU
accepts), ``--steps`` profiled steps per limit (``greendiff hardware --train-steps``) after
``--warmup`` unmetered ones (``--unmetered-steps``); records energy per sample and time per sample per
limit, and the limit chosen within 10 % slowdown. Setting limits needs root; without it the script
records the default limit only and says so. Exits 0 with a message where there is no GPU.

    python bench/gpu_check_power.py [--steps 40] [--out DIR] [--write-benchmarks]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, today, write_section  # noqa: E402

EXE = os.path.join(os.path.dirname(sys.executable), "greendiff")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--limits", default="700,600,500,400,300")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    parser.add_argument("--write-benchmarks", action="store_true")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("no CUDA GPU here: nothing to sweep")
        return
    from greendiff.energy import NvidiaPowerLimit

    control = NvidiaPowerLimit.open(0)
    low, high = control.constraints_w() if control else (0.0, float("inf"))
    if control:
        control.close()
    limits = [w for w in (float(x) for x in args.limits.split(",")) if low <= w <= high] or [high]
    args.out.mkdir(parents=True, exist_ok=True)
    result = args.out / "gpu_power_sweep.json"
    cmd = [EXE, *hardware_argv(args, limits, result)]
    print(" ".join(cmd[1:]), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    print(proc.stdout[-4000:], proc.stderr[-4000:])
    if proc.returncode != 0:
        raise SystemExit(f"greendiff hardware failed ({proc.returncode})")
    report = json.loads(result.read_text())
    if args.write_benchmarks:
        write_section("gpu-power-sweep", render(report, args, cmd, limits))


def hardware_argv(args: argparse.Namespace, limits: list[float], result: Path) -> list[str]:
    """The ``greendiff hardware`` arguments of the sweep (``-o result`` last: :func:`render` leaves it out)."""
    return ["hardware", "--devices", "cuda:0", "--train-steps", str(args.steps), "--unmetered-steps", str(args.warmup),
            "--limits", ",".join(f"{w:g}" for w in limits), "--set", f"model.preset={args.preset}", "--set", "data.resolution=32",
            "--set", f"optim.batch_size={args.batch_size}", "-o", str(result)]


def render(report: dict, args, cmd: list[str], limits: list[float]) -> str:
    lines = ["## GPU check: power-limit sweep (32x32 training)", "",
             f"`python bench/gpu_check_power.py --steps {args.steps} --write-benchmarks` "
             f"(runs `greendiff {' '.join(cmd[1:-2])}`) · {today()} · {machine()}", ""]
    for sweep in report["sweeps"]:
        lines += [f"{sweep['name']} ({sweep['device']}), default limit {sweep['default_w']:.0f} W"
                  + ("" if sweep["permitted"] else f": **limits not settable** ({sweep['note']})"), "",
                  "| limit | mJ / sample | ms / sample | mean power |", "|---:|---:|---:|---:|"]
        for c in sweep["costs"]:
            limit = "current" if c["limit_w"] is None else f"{c['limit_w']:.0f} W"
            lines.append(f"| {limit} | {c['energy_per_sample_kwh'] * 3.6e9:.3f} | {c['s_per_sample'] * 1e3:.4f} | {c['power_w']:.0f} W |")
        best = sweep["best"]
        lines += ["", f"Chosen within {sweep['max_slowdown']:.0%} slowdown: {best['limit_w'] or sweep['default_w']:.0f} W.", ""]
    if not report["sweeps"]:
        lines += ["No sweep: " + "; ".join(report["notes"]), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
