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


SECRET_PARTS = ("SECRET", "4f7d2a91")  # no piece of the token may show


def test_a_token_is_stripped_and_a_broken_one_refused_without_showing_it(tmp_path):
    # issue 18: "$(cat token.txt)" of a CRLF file ends in \r, which http.client refused with the token in its message
    assert read_token("electricitymaps", "EM_TOKEN", {"EM_TOKEN": TOKEN + "\r"}) == TOKEN
    assert read_token("electricitymaps", "EM_TOKEN", {"EM_TOKEN": f" \t{TOKEN}\r\n"}) == TOKEN
    for bad in (TOKEN + "\nX-Injected: 1", TOKEN[:10] + "\x00" + TOKEN[10:], TOKEN + "é", TOKEN[:10] + "\t" + TOKEN[10:]):
        with pytest.raises(UserInputError, match=r"^the token in \$EM_TOKEN holds a character an HTTP header") as err:
            read_token("electricitymaps", "EM_TOKEN", {"EM_TOKEN": bad})
        assert not any(part in str(err.value) for part in SECRET_PARTS) and "\n" not in str(err.value)
    path = tmp_path / "credentials.toml"
    path.write_text(f'[electricitymaps]\ntoken = "{TOKEN}\\r"\n')  # the TOML escape: a carriage return in the value
    path.chmod(0o600)
    env = {"GREENDIFF_CREDENTIALS": str(path), "EM_TOKEN": "  "}  # a blank variable is no token: the file is read
    assert read_token("electricitymaps", "EM_TOKEN", env) == TOKEN
    path.write_text(f'[electricitymaps]\ntoken = "{TOKEN}\\nX-Injected: 1"\n')
    with pytest.raises(UserInputError, match=rf"the token in credentials file {path} \(\[electricitymaps\] token\)") as err:
        read_token("electricitymaps", "EM_TOKEN", env)
    assert not any(part in str(err.value) for part in SECRET_PARTS)
    for text in ('electricitymaps = "x"\n', "[electricitymaps]\ntoken = 42\n"):
        path.write_text(text)
        with pytest.raises(UserInputError, match=f"credentials file {path}"):
            read_token("electricitymaps", "EM_TOKEN", env)


def run_measure(capsys, caplog, *extra):
    import logging

    caplog.set_level(logging.DEBUG)
    code = main(["--verbose", "measure", "--live", "electricitymaps", "--zone", "FR", "--country", "FRA", *extra,
                 "--", sys.executable, "-c", "pass"])
    out, err = capsys.readouterr()
    return code, out, err, out + err + caplog.text


def serve_electricitymaps(api, tmp_path, monkeypatch, token: str) -> None:
    """The fake Electricity Maps API in place of the real one, with ``token`` in the environment only."""
    api.serve("/v3/carbon-intensity/past-range", "electricitymaps_past_range.json")
    monkeypatch.setenv("GREENDIFF_ELECTRICITYMAPS_URL", api.url)
    monkeypatch.setenv("GREENDIFF_CREDENTIALS", str(tmp_path / "none.toml"))
    monkeypatch.setenv("ELECTRICITYMAPS_API_TOKEN", token)


def test_a_token_ending_in_a_carriage_return_works(capsys, caplog, tmp_path, monkeypatch, fake_api):
    api = fake_api
    serve_electricitymaps(api, tmp_path, monkeypatch, TOKEN + "\r")
    code, out, err, everything = run_measure(capsys, caplog, "--json")
    assert code == 0, err
    assert [{k.lower(): v for k, v in headers.items()}["auth-token"] for _, headers in api.requests][0] == TOKEN
    assert TOKEN not in everything and "Traceback" not in everything


def test_a_token_with_a_line_break_is_one_line_that_does_not_show_it(capsys, caplog, tmp_path, monkeypatch,
                                                                      fake_api):
    api = fake_api
    serve_electricitymaps(api, tmp_path, monkeypatch, TOKEN + "\nX-Injected: 1")
    code, out, err, everything = run_measure(capsys, caplog)
    assert code == 2 and api.requests == []
    assert len(err.strip().splitlines()) == 1 and "$ELECTRICITYMAPS_API_TOKEN" in err and "Traceback" not in everything
    assert not any(part in everything for part in SECRET_PARTS)
    assert not (tmp_path / "ledger.sqlite").exists()  # refused before the run was opened


def test_a_redirect_to_another_host_gets_no_token_and_the_run_falls_back(capsys, caplog, tmp_path, monkeypatch):
    # issue 18: a 302 from the API sent the auth-token header on to the host it named
    import json

    from tests.carbon.conftest import FakeApi

    api, elsewhere = FakeApi(), FakeApi()
    try:
        elsewhere.serve("/", "electricitymaps_past_range.json")
        api.serve("/v3/", status=302, headers={"Location": elsewhere.url + "/v3/carbon-intensity/past-range?zone=FR"})
        monkeypatch.setenv("GREENDIFF_ELECTRICITYMAPS_URL", api.url)
        monkeypatch.setenv("GREENDIFF_CREDENTIALS", str(credentials(tmp_path)))
        code, out, err, everything = run_measure(capsys, caplog, "--json")
    finally:
        api.close()
        elsewhere.close()
    assert code == 0, err
    assert elsewhere.requests == [] and api.requests  # asked once or more, never followed
    summary = json.loads(out)
    assert summary["intensity"]["kind"] == "static"
    assert summary["intensity"]["source"].startswith("Our World in Data / Ember country table: FRA")
    assert any("HTTP 302 from 127.0.0.1" in note and "redirect, not followed" in note for note in summary["intensity"]["notes"])
    assert TOKEN not in everything
