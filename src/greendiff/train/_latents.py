"""Cached latents: a dataset encoded once by a VAE, its posteriors reused by every epoch, resume and run.

A latent diffusion model trains on ``z = scaling_factor * (mean + std * eps)``, where ``(mean, std)`` is
the VAE's posterior of an image (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent
Diffusion Models", sec. 3). Encoding is the same work every epoch, so the posteriors (not one draw
from them, which would fix ``eps``) are stored once, keyed by what decides them: the images
(:func:`data_fingerprint`), the VAE's weights, the resolution and the augmentation
(:func:`latent_cache_key`). A :class:`LatentSet` then hands out the latents of each step in exactly the
order the images would come (:func:`greendiff.data` ``step_indices``), so a cached run and an uncached
one (:func:`posterior_batch` per step) draw the same :class:`LatentBatch` for the same seed and step.

An entry of a :class:`LatentCache` is a folder named by its key holding ``latents.safetensors``
(``mean``, ``std``, ``labels``) and ``meta.json``; it is written beside and renamed into place, so a
kill leaves the old entry or none, never half of one. Nothing is unpickled.

Example (a stand-in encoder: the mean is the image, the std a constant):
    >>> import tempfile, torch
    >>> from greendiff.data import ImageSet
    >>> data = ImageSet(torch.arange(48, dtype=torch.uint8).view(3, 1, 4, 4), "three", labels=torch.arange(3))
    >>> encode = lambda x: (x[:, :, ::2, ::2], torch.full_like(x[:, :, ::2, ::2], 0.1))
    >>> mean, std = encode_dataset(data, encode, batch_size=2)
    >>> cache = LatentCache(Path(tempfile.mkdtemp()))
    >>> key = latent_cache_key(data_fingerprint(data), "ab" * 32, resolution=4)
    >>> stored = cache.store(key, mean, std, data.labels, (), None)
    >>> latents = cache.lookup(key)
    >>> (latents.num_images, latents.channels, latents.size), torch.equal(latents.mean, mean)
    ((3, 1, 2), True)
    >>> batch = next(latents.batches(batch_size=2, seed=0))
    >>> batch.labels.tolist() == next(data.batches(batch_size=2, seed=0)).labels.tolist()
    True
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from greendiff.data import Batch, ImageSet, Labelled, StreamedSet, decode_all, step_indices
from greendiff.errors import UserInputError
from greendiff.names import display_path, first_line
from greendiff.train._checkpoint import remove_tree
from greendiff.train._images import unit_images

logger = logging.getLogger(__name__)

#: An image batch in ``[-1, 1]`` ``(B, C, H, W)`` -> its posterior ``(mean, std)``, float32 ``(B, c, h, w)``.
Encode = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

#: Version of an entry's layout (and of the key's parts): an entry of another version is a miss.
FORMAT_VERSION = 1
LATENTS_FILE, META_FILE = "latents.safetensors", "meta.json"
ENV_CACHE_DIR = "GREENDIFF_CACHE_DIR"
_KEY = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class LatentBatch:
    """The latents of one step on one process: the VAE posterior of each image, unscaled.

    Attributes:
        mean: float32 ``(B, c, h, w)`` posterior mean.
        std: float32 ``(B, c, h, w)`` posterior standard deviation (``exp(0.5 * logvar)``).
        labels: int64 ``(B,)`` class ids, or ``None``.
        captions: One string per image, or ``None``.

    Example:
        >>> b = LatentBatch(torch.zeros(2, 4, 2, 2), torch.ones(2, 4, 2, 2), None)
        >>> z = b.sample(torch.Generator().manual_seed(0), scaling_factor=0.5)
        >>> tuple(z.shape), torch.equal(z, 0.5 * torch.randn(2, 4, 2, 2, generator=torch.Generator().manual_seed(0)))
        ((2, 4, 2, 2), True)
    """

    mean: torch.Tensor
    std: torch.Tensor
    labels: torch.Tensor | None
    captions: list[str] | None = None

    @property
    def size(self) -> int:
        return int(self.mean.shape[0])

    def sample(self, generator: torch.Generator, scaling_factor: float, shift_factor: float = 0.0) -> torch.Tensor:
        """One draw in the diffusion scale: ``scaling_factor * (mean + std * eps - shift_factor)``, ``eps`` from
        ``generator`` (drawn on the generator's device, float32; the result is on ``mean``'s device)."""
        eps = torch.randn(self.mean.shape, generator=generator, dtype=torch.float32, device=generator.device)
        return scaling_factor * (self.mean + self.std * eps.to(self.mean.device) - shift_factor)


def _posterior(encode: Encode, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``encode`` of ``uint8`` images, its output checked and made float32."""
    mean, std = encode(unit_images(images))
    if mean.shape != std.shape or mean.dim() != 4 or mean.shape[0] != images.shape[0]:
        raise ValueError(f"encode gave mean {tuple(mean.shape)} and std {tuple(std.shape)} for {images.shape[0]} "
                         "images: need two equal (B, c, h, w) tensors")
    return mean.float(), std.float()


