"""Reading saved models: safetensors only, a pickled .bin is never read."""

from __future__ import annotations

import os
import pickle

import pytest

from greendiff.errors import UserInputError
from greendiff.train import load_unet, load_weights


class Payload:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return os.system, (f"touch {self.target}",)


@pytest.fixture
def saved_unet(tmp_path):
    from diffusers import UNet2DModel

    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4)
    unet.save_pretrained(str(tmp_path / "unet"))
    return unet, tmp_path / "unet"


def test_a_saved_unet_loads_from_its_safetensors(saved_unet):
    unet, folder = saved_unet
    loaded = load_unet(folder, "teacher")
    assert all((a == b).all() for a, b in zip(unet.state_dict().values(), loaded.state_dict().values()))


@pytest.mark.parametrize("role", ["teacher", "model.init_from"])
def test_a_pickled_bin_in_place_of_the_weights_is_never_loaded(saved_unet, tmp_path, role):
    unet, folder = saved_unet
    (folder / "diffusion_pytorch_model.safetensors").unlink()
    marker = tmp_path / "pwned"
    (folder / "diffusion_pytorch_model.bin").write_bytes(pickle.dumps(Payload(str(marker))))
    with pytest.raises(UserInputError, match=rf"{role} .*never pickled \.bin"):
        load_unet(folder, role) if role == "teacher" else load_weights(unet, folder)
    assert not marker.exists()


def test_truncated_weights_are_one_line_naming_the_file(saved_unet):
    _, folder = saved_unet
    weights = folder / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(UserInputError, match="diffusion_pytorch_model.safetensors: truncated"):
        load_unet(folder, "teacher")
