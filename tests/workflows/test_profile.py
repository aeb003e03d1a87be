"""Profiling a config from Python: the forecast, the profile file and the ledger run."""

from __future__ import annotations

import json

import pytest

from greendiff.errors import UserInputError
from greendiff.ledger import Ledger
from greendiff.plan import Forecast
from greendiff.train import LogEvent
from greendiff.workflows import NullProgress, ProfileJob, run_profile_job
from tests.workflows.conftest import TINY, measurement


class _Logs(NullProgress):
    def __init__(self) -> None:
        self.started, self.events = [], []

    def on_start(self, label: str, total: int) -> None:
        self.started.append((label, total))

    def on_log(self, event) -> None:
        self.events.append(event)


def test_run_profile_job_forecasts_writes_the_file_and_closes_its_ledger_run(tmp_path):
    output, ledger, logs = tmp_path / "p.json", tmp_path / "l.sqlite", _Logs()
    outcome = run_profile_job(ProfileJob(overrides={**TINY, "run.max_steps": 100}, steps=6, warmup=1, output=output,
                                         measurement=measurement(ledger)), logs)
    assert (outcome.forecast.steps, outcome.forecast.profiled_steps) == (100, 6)
    assert outcome.name == "green-nano"
    assert logs.started == [("profile", 6)] and [e.step for e in logs.events] == list(range(1, 7))
    assert all(isinstance(e, LogEvent) for e in logs.events)
    assert Forecast.from_file(output) == outcome.forecast
    assert json.loads(output.read_text())["ledger_run_id"] == outcome.ledger_run_id
    (row,) = Ledger(ledger).list_runs()
    assert (row.id, row.kind, row.status) == (outcome.ledger_run_id, "profile", "completed")
    assert outcome.summary.status == "completed" and outcome.summary.energy_j > 0


def test_run_profile_job_refuses_too_few_steps_before_the_ledger(tmp_path):
    with pytest.raises(UserInputError, match=r"--train-steps must be more than --unmetered-steps \+ 3 = 5"):
        run_profile_job(ProfileJob(overrides=TINY, steps=5, warmup=2, output=tmp_path / "p.json",
                                   measurement=measurement(tmp_path / "l.sqlite")))
    assert not (tmp_path / "l.sqlite").exists() and not (tmp_path / "p.json").exists()


class _Notes(NullProgress):
    def __init__(self) -> None:
        self.notes = []

    def note(self, text: str, style: str | None = None) -> None:
        self.notes.append(text)


def test_run_profile_job_says_what_it_profiles_without_a_config_and_that_it_replaces_a_file(tmp_path):
    output, notes = tmp_path / "p.json", _Notes()
    output.write_text("{}")
    outcome = run_profile_job(ProfileJob(overrides={**TINY, "run.max_steps": 100}, steps=5, warmup=0, output=output,
                                         measurement=measurement(tmp_path / "l.sqlite")), notes)
    assert outcome.replaced and Forecast.from_file(output) == outcome.forecast
    assert notes.notes[0].startswith("no --config: profile the default job: recipe green, preset nano, dataset digits "
                                     "at 8 px, batch 16, 100 steps")
    assert outcome.forecast.unmetered_steps == 0 and outcome.forecast.includes_warmup


def test_profile_and_hardware_write_their_json_through_the_shared_inputs(tmp_path):
    from greendiff.workflows import _hardware, _inputs, _profile

    assert _profile.write_output is _inputs.write_output is _hardware.write_output
    assert _profile.default_job_note is _inputs.default_job_note is _hardware.default_job_note
    target = tmp_path / "r.json"
    _inputs.write_output(target, {"energy_kwh": 1.5})
    assert json.loads(target.read_text()) == {"energy_kwh": 1.5}
    with pytest.raises(UserInputError, match=r"^cannot write .*missing.*r\.json: "):
        _inputs.write_output(tmp_path / "missing" / "r.json", {})
