from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """Every test gets its own ledger and cache, and no location from the caller's environment."""
    monkeypatch.setenv("GREENDIFF_LEDGER", str(tmp_path / "ledger.sqlite"))
    monkeypatch.setenv("GREENDIFF_CACHE_DIR", str(tmp_path / "cache"))
    for var in ("GREENDIFF_COUNTRY", "GREENDIFF_CLOUD", "GREENDIFF_GRID", "GREENDIFF_PUE",
                "ELECTRICITYMAPS_API_TOKEN", "GREENDIFF_CREDENTIALS", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(var, raising=False)
    # One thread per process, whatever else runs on the machine: CoreShare would otherwise change a test's
    # thread count when another greendiff process starts, and with it the last bits of a bit-identical resume.
    monkeypatch.setenv("GREENDIFF_THREADS", "1")
