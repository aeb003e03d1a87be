"""The data package's constants, importable without torch (``greendiff --help`` imports them at start)."""

from __future__ import annotations

#: The bundled datasets, by the name ``data.dataset`` gives them (read before any file of that name).
BUILTIN = ("mnist", "digits")
#: The class names of the bundled sets, and the classes the bundled MNIST classifier knows: the digits
#: '0'..'9', ids 0..9 in order.
DIGIT_CLASSES = tuple(str(d) for d in range(10))
#: Real images kept for FID reference features by default (all of MNIST's 10,000).
REFERENCE_IMAGES = 10_000
#: Classes a dataset may have (ids ``0..MAX_CLASSES - 1``): the largest ``model.num_classes`` greendiff trains.
MAX_CLASSES = 100_000
