"""GPU check: latent DiT against pixel UNet, training throughput and NVML energy per 1,000 images, bf16.

Random class-labelled RGB images (uint8, 64x64 by default, 10 classes; the data do not change a step's
cost) and, for each row, a short warm-up then timed steps of the green recipe's epsilon loss at its batch
size, under bf16 autocast, through greendiff's library (the same calls the trainer makes per step):

- ``pixel UNet``: ``build_unet`` on the images (``PixelSpace``);
- ``latent DiT, cached``: ``build_dit`` (patch ``--patch-size``) on the latents of a tiny VAE built from a
  config (``build_vae("nano")``, untrained: throughput does not depend on its weights; 64 px -> 4x16x16),
  the posteriors encoded once beforehand and sampled each step (``LatentBatch.sample``), as with the cache;
- ``latent DiT, uncached``: the same, each step's batch encoded by the VAE first (``LatentSpace.x0``, fp32
  as the trainer does), as with ``--no-latent-cache``.

Rows are interleaved twice. Records images/s and NVML-counter joules per 1,000 training images (the
encode included where it runs), saved in ``bench/results/gpu_check_latent.json``. Needs PyTorch with CUDA and
an NVIDIA GPU: with none it says so and, with ``--write-benchmarks``, writes the section from that saved
result if there is one, else "not run: no GPU lent". About 1-2 minutes on an H200.

    python bench/gpu_check_latent.py [--steps 200] [--preset small] [--resolution 64] [--write-benchmarks]
    python bench/gpu_check_latent.py --report-from bench/results/gpu_check_latent.json   # section from a result
    python bench/gpu_check_latent.py --device cpu --steps 2 --warmup 1 --preset pico --resolution 16  # smoke
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, today, write_section  # noqa: E402

NUM_CLASSES, CHANNELS = 10, 3
ROWS = ("pixel UNet", "latent DiT, cached", "latent DiT, uncached")
KEY = "gpu_check_latent"
TITLE = "## GPU training throughput, latent DiT vs pixel UNet (`bench/gpu_check_latent.py`)"


def build(row: str, preset: str, resolution: int, patch_size: int, device):
    """``(network, space, model side, model channels, parameters)`` of ``row``, on ``device``."""
    from greendiff.train import (
        LatentSpace, PixelSpace, VaeShape, build_dit, build_unet, build_vae, count_parameters, resolve_config,
    )

    if row == "pixel UNet":
        config = resolve_config(overrides={"recipe": "green", "model.preset": preset, "data.resolution": resolution})
        net = build_unet(config.model, resolution, CHANNELS, config.optim.num_train_timesteps, NUM_CLASSES)
        return net.to(device), PixelSpace(), resolution, CHANNELS, count_parameters(net)
    vae = build_vae("nano", CHANNELS, resolution).to(device).eval().requires_grad_(False)
    levels = len(vae.config.block_out_channels)
    shape = VaeShape(image_channels=CHANNELS, latent_channels=vae.config.latent_channels, downsample=2 ** (levels - 1),
                     scaling_factor=float(vae.config.scaling_factor))
    space = LatentSpace(vae, shape, vae_sha256="", resolution=resolution, cache_root=None)
    side = space.latent_side
    net = build_dit(preset, patch_size, side, shape.latent_channels, NUM_CLASSES)
    return net.to(device), space, side, shape.latent_channels, count_parameters(net)


def measure(row: str, preset: str, resolution: int, patch_size: int, steps: int, warmup: int, device_name: str) -> dict:
    import torch

    from greendiff.data import Batch
    from greendiff.train import diffusion_loss, make_noise_scheduler, resolve_config, resolve_precision
    from greendiff.train._latents import posterior_batch

    config = resolve_config(overrides={"recipe": "green", "model.preset": preset, "data.resolution": resolution})
    optim, device = config.optim, torch.device(device_name)
    precision, _ = resolve_precision("bf16", device)
    net, space, side, channels, params = build(row, preset, resolution, patch_size, device)
    if row == "pixel UNet" and optim.channels_last in ("on", "auto"):
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=optim.lr)
    noise_scheduler = make_noise_scheduler(optim, clip_sample=not space.latent)
    g = torch.Generator().manual_seed(0)
    batch = Batch(torch.randint(0, 256, (optim.batch_size, CHANNELS, resolution, resolution), dtype=torch.uint8,
                                generator=g), torch.randint(0, NUM_CLASSES, (optim.batch_size,), generator=g))
    cached = posterior_batch(batch, space.encode) if row == "latent DiT, cached" else None
    labels = batch.labels.to(device)

    def step(i: int) -> None:
        generator = torch.Generator().manual_seed(i)
        x0 = (cached.sample(generator, space.scaling_factor) if cached is not None else space.x0(batch, generator))
        x0 = x0.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = diffusion_loss(net, noise_scheduler, x0, generator, optim, labels=labels,
                                  cond_dropout=optim.cond_dropout, null_class=NUM_CLASSES)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for i in range(warmup):
        step(i)
    elapsed, energy_j = timed(lambda: [step(warmup + i) for i in range(steps)], device)
    images = steps * optim.batch_size
    where = (f" (patch {patch_size}) on {channels}x{side}x{side} latents" if space.latent
             else f" on {CHANNELS}x{side}x{side}")
    return {"row": row, "model": f"{'DiT' if space.latent else 'UNet'} {preset}{where}",
            "params": params, "precision": precision, "batch_size": optim.batch_size, "images_per_s": images / elapsed,
            "joules_per_1000_images": None if energy_j is None else energy_j / images * 1000,
            "method": "NVML counter" if energy_j is not None else "none (no GPU)"}


def timed(work, device) -> tuple[float, float | None]:
    """``(seconds, NVML joules of GPU 0 or None off CUDA)`` of ``work()``, synchronised on both ends."""
    import torch

    meter = None
    if device.type == "cuda":
        from greendiff.energy import NvidiaGpuMeter

        meter = NvidiaGpuMeter.create([0])
        torch.cuda.synchronize()
    e0, t0 = meter.read_energy_j()["gpu:0"] if meter else None, time.perf_counter()
    work()
    if meter:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    energy_j = meter.read_energy_j()["gpu:0"] - e0 if meter else None
    if meter:
        meter.close()
    return elapsed, energy_j


def report(result: dict | None, command: str) -> str:
    """The BENCHMARKS.md section: the table, or "not run: no GPU lent" for ``result`` None."""
    lines = [TITLE, "", f"- Command: `{command}`"]
    if result is None:
        return "\n".join([*lines, f"- Date: {today()}", "", "not run: no GPU lent"])
    a = result["args"]
    lines += [f"- Machine: {result['machine']}, GPU {result['gpu']}", f"- Date: {result['date']}",
              f"- Random class-labelled RGB images (uint8, {a['resolution']}x{a['resolution']}, {NUM_CLASSES} "
              f"classes), green recipe's epsilon loss and batch, bf16 autocast, {a['steps']} timed steps per row after "
              f"{a['warmup']} warm-up steps, rows interleaved twice; VAE: an untrained `build_vae(\"nano\")` "
              "(fp32 encode, as the trainer runs it)", "",
              "| row | model | parameters | precision | batch | images/s | J per 1,000 images (NVML counter) |",
              "|---|---|---:|---|---:|---:|---:|"]
    for r in result["rows"]:
        joules = f"{r['joules_per_1000_images']:.1f}" if r["joules_per_1000_images"] is not None else "—"
        lines.append(f"| {r['row']} | {r['model']} | {r['params']:,} | {r['precision']} | {r['batch_size']} | "
                     f"{r['images_per_s']:.0f} | {joules} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--preset", default="small", help="UNet and DiT preset (sized alike)")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--patch-size", type=int, default=2)
    parser.add_argument("--device", default="cuda", help="cuda; cpu only to smoke-test the script (no energy)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--report-from", type=Path, help="write the section from a saved result, run nothing")
    parser.add_argument("--write-benchmarks", action="store_true")
    args = parser.parse_args()
    command = f"python bench/{Path(sys.argv[0]).name} {' '.join(sys.argv[1:])}".rstrip()
    if args.report_from is not None:
        result = json.loads(args.report_from.read_text())
        write_section(KEY, report(result, result["command"]))
        return 0
    import torch

    saved = args.out / f"{KEY}.json"
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU here: nothing to check")
        if args.write_benchmarks:  # a result saved on a GPU machine earlier is kept, not overwritten
            result = json.loads(saved.read_text()) if saved.is_file() else None
            write_section(KEY, report(result, result["command"] if result else command))
        return 0
    rows = [measure(r, args.preset, args.resolution, args.patch_size, args.steps, args.warmup, args.device)
            for r in ROWS + ROWS]  # interleaved
    result = {"date": today(), "machine": machine(), "command": command,
              "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else "none (CPU smoke run)",
              "args": {k: getattr(args, k) for k in ("steps", "warmup", "preset", "resolution", "patch_size")},
              "rows": rows}
    if args.device == "cuda":
        args.out.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(report(result, command))
    if args.write_benchmarks and args.device == "cuda":
        write_section(KEY, report(result, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
