"""Text embeddings of a fine-tune's captions, encoded once and cached.

A frozen text encoder gives every caption the same embedding at every step, so encoding each batch's
captions again is wasted energy (diffusers' scripts precompute them too, e.g. ``train_dreambooth_lora_sd3.py``
``--cache_latents`` and its prompt embeddings). :class:`TextTable` holds one row per distinct caption;
:class:`TextEmbeddingCache` stores a table as safetensors under the cache root, keyed by the text encoders'
weights and the captions, so later runs, resumes and tuning trials read it instead of encoding. Loading
never unpickles (safetensors and JSON only); a damaged entry is encoded again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from greendiff.train._base_pipeline import TextCondition

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
TENSORS = "embeddings.safetensors"
META = "meta.json"


class TextTable:
    """One :class:`TextCondition` row per distinct caption.

    Example:
        >>> table = TextTable(("a", "b"), TextCondition(torch.eye(2).view(2, 1, 2)))
        >>> table.lookup(["b", "a", "b"]).hidden.flatten().tolist()
        [0.0, 1.0, 1.0, 0.0, 0.0, 1.0]
    """

    def __init__(self, captions: Sequence[str], embeddings: TextCondition) -> None:
        if len(captions) != len(embeddings):
            raise ValueError(f"{len(captions)} captions but {len(embeddings)} embeddings")
        self.captions = tuple(captions)
        self.rows = {caption: k for k, caption in enumerate(self.captions)}
        self.embeddings = embeddings

    def __contains__(self, caption: str) -> bool:
        return caption in self.rows

    def lookup(self, captions: Sequence[str]) -> TextCondition:
        """The rows of ``captions`` (each must be in the table: ``KeyError`` otherwise)."""
        return self.embeddings.take([self.rows[c] for c in captions])

    @classmethod
    def encode(cls, encode: Callable[[list[str]], TextCondition], captions: Sequence[str], chunk: int = 64,
               report: Callable[[float, float], None] | None = None) -> TextTable:
        """The table of the distinct ``captions`` (first-seen order), ``encode`` called ``chunk`` at a time;
        ``report(done, total)`` after each chunk."""
        unique = list(dict.fromkeys(captions))
        parts = []
        for start in range(0, len(unique), chunk):
            parts.append(encode(unique[start:start + chunk]))
            if report is not None:
                report(min(start + chunk, len(unique)), len(unique))
        return cls(unique, TextCondition.cat(parts) if parts else TextCondition(torch.zeros(0, 1, 1)))


def text_cache_key(text_weights_sha256: str, captions: Sequence[str]) -> str:
    """sha256 (hex) of the text encoders' weights digest and the distinct captions, in order."""
    unique = list(dict.fromkeys(captions))
    payload = json.dumps({"v": FORMAT_VERSION, "weights": text_weights_sha256, "captions": unique})
    return hashlib.sha256(payload.encode()).hexdigest()


class TextEmbeddingCache:
    """Text tables stored under ``root`` (``<root>/<key>/``: the embeddings as safetensors and ``meta.json``
    with the captions), written atomically (a temporary folder renamed into place)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def entry(self, key: str) -> Path:
        return self.root / key

    def lookup(self, key: str) -> TextTable | None:
        """The table stored under ``key``, or None (absent or damaged: it is then encoded again)."""
        from safetensors.torch import load_file

        folder = self.entry(key)
        try:
            meta = json.loads((folder / META).read_text(encoding="utf-8"))
            tensors = load_file(str(folder / TENSORS))
            if meta.get("format_version") != FORMAT_VERSION or not isinstance(meta.get("captions"), list):
                return None
            return TextTable(meta["captions"], TextCondition(tensors["hidden"], tensors.get("pooled")))
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            if folder.exists():
                logger.warning("text embedding cache entry %s is unusable (%s): encoding again", folder.name, exc)
            return None

    def store(self, key: str, table: TextTable) -> None:
        """Write ``table`` under ``key`` (a failure to write is a warning: the run goes on uncached)."""
        from safetensors.torch import save_file

        tensors = {"hidden": table.embeddings.hidden.contiguous()}
        if table.embeddings.pooled is not None:
            tensors["pooled"] = table.embeddings.pooled.contiguous()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=self.root))
            try:
                save_file(tensors, str(tmp / TENSORS))
                (tmp / META).write_text(json.dumps({"format_version": FORMAT_VERSION,
                                                    "captions": list(table.captions)}), encoding="utf-8")
                os.replace(tmp, self.entry(key))
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError as exc:
            logger.warning("text embeddings not cached (%s)", exc)
