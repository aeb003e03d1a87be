"""The Hugging Face model card (``README.md``) of a fine-tuned text-to-image model, with its carbon cost.

The YAML front matter follows the Hub's model-card metadata: ``base_model``, ``library_name``, ``tags``
and ``co2_eq_emissions`` (``emissions`` in grams of CO2e, ``source``, ``training_type``,
``geographical_location``, ``hardware_used``), so the Hub shows the emissions and
``huggingface_hub.ModelCard(text).data`` reads them back. The body says what was trained, with which
settings, what it cost in energy and CO2e, and how plain diffusers loads it.

Example:
    >>> facts = CardFacts(base_model="tiny-sd", method="lora", settings={"rank": 8}, emissions_g=12.5,
    ...                   energy_kwh=0.031, location="FR", hardware="1 x NVIDIA H100", meter="NVML counter",
    ...                   prompts=("a photo of sks dog",))
    >>> print(model_card(facts).split("\\n---\\n")[0])
    ---
    base_model: tiny-sd
    library_name: diffusers
    tags:
    - greendiff
    - text-to-image
    - diffusers
    - lora
    co2_eq_emissions:
      emissions: 12.5
      source: greendiff (NVML counter)
      training_type: fine-tuning
      geographical_location: FR
      hardware_used: 1 x NVIDIA H100
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from greendiff.errors import UserInputError
from greendiff.files import atomic_write_text
from greendiff.names import display_path

CARD_NAME = "README.md"
METHOD_TAGS = {"lora": "lora", "full": "full-fine-tune"}
WHERE = "path/to/this/folder"  # how the usage snippet names the folder holding the card


@dataclass(frozen=True)
class CardFacts:
    """What a model card states about one fine-tuning run.

    Attributes:
        base_model: the base pipeline: its folder's name, or a Hub id the user gives.
        method: ``"lora"`` (adapter weights) or ``"full"`` (a whole pipeline).
        settings: the training settings shown as a table, e.g. rank, alpha, dropout, targets, lr, steps,
            batch size, resolution (values: numbers, strings, or sequences of them).
        emissions_g: CO2-equivalent emissions of the training, in grams.
        energy_kwh: electricity used by the training, in kWh.
        location: where the electricity was drawn (a grid region, e.g. ``"FR"``).
        hardware: what trained it, e.g. ``"1 x NVIDIA H100 80GB"``.
        meter: how energy was measured, e.g. ``"NVML counter"`` or ``"estimate from CPU time"``.
        prompts: the validation prompts.
        instance_prompt: DreamBooth's instance prompt (``"a photo of sks dog"``), or ``""`` for none.
    """

    base_model: str
    method: Literal["lora", "full"]
    settings: dict[str, object]
    emissions_g: float
    energy_kwh: float
    location: str
    hardware: str
    meter: str
    prompts: tuple[str, ...]
    instance_prompt: str = ""

    def __post_init__(self) -> None:
        if self.method not in METHOD_TAGS:
            raise ValueError(f"method must be one of {', '.join(METHOD_TAGS)}, not {self.method!r}")
        for name in ("emissions_g", "energy_kwh"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, not {value!r}")


def _front_matter(facts: CardFacts) -> str:
    """The card's YAML metadata block, ``---`` lines included."""
    import yaml  # PyYAML: a dependency of huggingface_hub, which diffusers requires

    meta: dict[str, object] = {
        "base_model": facts.base_model,
        "library_name": "diffusers",
        "tags": ["greendiff", "text-to-image", "diffusers", METHOD_TAGS[facts.method]],
    }
    if facts.instance_prompt:
        meta["instance_prompt"] = facts.instance_prompt
    meta["co2_eq_emissions"] = {
        "emissions": float(facts.emissions_g),  # grams, as the Hub's metadata spec asks
        "source": f"greendiff ({facts.meter})",
        "training_type": "fine-tuning",
        "geographical_location": facts.location,
        "hardware_used": facts.hardware,
    }
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"


def _cell(value: object) -> str:
    """One settings value as a Markdown table cell."""
    if isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, Sequence) and not isinstance(value, str):
        text = ", ".join(_cell(v) for v in value)
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _usage(facts: CardFacts, where: str) -> str:
    """A runnable snippet that loads the result with plain diffusers."""
    prompt = facts.instance_prompt or (facts.prompts[0] if facts.prompts else "a photo")
    if facts.method == "lora":
        load = (f"pipe = DiffusionPipeline.from_pretrained({facts.base_model!r})\n"
                f"pipe.load_lora_weights({where!r})\n")
    else:
        load = f"pipe = DiffusionPipeline.from_pretrained({where!r})\n"
    return f"```python\nfrom diffusers import DiffusionPipeline\n\n{load}image = pipe({prompt!r}).images[0]\n```\n"


def _body(facts: CardFacts, where: str) -> str:
    """The card's Markdown after the metadata."""
    what = "LoRA adapter weights for" if facts.method == "lora" else "A full fine-tune of"
    lines = [f"# {what} {facts.base_model}", "",
             f"{what} the text-to-image pipeline `{facts.base_model}`, trained with greendiff."]
    if facts.instance_prompt:
        lines += ["", f"The subject is called up with the instance prompt `{facts.instance_prompt}`."]
    lines += ["", "## Training settings", "", "| setting | value |", "| --- | --- |"]
    lines += [f"| {_cell(key)} | {_cell(value)} |" for key, value in facts.settings.items()]
    lines += ["", "## Energy and emissions", "",
              f"Training used {facts.energy_kwh:.4g} kilowatt-hours of electricity (measured by: {facts.meter}) on "
              f"{facts.hardware}, drawn in {facts.location}: {facts.emissions_g:.4g} grams of CO2-equivalent."]
    if facts.prompts:
        lines += ["", "## Validation prompts", ""] + [f"- {prompt}" for prompt in facts.prompts]
    lines += ["", "## How to use it", "", _usage(facts, where)]
    return "\n".join(lines)


def model_card(facts: CardFacts, where: str = WHERE) -> str:
    """The model card text: YAML metadata, then the body.

    Args:
        facts: What to state.
        where: How the usage snippet names the folder (or Hub repo) holding the weights.

    Returns:
        Markdown with front matter; ``huggingface_hub.ModelCard(text).data`` parses it.
    """
    return _front_matter(facts) + "\n" + _body(facts, where)


def write_model_card(folder: Path, facts: CardFacts, where: str = WHERE) -> Path:
    """Write :func:`model_card` to ``folder/README.md`` atomically (the folder must exist).

    Returns:
        The card's path.

    Raises:
        UserInputError: the card cannot be written.
    """
    path = Path(folder) / CARD_NAME
    try:
        atomic_write_text(path, model_card(facts, where))
    except OSError as exc:
        raise UserInputError(f"cannot write the model card {display_path(path)}: {exc.strerror or exc}") from None
    return path
