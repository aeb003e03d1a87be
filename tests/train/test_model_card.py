from __future__ import annotations

import dataclasses

import pytest
from huggingface_hub import ModelCard

from greendiff.errors import UserInputError
from greendiff.train._model_card import CardFacts, model_card, write_model_card

FACTS = CardFacts(base_model="stable-diffusion-v1-5/stable-diffusion-v1-5", method="lora",
                  settings={"rank": 8, "alpha": 16.0, "dropout": 0.0, "targets": ("to_q", "to_k", "to_v", "to_out.0"),
                            "lr": 1e-4, "steps": 500, "batch size": 4, "resolution": 512},
                  emissions_g=123.456, energy_kwh=0.4321, location="FR", hardware="1 x NVIDIA H100 80GB HBM3",
                  meter="NVML counter", prompts=("a photo of sks dog", "sks dog: on a beach | at dusk"),
                  instance_prompt="a photo of sks dog")


def test_lora_card_metadata_parses_back_with_emissions_in_grams():
    data = ModelCard(model_card(FACTS)).data
    assert data.base_model == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert data.library_name == "diffusers"
    assert data.tags == ["greendiff", "text-to-image", "diffusers", "lora"]
    assert data.instance_prompt == "a photo of sks dog"
    assert data.co2_eq_emissions == {"emissions": 123.456, "source": "greendiff (NVML counter)",
                                     "training_type": "fine-tuning", "geographical_location": "FR",
                                     "hardware_used": "1 x NVIDIA H100 80GB HBM3"}


def test_lora_card_body_states_settings_energy_and_plain_diffusers_loading():
    text = ModelCard(model_card(FACTS, where="out/lora")).text
    assert "| targets | to_q, to_k, to_v, to_out.0 |" in text
    assert "| lr | 0.0001 |" in text and "| batch size | 4 |" in text
    assert "0.4321 kilowatt-hours" in text and "123.5 grams of CO2-equivalent" in text
    assert "pipe = DiffusionPipeline.from_pretrained('stable-diffusion-v1-5/stable-diffusion-v1-5')" in text
    assert "pipe.load_lora_weights('out/lora')" in text
    assert "- sks dog: on a beach | at dusk" in text


def test_full_card_loads_the_folder_and_has_no_instance_prompt():
    facts = dataclasses.replace(FACTS, method="full", instance_prompt="", base_model="tiny-sd")
    card = ModelCard(model_card(facts, where="out/pipe"))
    assert card.data.tags[-1] == "full-fine-tune" and "instance_prompt" not in card.data.to_dict()
    assert "pipe = DiffusionPipeline.from_pretrained('out/pipe')" in card.text
    assert card.text.startswith("\n# A full fine-tune of tiny-sd\n") and "load_lora_weights" not in card.text
    assert "pipe('a photo of sks dog')" in card.text


def test_yaml_specials_in_strings_survive():
    facts = dataclasses.replace(FACTS, location="US-CAL-CISO: 'west'", hardware="cpu # 16 cores",
                                base_model="pipes/sd: v2")
    data = ModelCard(model_card(facts)).data
    assert data.co2_eq_emissions["geographical_location"] == "US-CAL-CISO: 'west'"
    assert data.co2_eq_emissions["hardware_used"] == "cpu # 16 cores" and data.base_model == "pipes/sd: v2"


def test_write_model_card_writes_readme_atomically(tmp_path):
    path = write_model_card(tmp_path, FACTS)
    assert path == tmp_path / "README.md" and [p.name for p in tmp_path.iterdir()] == ["README.md"]
    assert ModelCard.load(path).data.co2_eq_emissions["emissions"] == 123.456


def test_write_model_card_to_a_missing_folder_is_one_line(tmp_path):
    with pytest.raises(UserInputError, match="cannot write the model card .*README.md") as excinfo:
        write_model_card(tmp_path / "missing", FACTS)
    assert "\n" not in str(excinfo.value) and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("change, match", [({"method": "dreambooth"}, "method"), ({"emissions_g": -1.0}, "emissions_g"),
                                           ({"energy_kwh": float("nan")}, "energy_kwh")])
def test_bad_facts_are_refused(change, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(FACTS, **change)
