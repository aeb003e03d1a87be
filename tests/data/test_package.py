"""``greendiff.data`` imports without torch and hands out every public name on first use."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_the_package_and_its_constants_import_without_torch():
    code = ("import sys; from greendiff.data import BUILTIN, DIGIT_CLASSES, MAX_CLASSES, REFERENCE_IMAGES; "
            "print('torch' in sys.modules, BUILTIN, len(DIGIT_CLASSES), MAX_CLASSES, REFERENCE_IMAGES)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.split(" ", 1) == ["False", "('mnist', 'digits') 10 100000 10000\n"], done.stderr


def test_every_public_name_resolves_to_its_module_s_object():
    import greendiff.data as data
    from greendiff.data import _batches, _labels, _load, _pairs, _sources, _stream

    modules = (_batches, _labels, _load, _pairs, _sources, _stream)
    for name in data.__all__:
        homes = [m for m in modules if hasattr(m, name)]
        assert homes and all(getattr(m, name) is getattr(data, name) for m in homes), name
    assert sorted(dir(data)) == sorted(data.__all__)
    with pytest.raises(AttributeError, match="has no attribute 'load_datasets'"):
        data.load_datasets  # noqa: B018