def posterior_batch(batch: Batch, encode: Encode) -> LatentBatch:
    """The posterior of a batch of images (the uncached path, called per step), labels and captions kept.

    Args:
        batch: A :class:`greendiff.data.Batch` (``uint8`` images).
        encode: ``[-1, 1]`` images -> ``(mean, std)`` (the VAE's ``encode_posterior`` bound to a VAE).
    """
    mean, std = _posterior(encode, batch.images)
    return LatentBatch(mean, std, batch.labels, batch.captions)


@dataclass(frozen=True)
class LatentSet(Labelled):
    """A dataset's latents with the batch interface of its images (:class:`greendiff.data.ImageSet`).

    Attributes:
        mean: float32 ``(N, c, h, w)`` posterior means, unscaled, in the data's order.
        std: float32 ``(N, c, h, w)``.
        labels: int64 ``(N,)`` class ids (``-1``: no class), or ``None``.
        class_names: Name of each class id.
        captions: One caption per image, or ``None``.
        source: Where the latents come from, for the run record.

    Example:
        >>> s = LatentSet(torch.zeros(6, 4, 2, 2), torch.ones(6, 4, 2, 2), torch.arange(6))
        >>> (s.num_images, s.channels, s.size), next(s.batches(batch_size=3, seed=0)).labels.tolist()
        ((6, 4, 2), [2, 5, 3])
    """

    mean: torch.Tensor
    std: torch.Tensor
    labels: torch.Tensor | None = None
    class_names: tuple[str, ...] = ()
    captions: tuple[str, ...] | None = None
    source: str = ""

    @property
    def num_images(self) -> int:
        return int(self.mean.shape[0])

    @property
    def channels(self) -> int:
        """Latent channels."""
        return int(self.mean.shape[1])

    @property
    def size(self) -> int:
        """Latent side (the resolution over the VAE's downsampling)."""
        return int(self.mean.shape[-1])

    def take(self, indices: torch.Tensor) -> LatentBatch:
        """The latents (labels, captions) at ``indices``."""
        captions = [self.captions[int(i)] for i in indices] if self.captions is not None else None
        labels = self.labels[indices] if self.labels is not None else None
        return LatentBatch(self.mean[indices], self.std[indices], labels, captions)

    def batches(self, start_step: int = 0, batch_size: int = 1, world_size: int = 1, rank: int = 0, seed: int = 0,
                stop_step: int | None = None) -> Iterator[LatentBatch]:
        """The latents of steps ``start_step, start_step + 1, ...`` (until ``stop_step``) for ``rank``: those of
        the very images the image set gives for the same arguments."""
        step = start_step
        while stop_step is None or step < stop_step:
            yield self.take(step_indices(step, self.num_images, batch_size, world_size, rank, seed))
            step += 1


# -- what identifies the data, and the key ---------------------------------------------------------

def _hash_tensor(h, name: str, t: torch.Tensor | None) -> None:
    """Feed ``t`` (its dtype, shape and bytes, not copied) to the hash ``h`` under ``name``."""
    h.update(f"{name}:{t.dtype}{tuple(t.shape)}".encode() if t is not None else f"{name}:none".encode())
    if t is not None and t.numel():
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())


def _file_stats(files: Sequence[Path]) -> list[tuple[str, int, int]]:
    """``(absolute path, size in bytes, mtime in ns)`` of each file: what changes when a file does."""
    stats = []
    for path in files:
        try:
            st = path.stat()
        except OSError as exc:
            raise UserInputError(f"{display_path(path)}: cannot read it ({exc.strerror or first_line(exc)}); "
                                 "was the data changed while loading?") from None
        stats.append((os.path.abspath(path), st.st_size, st.st_mtime_ns))
    return stats


