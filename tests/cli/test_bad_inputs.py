"""The bad-input corpus (``tests/bad_inputs/``): every case is a user mistake the CLI must answer with
exit code 2 and one line naming the problem and where it is, no traceback, no completed run, and no
folder created anywhere (inside the output folder or, through a name, outside it)."""

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
TRAIN_ARGS = [*TRAIN, "--dataset", "digits"]  # before a case's own flags, which win: a quick run if they were taken
WINDOW = ["--energy-kwh", "1", "--hours", "1", "--start", "2022-06-01T00:00", "--flex-hours", "3"]
UK_WINDOW = ["--energy-kwh", "1", "--hours", "0.5", "--start", "2022-06-01T10:00", "--deadline", "2022-06-01T11:30"]


def case_id(case: dict) -> str:
    return case.get("name") or case["file"]


def argv_for(case: dict, tmp_path: Path, monkeypatch) -> list[str]:
    feed = case["feed"]
    out = ["--output-dir", str(tmp_path / "runs")]
    if feed == "args":
        args = case["args"]
        return ["train", *TRAIN_ARGS, *out, *args[1:]] if args[0] == "train" else list(args)
    if feed == "labelled_folder":
        return ["train", "--dataset", str(labelled_folder(tmp_path / "images", case.get("metadata"))), *TRAIN, *out,
                *case["args"]]
    path = CORPUS / case["file"]
    if feed == "image":
        folder = tmp_path / "images"
        folder.mkdir()
        for i in range(3):
            Image.fromarray(np.full((8, 8), 60 * i, dtype=np.uint8)).save(folder / f"good-{i}.png")
        shutil.copy(path, folder / case.get("as", path.name))  # "as": a file name with odd characters
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


def labelled_folder(folder: Path, metadata: str | None) -> Path:
    """Four good images (good-0.png .. good-3.png) and the case's ``metadata.jsonl`` (if any)."""
    folder.mkdir()
    for i in range(4):
        Image.fromarray(np.full((8, 8), 60 * i, dtype=np.uint8)).save(folder / f"good-{i}.png")
    if metadata is not None:
        (folder / "metadata.jsonl").write_text(metadata)
    return folder


class Payload:
    """Unpickling this creates ``target``: proof that something was unpickled."""

    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self):
        return open, (self.target, "w")


def train_once(root: Path, *flags: str) -> Path:
    """A 2-step run trained in ``root`` (its own ledger and cache) with ``flags``; its run directory."""
    import os

    env = {"GREENDIFF_LEDGER": str(root / "ledger.sqlite"), "GREENDIFF_CACHE_DIR": str(root / "cache"),
           "GREENDIFF_THREADS": "1"}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        code = main(["train", *TRAIN_ARGS, "--max-steps", "2", "--output-dir", str(root / "runs"), *flags])
    finally:
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    assert code == 0
    (run,) = (root / "runs").iterdir()
    return run


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> Path:
    """A 2-step run (pipeline, checkpoint step-2, emissions.json), trained once for the run_dir and resume cases."""
    return train_once(tmp_path_factory.mktemp("finished"), "--name", "tiny")


@pytest.fixture(scope="session")
def finished_class_run(tmp_path_factory) -> Path:
    """A 2-step class-conditional run on the 10 digit classes, for the run_dir cases with ``conditional = true``."""
    return train_once(tmp_path_factory.mktemp("finished-class"), "--conditioning", "class", "--name", "tiny-class")


def changed_run(case: dict, tmp_path: Path, original: Path) -> Path:
    """A copy of ``original`` with the case's changes: ``files`` written (the value "pickle": a payload that
    would create ``tmp_path/pwned``), ``remove`` deleted, ``replace`` = [file, old, new] edited."""
    import pickle

    run = tmp_path / "existing" / original.name
    shutil.copytree(original, run)
    for name in case.get("remove", []):
        target = run / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    for name, text in case.get("files", {}).items():
        data = pickle.dumps(Payload(tmp_path / "pwned")) if text == "pickle" else text.encode("latin-1")
        (run / name).write_bytes(data)
    if "replace" in case:
        name, old, new = case["replace"]
        text = (run / name).read_text()
        assert old in text, f"{old!r} not in {name}"
        (run / name).write_text(text.replace(old, new))
    return run


def argv_for_run(case: dict, tmp_path: Path, original: Path) -> list[str]:
    run = changed_run(case, tmp_path, original)
    if case["feed"] == "resume":
        return ["train", "--resume", str(run), "--no-gpu", "--country", "FRA"]
    return [arg.replace("{run}", str(run)) for arg in case["args"]]


def completed_runs(ledger: Path) -> list[tuple]:
    if not ledger.exists():
        return []
    with sqlite3.connect(ledger) as db:
        tables = {row[0] for row in db.execute("select name from sqlite_master where type='table'")}
        return db.execute("select id, status from runs where status = 'completed'").fetchall() if "runs" in tables else []


def folders_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_dir() and p.name != "cache"}


