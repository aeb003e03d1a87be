from __future__ import annotations

import pytest

from greendiff.carbon import Location, WorldAverageProvider, resolve_location, resolve_provider, resolve_pue
from greendiff.carbon._live import UkCarbonIntensityProvider
from greendiff.errors import UserInputError


def test_cli_values_override_env():
    env = {"GREENDIFF_COUNTRY": "deu", "GREENDIFF_CLOUD": "gcp:europe-west1"}
    assert resolve_location(env=env) == Location("DEU", "gcp:europe-west1", None)
    assert resolve_location(country="fra", env=env).country == "FRA"


@pytest.mark.parametrize("cloud", ["gcp", "gcp:", ":us-east-1"])
def test_bad_cloud_syntax(cloud):
    with pytest.raises(UserInputError, match="PROVIDER:REGION"):
        resolve_location(cloud=cloud, env={})


@pytest.mark.parametrize(("cloud", "value"), [("gcp:us-central1", 1.10), ("aws:us-east-1", 1.15), ("azure:westeurope", 1.18)])
def test_cloud_pue_defaults_with_source(cloud, value):
    pue = resolve_pue(None, Location(cloud=cloud), env={})
    assert pue.value == value and "PUE" in pue.source


def test_pue_explicit_beats_env_beats_default():
    loc = Location(cloud="gcp:us-central1")
    assert resolve_pue(1.4, loc, env={"GREENDIFF_PUE": "1.3"}).value == 1.4
    assert resolve_pue(None, loc, env={"GREENDIFF_PUE": "1.3"}).value == 1.3
    default = resolve_pue(None, Location(), env={})
    assert default.value == 1.0 and "no facility overhead" in default.source


@pytest.mark.parametrize("bad", ["-1", "0", "abc", "nan", "inf", "0.8"])
def test_bad_pue(bad):
    with pytest.raises(UserInputError, match="PUE"):
        resolve_pue(bad, Location(), env={})


def test_provider_precedence_grid_cloud_country_world():
    assert "CISO" in resolve_provider(Location("FRA", "gcp:europe-west1", "CISO")).describe()
    assert "europe-west1" in resolve_provider(Location("FRA", "gcp:europe-west1")).describe()
    assert "FRA" in resolve_provider(Location("FRA")).describe()
    assert isinstance(resolve_provider(Location()), WorldAverageProvider)


def test_unknown_codes_suggest_close_matches():
    with pytest.raises(UserInputError, match=r"unknown country code 'FR' .*did you mean FRA \(France\)"):
        resolve_provider(Location(country="FR"))
    with pytest.raises(UserInputError, match=r"unknown cloud region 'gcp:europe-west99'; did you mean gcp:europe-west9"):
        resolve_provider(Location(cloud="gcp:europe-west99"))


def test_live_options_validated():
    assert isinstance(resolve_provider(Location(country="GBR"), live="uk"), UkCarbonIntensityProvider)
    with pytest.raises(UserInputError, match="Great Britain only"):
        resolve_provider(Location(country="FRA"), live="uk")
    with pytest.raises(UserInputError, match="needs --zone"):
        resolve_provider(Location(country="FRA"), live="electricitymaps")
    with pytest.raises(UserInputError, match="--live must be one of"):
        resolve_provider(Location(), live="watttime")


@pytest.mark.parametrize("location", [Location(), Location(country="FRA"), Location(cloud="ovh:gra")])
def test_the_default_pue_says_what_is_assumed_and_no_cli_hint(location):
    """The PUE's source travels into summaries, statements and exports: the fact, no "pass --pue" (issue 20)."""
    pue = resolve_pue(None, location, env={})
    assert pue.value == 1.0 and pue.source.endswith("default 1.0: no facility overhead counted (on-premise machine)")
    assert "--" not in pue.source and "pass" not in pue.source
