"""The REPA lever's encoder for ``bench/energy_to_quality.py``: a small ViT trained here, not the FID network.

REPA aligns the UNet's features to a frozen encoder's; aligning to the network that scores quality would
optimise the metric itself (greendiff refuses that folder). So the benchmark trains its own: a 2-layer ViT
(patch 4, width 64) classifying the bundled MNIST digits for ``steps`` AdamW steps, saved with
``save_pretrained`` (safetensors) with a preprocessor config that feeds it the images as they are (greyscale,
[0, 1], no resize). It differs from the bundled MNIST feature network in architecture and weights, though both
learn the same digit labels on the same images, so some correlation with the metric remains.

    python bench/_e2q_encoder.py OUT_DIR [--steps 300] [--resolution 16]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def train_encoder(folder: Path, dataset: str, resolution: int, steps: int, seed: int = 0) -> dict:
    """Train and save the encoder; returns its steps, seconds and accuracy on the last 1,000 images (held out).

    Args:
        folder: Where ``save_pretrained`` writes it (replaced).
        dataset, resolution: The labelled images (the bundled MNIST at the benchmark's resolution).
        steps: AdamW steps of batch 128, LR 1e-3.
        seed: Seed of the weights and batches.
    """
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    from greendiff.data import load_dataset

    torch.manual_seed(seed)
    data = load_dataset(dataset, resolution)
    x = data.images.float() / 255  # (N, 1, H, W) in [0, 1], as the preprocessor config below feeds it
    y = data.labels.long()
    train_x, train_y, test_x, test_y = x[:-1000], y[:-1000], x[-1000:], y[-1000:]
    config = ViTConfig(image_size=resolution, patch_size=4, num_channels=1, hidden_size=64, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=128, num_labels=int(y.max()) + 1)
    model = ViTForImageClassification(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    t0 = time.perf_counter()
    for _ in range(steps):
        index = torch.randint(0, len(train_x), (128,))
        loss = model(pixel_values=train_x[index], labels=train_y[index]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        accuracy = (model(pixel_values=test_x).logits.argmax(-1) == test_y).float().mean().item()
    model.vit.save_pretrained(folder, safe_serialization=True)
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"do_resize": False, "do_center_crop": False, "do_normalize": False, "size": {"height": resolution,
                                                                                    "width": resolution}}))
    return {"dir": folder.name, "steps": steps, "seconds": time.perf_counter() - t0, "accuracy": accuracy,
            "architecture": "ViT, 2 layers, width 64, patch 4, trained as a digit classifier"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--resolution", type=int, default=16)
    parser.add_argument("--dataset", default="mnist")
    args = parser.parse_args()
    print(json.dumps(train_encoder(args.out, args.dataset, args.resolution, args.steps)))


if __name__ == "__main__":
    main()