def test_the_corpus_is_complete():
    files = {p.name for p in CORPUS.iterdir()} - {"cases.toml", "make_corpus.py", "__pycache__"}
    assert files == {c["file"] for c in CASES if "file" in c}  # every file has a case, every case a file
    assert len(files) >= 40 and len(CASES) >= 165
    assert len({case_id(c) for c in CASES}) == len(CASES)
    kinds = {c["feed"] for c in CASES}
    assert kinds == {"image", "array", "config", "trace", "profile", "api", "args", "run_dir", "resume", "labelled_folder"}


def test_make_corpus_regenerates_every_file_byte_for_byte():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_corpus", CORPUS / "make_corpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    made = module.files()
    assert len(made) >= 50
    for name, data in made.items():
        assert (CORPUS / name).read_bytes() == data, f"{name} differs from what make_corpus.py makes"


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_bad_input_is_one_line_and_exit_code_2(case, tmp_path, monkeypatch, capsys, request):
    work = tmp_path / "work"  # the working folder: relative paths and names that climb out land in tmp_path
    work.mkdir()
    monkeypatch.chdir(work)
    api = None
    if case["feed"] == "api":
        api = FakeApi()
        api.serve("/intensity/", body=(CORPUS / case["file"]).read_bytes(), status=case["status"],
                  delay_s=case["delay_s"])
        monkeypatch.setenv("GREENDIFF_UK_API_URL", api.url)
        monkeypatch.setenv("GREENDIFF_API_TIMEOUT_S", "2")  # generous: a loaded CI machine still answers in time
        argv = ["plan", "window", "--live", "uk", *UK_WINDOW]
    elif case["feed"] in ("run_dir", "resume"):
        original = request.getfixturevalue("finished_class_run" if case.get("conditional") else "finished_run")
        argv = argv_for_run(case, tmp_path, original)
        capsys.readouterr()  # the fixture's training output, the first time
    else:
        argv = argv_for(case, tmp_path, monkeypatch)
    before = folders_under(tmp_path)
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
    assert case.get("secret", "\0") not in err + out, "a credential reached the output"
    assert lines[0].isprintable(), f"an unprintable character reached the terminal: {lines[0]!r}"
    for text in case["expect"]:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    if "file" in case and case["feed"] != "api":
        shown = repr(case["as"])[1:-1] if "as" in case else case["file"]  # an odd name is quoted, escaped
        assert shown in lines[0], f"the message does not say where: {lines[0]!r}"
    assert completed_runs(tmp_path / "ledger.sqlite") == []
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # no run directory left
    assert folders_under(tmp_path) - before == set(), "a folder was created"
    assert not (tmp_path / "pwned").exists(), "a pickle planted in the input was unpickled"


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


def _numeric_parameters():
    """(command path, parameter) of every option and argument of every command that takes a number."""
    import typer.main

    from greendiff.cli._app import app

    def walk(command, path):
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                yield from walk(sub, [*path, name])
            return
        for param in command.params:
            annotation = param.type_descriptor.annotation
            if annotation in (int, float, list[int], list[float]) or param.metavar in ("INTEGER", "NUMBER"):
                yield path, param

    return list(walk(typer.main.get_command(app), []))


NUMERIC_PARAMETERS = _numeric_parameters()


def test_every_numeric_option_of_every_command_is_read_by_the_one_number_grammar():
    """A new int/float option declared without number_option (typer's own int() would take '٣', '1_000'
    and 10**20) fails here."""
    assert len(NUMERIC_PARAMETERS) > 60
    loose = [f"{' '.join(path)} {param.name}" for path, param in NUMERIC_PARAMETERS
             if param.type_descriptor.parameter_info.parser is None]
    assert loose == []


@pytest.mark.parametrize(("path", "param"), NUMERIC_PARAMETERS,
                         ids=[f"{' '.join(p)} {q.opts[0]}" for p, q in NUMERIC_PARAMETERS])
def test_every_numeric_option_refuses_malformed_and_non_finite_numbers_in_one_line(path, param, tmp_path, monkeypatch, capsys):
    from greendiff.cli._options import FlagError

    option = param.opts[0].startswith("-")
    named = param.opts[0] if option else param.name.rstrip("s").replace("_", " ")  # the flag, or "run id"
    integer = param.type_descriptor.annotation in (int, list[int]) or param.metavar == "INTEGER" or not option
    parse = param.type_descriptor.parameter_info.parser
    for value in ("٣", "1_000", "0x1f", " 1", "nan", "-inf", "1e400", *(["99999999999999999999999"] if integer else [])):
        try:
            checked = parse(value)
        except FlagError as exc:
            assert str(exc).startswith(f"{named} must be ") and "\n" not in str(exc), str(exc)
        else:  # a trainer config key's flag: read here, its range is the key's
            assert integer and value == "99999999999999999999999" and param.metavar == "INTEGER", (value, checked)
    monkeypatch.chdir(tmp_path)  # and once through the whole command line: one line, exit 2, nothing created
    tail = {"measure": ["--", "true"], "train": ["--dry-run"]}.get(path[0], [])  # quick, should a value pass
    code = main([*path, *([param.opts[0], "nan"] if option else ["--", "nan"]), *tail])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"greendiff: error: {named} must be ") and "Traceback" not in err
    assert not any(tmp_path.iterdir())
