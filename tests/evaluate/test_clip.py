"""CLIP score on a tiny CLIPModel built from a config and saved offline (no hub)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPConfig, CLIPModel

from greendiff.errors import UserInputError
from greendiff.evaluate import ClipScorer, check_clip_folder
from greendiff.evaluate._clip import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from tests.train.tiny_pipelines import MAX_TOKENS, tiny_clip_tokenizer

PROMPTS = ["a photo of digit seven", "a handwritten seven", "a photo of a dog", "sks dog", "digit", "a photo"]


def save_tiny_clip(folder: Path, image_size: int = 16, seed: int = 0) -> Path:
    """A tiny CLIPModel (hidden 32, 2 layers per tower, patch 4) and its tokenizer, saved as safetensors."""
    tokenizer = tiny_clip_tokenizer(folder)
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=MAX_TOKENS, bos_token_id=0,
                         eos_token_id=1, pad_token_id=1),
        vision_config=dict(image_size=image_size, patch_size=4, hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=2),
        projection_dim=16)
    CLIPModel(config).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory) -> Path:
    return save_tiny_clip(tmp_path_factory.mktemp("clip"))


def images(n: int = 6, channels: int = 3, side: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, channels, side, side, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def manual_cosines(folder: Path, x: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    """Cosine per pair computed directly: [0, 1] pixels, OpenAI mean/std, projected features."""
    model = CLIPModel.from_pretrained(folder, use_safetensors=True).eval()
    tokenizer = tiny_clip_tokenizer(folder / "manual_tokenizer")
    mean, std = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
    pixels = ((x + 1) / 2 - mean) / std
    tokens = tokenizer(prompts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
    with torch.no_grad():
        image_embeds = model.get_image_features(pixel_values=pixels).pooler_output
        text_embeds = model.get_text_features(**tokens).pooler_output
    return F.cosine_similarity(image_embeds, text_embeds, dim=-1)


def manual_scores(folder: Path, x: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    """CLIPScore per pair (Hessel et al. 2021): 100 * max(cos, 0)."""
    return 100 * manual_cosines(folder, x, prompts).clamp(min=0)


def test_score_equals_the_clipscore_formula_computed_by_hand(clip_folder):
    x = images()
    scorer = ClipScorer.load(clip_folder)
    expected = manual_scores(clip_folder, x, PROMPTS)
    assert scorer.score(x, PROMPTS) == pytest.approx(float(expected.mean()), abs=1e-4)
    assert expected.max() > 0  # the comparison saw positive cosines, not only clamped zeros


def test_batches_do_not_change_the_score(clip_folder):
    x = images()
    whole = ClipScorer.load(clip_folder).score(x, PROMPTS)
    scorer = ClipScorer.load(clip_folder)
    scorer.batch_size = 4  # 6 pairs: one batch of 4, one of 2
    assert scorer.score(x, PROMPTS) == pytest.approx(whole, abs=1e-4)


def test_negative_cosines_count_as_zero_and_scores_stay_in_range(clip_folder):
    scorer = ClipScorer.load(clip_folder)
    x = images(n=24, seed=3)
    prompts = (PROMPTS * 4)[:24]
    cosines = manual_cosines(clip_folder, x, prompts)
    assert cosines.min() < -0.01  # this batch has a pair pointing away from its prompt
    score = scorer.score(x, prompts)
    assert 0 <= score <= 100
    assert score == pytest.approx(float((100 * cosines.clamp(min=0)).mean()), abs=1e-4)
    assert score != pytest.approx(float((100 * cosines).mean()), abs=1e-4)


def test_greyscale_scores_as_its_rgb_repeat(clip_folder):
    scorer = ClipScorer.load(clip_folder)
    grey = images(channels=1, seed=2)
    assert scorer.score(grey, PROMPTS) == pytest.approx(scorer.score(grey.repeat(1, 3, 1, 1), PROMPTS), abs=1e-6)


def test_images_are_resized_to_the_vision_towers_side(tmp_path):
    folder = save_tiny_clip(tmp_path / "clip32", image_size=32)
    scorer = ClipScorer.load(folder)
    x = images(side=16, seed=4)
    upsampled = F.interpolate((x + 1) / 2, size=(32, 32), mode="bicubic", align_corners=False,
                              antialias=True).clamp(0, 1) * 2 - 1
    assert scorer.image_size == 32
    assert scorer.score(x, PROMPTS) == pytest.approx(float(manual_scores(folder, upsampled, PROMPTS).mean()), abs=1e-4)


def test_processor_config_mean_and_std_are_used(tmp_path):
    folder = save_tiny_clip(tmp_path / "clip")
    x = images(seed=5)
    before = ClipScorer.load(folder).score(x, PROMPTS)
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5, 0.5, 0.5],
                                                                 "image_std": [0.5, 0.5, 0.5]}))
    scorer = ClipScorer.load(folder)
    assert scorer.mean.flatten().tolist() == [0.5, 0.5, 0.5]
    assert scorer.score(x, PROMPTS) != pytest.approx(before, abs=1e-4)


def test_prompt_count_must_match_the_images(clip_folder):
    scorer = ClipScorer.load(clip_folder)
    with pytest.raises(ValueError, match="6 images but 5 prompts"):
        scorer.score(images(), PROMPTS[:5])
    with pytest.raises(ValueError, match=r"\(N, 1 or 3, H, W\)"):
        scorer.score(images(channels=2), PROMPTS)


def test_to_moves_the_model_and_returns_the_scorer(clip_folder):
    scorer = ClipScorer.load(clip_folder)
    assert scorer.to("cpu") is scorer and scorer.device == torch.device("cpu")
    assert not scorer.model.training and next(scorer.model.parameters()).dtype == torch.float32


def _one_line_error(folder: Path, match: str) -> None:
    with pytest.raises(UserInputError, match=match) as info:
        check_clip_folder(folder)
    assert "\n" not in str(info.value) and str(info.value).startswith(f"--clip-model {folder}: ")
    with pytest.raises(UserInputError, match=match):
        ClipScorer.load(folder)


def test_missing_folder_is_one_line(tmp_path):
    _one_line_error(tmp_path / "nope", "no such folder")


def test_folder_without_config_is_one_line(tmp_path):
    _one_line_error(tmp_path, r"no config.json \(save a transformers CLIPModel with save_pretrained\)")


def test_missing_safetensors_is_one_line(tmp_path):
    folder = save_tiny_clip(tmp_path / "clip")
    (folder / "model.safetensors").unlink()
    _one_line_error(folder, r"no model.safetensors \(save a transformers CLIPModel with save_pretrained\)")
    (folder / "pytorch_model.bin").write_bytes(b"not read")
    _one_line_error(folder, r"only pickled weights \(pytorch_model.bin\), which greendiff never loads")


def test_config_of_another_model_is_one_line(tmp_path):
    folder = save_tiny_clip(tmp_path / "clip")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "clip_text_model"}))
    _one_line_error(folder, "config.json is not a CLIPModel config \\(model_type 'clip_text_model'")
    (folder / "config.json").write_text("{not json")
    _one_line_error(folder, "config.json is not valid JSON")


def test_missing_tokenizer_is_one_line(tmp_path):
    folder = save_tiny_clip(tmp_path / "clip")
    for name in ("tokenizer.json", "vocab.json"):
        (folder / name).unlink(missing_ok=True)
    _one_line_error(folder, r"no tokenizer \(tokenizer.json, or vocab.json \+ merges.txt\)")


def test_bad_processor_std_is_one_line(tmp_path):
    folder = save_tiny_clip(tmp_path / "clip")
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_std": [0.5, 0, 0.5]}))
    _one_line_error(folder, "preprocessor_config.json: image_std must be a list of 3 positive numbers")


def test_corrupt_weights_are_one_line(tmp_path):
    folder = save_tiny_clip(tmp_path / "clip")
    (folder / "model.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(UserInputError, match="the CLIP model could not be loaded") as info:
        ClipScorer.load(folder)
    assert "\n" not in str(info.value)
