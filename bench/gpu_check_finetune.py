"""GPU check: LoRA vs full fine-tune of a tiny Stable-Diffusion-layout pipeline at 64x64 in bf16, NVML joules
per step.

Self-contained, nothing downloaded: it builds a random pipeline (a random 3-channel AutoencoderKL, 64 px ->
4x16x16 latents; the word-level CLIP tokenizer and random text encoder and UNet2DConditionModel of
``bench/_finetune_base.py``, sized up) and an imagefolder of scikit-learn's nines ("a handwritten digit nine",
resized to 64 px and repeated to RGB by the loader), then runs ``run_finetune`` (``greendiff finetune``'s job)
twice, ``--steps`` steps each: LoRA (rank 8) and ``--full``, both ``--mixed-precision bf16``, on cuda, no
held-out images (no evaluations), GPUs metered. Joules per step: the ``train`` phase's energy of the GPU(s)
(the NVML counter) and of every device, from the run's ``emissions.json``, over its steps; a run's weights
do not change a step's cost, so the random pipeline is enough. Saved in
``bench/results/gpu_check_finetune.json``. Needs PyTorch with CUDA and an NVIDIA GPU: without one it says so
and exits 1 at once (with ``--write-benchmarks``: writes the section from a saved result, else "not run: no
GPU lent", and exits 0). About 1-2 minutes on an H200.

    python bench/gpu_check_finetune.py [--steps 200] [--batch-size 16] [--write-benchmarks]
    python bench/gpu_check_finetune.py --report-from bench/results/gpu_check_finetune.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _finetune_base import BaseSettings, finetune, read_run, save_random_pipeline, write_digit_folder  # noqa: E402
from _report import machine, today, write_section  # noqa: E402

KEY = "gpu_check_finetune"
TITLE = "## GPU fine-tuning, LoRA vs full, bf16 (`bench/gpu_check_finetune.py`)"
RESULTS = Path(__file__).resolve().parent / "results"
PIPELINE = BaseSettings(resolution=64, text_hidden=64, text_layers=2, unet_channels=(64, 128))


def save_random_vae(folder: Path) -> Path:
    """A random 3-channel AutoencoderKL (64 px -> 4x16x16), saved as safetensors."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64, 64),
                  down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                  layers_per_block=1, norm_num_groups=16, sample_size=64,
                  ).save_pretrained(folder, safe_serialization=True)
    return folder


def gpu_joules(run_dir: Path) -> float:
    """The ``train`` phase's energy of the metered GPUs (J), from ``emissions.json``."""
    emissions = json.loads((run_dir / "emissions.json").read_text())
    (train,) = [p for p in emissions["phases"] if p["name"] == "train"]
    return sum(j for key, j in train["energy_by_device_j"].items() if key.startswith("gpu"))


def run_one(work: Path, method: str, steps: int, batch_size: int) -> dict:
    """One bf16 fine-tune of ``steps`` steps by ``method`` (lora, full); its joules and seconds per step."""
    run_dir = finetune(work / method, {
        "finetune.pipeline": str(work / "pipeline"), "finetune.method": method, "data.dataset": str(work / "nines"),
        "data.resolution": PIPELINE.resolution, "data.latent_cache_dir": str(work / "cache" / "latents"),
        "optim.mixed_precision": "bf16", "optim.batch_size": batch_size, "run.max_steps": steps,
        "finetune.validation_images": 0, "stop.patience": 0, "run.sample_every": steps,
        "run.checkpoint_every": steps}, work / "ledger.sqlite", no_gpu=False)
    start = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    run = read_run(run_dir)
    train = run["phases"]["train"]
    methods = json.loads((run_dir / "emissions.json").read_text())["methods"]
    return {"method": method, "device": start.get("device"), "precision": start.get("precision"),
            "params": start.get("params"), "steps": run["steps"], "batch_size": batch_size,
            "s_per_step": train["duration_s"] / run["steps"],
            "gpu_j_per_step": gpu_joules(run_dir) / run["steps"],
            "all_j_per_step": train["energy_kwh"] * 3.6e6 / run["steps"], "meters": methods}


def report(result: dict | None, command: str) -> str:
    """The BENCHMARKS.md section: the table, or "not run: no GPU lent" for ``result`` None."""
    lines = [TITLE, "", f"- Command: `{command}`"]
    if result is None:
        return "\n".join([*lines, f"- Date: {today()}", "", "not run: no GPU lent"])
    lines += [f"- Machine: {result['machine']}, GPU {result['gpu']}", f"- Date: {result['date']}",
              f"- A random SD-layout pipeline at {PIPELINE.resolution}x{PIPELINE.resolution} (4x16x16 latents, UNet "
              f"{'/'.join(map(str, PIPELINE.unet_channels))} channels, CLIP text hidden {PIPELINE.text_hidden}), "
              "nines of scikit-learn's digits, cached latents and text, bf16, train phase only", "",
              "| method | trainable parameters | precision | batch | steps | s per step | GPU J per step (NVML) "
              "| all devices J per step |",
              "|---|---:|---|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['method']} | {r['params']:,} | {r['precision']} | {r['batch_size']} | {r['steps']} | "
                     f"{r['s_per_step']:.4f} | {r['gpu_j_per_step']:.2f} | {r['all_j_per_step']:.2f} |")
    lora, full = result["rows"]
    lines += ["", f"LoRA / full, GPU joules per step: {lora['gpu_j_per_step'] / full['gpu_j_per_step']:.2f}."]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--report-from", type=Path, help="write the section from a saved result, run nothing")
    parser.add_argument("--write-benchmarks", action="store_true")
    args = parser.parse_args()
    command = f"python bench/{Path(sys.argv[0]).name} {' '.join(sys.argv[1:])}".rstrip()
    saved = RESULTS / f"{KEY}.json"
    if args.report_from is not None:
        result = json.loads(args.report_from.read_text())
        write_section(KEY, report(result, result["command"]))
        return 0
    import torch

    if not torch.cuda.is_available():
        print("gpu_check_finetune: no CUDA GPU here (torch.cuda.is_available() is False): nothing to check",
              file=sys.stderr)
        if args.write_benchmarks:  # a result saved on a GPU machine earlier is kept, not overwritten
            result = json.loads(saved.read_text()) if saved.is_file() else None
            write_section(KEY, report(result, result["command"] if result else command))
            return 0
        return 1
    with tempfile.TemporaryDirectory(prefix="gpu-check-finetune-") as tmp:
        work = Path(tmp)
        write_digit_folder(work / "nines", (9,))
        save_random_pipeline(work / "pipeline", save_random_vae(work / "vae"), PIPELINE)
        rows = [run_one(work, method, args.steps, args.batch_size) for method in ("lora", "full")]
    if not all(str(r["device"]).startswith("cuda") for r in rows):
        raise SystemExit(f"the fine-tunes ran on {[r['device'] for r in rows]}, not cuda")
    result = {"date": today(), "machine": machine(), "command": command, "gpu": torch.cuda.get_device_name(0),
              "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(result, indent=2))
    print(report(result, command))
    if args.write_benchmarks:
        write_section(KEY, report(result, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
