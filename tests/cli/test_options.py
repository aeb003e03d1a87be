"""The shared measurement options: declared once, on every measuring command, received as one value."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
import typer.main

from greendiff.cli._app import app
from greendiff.cli._options import MEASUREMENT_PANEL, MEASUREMENT_PARAMETERS, run_directory, with_measurement
from greendiff.workflows import MeasurementOptions

FLAGS = {"--country", "--cloud", "--grid", "--pue", "--live", "--zone", "--cpu-watts", "--gpus", "--no-gpu", "--ledger"}


def test_every_measuring_command_has_the_ten_flags():
    commands = typer.main.get_command(app).commands
    for name in ("train", "sample", "eval", "prune", "distill", "distill-steps", "tune", "profile", "measure", "demo"):
        flags = {opt for param in commands[name].params for opt in param.opts}
        assert FLAGS <= flags, (name, FLAGS - flags)
    assert len(MEASUREMENT_PARAMETERS) == len(FLAGS)


def test_a_new_command_gets_them_in_one_line_as_one_value():
    seen = []
    mini = typer.Typer()

    @mini.command()
    @with_measurement
    def job(steps: int = 1, measurement: MeasurementOptions = MeasurementOptions()) -> None:
        seen.append((steps, measurement))

    @mini.command()
    def other() -> None:
        pass

    typer.main.get_command(mini)(["job", "--steps", "3", "--country", "FRA", "--no-gpu", "--pue", "1.2"],
                                 standalone_mode=False)
    assert seen == [(3, MeasurementOptions(country="FRA", no_gpu=True, pue="1.2"))]


def test_the_measurement_flags_share_one_help_panel():
    commands = typer.main.get_command(app).commands
    for name in ("train", "sample", "eval", "measure"):
        panels = {p.opts[0]: p.rich_help_panel for p in commands[name].params}
        assert {panels[flag] for flag in FLAGS} == {MEASUREMENT_PANEL}


def test_run_directory_reads_a_directory_as_given_and_an_id_from_the_ledger(tmp_path):
    from greendiff.errors import UserInputError
    from greendiff.ledger import Ledger

    ledger = tmp_path / "named.sqlite"
    assert run_directory("runs/12", ledger) == Path("runs/12") and run_directory("./12", ledger) == Path("12")
    assert not ledger.exists(), "a directory is not looked up: the ledger is not even opened"
    run_dir = tmp_path / "my-run"
    run_dir.mkdir()
    opened = Ledger(ledger)
    run_id = opened.start_run("my-run", "train", f"greendiff train ({run_dir})", {"run_dir": str(run_dir)}, [])
    opened.close()
    assert run_directory(str(run_id), ledger) == run_dir
    with pytest.raises(UserInputError, match="no run with id 99"):
        run_directory("99", ledger)


def test_the_one_run_resolver_checks_ids_closes_its_ledger_and_refuses_an_ambiguous_number(tmp_path, monkeypatch):
    from greendiff.errors import UserInputError
    from greendiff.ledger import Ledger
    from greendiff.train import resolve_run, resolve_run_dir

    ledger = tmp_path / "named.sqlite"
    run_dir = tmp_path / "my-run"
    run_dir.mkdir()
    opened = Ledger(ledger)
    run_id = opened.start_run("my-run", "train", "greendiff train", {"run_dir": str(run_dir)}, [])
    opened.close()
    closed = []
    real_close = Ledger.close
    monkeypatch.setattr(Ledger, "close", lambda self: (closed.append(self.path), real_close(self)))
    monkeypatch.setenv("GREENDIFF_LEDGER", str(ledger))
    assert resolve_run_dir(str(run_id)) == run_dir and closed == [ledger]  # the default ledger, opened and closed
    assert resolve_run(str(run_id), ledger)[1] == run_dir and closed == [ledger, ledger]
    for bad in ("0", "-3", "9" * 30):
        with pytest.raises(UserInputError, match="run id must be"):
            run_directory(bad, ledger)
    monkeypatch.chdir(tmp_path)
    (tmp_path / str(run_id)).mkdir()
    with pytest.raises(UserInputError, match=rf"^{run_id} names both ledger run {run_id} \(my-run, train\) and the "
                                             rf"folder {run_id} here: write ./{run_id} for the folder or "
                                             rf"{run_dir} for the ledger run$"):
        run_directory(str(run_id), ledger)
    assert run_directory(f"./{run_id}", ledger) == Path(str(run_id))
    (tmp_path / "5").mkdir()
    assert run_directory("5", ledger) == Path("5")  # no ledger run 5: the folder
