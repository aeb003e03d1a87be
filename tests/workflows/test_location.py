"""The location stays with the run: a run directory keeps where it was priced (``location.toml``), and every job on
it (``train --resume``, ``sample``, ``eval``, ``prune``, ``distill``, ``distill-steps``) is priced there unless a
flag or the machine's environment says otherwise; a note says so. A damaged file is one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from greendiff.carbon import Location
from greendiff.errors import UserInputError
from greendiff.ledger import Ledger
from greendiff.workflows import (
    DistillJob, DistillStepsJob, EvalJob, MeasurementOptions, PruneJob, SampleJob, TrainJob, resolve_settings,
    run_distill, run_distill_steps, run_eval, run_prune, run_sample, run_train,
)
from greendiff.workflows._measurement import LOCATION_FILE, RunLocation
from tests.workflows.conftest import TINY
from tests.workflows.test_sample_eval_progress import Recorder

INHERITED = "priced at France (FRA), PUE 1.2, the run's location ({}); give --country, --cloud or --grid to price elsewhere"


def bare(ledger: Path, **flags) -> MeasurementOptions:
    """No location flags (unless given): what a user types after training."""
    return MeasurementOptions(no_gpu=True, ledger=ledger, **flags)


@pytest.fixture(scope="module")
def fra_run(tmp_path_factory) -> Path:
    """A run trained for 2 steps at --country FRA --pue 1.2."""
    root = tmp_path_factory.mktemp("fra")
    outcome = run_train(TrainJob(overrides={**TINY, "run.max_steps": 2, "run.output_dir": str(root / "runs")},
                                 measurement=MeasurementOptions(country="FRA", pue=1.2, no_gpu=True,
                                                                ledger=root / "train.sqlite")))
    return outcome.run_dir


def priced(ledger: Path) -> list[tuple[str | None, float, str]]:
    """``(country, PUE, PUE source)`` of each ledger run."""
    return [(r.assumptions["location"]["country"], r.assumptions["pue"]["value"], r.assumptions["pue"]["source"])
            for r in Ledger(ledger).list_runs()]


def test_a_new_run_keeps_the_location_it_was_priced_at(fra_run):
    assert RunLocation.read(fra_run) == RunLocation(country="FRA", pue=1.2)
    assert (fra_run / LOCATION_FILE).read_text().splitlines()[1:] == ['country = "FRA"', "pue = 1.2", 'live = "none"']


def test_sample_and_eval_without_flags_are_priced_at_the_runs_location_and_say_so(tmp_path, fra_run):
    ledger, progress = tmp_path / "l.sqlite", Recorder()
    run_sample(SampleJob(run=fra_run, n=2, steps=1, out=tmp_path / "s.png", measurement=bare(ledger)), progress)
    run_eval(EvalJob(run=fra_run, n=8, steps=1, kid_subset=4, measurement=bare(ledger)), progress)
    source = f"the run's location ({fra_run / LOCATION_FILE})"
    assert priced(ledger) == [("FRA", 1.2, source), ("FRA", 1.2, source)]
    assert progress.notes == [INHERITED.format(fra_run / LOCATION_FILE)] * 2


def test_resume_without_flags_is_priced_at_the_runs_location(tmp_path, fra_run):
    ledger, progress = tmp_path / "l.sqlite", Recorder()
    outcome = run_train(TrainJob(overrides={"run.max_steps": 3}, resume=fra_run, measurement=bare(ledger)), progress)
    assert outcome.step == 3 and priced(ledger)[0][:2] == ("FRA", 1.2)
    assert INHERITED.format(fra_run / LOCATION_FILE) in progress.notes


def test_a_run_made_before_locations_were_kept_keeps_the_first_one_a_resume_gives(tmp_path, fra_run):
    import shutil

    run_dir = tmp_path / "old"
    shutil.copytree(fra_run, run_dir)
    (run_dir / LOCATION_FILE).unlink()
    # fra_run is at step 2, or 3 once the test above resumed it
    run_train(TrainJob(overrides={"run.max_steps": 4}, resume=run_dir, measurement=bare(tmp_path / "l.sqlite")))
    assert not (run_dir / LOCATION_FILE).exists()  # nothing known: nothing kept
    run_train(TrainJob(overrides={"run.max_steps": 5}, resume=run_dir,
                       measurement=bare(tmp_path / "l.sqlite", country="DEU")))
    assert RunLocation.read(run_dir) == RunLocation(country="DEU")


def test_prune_is_priced_at_the_runs_location_and_its_new_run_keeps_it(tmp_path, fra_run):
    ledger = tmp_path / "l.sqlite"
    outcome = run_prune(PruneJob(run=fra_run, ratio=0.5, importance="magnitude", finetune_steps=0, eval_samples=0,
                                 output_dir=str(tmp_path / "runs"), measurement=bare(ledger)))
    assert priced(ledger)[0][:2] == ("FRA", 1.2)
    assert RunLocation.read(outcome.run_dir) == RunLocation(country="FRA", pue=1.2)


def test_distill_and_distill_steps_are_priced_at_the_teachers_location(tmp_path, fra_run):
    ledger = tmp_path / "l.sqlite"
    distilled = run_distill(DistillJob(teacher=fra_run, student_preset="pico", max_steps=1, eval_samples=0,
                                       output_dir=str(tmp_path / "runs"), sets={"model.block_out_channels": "8,16"},
                                       measurement=bare(ledger)))
    steps = run_distill_steps(DistillStepsJob(teacher=fra_run, rounds=1, teacher_steps=4, steps_per_round=1,
                                              eval_samples=0, output_dir=str(tmp_path / "runs"),
                                              measurement=bare(ledger)))
    assert [p[:2] for p in priced(ledger)] == [("FRA", 1.2), ("FRA", 1.2)]
    for run_dir in (distilled.run_dir, steps.run_dir, steps.run_dir / "round-1"):
        assert RunLocation.read(run_dir) == RunLocation(country="FRA", pue=1.2)


def test_a_location_flag_prices_elsewhere_and_says_where_the_run_was(tmp_path, fra_run):
    ledger, progress = tmp_path / "l.sqlite", Recorder()
    run_sample(SampleJob(run=fra_run, n=2, steps=1, out=tmp_path / "s.png", measurement=bare(ledger, country="DEU")),
               progress)
    assert priced(ledger)[0][:2] == ("DEU", 1.0)
    assert progress.notes == ["priced at Germany (DEU) (from your flags); the run was trained at France (FRA)"]
    assert RunLocation.read(fra_run) == RunLocation(country="FRA", pue=1.2)  # written once: not changed


def test_a_cloud_flag_over_the_runs_location_says_so_and_the_same_place_says_nothing(tmp_path):
    run = _stored('country = "FRA"\n', tmp_path)
    settings = resolve_settings(bare(None, cloud="gcp:europe-west1"), run=run, env={})
    assert settings.note == ("priced at Google Cloud europe-west1 (Belgium; gcp:europe-west1) (from your flags); "
                             "the run was trained at France (FRA)")
    assert resolve_settings(bare(None, country="FRA"), run=run, env={}).note == ""


def test_a_run_measured_with_a_zone_alone_is_named_by_the_zone_s_table_not_the_world_average(tmp_path):
    run = _stored('zone = "FR"\n', tmp_path)
    assert resolve_settings(bare(None), run=run, env={}).note.startswith(
        "priced at France (FRA), Electricity Maps zone FR, the run's location (")
    assert resolve_settings(bare(None, country="DEU"), run=run, env={}).note == (
        "priced at Germany (DEU) (from your flags); the run was trained at France (FRA), Electricity Maps zone FR")


def test_a_pue_flag_alone_keeps_the_runs_place(tmp_path):
    settings = resolve_settings(bare(None, pue="1.4"), run=_stored('country = "FRA"\npue = 1.2\n', tmp_path), env={})
    assert (settings.location, settings.pue, settings.pue_source) == (Location(country="FRA"), 1.4, None)
    assert settings.note.startswith("priced at France (FRA), the run's location")


def test_the_machines_pue_alone_keeps_the_runs_place(tmp_path):
    settings = resolve_settings(bare(None), run=_stored('country = "FRA"\npue = 1.2\n', tmp_path),
                                env={"GREENDIFF_PUE": "1.3"})
    assert (settings.location, settings.pue, settings.pue_source) == (Location(country="FRA"), None, None)
    assert settings.stored == RunLocation(country="FRA", pue=1.3)


def test_the_machines_environment_prices_over_the_runs_location_and_says_where_the_run_was(tmp_path):
    settings = resolve_settings(bare(None), run=_stored('country = "FRA"\n', tmp_path), env={"GREENDIFF_COUNTRY": "DEU"})
    assert settings.location == Location(country="DEU") and settings.stored == RunLocation(country="DEU")
    assert settings.note == ("priced at Germany (DEU) from GREENDIFF_COUNTRY (this machine), not at the run's "
                             "location France (FRA)")


def test_a_run_without_a_stored_location_is_priced_at_the_world_average_without_a_note(tmp_path):
    settings = resolve_settings(bare(None), run=tmp_path, env={})
    assert settings.location == Location() and settings.note == "" and not settings.stored.known


def test_a_grid_file_is_kept_as_an_absolute_path(tmp_path, monkeypatch):
    (tmp_path / "trace.csv").write_text("timestamp,intensity\n2024-01-01T00:00:00Z,100\n2024-01-01T01:00:00Z,120\n")
    monkeypatch.chdir(tmp_path)
    settings = resolve_settings(bare(None, grid="trace.csv"), env={})
    assert settings.stored == RunLocation(grid=str(tmp_path / "trace.csv"))


def test_notes_name_places_with_carbons_one_place_name_and_its_code(tmp_path, monkeypatch):
    """The note names the place as statements and exports do (:func:`greendiff.carbon.place_name`), with the code
    the flags take; workflows keeps no place-name function of its own."""
    import greendiff.workflows._measurement as measurement
    from greendiff.carbon import place_name

    assert not hasattr(measurement, "place_name") or measurement.place_name is place_name
    import greendiff.workflows

    assert not hasattr(greendiff.workflows, "place_name")  # carbon's function, not re-exported here
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCATION_FILE).write_text('country = "DEU"\n')
    settings = resolve_settings(bare(None), run, env={})
    assert settings.note.startswith("priced at Germany (DEU), the run's location")
    moved = resolve_settings(bare(None), run, env={"GREENDIFF_CLOUD": "gcp:europe-west1"})
    assert moved.note == ("priced at Google Cloud europe-west1 (Belgium; gcp:europe-west1) from GREENDIFF_CLOUD "
                          "(this machine), not at the run's location Germany (DEU)")


def test_an_inherited_pue_goes_into_the_tracker_with_its_source(tmp_path, fra_run):
    settings = resolve_settings(bare(tmp_path / "l.sqlite"), fra_run, env={})
    tracker = settings.tracker("t", "sample", "greendiff sample")
    assert (tracker.pue.value, tracker.pue.source) == (1.2, f"the run's location ({fra_run / LOCATION_FILE})")


_CORRUPT = [
    ("country = [", r"invalid TOML"),
    ("country = 3\n", r"country should be text, got 3"),
    ("pue = 'high'\n", r"pue should be a number, got 'high'"),
    ('country = "XYZ"\n', r"unknown country code 'XYZ'"),
    ("pue = 0.5\n", r"PUE must be >= 1.0"),
    (b"\xff\xfe", r"not UTF-8 text"),
    ("# " + "x" * 70_000, r"larger than 65,536 bytes"),
]


@pytest.mark.parametrize("text, why", _CORRUPT)
def test_a_damaged_stored_location_is_one_line_naming_the_file_before_anything_is_created(tmp_path, text, why):
    run_dir = _stored(text, tmp_path / "run")
    with pytest.raises(UserInputError, match=why) as info:
        resolve_settings(bare(tmp_path / "l.sqlite"), run=run_dir, env={})
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{run_dir / LOCATION_FILE}: ")
    assert message.endswith("give --country, --cloud or --grid, or delete the file (the run is then priced at the "
                            "world average)")
    # a flag names the place: the file is not read
    assert resolve_settings(bare(None, country="FRA"), run=run_dir, env={}).location == Location(country="FRA")


def test_a_damaged_stored_location_stops_sample_before_its_ledger_row(tmp_path, fra_run):
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(fra_run, run_dir)
    (run_dir / LOCATION_FILE).write_text("country = [\n")
    ledger = tmp_path / "l.sqlite"
    with pytest.raises(UserInputError, match="location.toml: invalid TOML"):
        run_sample(SampleJob(run=run_dir, n=2, steps=1, out=tmp_path / "s.png", measurement=bare(ledger)))
    assert not (tmp_path / "s.png").exists() and (not ledger.exists() or Ledger(ledger).list_runs() == [])


def test_a_folder_in_place_of_the_file_is_one_line(tmp_path):
    (tmp_path / LOCATION_FILE).mkdir()
    with pytest.raises(UserInputError, match=r"location.toml: not a regular file;"):
        resolve_settings(bare(None), run=tmp_path, env={})


def _stored(text: str | bytes, run_dir: Path) -> Path:
    """``run_dir`` holding only a ``location.toml`` of ``text``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCATION_FILE
    path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
    return run_dir