def data_fingerprint(data: ImageSet | StreamedSet) -> str:
    """sha256 (hex) of what identifies a dataset's images, labels, captions and class names.

    An :class:`~greendiff.data.ImageSet`: its ``uint8`` images themselves. A
    :class:`~greendiff.data.StreamedSet`: its files' absolute paths, sizes and modification times (ns), its
    resolution, channels and bad-image policy, without decoding a pixel (touching a file changes it).
    """
    h = hashlib.sha256(f"greendiff-data-v{FORMAT_VERSION}".encode())
    if isinstance(data, ImageSet):
        _hash_tensor(h, "images", data.images)
    elif isinstance(data, StreamedSet):
        what = data.sources()
        what["files"] = _file_stats(what["files"])
        h.update(b"streamed" + json.dumps(what, sort_keys=True).encode())
    else:
        raise TypeError(f"data_fingerprint takes an ImageSet or a StreamedSet, not a {type(data).__name__}")
    captions = list(data.captions) if data.captions is not None else None
    _hash_tensor(h, "labels", data.labels)
    h.update(json.dumps({"captions": captions, "class_names": list(data.class_names)}).encode())
    return h.hexdigest()


def latent_key_parts(data_fingerprint: str, vae_sha256: str, resolution: int, augmentation: str = "none") -> dict:
    """What a cache key is made of (stored in the entry's ``meta.json``), checked."""
    named = (("data_fingerprint", data_fingerprint), ("vae_sha256", vae_sha256), ("augmentation", augmentation))
    for name, value in named:
        if not isinstance(value, str) or not value:
            raise ValueError(f"{name} must be a non-empty string, not {value!r}")
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"resolution must be a positive number of pixels, not {resolution!r}")
    return {"format_version": FORMAT_VERSION, "data": data_fingerprint, "vae_sha256": vae_sha256,
            "resolution": resolution, "augmentation": augmentation}


def latent_cache_key(data_fingerprint: str, vae_sha256: str, resolution: int, augmentation: str = "none") -> str:
    """The cache key (64 hex digits) of a dataset's latents under a VAE at a resolution and augmentation.

    Args:
        data_fingerprint: :func:`data_fingerprint` of the data.
        vae_sha256: sha256 of the VAE's weights file.
        resolution: Side of the images encoded, pixels.
        augmentation: The augmentation the latents hold ("none": the images as they are).

    Example:
        >>> a = latent_cache_key("d" * 64, "v" * 64, 32)
        >>> len(a), a == latent_cache_key("d" * 64, "v" * 64, 32, "none"), a == latent_cache_key("d" * 64, "v" * 64, 64)
        (64, True, False)
    """
    parts = latent_key_parts(data_fingerprint, vae_sha256, resolution, augmentation)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def default_cache_root(env: Mapping[str, str] = os.environ) -> Path:
    """Where latents are cached: ``$GREENDIFF_CACHE_DIR/latents``, else ``$XDG_CACHE_HOME/greendiff/latents``,
    else ``~/.cache/greendiff/latents`` (an empty variable counts as unset)."""
    if env.get(ENV_CACHE_DIR):
        return Path(env[ENV_CACHE_DIR]).expanduser() / "latents"
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]).expanduser() / "greendiff" / "latents"
    return Path.home() / ".cache" / "greendiff" / "latents"


# -- encoding ------------------------------------------------------------------------------------------

def _image_chunks(data: ImageSet | StreamedSet, batch_size: int) -> Iterator[Batch]:
    """Every image of ``data`` in order, ``batch_size`` at a time (a streamed set decoded here)."""
    n = data.num_images
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        if isinstance(data, ImageSet):
            yield data.take(torch.arange(start, stop))
        else:  # labels and captions of the images actually used (a bad file replaced by the next)
            yield decode_all(data.decode_set, list(range(start, stop)))


