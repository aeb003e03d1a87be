"""Cached latents: hit and miss, what invalidates an entry, damaged and half-written entries, and batches that
equal the uncached path's step for step (in memory, streamed, resumed)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from greendiff.data import ImageSet, StreamedSet, load_dataset
from greendiff.errors import UserInputError
from greendiff.train import _latents
from greendiff.train._latents import (
    LatentBatch, LatentCache, LatentSet, data_fingerprint, default_cache_root, encode_and_store, encode_dataset,
    latent_cache_key, latent_key_parts, posterior_batch,
)

SHA = "ab" * 32


def tiny_vae(seed: int = 0):
    """A 2-block AutoencoderKL of 1 channel: 8x8 images -> 4x4x4 latents."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                        norm_num_groups=8, layers_per_block=1, sample_size=8)
    return vae.eval().requires_grad_(False)


class Encoder:
    """``vae.encode(x).latent_dist`` -> ``(mean, std)``, counting the images it saw."""

    def __init__(self, vae) -> None:
        self.vae, self.seen = vae, 0

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.seen += x.shape[0]
        dist = self.vae.encode(x).latent_dist
        return dist.mean, dist.std


@pytest.fixture(scope="module")
def encode():
    return Encoder(tiny_vae())


@pytest.fixture(scope="module")
def digits() -> ImageSet:
    """40 labelled 8x8 digits with captions and class names."""
    full = load_dataset("digits", 8)
    captions = tuple(f"digit {int(v)}" for v in full.labels[:40])
    return ImageSet(full.images[:40].clone(), "digits[:40]", labels=full.labels[:40].clone(), captions=captions,
                    class_names=tuple(str(i) for i in range(10)))


def key_of(data, vae_sha: str = SHA, resolution: int = 8, augmentation: str = "none") -> str:
    return latent_cache_key(data_fingerprint(data), vae_sha, resolution, augmentation)


def test_a_miss_then_a_hit_holding_what_was_stored(tmp_path, digits, encode):
    cache, key = LatentCache(tmp_path / "latents"), key_of(digits)
    assert cache.lookup(key) is None
    parts = latent_key_parts(data_fingerprint(digits), SHA, 8)
    stored = encode_and_store(cache, key, digits, encode, batch_size=16, parts=parts)
    hit = cache.lookup(key)
    assert hit is not None and (hit.num_images, hit.channels, hit.size) == (40, 4, 4)
    assert torch.equal(hit.mean, stored.mean) and torch.equal(hit.std, stored.std)
    assert torch.equal(hit.labels, digits.labels) and hit.labels.dtype == torch.int64
    assert hit.captions == digits.captions and hit.class_names == digits.class_names
    assert hit.num_classes == 10 and hit.class_counts == digits.class_counts
    assert hit.mean.dtype == torch.float32 and bool((hit.std > 0).all())
    folder = tmp_path / "latents" / key
    assert sorted(p.name for p in (tmp_path / "latents").iterdir()) == [key]  # no temporary folder left
    assert sorted(p.name for p in folder.iterdir()) == ["latents.safetensors", "meta.json"]
    meta = json.loads((folder / "meta.json").read_text())
    assert (meta["format_version"], meta["shape"], meta["num_images"], meta["key"]) == (1, [40, 4, 4, 4], 40, key)
    assert meta["parts"] == {"format_version": 1, "data": data_fingerprint(digits), "vae_sha256": SHA,
                             "resolution": 8, "augmentation": "none"}
    assert meta["captions"][:2] == list(digits.captions[:2]) and meta["class_names"] == list("0123456789")


def test_encode_dataset_encodes_every_image_in_order_in_chunks(digits, encode):
    told = []
    mean, std = encode_dataset(digits, encode, batch_size=16, on_progress=lambda done, n: told.append((done, n)))
    assert told == [(16, 40), (32, 40), (40, 40)]
    assert mean.shape == std.shape == (40, 4, 4, 4) and mean.dtype == std.dtype == torch.float32
    one_m, one_s = encode(digits.images[17:18].float() / 127.5 - 1)  # image 17, alone, in [-1, 1]
    assert torch.allclose(mean[17:18], one_m, atol=1e-6) and torch.allclose(std[17:18], one_s, atol=1e-6)
    assert not torch.allclose(mean[16:17], one_m, atol=1e-3)  # a neighbour is another image


