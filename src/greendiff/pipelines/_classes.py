"""Class names of a class-conditional pipeline: the name of each class id 0..K-1, checked, and names mapped
back to ids (as diffusers' ``DiTPipeline`` maps its ``id2label`` with ``get_label_ids``)."""

from __future__ import annotations

from collections.abc import Sequence

from greendiff.errors import UserInputError


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