def _encode_all(data: ImageSet | StreamedSet, encode: Encode, batch_size: int,
                on_progress: Callable[[int, int], None] | None) -> LatentSet:
    """Every image of ``data`` encoded in order, with the labels and captions of the images as decoded
    (:func:`encode_dataset`)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be 1 or more, not {batch_size}")
    n = data.num_images
    if n < 1:
        raise ValueError("no images to encode")
    mean = std = None
    labels, captions, done = [], [], 0
    for chunk in _image_chunks(data, batch_size):
        m, s = _posterior(encode, chunk.images)
        if mean is None:  # (N, c, h, w), known from the first chunk
            mean = torch.empty((n, *m.shape[1:]), dtype=torch.float32)
            std = torch.empty_like(mean)
        mean[done:done + chunk.size], std[done:done + chunk.size] = m.cpu(), s.cpu()
        labels.append(chunk.labels)
        captions += chunk.captions or []
        done += chunk.size
        if on_progress is not None:
            on_progress(done, n)
    return LatentSet(mean, std, torch.cat(labels) if data.labels is not None else None, tuple(data.class_names),
                     tuple(captions) if data.captions is not None else None, data.source)


def encode_dataset(data: ImageSet | StreamedSet, encode: Encode, batch_size: int = 256,
                   on_progress: Callable[[int, int], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The posterior ``(mean, std)`` of every image of ``data``, in its order (float32 ``(N, c, h, w)``, CPU).

    Args:
        data: An in-memory set (sliced) or a streamed one (decoded here, a chunk at a time).
        encode: ``[-1, 1]`` images -> ``(mean, std)``.
        batch_size: Images encoded at a time.
        on_progress: Called with ``(images done, images in all)`` after each chunk.
    """
    latents = _encode_all(data, encode, batch_size, on_progress)
    return latents.mean, latents.std


# -- the cache -----------------------------------------------------------------------------------------

class _Unusable(ValueError):
    """An entry that cannot be used; the message says why."""


def _check_entry(meta: object, tensors: dict[str, torch.Tensor], key: str) -> None:
    """Raise :class:`_Unusable` unless ``meta.json`` and the tensors make one consistent entry of ``key``."""
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise _Unusable(f"not a version {FORMAT_VERSION} entry")
    shape = meta.get("shape")
    if not (isinstance(shape, list) and len(shape) == 4 and all(isinstance(v, int) and v > 0 for v in shape)):
        raise _Unusable(f"bad shape {shape!r}")
    n = shape[0]
    if meta.get("num_images") != n or meta.get("key") != key:
        raise _Unusable("its meta.json does not match its folder")
    parts = meta.get("parts")
    if parts is not None and (not isinstance(parts, dict) or latent_cache_key(
            parts.get("data"), parts.get("vae_sha256"), parts.get("resolution"), parts.get("augmentation")) != key):
        raise _Unusable("its key parts do not give its key")
    names = {"mean", "std"} | ({"labels"} if meta.get("labels") else set())
    if set(tensors) != names:
        raise _Unusable(f"it holds {sorted(tensors)}, not {sorted(names)}")
    for name in ("mean", "std"):
        t = tensors[name]
        if t.dtype != torch.float32 or list(t.shape) != shape or not bool(torch.isfinite(t).all()):
            raise _Unusable(f"its {name} is not finite float32 {shape}")
    if "labels" in tensors and (tensors["labels"].dtype != torch.int64 or list(tensors["labels"].shape) != [n]):
        raise _Unusable(f"its labels are not int64 ({n},)")
    captions, class_names = meta.get("captions"), meta.get("class_names")
    if captions is not None and not (isinstance(captions, list) and len(captions) == n
                                     and all(isinstance(c, str) for c in captions)):
        raise _Unusable(f"its captions are not {n} strings")
    if not (isinstance(class_names, list) and all(isinstance(c, str) for c in class_names)):
        raise _Unusable("its class names are not strings")


def _put_in_place(tmp: Path, folder: Path) -> None:
    """Rename the complete entry ``tmp`` to ``folder``; an entry already there is moved aside first and then
    deleted. Another process putting the same key in place meanwhile (parallel trials) wins: its entry holds
    the same latents."""
    old = tmp.with_name(".old-" + tmp.name[len(".tmp-"):])
    try:
        if folder.exists() or folder.is_symlink():
            os.replace(folder, old)
        os.replace(tmp, folder)
    except OSError:
        if not folder.is_dir():
            raise
    finally:
        remove_tree(old)


