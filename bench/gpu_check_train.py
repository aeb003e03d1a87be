"""GPU check: green vs baseline training throughput and NVML energy on a 32x32 UNet with CUDA.

For each recipe: a short warm-up, then timed steps at its own batch size; records images/s and
NVML-counter joules per 1,000 training images. Needs PyTorch with CUDA and an NVIDIA GPU; exits 0
with a message where there is none.

    python bench/gpu_check_train.py [--steps 200] [--preset small] [--write-benchmarks]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, today, write_section  # noqa: E402


def measure(recipe: str, preset: str, steps: int) -> dict:
    import torch

    from greendiff.energy import NvidiaGpuMeter
    from greendiff.train import build_unet, diffusion_loss, make_noise_scheduler, resolve_config, resolve_precision

    config = resolve_config(overrides={"recipe": recipe, "model.preset": preset, "data.resolution": 32})
    optim = config.optim
    device = torch.device("cuda")
    precision, _ = resolve_precision(optim.mixed_precision, device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    unet = build_unet(config.model, 32, 3, optim.num_train_timesteps).to(device)
    if optim.channels_last in ("on", "auto"):
        unet = unet.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(unet.parameters(), lr=optim.lr)
    noise_scheduler = make_noise_scheduler(optim)
    x = torch.randn(optim.batch_size, 3, 32, 32, device=device)
    meter = NvidiaGpuMeter.create([0])

    def step(i: int) -> None:
        with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
            loss = diffusion_loss(unet, noise_scheduler, x, torch.Generator().manual_seed(i), optim)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for i in range(20):
        step(i)
    torch.cuda.synchronize()
    e0, t0 = meter.read_energy_j()["gpu:0"], time.perf_counter()
    for i in range(steps):
        step(i)
    torch.cuda.synchronize()
    elapsed, energy_j = time.perf_counter() - t0, meter.read_energy_j()["gpu:0"] - e0
    meter.close()
    images = steps * optim.batch_size
    return {"recipe": recipe, "precision": precision, "batch_size": optim.batch_size, "images_per_s": images / elapsed,
            "joules_per_1000_images": energy_j / images * 1000, "method": "NVML counter"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--write-benchmarks", action="store_true")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("no CUDA GPU here: nothing to check")
        return 0
    rows = [measure(r, args.preset, args.steps) for r in ("baseline", "green", "baseline", "green")]  # interleaved
    result = {"date": today(), "machine": machine(), "gpu": torch.cuda.get_device_name(0), "preset": args.preset,
              "steps": args.steps, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check_train.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    if args.write_benchmarks:
        lines = ["## GPU training throughput, green vs baseline (`bench/gpu_check_train.py`)", "",
                 f"- Command: `python {' '.join(sys.argv)}`", f"- Machine: {result['machine']}, GPU {result['gpu']}",
                 f"- Date: {result['date']}", f"- {args.preset} UNet, 32x32x3, {args.steps} timed steps per run, "
                 "recipes interleaved twice", "",
                 "| recipe | precision | batch | images/s | J per 1,000 images (NVML counter) |", "|---|---|---:|---:|---:|"]
        lines += [f"| {r['recipe']} | {r['precision']} | {r['batch_size']} | {r['images_per_s']:.0f} | "
                  f"{r['joules_per_1000_images']:.1f} |" for r in rows]
        write_section("gpu_check_train", "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
