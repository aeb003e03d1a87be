from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """Every test gets its own ledger and cache, and no location from the caller's environment."""
    monkeypatch.setenv("GREENDIFF_LEDGER", str(tmp_path / "ledger.sqlite"))
    monkeypatch.setenv("GREENDIFF_CACHE_DIR", str(tmp_path / "cache"))
    for var in ("GREENDIFF_COUNTRY", "GREENDIFF_CLOUD", "GREENDIFF_GRID", "GREENDIFF_PUE",
                "ELECTRICITYMAPS_API_TOKEN", "GREENDIFF_CREDENTIALS", "GREENDIFF_THREADS", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(var, raising=False)
