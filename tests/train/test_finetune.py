"""The fine-tune's pieces (issue 22): DreamBooth's instance/class batches, the prior-preservation loss, the
text-embedding table and its cache."""

from __future__ import annotations

import torch

from greendiff.data import ImageSet, PriorPairs, step_indices
from greendiff.train._base_pipeline import BasePipeline, TextCondition
from greendiff.train._finetune_family import prior_split_loss
from greendiff.train._text_cache import TextEmbeddingCache, TextTable, text_cache_key


def _pairs(instances: int = 5, class_images: int = 7) -> PriorPairs:
    """Images whose one pixel is their index: instances 0..4, class images 5..11."""
    n = instances + class_images
    captions = ("a sks digit",) * instances + ("a digit",) * class_images
    return PriorPairs(ImageSet(torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1), "pairs", captions=captions),
                      instances=instances)


def _ids(batch) -> list[int]:
    return [int(v) for v in batch.images.flatten()]


def test_prior_pairs_batches_are_instances_then_class_images_each_in_its_own_seeded_order():
    data, b, seed = _pairs(), 2, 3
    batches = [_ids(batch) for _, batch in zip(range(6), data.batches(0, batch_size=b, seed=seed))]
    for step, ids in enumerate(batches):
        assert ids[:b] == step_indices(step, 5, b, 1, 0, seed).tolist()
        assert ids[b:] == (5 + step_indices(step, 7, b, 1, 0, seed + 1)).tolist()
        assert all(i < 5 for i in ids[:b]) and all(i >= 5 for i in ids[b:])
    assert [_ids(batch) for _, batch in zip(range(2), data.batches(4, batch_size=b, seed=seed))] == batches[4:6]
    first = next(data.batches(0, batch_size=b, seed=seed))
    assert list(first.captions) == ["a sks digit"] * b + ["a digit"] * b


def test_prior_split_loss_weighs_the_class_half_apart():
    per_sample = torch.tensor([1.0, 3.0, 10.0, 20.0])
    assert float(prior_split_loss(per_sample, None, 0.5)) == 8.5  # no prior: the plain mean
    assert float(prior_split_loss(per_sample, 2, 0.5)) == 2.0 + 0.5 * 15.0
    assert float(prior_split_loss(per_sample, 2, 0.0)) == 2.0  # weight 0: the class images do not count
    assert float(prior_split_loss(per_sample, 2, 1.0)) == 17.0


def test_the_text_table_holds_the_pipelines_own_embeddings_and_its_cache_round_trips_them(tiny_sd, tmp_path):
    base = BasePipeline.load(tiny_sd)
    captions = ["a handwritten digit seven", "a photo of a digit", "a handwritten digit seven", ""]
    table = TextTable.encode(base.encode, captions, chunk=2)
    assert table.captions == ("a handwritten digit seven", "a photo of a digit", "")
    direct = base.encode(["a photo of a digit", "a handwritten digit seven"])
    assert torch.equal(table.lookup(["a photo of a digit", "a handwritten digit seven"]).hidden, direct.hidden)
    key = text_cache_key(base.text_weights_sha256(), captions)
    assert key != text_cache_key(base.text_weights_sha256(), captions[::-1])  # the order is the rows'
    cache = TextEmbeddingCache(tmp_path / "text")
    assert cache.lookup(key) is None
    cache.store(key, table)
    again = cache.lookup(key)
    assert again.captions == table.captions and torch.equal(again.embeddings.hidden, table.embeddings.hidden)


def test_sd3_conditioning_has_pooled_projections_and_the_table_keeps_them(tiny_sd3):
    base = BasePipeline.load(tiny_sd3)
    table = TextTable.encode(base.encode, ["a photo of a dog", "a handwritten digit seven"])
    row = table.lookup(["a handwritten digit seven"])
    assert isinstance(row, TextCondition) and row.pooled is not None and row.pooled.shape == (1, 32)
    assert row.hidden.shape[0] == 1 and row.hidden.shape[-1] == 32  # SD3's joint attention width
    # encoded in a batch of 2, compared with a batch of 1: the CPU's matmuls round by batch size (float noise)
    torch.testing.assert_close(row.pooled, base.encode(["a handwritten digit seven"]).pooled, atol=1e-6, rtol=0)
