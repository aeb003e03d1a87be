"""Trainer speed on this machine: the nano smoke run's wall time, and fp32 vs bf16 autocast throughput.

    python bench/train_speed.py [--repeats 3] [--write-benchmarks]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, today, write_section  # noqa: E402

import torch  # noqa: E402

from greendiff.train import ModelConfig, RecipeConfig, build_unet, diffusion_loss, make_noise_scheduler  # noqa: E402


def smoke_wall_s(repeats: int) -> list[float]:
    """Wall time of `greendiff train --preset nano --max-steps 20`, process start to exit."""
    exe = os.path.join(os.path.dirname(sys.executable), "greendiff")
    times = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            subprocess.run([exe, "train", "--preset", "nano", "--max-steps", "20", "--output-dir", tmp],
                           check=True, capture_output=True, env={**os.environ, "GREENDIFF_LEDGER": f"{tmp}/l.sqlite"})
            times.append(time.perf_counter() - t0)
    return times


def images_per_s(preset: str, bf16: bool, steps: int = 8, batch: int = 64) -> float:
    unet = build_unet(ModelConfig(preset=preset), 16, 1, 1000)
    opt = torch.optim.AdamW(unet.parameters(), 1e-4)
    optim = RecipeConfig()
    scheduler = make_noise_scheduler(optim)
    x = torch.randn(batch, 1, 16, 16)

    def step(i: int) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = diffusion_loss(unet, scheduler, x, torch.Generator().manual_seed(i), optim)
        loss.backward()
        opt.step()
        opt.zero_grad()

    for i in range(2):
        step(i)
    t0 = time.perf_counter()
    for i in range(steps):
        step(i)
    return batch * steps / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write-benchmarks", action="store_true")
    args = parser.parse_args()
    smoke = smoke_wall_s(args.repeats)
    precision = {f"{p}/{'bf16' if bf else 'fp32'}": images_per_s(p, bf) for p in ("nano", "tiny") for bf in (False, True)}
    native = (" avx512_bf16" in Path("/proc/cpuinfo").read_text()) or (" amx_bf16" in Path("/proc/cpuinfo").read_text())
    result = {"date": today(), "machine": machine(), "smoke_wall_s": smoke, "images_per_s": precision,
              "cpu_native_bf16": native, "torch_threads": torch.get_num_threads()}
    (Path(__file__).resolve().parent / "results" / "train_speed.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    if args.write_benchmarks:
        lines = ["## Trainer speed on CPU (`bench/train_speed.py`)", "",
                 f"- Command: `python {' '.join(sys.argv)}`", f"- Machine: {result['machine']}", f"- Date: {result['date']}", "",
                 f"`greendiff train --preset nano --max-steps 20` (process start to exit, {args.repeats} runs): median "
                 f"**{statistics.median(smoke):.1f} s** (min {min(smoke):.1f}, max {max(smoke):.1f}); target < 30 s → "
                 f"**{'met' if statistics.median(smoke) < 30 else 'NOT met'}**.", "",
                 f"Training throughput at 16x16, batch 64, {torch.get_num_threads()} threads; CPU native bf16 "
                 f"(AVX512-BF16/AMX): {'yes' if native else 'no'}.", "",
                 "| preset | fp32 img/s | bf16 autocast img/s | bf16 / fp32 |", "|---|---:|---:|---:|"]
        for p in ("nano", "tiny"):
            fp32, bf16 = precision[f"{p}/fp32"], precision[f"{p}/bf16"]
            lines.append(f"| {p} | {fp32:.0f} | {bf16:.0f} | {bf16 / fp32:.2f}x |")
        lines += ["", "Hence `--mixed-precision auto` uses bf16 on CPUs only where they run it natively; on this machine "
                      "the green recipe trains in fp32."]
        write_section("train_speed", "\n".join(lines))


if __name__ == "__main__":
    main()
