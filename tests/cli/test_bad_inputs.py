"""The bad-input corpus (``tests/bad_inputs/``): every case is a user mistake the CLI must answer with
exit code 2 and one line naming the problem and where it is, no traceback, and no completed run."""

from __future__ import annotations

import shutil
import sqlite3
import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from greendiff.cli._app import main
from tests.carbon.conftest import FakeApi

CORPUS = Path(__file__).parent.parent / "bad_inputs"
CASES = tomllib.loads((CORPUS / "cases.toml").read_text())["case"]
TRAIN = ["--no-gpu", "--country", "FRA", "--max-steps", "1", "--resolution", "8", "--preset", "nano"]
WINDOW = ["--energy-kwh", "1", "--hours", "1", "--start", "2022-06-01T00:00", "--flex-hours", "3"]
UK_WINDOW = ["--energy-kwh", "1", "--hours", "0.5", "--start", "2022-06-01T10:00", "--deadline", "2022-06-01T11:30"]


def case_id(case: dict) -> str:
    return case.get("file") or case["name"]


def argv_for(case: dict, tmp_path: Path, monkeypatch) -> list[str]:
    feed = case["feed"]
    out = ["--output-dir", str(tmp_path / "runs")]
    if feed == "args":
        return [*case["args"], *(TRAIN[:1] + out if case["args"][0] == "train" else [])]
    path = CORPUS / case["file"]
    if feed == "image":
        folder = tmp_path / "images"
        folder.mkdir()
        for i in range(3):
            Image.fromarray(np.full((8, 8), 60 * i, dtype=np.uint8)).save(folder / f"good-{i}.png")
        shutil.copy(path, folder / path.name)
        return ["train", "--dataset", str(folder), *TRAIN, *out]
    if feed == "array":
        return ["train", "--dataset", str(path), *TRAIN, *out]
    if feed == "config":
        return ["train", "--config", str(path), "--no-gpu", "--country", "FRA", *out]
    if feed == "trace":
        return ["plan", "window", "--grid", str(path), *WINDOW]
    if feed == "profile":
        return ["plan", "window", "--profile", str(path), "--grid", "CISO", "--start", "2022-06-01T00:00",
                "--flex-hours", "24"]
    raise AssertionError(f"unknown feed {feed!r}")


def completed_runs(ledger: Path) -> list[tuple]:
    if not ledger.exists():
        return []
    with sqlite3.connect(ledger) as db:
        tables = {row[0] for row in db.execute("select name from sqlite_master where type='table'")}
        return db.execute("select id, status from runs where status = 'completed'").fetchall() if "runs" in tables else []


def test_the_corpus_is_complete():
    files = {p.name for p in CORPUS.iterdir()} - {"cases.toml", "make_corpus.py"}
    assert files == {c["file"] for c in CASES if "file" in c}  # every file has a case, every case a file
    assert len(files) >= 40
    kinds = {c["feed"] for c in CASES}
    assert kinds == {"image", "array", "config", "trace", "profile", "api", "args"}


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_bad_input_is_one_line_and_exit_code_2(case, tmp_path, monkeypatch, capsys):
    api = None
    if case["feed"] == "api":
        api = FakeApi()
        api.serve("/intensity/", body=(CORPUS / case["file"]).read_bytes(), status=case["status"],
                  delay_s=case["delay_s"])
        monkeypatch.setenv("GREENDIFF_UK_API_URL", api.url)
        monkeypatch.setenv("GREENDIFF_API_TIMEOUT_S", "2")  # generous: a loaded CI machine still answers in time
        argv = ["plan", "window", "--live", "uk", *UK_WINDOW]
    else:
        argv = argv_for(case, tmp_path, monkeypatch)
    try:
        code = main(argv)
    finally:
        if api is not None:
            api.close()
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, f"exit {code}; stderr: {err}"
    assert len(lines) == 1 and lines[0].startswith("greendiff: error: "), err
    assert "Traceback" not in err + out
    for text in case["expect"]:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    if "file" in case and case["feed"] != "api":
        assert case["file"] in lines[0], f"the message does not say where: {lines[0]!r}"
    assert completed_runs(tmp_path / "ledger.sqlite") == []
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # no run directory left


def test_skip_bad_images_trains_on_the_rest_and_counts_them(tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(8):
        Image.fromarray(np.full((8, 8), 30 * i, dtype=np.uint8)).save(folder / f"good-{i}.png")
    for name in ("image_png_truncated.png", "image_html_named.jpg"):
        shutil.copy(CORPUS / name, folder / name)
    argv = ["train", "--dataset", str(folder), *TRAIN, "--batch-size", "4", "--output-dir", str(tmp_path / "runs")]
    assert main(argv) == 2
    assert main([*argv, "--skip-bad-images"]) == 0
    err = capsys.readouterr().err
    assert "skipped 2 unreadable image files" in err
    assert [status for _, status in completed_runs(tmp_path / "ledger.sqlite")] == ["completed"]
