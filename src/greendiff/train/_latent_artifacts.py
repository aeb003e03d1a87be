"""A latent run's pipeline: written (a plain diffusers ``DiTPipeline``, or greendiff's ``LatentPipeline``) and
read back (its network, sampler and VAE), with the same care as a pixel run's (:mod:`greendiff.train._artifacts`):
shapes checked before diffusers builds anything, safetensors only, one-line errors naming the file.

Which pipeline: a class-conditional DiT trained with epsilon or v, with at most 1,000 classes, is a
``DiTPipeline`` (with ``id2label``) that plain diffusers samples by class; every other latent model (a latent
UNet, a flow-matching DiT) is a :class:`greendiff.pipelines.LatentPipeline` (``model``, ``vae``, ``scheduler``),
which loads in one line: ``LatentPipeline.from_pretrained(run / "pipeline")``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path

from greendiff.errors import UserInputError
from greendiff.ledger import BadRecordError, load_json_file
from greendiff.names import first_line
from greendiff.pipelines import num_classes_of, unwrapped
from greendiff.train._artifacts import (
    WEIGHTS_FILE, _check_values, check_safetensors, check_scheduler_config, check_unet_config, ema_model,
    save_pipeline_atomically,
)

#: The latent pipelines a run directory may hold (``model_index.json``'s ``_class_name``) and the folder
#: of each one's network.
LATENT_PIPELINES = {"DiTPipeline": "transformer", "LatentPipeline": "model"}
_DIT_RULES = {"sample_size": (int, 1, 4096), "in_channels": (int, 1, 64), "patch_size": (int, 1, 64),
              "num_layers": (int, 1, 256), "num_attention_heads": (int, 1, 256),
              "attention_head_dim": (int, 1, 1024), "num_embeds_ada_norm": (int, 1, 100_000)}


def is_dit(net) -> bool:
    """Whether ``net`` (unwrapped from data parallelism or ``torch.compile``) is a ``DiTTransformer2DModel``."""
    from diffusers import DiTTransformer2DModel

    return isinstance(unwrapped(net), DiTTransformer2DModel)


def export_latent_pipeline(net, ema, noise_scheduler, vae, path: Path, class_names: Sequence[str] | None = None) -> None:
    """A latent run's pipeline with the EMA weights (``ema`` None: the raw ones) and a copy of ``vae``, written
    atomically to ``path``: a ``DiTPipeline`` for a DiT trained with epsilon or v on at most 1,000 classes
    (scheduler: DDIM on the training betas), else a ``LatentPipeline`` (DDIM, or the flow objective's Euler
    scheduler). ``class_names``: the name of each class id 0..K-1 (None: ids only)."""
    from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler

    model = ema_model(net, ema)
    vae = copy.deepcopy(vae).cpu()  # frozen fp32 weights; a copy, so the run's own VAE stays on its device
    flow = isinstance(noise_scheduler, FlowMatchEulerDiscreteScheduler)
    scheduler = copy.deepcopy(noise_scheduler) if flow else DDIMScheduler.from_config(noise_scheduler.config)
    from greendiff.train._dit import DIT_PIPELINE_CLASSES

    if is_dit(model) and not flow and num_classes_of(model) <= DIT_PIPELINE_CLASSES:
        from greendiff.train._dit import export_dit_pipeline

        export_dit_pipeline(model, vae, scheduler, path, class_names)
        return
    from greendiff.pipelines import LatentPipeline

    names = list(class_names) if class_names is not None and num_classes_of(model) else None
    save_pipeline_atomically(LatentPipeline(model=model, vae=vae, scheduler=scheduler, class_names=names), path)


def pipeline_class(index: Path) -> str | None:
    """The ``_class_name`` of a pipeline's ``model_index.json`` (None: no such file, as older runs have)."""
    if not index.is_file():
        return None
    raw = load_json_file(index)
    return raw.get("_class_name") if isinstance(raw, dict) else None


def _network_class(index: Path, folder: str) -> str:
    raw = load_json_file(index)
    entry = raw.get(folder) if isinstance(raw, dict) else None
    name = entry[1] if isinstance(entry, list) and len(entry) == 2 else None
    if name not in ("UNet2DModel", "DiTTransformer2DModel"):
        raise UserInputError(f"{index}: its {folder} is {json.dumps(name)[:60]}; greendiff reads a UNet2DModel or a "
                             "DiTTransformer2DModel")
    return name


def check_dit_config(path: Path) -> None:
    """A DiTTransformer2DModel ``config.json``: a JSON object whose sizes greendiff can build and sample."""
    raw = load_json_file(path)
    if not isinstance(raw, dict):
        raise BadRecordError(f"{path}: should be a JSON object")
    _check_values(path, raw, _DIT_RULES, required=("sample_size", "in_channels", "num_embeds_ada_norm"))


def load_latent_network(run_dir: Path, pipeline: Path, class_name: str, num_classes: int):
    """The network and scheduler of a latent run's pipeline (``class_name``: its ``model_index.json``'s), the
    network back at the run's ``num_classes`` (a DiTPipeline's class table is widened to 1,000 classes)."""
    folder = LATENT_PIPELINES[class_name]
    network = "DiTTransformer2DModel" if class_name == "DiTPipeline" else _network_class(pipeline / "model_index.json", folder)
    files = [pipeline / folder / "config.json", pipeline / folder / WEIGHTS_FILE, pipeline / "scheduler" / "scheduler_config.json"]
    for path in files:
        if not path.is_file():
            raise UserInputError(f"--run {run_dir}: {path} is missing; the pipeline is incomplete")
    (check_dit_config if network == "DiTTransformer2DModel" else check_unet_config)(files[0])
    check_safetensors(files[1])
    check_scheduler_config(files[2])
    import diffusers

    try:  # safetensors only: a .bin (pickle) beside it is never read
        net = getattr(diffusers, network).from_pretrained(str(pipeline / folder), use_safetensors=True).eval()
        raw = load_json_file(files[2])
        scheduler_class = getattr(diffusers, str(raw.get("_class_name", "DDIMScheduler")), None)
        if scheduler_class is None or not str(raw.get("_class_name", "")).endswith("Scheduler"):
            raise UserInputError(f"--run {run_dir}: {files[2]} names no diffusers scheduler")
        scheduler = scheduler_class.from_pretrained(str(pipeline / "scheduler"))
    except UserInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of diffusers/safetensors on these files: they are damaged
        raise UserInputError(f"--run {run_dir}: its pipeline cannot be loaded ({first_line(exc)[:200]})") from None
    if class_name == "DiTPipeline" and num_classes_of(net) != num_classes:
        from greendiff.train._dit import compact_dit

        net = compact_dit(net, num_classes)
    return net, scheduler