def test_other_data_vae_resolution_or_augmentation_is_a_miss(tmp_path, digits, encode):
    cache = LatentCache(tmp_path)
    cache.store(key_of(digits), *encode_dataset(digits, encode), digits.labels, digits.class_names, digits.captions)
    same = ImageSet(digits.images.clone(), "another source", labels=digits.labels.clone(), captions=digits.captions,
                    class_names=digits.class_names)
    assert data_fingerprint(same) == data_fingerprint(digits) and cache.lookup(key_of(same)) is not None
    pixel = digits.images.clone()
    pixel[7, 0, 3, 4] ^= 1  # one pixel, one bit
    relabelled = digits.labels.clone()
    relabelled[0] = (relabelled[0] + 1) % 10
    vae_files = []
    for seed in (0, 1):  # two VAEs' weight files: other weights, other sha
        tiny_vae(seed).save_pretrained(tmp_path / f"vae{seed}")
        weights = tmp_path / f"vae{seed}" / "diffusion_pytorch_model.safetensors"
        vae_files.append(hashlib.sha256(weights.read_bytes()).hexdigest())
    assert vae_files[0] != vae_files[1]
    like = dict(captions=digits.captions, class_names=digits.class_names)
    others = [key_of(ImageSet(pixel, "", labels=digits.labels, **like)),
              key_of(ImageSet(digits.images, "", labels=relabelled, **like)),
              key_of(digits, vae_sha=vae_files[1]), key_of(digits, resolution=16), key_of(digits, augmentation="hflip")]
    assert key_of(digits, vae_sha=vae_files[0]) != others[2]
    assert len({key_of(digits), *others}) == 6
    assert all(cache.lookup(key) is None for key in others)


def test_a_damaged_entry_is_a_miss_with_a_warning(tmp_path, digits, encode, caplog):
    cache, key = LatentCache(tmp_path), key_of(digits)
    mean, std = encode_dataset(digits, encode)
    cache.store(key, mean, std, digits.labels, digits.class_names, digits.captions)
    tensors = tmp_path / key / "latents.safetensors"
    good = tensors.read_bytes()
    tensors.write_bytes(good[: len(good) // 2])  # truncated
    with caplog.at_level(logging.WARNING, logger="greendiff.train._latents"):
        assert cache.lookup(key) is None
    assert len(caplog.records) == 1 and key in caplog.messages[0] and "unusable" in caplog.messages[0]
    tensors.write_bytes(good)
    meta = json.loads((tmp_path / key / "meta.json").read_text())
    (tmp_path / key / "meta.json").write_text(json.dumps({**meta, "shape": [40, 4, 2, 2]}))  # mismatching
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="greendiff.train._latents"):
        assert cache.lookup(key) is None
    assert "mean is not finite float32 [40, 4, 2, 2]" in caplog.messages[0]
    (tmp_path / key / "meta.json").write_text("{not json")
    assert cache.lookup(key) is None
    cache.store(key, mean, std, digits.labels, digits.class_names, digits.captions)  # replaces it
    assert torch.equal(cache.lookup(key).mean, mean)


def test_store_is_atomic(tmp_path, digits, encode, monkeypatch):
    cache, key = LatentCache(tmp_path), key_of(digits)
    mean, std = encode_dataset(digits, encode)
    real = _latents.save_file

    def half_then_full_disk(tensors, path, metadata=None):
        assert not (tmp_path / key).exists()  # nothing visible under the key while it is written
        with open(path, "wb") as f:
            f.write(b"\x00" * 100)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_latents, "save_file", half_then_full_disk)
    with pytest.raises(UserInputError, match=r"cannot write the latent cache in .* \(No space left on device\)") as err:
        cache.store(key, mean, std, digits.labels, digits.class_names, None)
    assert "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == [] and cache.lookup(key) is None
    monkeypatch.setattr(_latents, "save_file", real)
    cache.store(key, mean, std, None, (), None)
    monkeypatch.setattr(_latents, "save_file", _raise_enospc)
    with pytest.raises(UserInputError):
        cache.store(key, mean + 1, std, None, (), None)
    kept = cache.lookup(key)  # a failed replacement keeps the entry there
    assert kept is not None and torch.equal(kept.mean, mean) and [p.name for p in tmp_path.iterdir()] == [key]


def _raise_enospc(tensors, path, metadata=None):
    raise OSError(28, "No space left on device")


def test_keys_are_checked():
    with pytest.raises(ValueError, match="64 lowercase hex digits"):
        LatentCache(Path("/tmp")).lookup("../etc")
    with pytest.raises(ValueError, match="resolution must be a positive number of pixels"):
        latent_cache_key("d", SHA, 0)
    with pytest.raises(ValueError, match="augmentation must be a non-empty string"):
        latent_cache_key("d", SHA, 8, "")


def _uncached(data, encode, **kw):
    return [posterior_batch(b, encode) for b in data.batches(**kw)]


def _same(a: list[LatentBatch], b: list[LatentBatch], exact: bool = True) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert torch.equal(x.labels, y.labels) and x.captions == y.captions
        close = torch.equal if exact else (lambda u, v: torch.allclose(u, v, rtol=0, atol=1e-6))
        assert close(x.mean, y.mean) and close(x.std, y.std)


