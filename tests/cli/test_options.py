"""The shared measurement options: declared once, on every measuring command, received as one value."""

from __future__ import annotations

import typer
import typer.main

from greendiff.cli._app import app
from greendiff.cli._options import MEASUREMENT_PARAMETERS, with_measurement
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
