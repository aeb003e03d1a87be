"""Train the MNIST domain feature extractor shipped with greendiff.evaluate.

Trains ``MnistFeatures`` on 8,000 of the bundled 10,000 MNIST test digits (fixed split, seed 0),
reports accuracy on the 2,000 held out, and writes the weights (safetensors) into the package.
Deterministic on CPU: rerunning reproduces the shipped file.

    python scripts/train_mnist_features.py [--epochs 4] [--out src/greendiff/evaluate/weights/mnist_features.safetensors]
"""

from __future__ import annotations

import argparse
import gzip
import json
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from greendiff.data import load_mnist
from greendiff.evaluate._features import MnistFeatures

HELD_OUT = 2000


def labels() -> torch.Tensor:
    raw = gzip.decompress((resources.files("greendiff.data") / "tables" / "t10k-labels-idx1-ubyte.gz").read_bytes())
    assert int.from_bytes(raw[:4], "big") == 2049
    return torch.from_numpy(np.frombuffer(raw, dtype=np.uint8, offset=8).astype(np.int64))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "src/greendiff/evaluate/weights/mnist_features.safetensors")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    x = load_mnist(28).images.float() / 127.5 - 1.0  # (10000, 1, 28, 28) in [-1, 1]
    y = labels()
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    test_idx, train_idx = order[:HELD_OUT], order[HELD_OUT:]
    model = MnistFeatures()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(1)
    for epoch in range(args.epochs):
        model.train()
        perm = train_idx[torch.randperm(len(train_idx), generator=gen)]
        for start in range(0, len(perm), 64):
            idx = perm[start:start + 64]
            loss = F.cross_entropy(model.logits(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            acc = (model.logits(x[test_idx]).argmax(1) == y[test_idx]).float().mean().item()
        print(f"epoch {epoch + 1}: held-out accuracy {acc:.4f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(args.out))
    report = {"held_out_images": HELD_OUT, "train_images": len(train_idx), "epochs": args.epochs,
              "held_out_accuracy": acc, "weights": args.out.name, "bytes": args.out.stat().st_size}
    (args.out.parent / "mnist_features.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
