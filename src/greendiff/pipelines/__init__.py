"""Pipelines greendiff ships, for generating with the models it trains. Depends on torch and diffusers
only: ``from greendiff.pipelines import ClassConditionalPipeline`` works without the rest of greendiff.

Example::

    pipe = ClassConditionalPipeline.from_pretrained("runs/mnist-cond/pipeline")
    images = pipe(list(range(10)), guidance_scale=3.0).images
"""

from __future__ import annotations

from greendiff.pipelines._guidance import (
    check_class_labels,
    check_guidance_scale,
    guided_noise,
    guided_output,
    num_classes_of,
)


def __getattr__(name: str):
    # diffusers is imported on first use of the pipeline, not with greendiff.train (which uses the guidance
    # functions): importing it takes seconds.
    if name == "ClassConditionalPipeline":
        from greendiff.pipelines._class_conditional import ClassConditionalPipeline

        return ClassConditionalPipeline
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["ClassConditionalPipeline", "check_class_labels", "check_guidance_scale", "guided_noise", "guided_output",
           "num_classes_of"]
