"""Live providers against a real local HTTP server: values, cache, timeout, errors, fallback."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from greendiff.carbon import country_provider
from greendiff.carbon._live import ElectricityMapsProvider, JsonCache, UkCarbonIntensityProvider

START = datetime(2022, 6, 1, 10, 0, tzinfo=timezone.utc)
END = START + timedelta(hours=1)


def uk(fake_api, tmp_path, timeout_s=2.0):
    return UkCarbonIntensityProvider(country_provider("GBR"), fake_api.url, timeout_s, JsonCache(tmp_path / "cache"))


def test_uk_uses_actual_then_forecast(fake_api, tmp_path):
    fake_api.serve("/intensity/", "uk_intensity.json")
    result = uk(fake_api, tmp_path).intensity(START, START + timedelta(hours=1, minutes=30))
    assert [s.intensity_g_per_kwh for s in result.segments] == [176, 168, 150]  # 150: forecast, actual null
    assert result.kind == "live" and "UK Carbon Intensity" in result.source and result.notes == ()
    assert result.resolution == "half-hourly"  # a statement says "half-hour by half-hour", not "live data"
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
    assert result.resolution == "hourly"
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


def emaps(api, tmp_path, token="s3cret", timeout_s=2.0):
    return ElectricityMapsProvider("FR", country_provider("FRA"), api.url, token=token, timeout_s=timeout_s,
                                   cache=JsonCache(tmp_path / "cache"))


def test_a_redirect_is_not_followed_and_the_token_stays_home(fake_api, tmp_path):
    # issue 18: urllib resent every header, auth-token too, to whatever host a 302 named
    from tests.carbon.conftest import FakeApi

    elsewhere = FakeApi()
    try:
        elsewhere.serve("/", "electricitymaps_past_range.json")
        fake_api.serve("/v3/", status=302, headers={"Location": elsewhere.url + "/v3/carbon-intensity/past-range?zone=FR"})
        result = emaps(fake_api, tmp_path).intensity(START, END)
        assert elsewhere.requests == []  # the other host heard nothing, so not the token either
    finally:
        elsewhere.close()
    assert len(fake_api.requests) == 1
    assert result.kind == "static" and result.source.startswith("Our World in Data / Ember country table: FRA")
    assert "HTTP 302 from 127.0.0.1" in result.notes[-1] and "redirect, not followed" in result.notes[-1]


def test_a_same_host_redirect_is_not_followed_either(fake_api, tmp_path):
    fake_api.serve("/intensity/", status=301, headers={"Location": fake_api.url + "/moved/"})
    fake_api.serve("/moved/", "uk_intensity.json")
    result = uk(fake_api, tmp_path).intensity(START, END)
    assert "HTTP 301" in result.notes[-1] and [path for path, _ in fake_api.requests] == [fake_api.requests[0][0]]


def test_a_header_value_never_reaches_an_error_message():
    # http.client puts a bad header value into its ValueError; the request wrapper keeps only safe parts
    from greendiff.carbon._live import LiveDataError, http_get_json

    with pytest.raises(LiveDataError) as err:
        http_get_json("http://127.0.0.1:9/v3/x?zone=FR", {"auth-token": "tok-LEAK\r\nX-Injected: 1"}, 1.0)
    assert "LEAK" not in str(err.value) and "Injected" not in str(err.value) and err.value.__cause__ is None
    assert "127.0.0.1:9/v3/x" in str(err.value) and "zone" not in str(err.value)


DEEP = b'{"data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"


@pytest.mark.parametrize(("body", "headers", "reason"), [
    # the wrong shape, deeper down: a table, a list, a boolean or a string where a number belongs
    (b'{"data": [{"from": "2022-06-01T10:00Z", "intensity": {"actual": {"g": 176}}}]}', {}, "unexpected response shape"),
    (b'{"data": [{"from": "2022-06-01T10:00Z", "intensity": {"actual": [176]}}]}', {}, "unexpected response shape"),
    (b'{"data": [{"from": "2022-06-01T10:00Z", "intensity": {"actual": true}}]}', {}, "unexpected response shape"),
    (b'{"data": [{"from": "2022-06-01T10:00Z", "intensity": {"actual": "176"}}]}', {}, "unexpected response shape"),
    (b'{"data": [{"from": ["2022"], "intensity": {"actual": 176}}]}', {}, "unexpected response shape"),
    (b'{"data": [{"from": "2022-06-01T10:00Z", "intensity": {"actual": 1' + b"0" * 400 + b'}}]}', {},
     "unexpected response shape"),
    # not JSON, whatever Python's json module accepts
    (b'{"data": [{"from": "2022-06-01T10:00Z", "intensity": {"actual": 176, "index": NaN}}]}', {}, "NaN"),
    (b'{"data": [{"from": "2022-06-01T10:00Z", "intensity": {"actual": Infinity}}]}', {}, "Infinity"),
    (b'{"data": [{"from": "2022-06-01T10:00Z", "intensity": {"actual": 1e400}}]}', {}, "out of range"),
    (DEEP, {}, "nested too deeply"),
    (b'{"data": [], "pad": "' + b"x" * 1_100_000 + b'"}', {}, "over 1 MB"),
    (b'{"data": [{"from": "2022-06-01T10:00Z", "intensity": {"actual": 176}}]}', {"Content-Type": "text/html"},
     "not JSON (content type text/html)"),
    # times: at the end of the calendar, and far from the period asked for
    (b'{"data": [{"from": "9999-12-31T23:45Z", "intensity": {"actual": 176}}]}', {}, "outside the years"),
    (b'{"data": [{"from": "0001-01-01T00:00+05:00", "intensity": {"actual": 176}}]}', {}, "outside the years"),
    (b'{"data": [{"from": "2019-06-01T10:00Z", "intensity": {"actual": 176}}]}', {}, "does not cover"),
], ids=["table-for-number", "list-for-number", "bool-for-number", "string-for-number", "list-for-time", "huge-integer",
        "NaN", "Infinity", "1e400", "deep-nesting", "2-MB", "text/html", "year-9999", "year-1-offset", "another-year"])
def test_strange_answers_fall_back_with_the_reason(fake_api, tmp_path, body, headers, reason):
    fake_api.serve("/intensity/", body=body, headers=headers)
    result = uk(fake_api, tmp_path).intensity(START, END)
    assert result.kind == "static" and "uk-carbon-intensity unavailable" in result.notes[-1]
    assert reason in result.notes[-1], result.notes[-1]
    assert len(result.notes[-1]) < 300 and "\n" not in result.notes[-1]


@pytest.mark.parametrize("body", [
    b'{"data": [{"datetime": 12, "carbonIntensity": 52}]}',
    b'{"data": [{"datetime": "2022-06-01T10:00Z", "carbonIntensity": null}]}',
    b'{"data": [{"datetime": "2022-06-01T10:00Z", "carbonIntensity": {"v": 52}}]}',
    b'{"data": {"datetime": "2022-06-01T10:00Z", "carbonIntensity": 52}}',
], ids=["number-for-time", "null-intensity", "table-for-number", "table-for-list"])
def test_electricitymaps_wrong_shapes_fall_back(fake_api, tmp_path, body):
    fake_api.serve("/v3/", body=body)
    result = emaps(fake_api, tmp_path).intensity(START, END)
    assert result.kind == "static" and "unexpected response shape from Electricity Maps" in result.notes[-1]


def test_a_trickling_answer_is_cut_off_at_the_timeout(fake_api, tmp_path):
    # every byte arrives within the socket timeout, the whole answer would take 10 s
    fake_api.serve("/intensity/", body=b" " * 100 + b'{"data": []}', drip_s=0.1)
    t0 = time.monotonic()
    result = uk(fake_api, tmp_path, timeout_s=1.0).intensity(START, END)
    assert time.monotonic() - t0 < 3.0
    assert "within 1 s" in result.notes[-1]


def test_a_missing_content_type_is_read_as_json(fake_api, tmp_path):
    fake_api.serve("/intensity/", "uk_intensity.json", headers={"Content-Type": None})
    assert uk(fake_api, tmp_path).intensity(START, END).kind == "live"


def test_a_malformed_base_url_falls_back_with_the_reason(tmp_path):
    provider = UkCarbonIntensityProvider(country_provider("GBR"), "http://[::1", 1.0, JsonCache(tmp_path))
    assert "a malformed URL" in provider.intensity(START, END).notes[-1]


@pytest.mark.parametrize(("text", "message"), [
    ("٣", "GREENDIFF_API_TIMEOUT_S must be a number, got '٣' (use the ASCII digits 0-9)"),
    ("1_0", "GREENDIFF_API_TIMEOUT_S must be a number, got '1_0' (write it without '_')"),
    ("nan", "GREENDIFF_API_TIMEOUT_S must be a finite number, got 'nan'"),
    ("0", "GREENDIFF_API_TIMEOUT_S must be seconds in (0, 600], got '0'"),
    ("601", "GREENDIFF_API_TIMEOUT_S must be seconds in (0, 600], got '601'"),
    ("9" * 5000, "GREENDIFF_API_TIMEOUT_S has too many digits"),
])
def test_the_api_timeout_variable_is_read_by_the_one_number_grammar(text, message):
    """float() took '٣' (3 s) and '1_0' (10 s); the variable is a number like every flag."""
    from greendiff.carbon._resolve import api_timeout_s
    from greendiff.errors import UserInputError

    assert api_timeout_s({}) == 5.0 and api_timeout_s({"GREENDIFF_API_TIMEOUT_S": " 2.5 "}) == 2.5
    with pytest.raises(UserInputError) as err:
        api_timeout_s({"GREENDIFF_API_TIMEOUT_S": text})
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_a_fallback_is_in_every_answer_s_notes_but_never_logged_as_a_warning_by_the_provider(fake_api, tmp_path, caplog):
    # a run asks for many ranges (each phase, each window): the caller shows the note once, not the provider per call
    fake_api.serve("/intensity/", status=500)
    provider = uk(fake_api, tmp_path)
    with caplog.at_level("DEBUG", logger="greendiff.carbon._live"):
        results = [provider.intensity(START + timedelta(hours=i), END + timedelta(hours=i)) for i in range(3)]
    assert all("fell back to" in r.notes[-1] and "HTTP 500" in r.notes[-1] for r in results)
    assert [r.levelname for r in caplog.records] == ["DEBUG"] * 3


def test_fetch_raises_where_intensity_falls_back(fake_api, tmp_path):
    from greendiff.carbon import LiveDataError

    fake_api.serve("/intensity/", status=500)
    with pytest.raises(LiveDataError, match="HTTP 500"):
        uk(fake_api, tmp_path).fetch(START, END)
    fake_api.serve("/intensity/", "uk_intensity.json")
    assert uk(fake_api, tmp_path).fetch(START, END).kind == "live"


NO_TOKEN = {"GREENDIFF_CREDENTIALS": "/nonexistent/credentials.toml"}  # no env token, no credentials file


def emaps_without_token(zone, location=None):
    from greendiff.carbon import Location, resolve_provider

    provider = resolve_provider(location or Location(), "electricitymaps", zone, env=NO_TOKEN)
    return provider.intensity(START, END)


@pytest.mark.parametrize(("zone", "country"), [("FR", "FRA"), ("de", "DEU"), ("GB", "GBR"), ("SE-SE3", "SWE"),
                                               ("IT-NO", "ITA"), ("US-NY-XYZ", "USA")])
def test_electricitymaps_without_a_token_prices_at_the_zone_s_country_not_the_world_average(zone, country):
    # issue 20: --zone FR without a token priced at the world average (475 g) under "LOCATION UNKNOWN"
    result = emaps_without_token(zone)
    expected = country_provider(country).intensity(START, END)
    assert result.mean_g_per_kwh() == pytest.approx(expected.mean_g_per_kwh()) and result.source == expected.source
    assert len(result.notes) == 1 and "LOCATION UNKNOWN" not in result.notes[0]
    assert result.notes[0] == (f"electricity-maps unavailable (no token in ELECTRICITYMAPS_API_TOKEN); fell back to "
                               f"{expected.source}, the grid of zone {zone}")


def test_electricitymaps_without_a_token_prices_a_us_balancing_authority_at_its_bundled_trace():
    from greendiff.carbon import TraceProvider, bundled_trace

    result = emaps_without_token("US-CAL-CISO")
    expected = TraceProvider(bundled_trace("CISO")).intensity(START, END)
    assert result.segments == expected.segments and "CISO" in result.source
    assert result.notes[-1].endswith(f"fell back to {expected.source}, the grid of zone US-CAL-CISO")
    assert not any("LOCATION UNKNOWN" in n for n in result.notes)


def test_an_unknown_zone_falls_back_to_the_location_given_or_the_world_average_and_says_so():
    from greendiff.carbon import Location

    given = emaps_without_token("XX", Location(country="DEU"))
    assert given.mean_g_per_kwh() == pytest.approx(country_provider("DEU").intensity(START, END).mean_g_per_kwh())
    assert given.notes[-1].endswith(", the location given (no bundled table knows zone XX)")
    unknown = emaps_without_token("XX")
    assert unknown.mean_g_per_kwh() == 475
    assert unknown.notes[-1].endswith(", as no bundled table knows zone XX and no location was given")


def test_a_country_typo_is_refused_even_when_the_zone_prices_the_fallback():
    from greendiff.carbon import Location
    from greendiff.errors import UserInputError

    with pytest.raises(UserInputError, match="unknown country code 'FRX'"):
        emaps_without_token("FR", Location(country="FRX"))


def test_series_is_the_api_s_answer_with_no_fallback_and_a_yearly_figure_has_none(fake_api, tmp_path):
    """Every provider answers ``series``: a planner asks for hours to choose between without knowing its kind."""
    from greendiff.carbon import bundled_trace
    from greendiff.carbon._trace import TraceProvider
    from greendiff.errors import UserInputError

    fake_api.serve("/intensity/", "uk_intensity.json")
    live = uk(fake_api, tmp_path).series(START, START + timedelta(hours=1, minutes=30))
    assert [s.intensity_g_per_kwh for s in live.segments] == [176, 168, 150] and live.resolution == "half-hourly"
    fake_api.serve("/intensity/", status=500)
    with pytest.raises(UserInputError, match=r"^no hourly series for the window: the UK Carbon Intensity API gave "
                                             r"none \(HTTP 500 .*\); plan on --grid NAME\|FILE.csv instead$"):
        uk(fake_api, tmp_path).series(START + timedelta(days=1), END + timedelta(days=1))
    with pytest.raises(UserInputError, match=r"^no hourly series for the window \(.*Our World in Data"):
        country_provider("FRA").series(START, END)
    trace = TraceProvider(bundled_trace("CISO")).series(START, END)
    assert trace.kind == "trace" and trace.resolution == "hourly" and len(trace.segments) == 1
