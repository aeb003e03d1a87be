"""Class names of a class-conditional pipeline: the name of each class id 0..K-1, checked, and names mapped
back to ids (as diffusers' ``DiTPipeline`` maps its ``id2label`` with ``get_label_ids``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from greendiff.errors import UserInputError
from greendiff.pipelines._guidance import num_classes_of


def check_class_names(names: Sequence[str] | None, num_classes: int) -> tuple[str, ...] | None:
    """``names`` as a tuple, or None; one-line :class:`UserInputError` (a ``ValueError``) unless they are
    ``num_classes`` (K) distinct non-empty strings, one per class id 0..K-1.

    Example:
        >>> check_class_names(["cat", "dog"], 2)
        ('cat', 'dog')
    """
    if names is None:
        return None
    if isinstance(names, (str, bytes)) or not all(isinstance(n, str) and n for n in names):
        raise UserInputError(f"class names must be a list of non-empty strings, got {str(names)[:60]}")
    names = tuple(names)
    if len(names) != num_classes:
        raise UserInputError(f"{len(names)} class names for a model of {num_classes} classes; give one name per "
                             f"class id 0..{num_classes - 1}")
    repeated = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if repeated is not None:
        raise UserInputError(f"class name {repeated[:40]!r} is given twice; each class needs its own name")
    return names


def names_given(labels) -> bool:
    """Whether ``labels`` asks for classes by name: a string, or a list or tuple with a string in it."""
    return isinstance(labels, str) or (isinstance(labels, (list, tuple)) and any(isinstance(i, str) for i in labels))


def class_ids_of(names: str | Sequence[str], class_names: Sequence[str] | None) -> list[int]:
    """The ids of ``names`` (one name or a list of them) among ``class_names``; one line for an unknown name, a
    non-string item, or a model saved without class names.

    Example:
        >>> class_ids_of(["dog", "cat", "dog"], ("cat", "dog"))
        [1, 0, 1]
    """
    if class_names is None:
        raise UserInputError("this pipeline was saved without class names; ask for class ids 0..K-1")
    items = [names] if isinstance(names, str) else list(names)
    ids = {name: i for i, name in enumerate(class_names)}
    for item in items:
        if not isinstance(item, str):
            raise UserInputError(f"class names must be strings, got {item!r:.40} among {str(items)[:60]}")
        if item not in ids:
            known = ", ".join(map(repr, class_names[:6])) + (", ..." if len(class_names) > 6 else "")
            raise UserInputError(f"unknown class {item[:40]!r}; this model's classes are {known}")
    return [ids[item] for item in items]


class ClassTableMixin:
    """What a class-conditional pipeline knows of its classes, for a ``DiffusionPipeline`` whose denoiser is the
    component named ``_denoiser`` and whose config has ``class_names``: K, the null class, names to ids; and
    ``from_pretrained`` reading safetensors only."""

    _denoiser: ClassVar[str]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """diffusers' ``from_pretrained``, reading safetensors weights only by default (never a pickled .bin)."""
        kwargs.setdefault("use_safetensors", True)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @property
    def num_classes(self) -> int:
        """K, the classes the model was trained on (0: unconditional); ids 0..K-1 may be asked for."""
        return num_classes_of(getattr(self, self._denoiser))

    @property
    def null_class(self) -> int:
        """The id (K) that stands for "no class": the unconditional half of guidance."""
        return self.num_classes

    @property
    def class_names(self) -> tuple[str, ...] | None:
        """The name of each class id 0..K-1, or None when the pipeline was saved without them."""
        names = self.config.get("class_names")
        return tuple(names) if names is not None else None

    def class_ids(self, names: str | Sequence[str]) -> list[int]:
        """The ids of the classes ``names`` (one name or a list); one-line :class:`UserInputError` for an unknown
        name, or a pipeline saved without names."""
        return class_ids_of(names, self.class_names)
