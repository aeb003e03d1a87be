"""The fine-tune benchmark's base model, built by greendiff itself from nothing downloaded, and the pieces
``bench/finetune.py`` and ``bench/gpu_check_finetune.py`` share.

The base is a small Stable-Diffusion-layout pipeline that has learnt captioned digits 0-8 but never a nine:

1. imagefolders from scikit-learn's bundled digits (8x8, greyscale PNGs, ``metadata.jsonl`` captions
   "a handwritten digit <word>"): ``digits-0-8/`` (the base's data) and ``digits-9/`` (the new concept);
2. a VAE: ``greendiff vae train --preset nano`` on ``digits-0-8`` at 16x16 (1 channel -> 4x4x4 latents);
3. a word-level CLIP tokenizer for the caption words (one token per word, built from a vocab.json and
   merges.txt written here) and a small random ``CLIPTextModel`` (frozen: never trained, as in SD);
4. a random ``UNet2DConditionModel`` (cross-attention on the text's hidden states) and a ``DDPMScheduler``
   (1,000 steps, scaled_linear), saved as a ``StableDiffusionPipeline`` with safetensors: the *random* pipeline;
5. "pre-training": a full fine-tune of the random pipeline on ``digits-0-8`` (``run_finetune``, method full):
   its ``pipeline/`` folder is the base.

Runs go through :func:`run_finetune` in this process with a benchmark ledger, the same job ``greendiff
finetune`` runs; a run's overrides are the dotted keys its CLI flags set.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
CAPTION = "a handwritten digit {}"
SPECIALS = ("<|startoftext|>", "<|endoftext|>")
MAX_TOKENS = 16  # tokenizer model_max_length == the text encoder's max_position_embeddings
NEW_DIGIT = 9  # the concept the base never sees
KWH_PER_J = 1 / 3.6e6


@dataclasses.dataclass(frozen=True)
class BaseSettings:
    """How the base is built (part of the results' key)."""

    resolution: int = 16
    vae_steps: int = 400
    vae_eval_images: int = 500
    text_hidden: int = 32
    text_layers: int = 2
    unet_channels: tuple[int, ...] = (64, 128)  # 4 M parameters: big enough that LoRA skips real work (see the size sweep)
    pretrain_steps: int = 1000
    pretrain_lr: float = 1e-3
    pretrain_batch_size: int = 64
    pretrain_eval_every: int = 50
    seed: int = 0


SMOKE_BASE = BaseSettings(vae_steps=3, vae_eval_images=20, text_hidden=16, text_layers=1, unet_channels=(8, 16),
                          pretrain_steps=3, pretrain_batch_size=8, pretrain_eval_every=3)


# -- data -----------------------------------------------------------------------------------------------------------


def write_digit_folder(folder: Path, digits: tuple[int, ...]) -> int:
    """Write scikit-learn's 8x8 digits of classes ``digits`` as an imagefolder (``NNNN.png`` greyscale and
    ``metadata.jsonl`` with a ``text`` caption each) into ``folder`` (replaced); returns the image count."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    bunch = load_digits()
    pixels = (bunch.images * (255.0 / 16.0)).round().astype(np.uint8)  # values 0..16 -> 0..255
    rows = []
    for k in np.flatnonzero(np.isin(bunch.target, digits)):
        name = f"{k:04d}.png"
        Image.fromarray(pixels[k], mode="L").save(folder / name)
        rows.append(json.dumps({"file_name": name, "text": CAPTION.format(DIGIT_WORDS[bunch.target[k]])}))
    (folder / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    return len(rows)


# -- the random pipeline --------------------------------------------------------------------------------------------


def word_clip_tokenizer(folder: Path, words: tuple[str, ...]):
    """A CLIP tokenizer whose vocabulary is the specials, the letters and ``words`` whole (one token each:
    the BPE merges build every word from its letters), ``model_max_length`` 16, saved into ``folder``."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    letters = "abcdefghijklmnopqrstuvwxyz"
    tokens = [*SPECIALS, *letters, *(f"{c}</w>" for c in letters)]
    merges: list[str] = []
    for word in words:
        pieces = [*word[:-1], f"{word[-1]}</w>"]  # "nine" -> n i n e</w>; merged left to right
        current = pieces[0]
        for piece in pieces[1:]:
            merge, current = f"{current} {piece}", current + piece
            if merge not in merges:
                merges.append(merge)
            if current not in tokens:
                tokens.append(current)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    tokenizer = CLIPTokenizer.from_pretrained(folder, model_max_length=MAX_TOKENS)
    tokenizer.save_pretrained(folder)
    return tokenizer


def caption_words() -> tuple[str, ...]:
    return tuple(dict.fromkeys(CAPTION.format("").split() + list(DIGIT_WORDS)))


def save_random_pipeline(folder: Path, vae_dir: Path, s: BaseSettings) -> Path:
    """The random Stable-Diffusion-layout pipeline around the trained VAE (see the module docstring)."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    shutil.rmtree(folder, ignore_errors=True)
    torch.manual_seed(s.seed)
    tokenizer = word_clip_tokenizer(folder / "tokenizer", caption_words())
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=s.text_hidden, intermediate_size=2 * s.text_hidden,
        num_hidden_layers=s.text_layers, num_attention_heads=2, max_position_embeddings=MAX_TOKENS,
        projection_dim=s.text_hidden, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    vae = AutoencoderKL.from_pretrained(vae_dir, use_safetensors=True)
    side = s.resolution // 2 ** (len(vae.config.block_out_channels) - 1)  # latent side (4 at 16 px, nano)
    levels = len(s.unet_channels)
    unet = UNet2DConditionModel(
        sample_size=side, in_channels=vae.config.latent_channels, out_channels=vae.config.latent_channels,
        block_out_channels=s.unet_channels, layers_per_block=1, cross_attention_dim=s.text_hidden,
        down_block_types=("CrossAttnDownBlock2D",) * levels, up_block_types=("CrossAttnUpBlock2D",) * levels,
        attention_head_dim=8, norm_num_groups=8)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                              beta_end=0.012, steps_offset=1, clip_sample=False)
    pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text, tokenizer=tokenizer, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


# -- runs -----------------------------------------------------------------------------------------------------------


def finetune(out: Path, overrides: dict, ledger: Path, no_gpu: bool = True) -> Path:
    """One fine-tune in ``out`` (replaced) through :func:`run_finetune`, priced in France; its run directory."""
    from greendiff.workflows import MeasurementOptions, TrainJob, run_finetune

    shutil.rmtree(out, ignore_errors=True)
    job = TrainJob(overrides={"run.output_dir": str(out), **overrides},
                   measurement=MeasurementOptions(country="FRA", no_gpu=no_gpu, ledger=ledger))
    outcome = run_finetune(job)
    if not outcome.finished:
        raise SystemExit(f"{out.name}: the fine-tune ended {outcome.status}")
    return outcome.run_dir


def read_run(run_dir: Path) -> dict:
    """A finished fine-tune: steps, stop reason, energy (total and per phase, kWh) and the validation-loss
    curve ``[{step, energy_kwh, val_loss}]`` from its ``metrics.jsonl`` and ``emissions.json``."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    emissions = json.loads((run_dir / "emissions.json").read_text())
    start = next((r for r in records if r.get("event") == "start"), {})
    curve = [{"step": r["step"], "energy_kwh": r.get("energy_kwh"), "val_loss": r["val_loss"]}
             for r in records if r.get("event") == "eval" and r.get("val_loss") is not None]
    phases = {p["name"]: {"windows": p["count"], "energy_kwh": p["energy_j"] * KWH_PER_J, "duration_s": p["duration_s"]}
              for p in emissions["phases"]}
    return {"params": start.get("params"), "steps": max((r.get("step", 0) for r in records), default=0),
            "curve": curve, "phases": phases,
            "energy_kwh": emissions["energy_kwh"], "duration_s": emissions["duration_s"],
            "stop_reason": emissions.get("stop_reason", "")}


# -- the base -------------------------------------------------------------------------------------------------------


def train_vae(work: Path, data: Path, s: BaseSettings, ledger: Path) -> dict:
    """``greendiff vae train --preset nano`` on ``data`` into ``work/vae``; its ``vae_train.json`` numbers."""
    out = work / "vae"
    shutil.rmtree(out, ignore_errors=True)
    exe = Path(sys.executable).with_name("greendiff")
    args = [str(exe), "vae", "train", "--dataset", str(data), "--resolution", str(s.resolution), "--preset", "nano",
            "--max-steps", str(s.vae_steps), "--eval-images", str(s.vae_eval_images), "--seed", str(s.seed),
            "--country", "FRA", "--ledger", str(ledger), "--output-dir", str(out)]
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args[1:])} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    info = json.loads((out / "vae_train.json").read_text())
    rec = info["reconstruction"]
    return {"steps": info["steps"], "energy_kwh": info["energy_kwh"], "scaling_factor": info["scaling_factor"],
            "mse": rec["mse"], "psnr_db": rec["psnr_db"]}


