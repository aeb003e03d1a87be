"""Per-step energy of diffusers' real ``train_unconditional.py`` against greendiff's baseline, same UNet and data.

diffusers' script (Apache-2.0, huggingface/diffusers, ``examples/unconditional_image_generation/``) is not
vendored here: pass a local copy with ``--script`` (e.g. from ``git clone https://github.com/huggingface/diffusers``
on a machine with network access). It needs ``accelerate``, ``datasets``, ``torchvision`` and ``tensorboard``
(``pip install torchvision tensorboard`` beside greendiff's own); the benchmark checks them first and names
what is missing.

Both sides train the same data (the bundled MNIST at ``--resolution``, written once as a local *imagefolder*,
so no dataset is downloaded) with diffusers' defaults (batch 16, LR 1e-4, 500 warm-up steps, AdamW, EMA as the
README runs it with ``--use_ema``), and each is measured by ``greendiff measure`` around the whole process at
two lengths, interleaved over ``--rounds`` rounds (a shared VM's speed drifts; each round's ratio sees both
sides alike). The energy per step is the difference over the difference in steps, so start-up (imports, data
preparation, the closing preview and save) cancels out. Where the script takes ``--model_config_name_or_path``
(diffusers >= 0.12), it trains greendiff's preset UNet (written as a diffusers ``config.json`` with 3 channels,
as the script converts every image to RGB); older copies train their own built-in UNet, and the ratio then
compares different networks (the report says which).

    python bench/diffusers_script_cost.py --script PATH/train_unconditional.py [--preset nano] [--resolution 16]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, today  # noqa: E402

EXE = os.path.join(os.path.dirname(sys.executable), "greendiff")
NEEDS = ("accelerate", "datasets", "torchvision", "tensorboard")
RESULTS = Path(__file__).resolve().parent / "results" / "energy_to_quality"


def missing_modules() -> list[str]:
    return [name for name in NEEDS if importlib.util.find_spec(name) is None]


def write_imagefolder(folder: Path, dataset: str, resolution: int, limit: int) -> int:
    """The dataset's first ``limit`` images as PNG files (an imagefolder the script's ``--train_data_dir`` reads)."""
    from PIL import Image

    from greendiff.data import load_dataset

    images = load_dataset(dataset, resolution).images[:limit]  # (N, 1, H, W) uint8
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image[0].numpy(), mode="L").save(folder / f"{i:05d}.png")
    return len(images)


def write_unet_config(path: Path, preset: str, resolution: int) -> None:
    """greendiff's preset UNet as a diffusers ``UNet2DModel`` config, 3 channels in and out."""
    from greendiff.train import ModelConfig, build_unet

    unet = build_unet(ModelConfig(preset=preset), resolution, 3, 1000)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(dict(unet.config), indent=2, default=list))


