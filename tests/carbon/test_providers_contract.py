"""The contract every intensity provider passes (optuna-style shared suite)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from greendiff.carbon import TraceProvider, WorldAverageProvider, bundled_trace, cloud_provider, country_provider
from greendiff.carbon._live import ElectricityMapsProvider, JsonCache, UkCarbonIntensityProvider

START = datetime(2022, 6, 1, 10, 15, tzinfo=timezone.utc)
END = START + timedelta(hours=1, minutes=30)


def _uk(fake_api, tmp_path):
    fake_api.serve("/intensity/", "uk_intensity.json")
    return UkCarbonIntensityProvider(country_provider("GBR"), fake_api.url, 2.0, JsonCache(tmp_path / "c"))


def _uk_down(fake_api, tmp_path):
    fake_api.serve("/intensity/", status=500)
    return UkCarbonIntensityProvider(country_provider("GBR"), fake_api.url, 2.0, JsonCache(tmp_path / "c"))


def _emaps(fake_api, tmp_path):
    fake_api.serve("/v3/carbon-intensity/past-range", "electricitymaps_past_range.json")
    return ElectricityMapsProvider("FR", country_provider("FRA"), fake_api.url, token="t0k",
                                   timeout_s=2.0, cache=JsonCache(tmp_path / "c"))


FACTORIES = {
    "country": lambda api, tmp: country_provider("FRA"),
    "cloud-gcp-2024": lambda api, tmp: cloud_provider("gcp:europe-west1"),
    "cloud-aws": lambda api, tmp: cloud_provider("aws:us-east-1"),
    "world": lambda api, tmp: WorldAverageProvider(),
    "trace": lambda api, tmp: TraceProvider(bundled_trace("CISO")),
    "uk-live": _uk,
    "uk-live-fallback": _uk_down,
    "electricitymaps-live": _emaps,
}


@pytest.fixture(params=sorted(FACTORIES))
def provider(request, fake_api, tmp_path):
    return FACTORIES[request.param](fake_api, tmp_path)


def test_provider_contract(provider):
    result = provider.intensity(START, END)
    segments = result.segments
    assert segments, "at least one segment"
    assert segments[0].start == START and segments[-1].end == END, "covers exactly the requested range"
    for a, b in zip(segments, segments[1:]):
        assert a.end == b.start, "segments are contiguous"
    assert all(0 <= s.intensity_g_per_kwh < 2000 for s in segments)
    assert result.source and result.kind in ("static", "trace", "live")
    assert provider.describe()
    assert 0 < result.mean_g_per_kwh() < 2000


def test_provider_rejects_naive_datetimes(provider):
    with pytest.raises(ValueError, match="timezone"):
        provider.intensity(START.replace(tzinfo=None), END.replace(tzinfo=None))


def test_the_world_average_note_states_the_fact_only():
    # it travels into summaries, statements and exports; the CLI says how to give a location when it shows it
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    (note,) = WorldAverageProvider().intensity(start, start + timedelta(hours=1)).notes
    assert note == "LOCATION UNKNOWN: world-average intensity used; emissions may be off by 10x."
    assert "--" not in note
