"""Live providers against a real local HTTP server: values, cache, timeout, errors, fallback."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from greendiff.carbon import ElectricityMapsProvider, JsonCache, UkCarbonIntensityProvider, country_provider

START = datetime(2022, 6, 1, 10, 0, tzinfo=timezone.utc)
END = START + timedelta(hours=1)


def uk(fake_api, tmp_path, timeout_s=2.0):
    return UkCarbonIntensityProvider(country_provider("GBR"), fake_api.url, timeout_s, JsonCache(tmp_path / "cache"))


def test_uk_uses_actual_then_forecast(fake_api, tmp_path):
    fake_api.serve("/intensity/", "uk_intensity.json")
    result = uk(fake_api, tmp_path).intensity(START, START + timedelta(hours=1, minutes=30))
    assert [s.intensity_g_per_kwh for s in result.segments] == [176, 168, 150]  # 150: forecast, actual null
    assert result.kind == "live" and "UK Carbon Intensity" in result.source and result.notes == ()
    assert fake_api.requests[0][0] == "/intensity/2022-06-01T10:00Z/2022-06-01T11:30Z"


def test_answers_are_cached_on_disk(fake_api, tmp_path):
    fake_api.serve("/intensity/", "uk_intensity.json")
    first = uk(fake_api, tmp_path).intensity(START, END)
    fake_api.serve("/intensity/", status=500)  # the API is now down, but the past is cached
    second = uk(fake_api, tmp_path).intensity(START, END)
    assert second.segments == first.segments and second.notes == ("from cache",)
    assert len(fake_api.requests) == 1


def test_timeout_falls_back_and_says_so(fake_api, tmp_path):
    fake_api.serve("/intensity/", "uk_intensity.json", delay_s=1.5)
    t0 = time.monotonic()
    result = uk(fake_api, tmp_path, timeout_s=0.3).intensity(START, END)
    assert time.monotonic() - t0 < 1.4
    assert result.source.startswith("Our World in Data / Ember country table: GBR")
    assert "uk-carbon-intensity unavailable" in result.notes[-1] and "within 0.3 s" in result.notes[-1]


@pytest.mark.parametrize(("status", "body", "reason"), [
    (500, b"oops", "HTTP 500"),
    (200, b"{not json", "malformed JSON"),
    (200, b'{"data": [{"from": 1}]}', "unexpected response shape"),
    (200, b'{"data": []}', "no data"),
])
def test_errors_fall_back_to_static_table(fake_api, tmp_path, status, body, reason):
    fake_api.serve("/intensity/", status=status, body=body)
    result = uk(fake_api, tmp_path).intensity(START, END)
    assert result.kind == "static" and result.segments[0].intensity_g_per_kwh == country_provider("GBR").row.intensity_g_per_kwh
    assert reason in result.notes[-1]
    assert not list((tmp_path / "cache").glob("*.json")), "failures are not cached"


def test_unreachable_server_falls_back(tmp_path):
    provider = UkCarbonIntensityProvider(country_provider("GBR"), "http://127.0.0.1:9", 1.0, JsonCache(tmp_path))
    assert "unavailable" in provider.intensity(START, END).notes[-1]


def test_electricitymaps_sends_token_in_header_not_url(fake_api, tmp_path):
    fake_api.serve("/v3/carbon-intensity/past-range", "electricitymaps_past_range.json")
    provider = ElectricityMapsProvider("FR", country_provider("FRA"), fake_api.url, token="s3cret",
                                       cache=JsonCache(tmp_path / "cache"))
    result = provider.intensity(START + timedelta(minutes=30), START + timedelta(hours=1, minutes=30))
    assert [(s.start.minute, s.intensity_g_per_kwh) for s in result.segments] == [(30, 52), (0, 61)]
    path, headers = fake_api.requests[0]
    assert "s3cret" not in path and {k.lower(): v for k, v in headers.items()}["auth-token"] == "s3cret"
    assert all("s3cret" not in f.read_text() for f in (tmp_path / "cache").glob("*.json"))


def test_electricitymaps_without_token_falls_back_without_calling(fake_api, tmp_path):
    provider = ElectricityMapsProvider("FR", country_provider("FRA"), fake_api.url, token="",
                                       cache=JsonCache(tmp_path / "cache"))
    result = provider.intensity(START, END)
    assert "no token in ELECTRICITYMAPS_API_TOKEN" in result.notes[-1]
    assert fake_api.requests == []


def test_electricitymaps_range_over_ten_days_falls_back(fake_api, tmp_path):
    provider = ElectricityMapsProvider("FR", country_provider("FRA"), fake_api.url, token="t",
                                       cache=JsonCache(tmp_path / "cache"))
    result = provider.intensity(START, START + timedelta(days=11))
    assert "at most 10 days" in result.notes[-1] and fake_api.requests == []