def measured(command: list[str], work: Path, name: str, env: dict) -> float:
    """Joules of ``command`` under ``greendiff measure`` (its summary JSON's ``energy_kwh``)."""
    summary = work / f"{name}.json"
    done = subprocess.run([EXE, "measure", "--name", name, "--json", str(summary), "--country", "FRA", "--",
                           *command], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        tail = (done.stderr.strip() or done.stdout.strip() or str(done.returncode)).splitlines()[-1]
        raise SystemExit(f"{name} failed: {tail}")
    return json.loads(summary.read_text())["energy_kwh"] * 3.6e6


def script_command(args: argparse.Namespace, data: Path, out: Path, epochs: int, config: Path | None) -> list[str]:
    flags = [sys.executable, args.script, "--train_data_dir", str(data), "--output_dir", str(out),
             "--resolution", str(args.resolution), "--num_epochs", str(epochs), "--save_images_epochs", "1000000",
             "--save_model_epochs", "1000000", "--use_ema"]
    return flags + (["--model_config_name_or_path", str(config)] if config else [])


def greendiff_command(args: argparse.Namespace, out: Path, steps: int) -> list[str]:
    return [EXE, "train", "--recipe", "baseline", "--ema", "--dataset", args.dataset, "--resolution",
            str(args.resolution), "--preset", args.preset, "--max-steps", str(steps), "--seed", "0", "--set", f"run.sample_every={steps}", "--set", f"run.checkpoint_every={steps}",
            "--set", "run.num_samples=16", "--output-dir", str(out), "--name", "run", "--country", "FRA"]


def torch_version() -> str:
    import torch

    return torch.__version__


def per_step_j(energies: tuple[float, float], steps: tuple[int, int]) -> float:
    """Energy per step from two lengths: the start-up and the closing work cancel in the difference."""
    return (energies[1] - energies[0]) / (steps[1] - steps[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--script", required=True, help="A local copy of diffusers' train_unconditional.py.")
    parser.add_argument("--preset", default="nano")
    parser.add_argument("--resolution", type=int, default=16)
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--images", type=int, default=1600, help="Images in the imagefolder (100 steps per epoch).")
    # two lengths of >= 2 epochs: the script previews (DDPM, 1,000 steps) and saves at epoch 0 *and* at its last
    # epoch, so a 1-epoch run does each once and any longer run twice; from 2 epochs on they cancel
    parser.add_argument("--epochs", type=int, nargs=2, default=(2, 4), help="The two lengths, in epochs (>= 2).")
    parser.add_argument("--rounds", type=int, default=3, help="Interleaved rounds; medians are reported (default 3).")
    args = parser.parse_args()
    if min(args.epochs) < 2 or args.epochs[0] >= args.epochs[1]:
        raise SystemExit(f"--epochs {args.epochs[0]} {args.epochs[1]}: give two increasing lengths of at least 2 "
                         "epochs (the script previews at epoch 0 and at its last)")
    if not Path(args.script).is_file():
        raise SystemExit(f"--script {args.script}: no such file; give a local copy of train_unconditional.py")
    if gone := missing_modules():
        raise SystemExit(f"cannot run diffusers' script here: missing {', '.join(gone)} (pip install {' '.join(gone)})")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = {**os.environ, "GREENDIFF_LEDGER": str(work / "ledger.sqlite"), "HF_DATASETS_OFFLINE": "1",
               "HF_HUB_OFFLINE": "1"}
        n = write_imagefolder(work / "images", args.dataset, args.resolution, args.images)
        takes_config = "--model_config_name_or_path" in Path(args.script).read_text()
        config = work / "unet" if takes_config else None
        if config:
            write_unet_config(config, args.preset, args.resolution)
        steps = tuple(-(-n // 16) * e for e in args.epochs)
        rounds = []
        for k in range(args.rounds):  # interleaved: a shared VM's speed drifts, and both sides should see it alike
            got: dict[str, list[float]] = {"script": [], "greendiff": []}
            for e, s in zip(args.epochs, steps):
                got["script"].append(measured(script_command(args, work / "images", work / f"script-{e}-{k}", e, config),
                                              work, f"script-{e}-{k}", env))
                got["greendiff"].append(measured(greendiff_command(args, work / f"ours-{s}-{k}", s), work,
                                                 f"greendiff-{s}-{k}", env))
            rounds.append({side: {"j": j, "j_per_step": per_step_j(tuple(j), steps)} for side, j in got.items()})
            print(f"round {k}: script {rounds[-1]['script']['j_per_step']:.3f} J/step, greendiff "
                  f"{rounds[-1]['greendiff']['j_per_step']:.3f} J/step", flush=True)
    ratios = [r["script"]["j_per_step"] / r["greendiff"]["j_per_step"] for r in rounds]
    script = statistics.median(r["script"]["j_per_step"] for r in rounds)
    ours = statistics.median(r["greendiff"]["j_per_step"] for r in rounds)
    result = {"date": today(), "machine": machine(), "steps": steps, "rounds": rounds, "script_j_per_step": script,
              "greendiff_j_per_step": ours, "ratio": statistics.median(ratios), "ratios": ratios,
              "same_unet": takes_config, "preset": args.preset, "resolution": args.resolution,
              "torch": torch_version()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "diffusers_script_cost.json").write_text(json.dumps(result, indent=2))
    print(f"diffusers' script {script:.3f} J/step, greendiff baseline {ours:.3f} J/step (medians of {args.rounds} "
          f"rounds): the script costs {result['ratio']:.2f}x per step (per round: "
          f"{', '.join(f'{r:.2f}x' for r in ratios)}; {'same preset UNet' if takes_config else 'its own built-in UNet'})")


if __name__ == "__main__":
    main()