def test_cached_batches_are_the_uncached_ones_step_for_step(tmp_path, digits, encode):
    """The tiny VAE's encoder is batch-size sensitive on CPU (the cache encodes 16 at a time, a step 3), so the
    posteriors agree to 1e-6, not bit for bit; labels, captions and the draw from equal posteriors are exact."""
    latents = encode_and_store(LatentCache(tmp_path), key_of(digits), digits, encode, batch_size=16)
    kw = dict(start_step=0, batch_size=3, world_size=2, rank=1, seed=5, stop_step=9)  # 9 steps of 6 of 40: > an epoch
    images = list(digits.batches(**kw))
    cached = list(latents.batches(**kw))
    assert [b.labels.tolist() for b in cached] == [b.labels.tolist() for b in images]
    _same(cached, _uncached(digits, encode, **kw), exact=False)
    z1 = cached[2].sample(torch.Generator().manual_seed(3), 0.18)
    z2 = LatentBatch(cached[2].mean.clone(), cached[2].std.clone(), None).sample(torch.Generator().manual_seed(3), 0.18)
    assert torch.equal(z1, z2) and z1.shape == (3, 4, 4, 4)
    eps = torch.randn(3, 4, 4, 4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(z1, 0.18 * (cached[2].mean + cached[2].std * eps))


def test_a_resumed_stream_is_the_tail_of_an_uninterrupted_one(digits, encode):
    latents = LatentSet(*encode_dataset(digits, encode), digits.labels, digits.class_names, digits.captions)
    whole = list(latents.batches(0, 4, seed=2, stop_step=14))  # 14 steps of 4 of 40: into the second epoch
    _same(whole[11:], list(latents.batches(11, 4, seed=2, stop_step=14)))
    _same(whole[:3], list(latents.batches(0, 4, seed=2, stop_step=3)))
    assert [b.labels.tolist() for b in whole] == [b.labels.tolist() for b in digits.batches(0, 4, seed=2, stop_step=14)]


def _folder(root, n: int = 12):
    """``n`` 8x8 grey PNGs in two class folders, with captions."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        name = f"{'ab'[i % 2]}/{i:03d}.png"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(root / name)
        rows.append(f'{{"file_name": "{name}", "text": "image {i}"}}\n')
    (root / "metadata.jsonl").write_text("".join(rows))
    return root


def _streamed(folder) -> StreamedSet:
    data = load_dataset(str(folder), 8, caption_column="text", cache_max_gb=0.0, workers=0)
    assert isinstance(data, StreamedSet)
    return data


def test_a_streamed_set_is_fingerprinted_by_its_files(tmp_path, encode):
    folder = _folder(tmp_path / "images")
    first = data_fingerprint(_streamed(folder))
    assert data_fingerprint(_streamed(folder)) == first  # nothing changed
    target = folder / "b" / "003.png"
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # touched
    touched = data_fingerprint(_streamed(folder))
    assert touched != first
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(target)  # changed
    assert data_fingerprint(_streamed(folder)) not in (first, touched)
    assert data_fingerprint(load_dataset(str(folder), 8, caption_column="text")) != first  # in memory: the pixels


def test_streamed_latents_are_the_in_memory_ones(tmp_path, encode):
    folder = _folder(tmp_path / "images")
    streamed, memory = _streamed(folder), load_dataset(str(folder), 8, caption_column="text")
    assert isinstance(memory, ImageSet)
    told = []
    from_stream = encode_and_store(LatentCache(tmp_path / "cache"), key_of(streamed), streamed, encode, batch_size=5,
                                   on_progress=lambda done, total: told.append((done, total)))
    assert told == [(5, 12), (10, 12), (12, 12)]
    mean, std = encode_dataset(memory, encode, batch_size=5)
    assert torch.equal(from_stream.mean, mean) and torch.equal(from_stream.std, std)
    assert from_stream.captions == memory.captions and torch.equal(from_stream.labels, memory.labels)
    kw = dict(start_step=1, batch_size=4, seed=1, stop_step=5)
    assert [b.captions for b in from_stream.batches(**kw)] == [b.captions for b in streamed.batches(**kw)]


def test_default_cache_root():
    assert default_cache_root({"GREENDIFF_CACHE_DIR": "/c", "XDG_CACHE_HOME": "/x"}) == Path("/c/latents")
    assert str(default_cache_root({"GREENDIFF_CACHE_DIR": "", "XDG_CACHE_HOME": "/x"})) == "/x/greendiff/latents"
    assert default_cache_root({}) == Path.home() / ".cache" / "greendiff" / "latents"


def test_with_the_vae_module_the_key_follows_the_weights_file(tmp_path, digits, encode):
    vae_module = pytest.importorskip("greendiff.train._vae")
    for seed in (0, 1):
        tiny_vae(seed).save_pretrained(tmp_path / f"vae{seed}")
    shas = [vae_module.vae_weights_sha256(tmp_path / f"vae{seed}") for seed in (0, 1)]
    assert shas[0] != shas[1] and shas[0] == vae_module.vae_weights_sha256(tmp_path / "vae0")
    vae = vae_module.load_vae(tmp_path / "vae0")
    cache = LatentCache(tmp_path / "cache")
    stored = encode_and_store(cache, key_of(digits, shas[0]), digits, lambda x: vae_module.encode_posterior(vae, x))
    assert cache.lookup(key_of(digits, shas[1])) is None
    mean, std = encode_dataset(digits, encode)  # the same weights through the test's own encoder
    assert torch.equal(cache.lookup(key_of(digits, shas[0])).mean, stored.mean)
    assert torch.equal(stored.mean, mean) and torch.equal(stored.std, std)
