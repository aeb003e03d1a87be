"""Tiny text-to-image pipelines built from configs and saved to a folder: no hub, no network.

As diffusers' own pipeline tests do, every component is made from a small config; the CLIP
tokenizer is built from a vocab.json and merges.txt written here, so nothing is downloaded.
Two layouts: Stable Diffusion (``UNet2DConditionModel``) and Stable Diffusion 3
(``SD3Transformer2DModel``, two CLIP encoders and a tiny T5 whose Unigram tokenizer is built from a
word list), so both load with plain ``DiffusionPipeline.from_pretrained(folder, use_safetensors=True)``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import (AutoencoderKL, DDPMScheduler, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel,
                       StableDiffusion3Pipeline, StableDiffusionPipeline, UNet2DConditionModel)
from transformers import (CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer, T5Config,
                          T5EncoderModel, T5Tokenizer)

SPECIALS = ("<|startoftext|>", "<|endoftext|>")
WORDS = ("a", "photo", "of", "digit", "seven", "handwritten", "sks", "dog")
MAX_TOKENS = 16  # tokenizer model_max_length == text encoder max_position_embeddings
TEXT_HIDDEN = 16


def _bpe_vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """A byte-level BPE vocab (specials, letters, whole words) and the merges that build each word."""
    tokens: list[str] = list(SPECIALS)
    letters = "abcdefghijklmnopqrstuvwxyz"
    tokens += list(letters) + [f"{c}</w>" for c in letters]
    merges: list[str] = []
    for word in WORDS:
        # BPE splits "photo" into p h o t o</w>; merge left to right: "p h", "ph o", "pho t", "phot o</w>".
        pieces = list(word[:-1]) + [f"{word[-1]}</w>"]
        current = pieces[0]
        for piece in pieces[1:]:
            merge, current = f"{current} {piece}", current + piece
            if merge not in merges:
                merges.append(merge)
            if current not in tokens:
                tokens.append(current)
    return {token: i for i, token in enumerate(tokens)}, merges


def tiny_clip_tokenizer(folder: Path) -> CLIPTokenizer:
    """Write a tiny CLIP vocab.json + merges.txt into ``folder`` and save a CLIPTokenizer built from them.

    Args:
        folder: Where the tokenizer is saved (created).

    Returns:
        The tokenizer, ``model_max_length`` 16; ``len(tokenizer)`` is the text encoder's vocab size.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = _bpe_vocab_and_merges()
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    tokenizer = CLIPTokenizer.from_pretrained(folder, model_max_length=MAX_TOKENS)
    tokenizer.save_pretrained(folder)
    return tokenizer


def tiny_t5_tokenizer(folder: Path) -> T5Tokenizer:
    """Save a tiny T5 (Unigram) tokenizer into ``folder``: specials, the space marker, letters and WORDS.

    Args:
        folder: Where the tokenizer is saved (created).

    Returns:
        The tokenizer, ``model_max_length`` 16, no sentinel ids.
    """
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(f"\u2581{word}", -1.0) for word in WORDS] + [(c, -3.0) for c in "abcdefghijklmnopqrstuvwxyz"]
    tokenizer = T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=MAX_TOKENS)
    tokenizer.save_pretrained(folder)
    return tokenizer


def _text_config(vocab_size: int, projection_dim: int = TEXT_HIDDEN) -> CLIPTextConfig:
    return CLIPTextConfig(vocab_size=vocab_size, hidden_size=TEXT_HIDDEN, intermediate_size=32, num_hidden_layers=1,
                          num_attention_heads=2, max_position_embeddings=MAX_TOKENS, projection_dim=projection_dim,
                          bos_token_id=0, eos_token_id=1, pad_token_id=1)


def _t5_config(vocab_size: int) -> T5Config:
    # d_model 32 == the transformer's joint_attention_dim, which SD3 pads the CLIP embeddings to.
    return T5Config(vocab_size=vocab_size, d_model=32, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                    relative_attention_num_buckets=8, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)


def _tiny_vae(latent_channels: int = 4) -> AutoencoderKL:
    return AutoencoderKL(block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=latent_channels,
                         down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                         up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), norm_num_groups=4,
                         layers_per_block=1, sample_size=16)


def save_tiny_sd_pipeline(folder: Path, *, seed: int = 0, scheduler: str = "ddpm") -> Path:
    """Save a tiny Stable-Diffusion-layout pipeline (UNet2DConditionModel denoiser) as safetensors.

    Args:
        folder: The pipeline folder to write (``model_index.json`` + one subfolder per component).
        seed: Seed of the random initial weights.
        scheduler: ``"ddpm"`` (DDPMScheduler); the only choice today, named for the tests that read it.

    Returns:
        ``folder``. Load it with ``DiffusionPipeline.from_pretrained(folder, use_safetensors=True)``;
        images are 16x16 (VAE scale factor 2, latents 4x8x8).
    """
    if scheduler != "ddpm":
        raise ValueError(f"unknown scheduler {scheduler!r}")
    folder = Path(folder)
    torch.manual_seed(seed)
    tokenizer = tiny_clip_tokenizer(folder / "tokenizer")
    unet = UNet2DConditionModel(block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=TEXT_HIDDEN,
                                attention_head_dim=2, norm_num_groups=4)
    pipe = StableDiffusionPipeline(
        unet=unet, vae=_tiny_vae(), text_encoder=CLIPTextModel(_text_config(len(tokenizer))), tokenizer=tokenizer,
        scheduler=DDPMScheduler(num_train_timesteps=100, beta_schedule="scaled_linear", beta_start=0.00085,
                                beta_end=0.012, steps_offset=1, clip_sample=False),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def save_tiny_sd3_pipeline(folder: Path, *, seed: int = 0) -> Path:
    """Save a tiny Stable Diffusion 3 pipeline (SD3Transformer2DModel denoiser, two CLIP encoders, a T5).

    Args:
        folder: The pipeline folder to write.
        seed: Seed of the random initial weights.

    Returns:
        ``folder``; images are 16x16, latents 4x8x8, the scheduler FlowMatchEulerDiscreteScheduler.
    """
    folder = Path(folder)
    torch.manual_seed(seed)
    tokenizer = tiny_clip_tokenizer(folder / "tokenizer")
    t5_tokenizer = tiny_t5_tokenizer(folder / "tokenizer_3")
    transformer = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_layers=1,
                                        attention_head_dim=8, num_attention_heads=2, joint_attention_dim=32,
                                        caption_projection_dim=16, pooled_projection_dim=32, out_channels=4,
                                        pos_embed_max_size=8)
    vae = AutoencoderKL(block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), norm_num_groups=4,
                        layers_per_block=1, sample_size=16, shift_factor=0.0609, scaling_factor=1.5035,
                        use_quant_conv=False, use_post_quant_conv=False)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae,
        text_encoder=CLIPTextModelWithProjection(_text_config(len(tokenizer))), tokenizer=tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(_text_config(len(tokenizer))), tokenizer_2=tokenizer,
        text_encoder_3=T5EncoderModel(_t5_config(len(t5_tokenizer))), tokenizer_3=t5_tokenizer)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder

