"""CLIP score of generated images against their prompts, from a local CLIPModel folder.

CLIPScore (Hessel et al. 2021, "CLIPScore: A Reference-free Evaluation Metric for Image Captioning"),
in the form torchmetrics' ``CLIPScore`` and diffusers' evaluation guide use: for each image/prompt pair,
``100 * max(cos(E_image, E_text), 0)``, averaged over the pairs. The model is a folder the user gives, a
transformers ``CLIPModel`` saved with ``save_pretrained`` (``config.json``, ``model.safetensors``, tokenizer
files, optionally ``preprocessor_config.json``); nothing is downloaded and a pickled ``.bin`` is never read.

Example (a folder that is not a CLIP model):
    >>> import tempfile
    >>> check_clip_folder(Path(tempfile.mkdtemp()))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    greendiff.errors.UserInputError: --clip-model ...: no config.json (save a transformers CLIPModel with ...
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from greendiff.errors import UserInputError
from greendiff.files import read_json_object
from greendiff.names import display_path, shown

CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
WEIGHTS_FILES = ("model.safetensors", "model.safetensors.index.json")  # one file, or sharded
PICKLED_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
CLIP_MODEL_TYPE = "clip"
MAX_JSON_BYTES = 1_000_000
SAVE_HINT = "save a transformers CLIPModel with save_pretrained"
# The normalisation CLIP was trained with (OpenAI's CLIP repository, ``clip/clip.py::_transform``).
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
BATCH_SIZE = 64


def _bad(what: str, folder: Path, why: str) -> UserInputError:
    return UserInputError(f"{what} {display_path(folder)}: {why}")


def _read_json(folder: Path, name: str, what: str) -> dict:
    return read_json_object(folder / name, name, lambda why: _bad(what, folder, why), MAX_JSON_BYTES,
                            large_as="a CLIP config")


def _has_tokenizer(folder: Path) -> bool:
    """A fast tokenizer (``tokenizer.json``) or a BPE one (``vocab.json`` + ``merges.txt``)."""
    return (folder / "tokenizer.json").is_file() or all((folder / f).is_file() for f in ("vocab.json", "merges.txt"))


def _normalisation(folder: Path, what: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` per RGB channel: the processor config's ``image_mean``/``image_std``, else OpenAI's."""
    if not (folder / PREPROCESSOR_FILE).is_file():
        return OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
    config = _read_json(folder, PREPROCESSOR_FILE, what)
    values = []
    for key, default, positive in (("image_mean", OPENAI_CLIP_MEAN, False), ("image_std", OPENAI_CLIP_STD, True)):
        value = config.get(key, list(default))
        ok = (isinstance(value, list) and len(value) == 3
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                      and (v > 0 or not positive) for v in value))
        if not ok:
            kind = "positive " if positive else ""
            raise _bad(what, folder, f"{PREPROCESSOR_FILE}: {key} must be a list of 3 {kind}numbers, "
                                     f"got {shown(value)}")
        values.append(tuple(float(v) for v in value))
    return values[0], values[1]


def check_clip_folder(folder: Path, what: str = "--clip-model") -> None:
    """Check that ``folder`` holds a CLIPModel saved with ``save_pretrained``, without loading any weight.

    Args:
        folder: the model folder.
        what: how messages name it (the flag or config key that gave it).

    Raises:
        UserInputError: one line naming the folder and the missing or bad piece: no such folder, no or
            invalid ``config.json``, a config that is not a ``CLIPModel``'s (``model_type`` ``"clip"``), no
            ``model.safetensors`` (or only pickled weights), no tokenizer files, or a bad
            ``preprocessor_config.json`` mean/std.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise _bad(what, folder, "no such folder" if not folder.exists() else "not a folder")
    if not (folder / CONFIG_FILE).is_file():
        raise _bad(what, folder, f"no {CONFIG_FILE} ({SAVE_HINT})")
    model_type = _read_json(folder, CONFIG_FILE, what).get("model_type")
    if model_type != CLIP_MODEL_TYPE:
        raise _bad(what, folder, f"{CONFIG_FILE} is not a CLIPModel config (model_type {shown(model_type)}, not "
                                 f"'{CLIP_MODEL_TYPE}'); give a full CLIP model with both text and vision towers")
    if not any((folder / name).is_file() for name in WEIGHTS_FILES):
        pickled = [name for name in PICKLED_FILES if (folder / name).is_file()]
        if pickled:
            raise _bad(what, folder, f"only pickled weights ({pickled[0]}), which greendiff never loads: re-save "
                                     "with save_pretrained(folder, safe_serialization=True)")
        raise _bad(what, folder, f"no model.safetensors ({SAVE_HINT})")
    if not _has_tokenizer(folder):
        raise _bad(what, folder, "no tokenizer (tokenizer.json, or vocab.json + merges.txt): save the CLIP "
                                 "tokenizer beside the model with tokenizer.save_pretrained")
    _normalisation(folder, what)


def _embedding(output: object) -> torch.Tensor:
    """The projected embedding from ``get_*_features``: a tensor (transformers 4) or the output's pooler (5)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class ClipScorer:
    """CLIP score of images against prompts (Hessel et al. 2021): mean of ``100 * max(cos, 0)`` per pair.

    Build it with :meth:`load`; the model runs in eval mode, fp32, on CPU until :meth:`to` moves it.

    Example:
        >>> scorer = ClipScorer.load(Path("models/clip-vit-base-patch32"))  # doctest: +SKIP
        >>> scorer.score(images, ["a photo of a dog"] * len(images))  # images (N, 3, H, W) in [-1, 1]  # doctest: +SKIP
        31.4
    """

    def __init__(self, model: nn.Module, tokenizer: object, mean: Sequence[float], std: Sequence[float],
                 image_size: int, max_tokens: int, batch_size: int = BATCH_SIZE) -> None:
        """Args:
            model: a transformers ``CLIPModel`` (``get_image_features`` / ``get_text_features``).
            tokenizer: its tokenizer (called with ``padding``, ``truncation``, ``max_length``).
            mean: per-RGB-channel mean of the normalisation, on the [0, 1] pixel scale.
            std: per-RGB-channel standard deviation, on the [0, 1] pixel scale.
            image_size: the vision tower's input side, pixels.
            max_tokens: prompts are truncated to this many tokens.
            batch_size: image/prompt pairs per forward pass.
        """
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.image_size = image_size
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.device = torch.device("cpu")

    @classmethod
    def load(cls, folder: Path, what: str = "--clip-model") -> ClipScorer:
        """Check ``folder`` (:func:`check_clip_folder`) and load its CLIPModel and tokenizer, offline.

        Args:
            folder: a CLIPModel saved with ``save_pretrained`` and its tokenizer beside it.
            what: how messages name the folder.

        Raises:
            UserInputError: one line for anything :func:`check_clip_folder` rejects, or weights or a
                tokenizer that transformers cannot load.
        """
        folder = Path(folder)
        check_clip_folder(folder, what)
        from transformers import AutoTokenizer, CLIPModel

        try:
            model = CLIPModel.from_pretrained(folder, local_files_only=True, use_safetensors=True,
                                              dtype=torch.float32)
        except Exception as exc:  # corrupt safetensors, shapes that do not fit the config, ...
            raise _bad(what, folder, f"the CLIP model could not be loaded: {_one_line(exc)}") from None
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        except Exception as exc:
            raise _bad(what, folder, f"the CLIP tokenizer could not be loaded: {_one_line(exc)}") from None
        mean, std = _normalisation(folder, what)
        # A tokenizer saved without model_max_length reports a huge sentinel; the text tower's positions cap it.
        max_tokens = min(int(tokenizer.model_max_length), int(model.config.text_config.max_position_embeddings))
        return cls(model.to(torch.float32), tokenizer, mean, std, int(model.config.vision_config.image_size),
                   max_tokens)

    def to(self, device: torch.device | str) -> ClipScorer:
        """Move the model to ``device``; images are moved there when scored. Returns ``self``."""
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    def _pixels(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) in [-1, 1], C in {1, 3} -> CLIP's normalised (N, 3, S, S) input, S = ``image_size``.

        As CLIP's processor does: bicubic resize of the shorter side to S (antialiased), a centre crop,
        then the per-channel mean/std on the [0, 1] scale.
        """
        x = ((images.to(self.device, torch.float32) + 1) / 2).clamp(0, 1)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        height, width = x.shape[-2:]
        side = self.image_size
        if (height, width) != (side, side):
            scale = side / min(height, width)
            size = (max(side, round(height * scale)), max(side, round(width * scale)))
            x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
            top, left = (size[0] - side) // 2, (size[1] - side) // 2
            x = x[..., top:top + side, left:left + side]
        return (x - self.mean.to(self.device)) / self.std.to(self.device)

    def _pair_scores(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """``100 * max(cos, 0)`` for each image/prompt pair of one batch, shape (N,)."""
        tokens = self.tokenizer(list(prompts), padding=True, truncation=True, max_length=self.max_tokens,
                                return_tensors="pt")
        image_embeds = _embedding(self.model.get_image_features(pixel_values=self._pixels(images)))  # (N, D)
        text_embeds = _embedding(self.model.get_text_features(
            input_ids=tokens["input_ids"].to(self.device),
            attention_mask=tokens["attention_mask"].to(self.device)))  # (N, D)
        cos = F.cosine_similarity(image_embeds.float(), text_embeds.float(), dim=-1)
        return 100 * cos.clamp(min=0)

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> float:
        """The CLIP score of ``images`` against ``prompts``, pair by pair, in [0, 100].

        Args:
            images: (N, C, H, W) float in [-1, 1], C 1 (greyscale, repeated to RGB) or 3.
            prompts: one prompt per image.

        Returns:
            The mean over the N pairs of ``100 * max(cos(image embedding, text embedding), 0)``.

        Raises:
            ValueError: images not (N, 1|3, H, W), no images, or a prompt count other than N.
        """
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images must be (N, 1 or 3, H, W), got shape {tuple(images.shape)}")
        if isinstance(prompts, str):
            raise ValueError("prompts must be a sequence of strings, one per image, not one string")
        if len(prompts) != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {len(prompts)} prompts: give one prompt per image")
        if images.shape[0] == 0:
            raise ValueError("no images to score")
        total = 0.0
        with torch.no_grad():
            for start in range(0, images.shape[0], self.batch_size):
                end = start + self.batch_size
                total += float(self._pair_scores(images[start:end], prompts[start:end]).double().sum())
        return total / images.shape[0]


def _one_line(exc: Exception, limit: int = 200) -> str:
    """An exception as one short line: its type and its message's whitespace folded, cut at ``limit`` chars."""
    text = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."
