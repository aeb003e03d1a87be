"""Feature extractors for FID/KID/precision-recall: images (N, C, H, W) in [-1, 1] -> (N, D).

1. ``mnist``: a small CNN classifier trained on the bundled MNIST by ``scripts/train_mnist_features.py``;
   its 64-d penultimate layer is the feature. Weights ship in the package (safetensors).
2. ``inception:PATH``: the standard FID Inception-v3 from a local weights file (torch-fidelity), never
   downloaded.
3. Any ``nn.Module`` with that contract (:func:`check_extractor` validates its output).
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from greendiff.errors import UserInputError

MNIST_WEIGHTS = resources.files("greendiff.evaluate") / "weights" / "mnist_features.safetensors"


class MnistFeatures(nn.Module):
    """Two conv blocks and a 64-unit layer; ``forward`` returns the 64-d features, ``logits`` the 10 classes.

    Any input size and channel count is accepted: images are averaged to greyscale and resized to
    28x28 (MNIST's own size), so it scores samples at any training resolution.
    """

    feature_dim = 64

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32 * 7 * 7, self.feature_dim)
        self.head = nn.Linear(self.feature_dim, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().mean(dim=1, keepdim=True)  # (N, 1, H, W)
        if x.shape[-2:] != (28, 28):
            x = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False, antialias=True)
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # (N, 16, 14, 14)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # (N, 32, 7, 7)
        return F.relu(self.fc(x.flatten(1)))  # (N, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def load_mnist_features(path: Path | None = None) -> MnistFeatures:
    """The shipped (or given) MNIST feature extractor, in eval mode."""
    from safetensors.torch import load_file

    source = Path(str(path or MNIST_WEIGHTS))
    model = MnistFeatures()
    try:
        model.load_state_dict(load_file(str(source)))
    except FileNotFoundError:
        raise UserInputError(f"feature weights {source} not found; run scripts/train_mnist_features.py") from None
    except Exception as exc:  # safetensors raises its own errors for corrupt files
        raise UserInputError(f"feature weights {source} are corrupt or not this model's: {exc}") from None
    return model.eval()


def load_inception(path: Path) -> nn.Module:
    """Inception-v3 for FID from a local weights file (``pt_inception-2015-12-05``), via torch-fidelity."""
    if not path.is_file():
        raise UserInputError(f"Inception weights {path} not found; give a local file (greendiff never downloads weights)")
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError:
        raise UserInputError("inception features need torch-fidelity: pip install 'greendiff[inception]'") from None
    try:
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
    except Exception as exc:
        raise UserInputError(f"Inception weights {path} could not be loaded: {exc}") from None
    return _InceptionAdapter(net.eval())


class _InceptionAdapter(nn.Module):
    """[-1, 1] float images, 1 or 3 channels -> torch-fidelity's uint8 RGB input -> 2048-d pool features."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return self.net(x)[0]


def resolve_extractor(spec: str | nn.Module) -> tuple[nn.Module, str]:
    """``"mnist"``, ``"inception:PATH"`` or a module -> (module, a short name for records)."""
    if isinstance(spec, nn.Module):
        return spec.eval(), f"custom:{type(spec).__name__}"
    if spec == "mnist":
        return load_mnist_features(), "mnist"
    if spec.startswith("inception:"):
        return load_inception(Path(spec.split(":", 1)[1])), "inception"
    raise UserInputError(f"unknown --features {spec!r}: use mnist or inception:PATH")


def extractor_hash(module: nn.Module) -> str:
    """A hash of the extractor's class and weights: the key of cached reference statistics."""
    digest = hashlib.sha256(type(module).__qualname__.encode())
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


@torch.no_grad()
def extract(module: nn.Module, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Features of ``images`` (N, C, H, W) in [-1, 1], checked to be (N, D) and finite."""
    out = []
    for start in range(0, images.shape[0], batch_size):
        feats = module(images[start:start + batch_size])
        check_extractor_output(feats, min(batch_size, images.shape[0] - start))
        out.append(feats.float().cpu())
    return torch.cat(out)


def check_extractor_output(features: torch.Tensor, n: int) -> None:
    if not isinstance(features, torch.Tensor) or features.ndim != 2 or features.shape[0] != n:
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise UserInputError(f"feature extractor must return (N, D) features for N images; got {shape} for N={n}")
    if not torch.isfinite(features).all():
        raise UserInputError("feature extractor returned non-finite values")