class LatentCache:
    """Latent sets on disk, one folder per key under ``root``, written atomically, read without unpickling.

    Args:
        root: The cache folder (created on the first store), e.g. :func:`default_cache_root`.

    Example:
        >>> import tempfile
        >>> cache = LatentCache(Path(tempfile.mkdtemp()))
        >>> key = latent_cache_key("d" * 64, "v" * 64, 8)
        >>> cache.lookup(key) is None
        True
        >>> _ = cache.store(key, torch.zeros(2, 4, 1, 1), torch.ones(2, 4, 1, 1), None, (), ["a", "b"])
        >>> cache.lookup(key).captions
        ('a', 'b')
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def entry(self, key: str) -> Path:
        """The folder of ``key`` (a key of :func:`latent_cache_key`: 64 hex digits, never a path)."""
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise ValueError(f"a latent cache key is 64 lowercase hex digits, not {key!r}")
        return self.root / key

    def lookup(self, key: str) -> LatentSet | None:
        """The latents stored under ``key``, or ``None``: none stored, or an entry that cannot be used (damaged,
        of another version, inconsistent), which is logged as a warning and encoded again."""
        folder = self.entry(key)
        if not folder.is_dir():
            return None
        try:
            meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
            tensors = load_file(str(folder / LATENTS_FILE))
            _check_entry(meta, tensors, key)
        except Exception as exc:  # noqa: BLE001 - json, safetensors and the OS fail in many ways on a damaged entry
            logger.warning("latent cache entry %s is unusable (%s): a miss, the data is encoded again",
                           display_path(folder), first_line(exc))
            return None
        captions = tuple(meta["captions"]) if meta["captions"] is not None else None
        return LatentSet(tensors["mean"], tensors["std"], tensors.get("labels"), tuple(meta["class_names"]), captions,
                         f"latent cache {display_path(folder)}")

    def store(self, key: str, mean: torch.Tensor, std: torch.Tensor, labels: torch.Tensor | None,
              class_names: Sequence[str], captions: Sequence[str] | None, *, parts: Mapping | None = None) -> LatentSet:
        """Store a dataset's latents under ``key`` (replacing an entry there) and return them as a set.

        Args:
            key: From :func:`latent_cache_key`.
            mean, std: float32 ``(N, c, h, w)`` posteriors, in the data's order.
            labels: int64 ``(N,)`` or ``None``.
            class_names: Name of each class id.
            captions: ``N`` strings or ``None``.
            parts: The key's parts (:func:`latent_key_parts`), kept in ``meta.json`` and checked against ``key``.

        Raises:
            UserInputError: The cache folder cannot be written (one line; nothing is left half-written).
        """
        folder = self.entry(key)
        latents = LatentSet(mean.detach().cpu().float().contiguous(), std.detach().cpu().float().contiguous(),
                            labels.detach().cpu().long().contiguous() if labels is not None else None,
                            tuple(class_names), tuple(captions) if captions is not None else None,
                            f"latent cache {display_path(folder)}")
        meta = self._meta(key, latents, parts)
        tensors = {"mean": latents.mean, "std": latents.std}
        if latents.labels is not None:
            tensors["labels"] = latents.labels
        _check_entry(meta, tensors, key)  # what lookup would refuse is never written
        tmp = self.root / f".tmp-{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            tmp.mkdir(parents=True)
            save_file(tensors, str(tmp / LATENTS_FILE), metadata={"format": "greendiff-latents"})
            (tmp / META_FILE).write_text(json.dumps(meta), encoding="utf-8")
            _put_in_place(tmp, folder)
        except OSError as exc:
            raise UserInputError(f"cannot write the latent cache in {display_path(self.root)} "
                                 f"({exc.strerror or first_line(exc)}); give --latent-cache-dir DIR (another folder) or "
                                 "--no-latent-cache") from None
        finally:
            remove_tree(tmp)
        return latents

    @staticmethod
    def _meta(key: str, latents: LatentSet, parts: Mapping | None) -> dict:
        return {"format_version": FORMAT_VERSION, "key": key, "shape": list(latents.mean.shape),
                "num_images": latents.num_images, "labels": latents.labels is not None,
                "class_names": list(latents.class_names),
                "captions": list(latents.captions) if latents.captions is not None else None,
                "parts": dict(parts) if parts is not None else None}


def encode_and_store(cache: LatentCache, key: str, data: ImageSet | StreamedSet, encode: Encode, batch_size: int = 256,
                     on_progress: Callable[[int, int], None] | None = None, parts: Mapping | None = None) -> LatentSet:
    """Encode every image of ``data`` (:func:`encode_dataset`) and store the latents under ``key``, with the
    labels and captions of the images as decoded (a streamed set's unreadable file replaced by the next)."""
    latents = _encode_all(data, encode, batch_size, on_progress)
    return cache.store(key, latents.mean, latents.std, latents.labels, latents.class_names, latents.captions,
                       parts=parts)
