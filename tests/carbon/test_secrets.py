"""Tokens come from the environment or an owner-only credentials file, and never leave the request header."""

from __future__ import annotations

import sys

import pytest

from greendiff.carbon._secrets import read_token
from greendiff.cli._app import main
from greendiff.errors import UserInputError

TOKEN = "tok-SECRET-4f7d2a91"


def credentials(tmp_path, mode=0o600):
    path = tmp_path / "credentials.toml"
    path.write_text(f'[electricitymaps]\ntoken = "{TOKEN}"\n')
    path.chmod(mode)
    return path


def test_environment_first_then_an_owner_only_file(tmp_path):
    path = credentials(tmp_path)
    env = {"GREENDIFF_CREDENTIALS": str(path)}
    assert read_token("electricitymaps", "EM_TOKEN", env) == TOKEN
    assert read_token("electricitymaps", "EM_TOKEN", {**env, "EM_TOKEN": "from-env"}) == "from-env"
    assert read_token("other", "EM_TOKEN", env) is None
    assert read_token("electricitymaps", "EM_TOKEN", {"GREENDIFF_CREDENTIALS": str(tmp_path / "none.toml")}) is None
    path.chmod(0o644)
    with pytest.raises(UserInputError, match=r"readable by others \(mode 644\); run: chmod 600"):
        read_token("electricitymaps", "EM_TOKEN", env)
    path.chmod(0o600)
    path.write_text("not = [toml")
    with pytest.raises(UserInputError, match="not valid TOML") as err:
        read_token("electricitymaps", "EM_TOKEN", env)
    assert TOKEN not in str(err.value)


def test_a_group_readable_credentials_file_stops_the_cli(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("GREENDIFF_CREDENTIALS", str(credentials(tmp_path, 0o640)))
    code = main(["measure", "--live", "electricitymaps", "--zone", "FR", "--", sys.executable, "-c", "pass"])
    err = capsys.readouterr().err
    assert code == 2 and "chmod 600" in err and TOKEN not in err and len(err.strip().splitlines()) == 1


def test_the_token_is_used_and_written_nowhere(capsys, tmp_path, monkeypatch):
    from tests.carbon.conftest import FakeApi

    api = FakeApi()
    try:
        api.serve("/v3/carbon-intensity/past-range", "electricitymaps_past_range.json")
        monkeypatch.setenv("GREENDIFF_ELECTRICITYMAPS_URL", api.url)
        monkeypatch.setenv("GREENDIFF_CREDENTIALS", str(credentials(tmp_path)))
        outputs = []

        def cli(*argv):
            code = main(["--verbose", *argv])
            out, err = capsys.readouterr()
            outputs.extend([out, err])
            assert code == 0, err
            return out

        cli("measure", "--live", "electricitymaps", "--zone", "FR", "--country", "FRA", "--", sys.executable, "-c", "pass")
        cli("runs", "show", "1", "--json")
        cli("runs", "show", "1")
        for fmt in ("json", "csv", "codecarbon", "model-card"):
            cli("runs", "export", "1", "-f", fmt)
        cli("report", "1", "-o", str(tmp_path / "report.html"))
        sent = [{k.lower(): v for k, v in headers.items()}.get("auth-token") for _, headers in api.requests]
        assert TOKEN in sent  # it was used
        assert all(TOKEN not in path for path, _ in api.requests)  # in the header only, never the URL
    finally:
        api.close()
    written = [tmp_path / "ledger.sqlite", tmp_path / "report.html", *(tmp_path / "cache").rglob("*")]
    for path in written:
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    for text in outputs:
        assert TOKEN not in text