def build_base(work: Path, s: BaseSettings, ledger: Path, cache: Path) -> dict:
    """Steps 1-5 of the module docstring in ``work``; the base's facts (its pipeline is ``work/base/.../pipeline``)."""
    seen, nines = work / "digits-0-8", work / "digits-9"
    counts = {"seen_images": write_digit_folder(seen, tuple(range(NEW_DIGIT))),
              "new_images": write_digit_folder(nines, (NEW_DIGIT,))}
    vae = train_vae(work, seen, s, ledger)
    save_random_pipeline(work / "random-pipeline", work / "vae", s)
    run_dir = finetune(work / "base", {
        "finetune.pipeline": str(work / "random-pipeline"), "finetune.method": "full", "data.dataset": str(seen),
        "data.resolution": s.resolution, "data.latent_cache_dir": str(cache / "latents"),
        "optim.lr": s.pretrain_lr, "optim.batch_size": s.pretrain_batch_size, "run.max_steps": s.pretrain_steps,
        "run.seed": s.seed, "stop.eval_every": s.pretrain_eval_every, "stop.patience": 0,
        "finetune.validation_images": 64, "run.sample_every": s.pretrain_steps,
        "run.checkpoint_every": s.pretrain_steps}, ledger)
    pipeline = run_dir / "pipeline"
    if not (pipeline / "model_index.json").is_file():
        raise SystemExit(f"{run_dir}: the pre-training wrote no pipeline/ folder")
    run = read_run(run_dir)
    first, last = run["curve"][0]["val_loss"], run["curve"][-1]["val_loss"]
    print(f"base: {run['steps']} steps, val loss {first:.4f} -> {last:.4f}, "
          f"{run['energy_kwh'] * 1e3:.3f} Wh", file=sys.stderr)
    return {**counts, "vae": vae, "pretrain": run, "pipeline": pipeline.relative_to(work).as_posix(),
            "data": {"seen": seen.name, "new": nines.name}}
