from __future__ import annotations

import json

import pytest

from greendiff.cli._app import main
from greendiff.ledger import Ledger, default_ledger_path

WINDOW = ["plan", "window", "--grid", "CISO", "--energy-kwh", "6", "--hours", "6", "--start", "2022-06-01T00:00"]


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_plan_window_json_reports_three_schedules(capsys):
    code, out, err = run_cli(capsys, *WINDOW, "--deadline", "2022-06-03T00:00", "--json")
    assert code == 0, err
    plan = json.loads(out)
    now, cont, split = (plan["schedules"][k] for k in ("start now", "best contiguous", "best interruptible"))
    assert now["start"] == "2022-06-01T00:00:00+00:00" and now["saving_frac"] == 0
    assert split["emissions_g"] <= cont["emissions_g"] < now["emissions_g"]
    assert cont["end"] <= "2022-06-03T00:00:00+00:00" and 0.3 < cont["saving_frac"] < 0.6
    assert "EIA-930" in plan["source"] and plan["pue"] == 1.0


def test_plan_window_table_and_interruptible(capsys):
    code, out, _ = run_cli(capsys, *WINDOW, "--flex-hours", "72", "--interruptible", "--pause-cost-kwh", "0.05", "--pue", "1.2")
    assert code == 0 and "run during:" in out and "PUE 1.2" in out
    (chosen,) = [line for line in out.splitlines() if "◀" in line]
    assert "best interruptible" in chosen


def test_plan_window_in_another_year_uses_the_trace_as_a_typical_year(capsys):
    code, out, _ = run_cli(capsys, "plan", "window", "--grid", "ciso", "--energy-kwh", "1", "--hours", "2",
                           "--start", "2027-06-01T00:00", "--flex-hours", "24", "--json")
    assert code == 0 and any("typical year" in n for n in json.loads(out)["notes"])


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("args, message", [
    (["--deadline", "2022-05-31T00:00"], "is not after --start"),
    (["--deadline", "2022-06-01T04:00"], "the job needs 6.00 h but --start to --deadline is 4.00 h"),
    (["--flex-hours", "24", "--deadline", "2022-06-02T00:00"], "exactly one of --deadline"),
    (["--deadline", "tomorrow"], "is not a date and time"),
    (["--flex-hours", "24", "--energy-kwh", "-2"], "--energy-kwh must be a positive number"),
    (["--flex-hours", "24", "--grid", "NOPE"], "unknown grid 'NOPE'"),
    (["--flex-hours", "24", "--live", "electricitymaps"], "only 'uk' offers a forecast"),
    (["--flex-hours", "24", "--pause-cost-kwh", "-1"], "--pause-cost-kwh must be a positive number"),
])
def test_plan_window_bad_input(capsys, args, message):
    code, _, err = run_cli(capsys, *WINDOW, *args)
    assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("rows, message", [
    ("2022-06-01T00:00,100\n2022-06-01T01:00,200\n2022-06-01T03:00,300\n", "t.csv:4: gap or uneven step"),
    ("2022-06-01T00:00,100\n2022-06-01T02:00,200\n2022-06-01T01:00,300\n", "t.csv:4: timestamp 2022-06-01T01:00:00+00:00 is not after"),
    ("2022-06-01T00:00,100\nnoon,200\n", "t.csv:3: bad timestamp 'noon'"),
    ("2022-06-01T00:00,100\n2022-06-01T01:00,-5\n", "t.csv:3: intensity must be a number from 0 to 2000 gCO2e/kWh"),
])
def test_plan_window_bad_traces_name_the_line(capsys, tmp_path, rows, message):
    trace = write(tmp_path, "t.csv", "timestamp,intensity\n" + rows)
    code, _, err = run_cli(capsys, "plan", "window", "--grid", trace, "--energy-kwh", "1", "--hours", "1",
                           "--start", "2022-06-01T00:00", "--flex-hours", "2")
    assert code == 2 and message in err and "Traceback" not in err


def half_hourly_2022(tmp_path):
    """A year of 30-minute rows alternating 100 and 900 g/kWh."""
    from datetime import datetime, timedelta, timezone

    t0 = datetime(2022, 1, 1, tzinfo=timezone.utc)
    return write(tmp_path, "half.csv", "timestamp,intensity\n" + "".join(
        f"{(t0 + timedelta(minutes=30 * i)).isoformat()},{100 if i % 2 == 0 else 900}\n" for i in range(365 * 48)))


def test_plan_window_prices_a_half_hourly_typical_year_at_its_own_resolution(capsys, tmp_path):
    # issue 18: the typical-year lookup took one value per hour, so only the 100s were seen
    code, out, err = run_cli(capsys, "plan", "window", "--grid", half_hourly_2022(tmp_path), "--energy-kwh", "1",
                             "--hours", "1", "--start", "2026-03-10T10:00", "--flex-hours", "2", "--json")
    assert code == 0, err
    schedules = json.loads(out)["schedules"]
    assert schedules["start now"]["emissions_g"] == pytest.approx(500.0)  # half an hour at 100, half at 900
    assert schedules["best contiguous"]["emissions_g"] == pytest.approx(500.0)
    split = schedules["best interruptible"]
    assert split["emissions_g"] == pytest.approx(100.0)
    assert split["intervals"] == [["2026-03-10T10:00:00+00:00", "2026-03-10T10:30:00+00:00"],
                                  ["2026-03-10T11:00:00+00:00", "2026-03-10T11:30:00+00:00"]]


def test_plan_window_reads_a_year_trace_starting_in_july_by_its_own_calendar(capsys, tmp_path):
    # issue 18: a year-long trace not starting on 1 January was clamped to its first value outside its start year
    from datetime import datetime, timedelta, timezone

    t0 = datetime(2022, 7, 1, tzinfo=timezone.utc)
    rows = []
    for i in range(365 * 24):
        t = t0 + timedelta(hours=i)
        rows.append(f"{t.isoformat()},{50 if (t.month, t.day, t.hour) in ((3, 15, 13), (3, 15, 14)) else 300}\n")
    trace = write(tmp_path, "july.csv", "timestamp,intensity\n" + "".join(rows))
    code, out, err = run_cli(capsys, "plan", "window", "--grid", trace, "--energy-kwh", "2", "--hours", "2",
                             "--start", "2026-03-15T00:00", "--flex-hours", "24", "--json")
    assert code == 0, err
    plan = json.loads(out)
    best = plan["schedules"]["best contiguous"]
    assert best["start"] == "2026-03-15T13:00:00+00:00" and best["emissions_g"] == pytest.approx(100.0)
    assert plan["schedules"]["start now"]["emissions_g"] == pytest.approx(600.0)
    assert any("2022-07-01 00:00–2023-07-01 00:00 UTC trace used as a typical year for 2026" in n for n in plan["notes"])


def test_plan_window_outside_a_short_trace_is_one_labelled_line(capsys, tmp_path):
    trace = write(tmp_path, "day.csv", "timestamp,intensity\n2022-06-01T00:00,100\n2022-06-01T01:00,200\n")
    code, _, err = run_cli(capsys, "plan", "window", "--grid", trace, "--energy-kwh", "1", "--hours", "1",
                           "--start", "2023-06-01T00:00", "--flex-hours", "2")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "covers 2022-06-01T00:00:00+00:00 to 2022-06-01T02:00:00+00:00" in err and "shorter than a year" in err


@pytest.mark.parametrize("args, message", [
    (["--start", "9999-12-31T00:00", "--flex-hours", "48"], "--start 9999-12-31T00:00:00+00:00 is outside the years"),
    (["--start", "0001-01-01T00:00+05:00", "--flex-hours", "4"], "--start 0001-01-01T00:00:00+05:00 is outside the years"),
    (["--start", "0001-01-01T00:00", "--flex-hours", "4"], "is outside the years greendiff handles (1900 to 2199, UTC)"),
    (["--start", "2022-06-01T00:00", "--deadline", "9999-12-31T23:59:59-12:00"], "--deadline 9999-12-31T23:59:59-12:00 is outside"),
    (["--start", "9999-12-31T20:00", "--deadline", "9999-12-31T23:59"], "--start 9999-12-31T20:00:00+00:00 is outside"),
    (["--start", "2199-12-31T00:00", "--flex-hours", "48"], "the deadline (--start + --flex-hours) 2200-01-02"),
    (["--start", "2022-06-01T00:00", "--flex-hours", "1e9"], "--flex-hours"),
    (["--start", "2022-06-01T00:00", "--flex-hours", "1e20"], "--flex-hours"),
    (["--start", "2022-06-01T00:00", "--flex-hours", "8785"], "--flex-hours"),
    (["--start", "2022-06-01T00:00", "--deadline", "2023-06-03T00:00"], "is over a year; plan within a year"),
])
def test_plan_window_times_at_the_calendar_s_ends_are_one_line(capsys, args, message):
    code, out, err = run_cli(capsys, "plan", "window", "--grid", "CISO", "--energy-kwh", "1", "--hours", "2", *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in out + err


@pytest.mark.parametrize("args, message", [
    (["--deadline", "0001-01-01T00:00+01:00"], "carbon.deadline 0001-01-01T00:00:00+01:00 is outside the years"),
    (["--deadline", "0005-01-01T00:00"], "carbon.deadline 0005-01-01T00:00:00+00:00 is outside the years"),
    (["--simulate-clock", "9999-12-31T23:00-05:00", "--simulated-step-s", "1"],
     "carbon.simulate_start 9999-12-31T23:00:00-05:00 is outside the years"),
])
def test_train_carbon_aware_times_at_the_calendar_s_ends_are_one_line(capsys, tmp_path, args, message):
    """train --deadline / --simulate-clock go through the same parse_utc as plan window (an OverflowError escaped)."""
    code, out, err = run_cli(capsys, "train", "--carbon-aware", "--grid", "CISO", "--dry-run", "--output-dir",
                             str(tmp_path / "runs"), *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in out + err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("rows, message", [
    ("9999-12-31T22:00,100\n9999-12-31T23:00,200\n", "t.csv:2: timestamp 9999-12-31T22:00:00+00:00 is outside the years"),
    ("0001-01-01T00:00+05:00,100\n0001-01-01T01:00+05:00,200\n", "t.csv:2: timestamp 0001-01-01T00:00:00+05:00 is outside"),
    ("2022-06-01T00:00,100\n2200-01-01T00:00,200\n", "t.csv:3: timestamp 2200-01-01T00:00:00+00:00 is outside"),
])
def test_plan_window_trace_times_at_the_calendar_s_ends_name_the_line(capsys, tmp_path, rows, message):
    trace = write(tmp_path, "t.csv", "timestamp,intensity\n" + rows)
    code, out, err = run_cli(capsys, "plan", "window", "--grid", trace, "--energy-kwh", "1", "--hours", "1",
                             "--start", "2022-06-01T00:00", "--flex-hours", "2")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in out + err


def test_plan_regions_ranks_and_compares_with_the_current_location(capsys):
    code, out, err = run_cli(capsys, "plan", "regions", "--energy-kwh", "100", "--country", "DEU", "--continent", "Europe",
                             "--provider", "gcp", "--provider", "country", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["current"]["pue"] == 1.0 and report["current"]["emissions_kg"] > 30  # Germany, ~380 g/kWh
    regions = report["regions"]
    assert regions[0]["emissions_kg"] <= regions[-1]["emissions_kg"]
    assert {r["provider"] for r in regions} == {"gcp", "country"} and {r["continent"] for r in regions} == {"Europe"}
    code, out, _ = run_cli(capsys, "plan", "regions", "--energy-kwh", "100", "--cloud", "aws:us-east-1", "-n", "3")
    assert code == 0 and "vs you" in out and "you:" in out


def test_plan_regions_compares_with_a_short_trace_over_its_own_span(capsys, tmp_path):
    trace = write(tmp_path, "day.csv", "timestamp,intensity\n2024-06-01T00:00,100\n2024-06-01T01:00,300\n")
    code, out, err = run_cli(capsys, "plan", "regions", "--energy-kwh", "10", "--grid", trace, "--json")
    assert code == 0, err  # it asked the trace for 2022 and failed
    assert json.loads(out)["current"]["emissions_kg"] == pytest.approx(10 * 200 / 1000)


@pytest.mark.parametrize("args, message", [
    (["--energy-kwh", "1", "--continent", "Mars"], "unknown continent 'Mars'"),
    (["--energy-kwh", "0"], "--energy-kwh must be a positive number"),
    (["--energy-kwh", "1", "--cloud", "gcp:moon-1"], "unknown cloud region 'gcp:moon-1'"),
    ([], "give the job's energy"),
    (["--profile", "missing.json"], "no such file"),
])
def test_plan_regions_bad_input(capsys, args, message):
    code, _, err = run_cli(capsys, "plan", "regions", *args)
    assert code == 2 and message in err and "Traceback" not in err


TINY_TOML = """
[model]
preset = "nano"
block_out_channels = [8, 16]
[data]
dataset = "digits"
resolution = 8
[optim]
batch_size = 16
sample_steps = 4
[run]
max_steps = 400
num_samples = 4
checkpoint_every = 100
[stop]
eval_every = 200
eval_samples = 16
"""


def test_profile_then_plan_with_it(capsys, tmp_path):
    config = write(tmp_path, "tiny.toml", TINY_TOML)
    out_path = tmp_path / "profile.json"
    code, out, err = run_cli(capsys, "profile", "--config", config, "--steps", "12", "--warmup", "2", "-o", str(out_path),
                             "--country", "FRA")
    assert code == 0, err
    report = json.loads(out_path.read_text())
    f = report["forecast"]
    assert f["steps"] == 400 and f["profiled_steps"] == 12 and f["evaluations"] == 2 and f["checkpoints"] == 3 + 2 + 2
    assert f["energy_low_kwh"] < f["energy_kwh"] < f["energy_high_kwh"]
    assert f["energy_per_eval_kwh"] > 0 and f["energy_per_checkpoint_kwh"] > 0 and f["hours"] > 0
    expected_kwh = (400 * f["energy_per_step_kwh"] + 2 * f["energy_per_eval_kwh"]
                    + f["sample_grids"] * f["energy_per_grid_kwh"] + 7 * f["energy_per_checkpoint_kwh"])
    assert f["energy_kwh"] >= expected_kwh * (1 - 1e-12)  # plus the one-off reference features
    assert not [k for k in f if k.endswith("_j")]  # one unit per quantity: energy in kWh
    run = Ledger(default_ledger_path()).get_run(report["ledger_run_id"])
    assert run.kind == "profile" and run.status == "completed"
    assert "forecast" in err and "wrote" in err
    code, out, err = run_cli(capsys, "plan", "window", "--profile", str(out_path), "--grid", "PJM",
                             "--start", "2022-03-01T00:00", "--flex-hours", "12", "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["energy_kwh"] == f["energy_kwh"] and plan["duration_h"] == f["hours"]
    assert plan["pause_cost_kwh"] == pytest.approx(2 * f["energy_per_checkpoint_kwh"])


@pytest.mark.parametrize("args, message", [
    (["--train-steps", "4"], "--train-steps must be more than --unmetered-steps + 3"),
    (["--steps", "4"], "--train-steps must be more than --unmetered-steps + 3"),  # the old name still works
    (["--train-steps", "9", "--steps", "9"], "--steps is the old name of --train-steps: give one of them"),
    (["--unmetered-steps", "1", "--warmup", "1"], "--warmup is the old name of --unmetered-steps: give one of them"),
    (["--output", "p.txt"], "--output must end in .json"),
    (["--set", "optim.lr=-1"], "optim.lr"),
])
def test_profile_bad_input(capsys, args, message):
    code, _, err = run_cli(capsys, "profile", *args)
    assert code == 2 and message in err and "Traceback" not in err


def test_plan_window_on_the_uk_forecast(capsys, monkeypatch):
    from tests.carbon.conftest import FakeApi

    api = FakeApi()
    try:
        api.serve("/intensity/", "uk_intensity.json")  # half-hours at 176 (actual), 168 (actual), 150 (forecast)
        monkeypatch.setenv("GREENDIFF_UK_API_URL", api.url)
        code, out, err = run_cli(capsys, "plan", "window", "--live", "uk", "--energy-kwh", "1", "--hours", "0.5",
                                 "--start", "2022-06-01T10:00", "--deadline", "2022-06-01T11:30", "--json")
        assert code == 0, err
        plan = json.loads(out)
        assert plan["schedules"]["best contiguous"]["start"] == "2022-06-01T11:00:00+00:00"
        assert plan["schedules"]["best contiguous"]["emissions_g"] == pytest.approx(150.0)
        assert plan["schedules"]["start now"]["emissions_g"] == pytest.approx(176.0)
        assert "UK Carbon Intensity API" in plan["source"]
        api.serve("/intensity/", status=500)
        code, _, err = run_cli(capsys, "plan", "window", "--live", "uk", "--energy-kwh", "1", "--hours", "0.5",
                               "--start", "2022-06-01T12:00", "--deadline", "2022-06-01T13:30")
        assert code == 2 and "no hourly series for the window" in err and "HTTP 500" in err
    finally:
        api.close()


@pytest.mark.parametrize("status, body, headers, reason", [
    (200, b'{"data": [{"from": "2022-06-01T10:00Z", "intensity": {"actual": NaN}}]}', {}, "NaN is not JSON"),
    (200, b'{"data": [], "pad": "' + b"x" * 1_100_000 + b'"}', {}, "over 1 MB"),
    (200, b'{"data": []}', {"Content-Type": "text/html; charset=utf-8"}, "not JSON (content type text/html)"),
    (302, b"", {"Location": "http://127.0.0.1:9/elsewhere"}, "HTTP 302 from 127.0.0.1"),
], ids=["NaN", "2-MB", "text/html", "redirect"])
def test_plan_window_on_a_strange_uk_answer_is_one_line(capsys, monkeypatch, status, body, headers, reason):
    from tests.carbon.conftest import FakeApi

    api = FakeApi()
    try:
        api.serve("/intensity/", status=status, body=body, headers=headers)
        monkeypatch.setenv("GREENDIFF_UK_API_URL", api.url)
        code, out, err = run_cli(capsys, "plan", "window", "--live", "uk", "--energy-kwh", "1", "--hours", "0.5",
                                 "--start", "2022-06-01T10:00", "--deadline", "2022-06-01T11:30")
    finally:
        api.close()
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in out + err
    assert "no hourly series for the window" in err and reason in err


# -- 80 columns ---------------------------------------------------------------------------------------------

def lines_at_80(capsys, monkeypatch, *argv):
    monkeypatch.setenv("COLUMNS", "80")
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    lines = (out + err).splitlines()
    assert max(len(line) for line in lines) <= 80, max(lines, key=len)
    return out + err


def test_plan_regions_at_80_columns_shows_every_region_name_whole(capsys, monkeypatch):
    from greendiff.workflows import RegionsJob, run_plan_regions

    text = lines_at_80(capsys, monkeypatch, "plan", "regions", "--energy-kwh", "100", "--country", "DEU", "-n", "400")
    for o in run_plan_regions(RegionsJob(100.0)).regions:  # every row shown, each name whole, with its data year
        assert f" {o.key} " in text and o.data in text
    assert "gcp:northamerica-northeast1" in text  # the longest name (27 characters)


def test_plan_regions_tells_us_west_2_from_us_east_1_and_says_whose_figure(capsys, monkeypatch):
    text = lines_at_80(capsys, monkeypatch, "plan", "regions", "--energy-kwh", "100", "--provider", "aws", "-n", "40")
    rows = {line.split()[1]: line for line in text.splitlines() if " aws:us-" in line}
    assert "grid BPAT 2022" in rows["aws:us-west-2"] and " 55 " in rows["aws:us-west-2"]
    assert "grid PJM 2022" in rows["aws:us-east-1"] and " 363 " in rows["aws:us-east-1"]
    assert "EIA-930 mean of the US grid" in " ".join(text.split())


def test_plan_regions_germany_from_germany_is_zero_percent(capsys, monkeypatch):
    text = lines_at_80(capsys, monkeypatch, "plan", "regions", "--energy-kwh", "100", "--country", "DEU",
                       "--provider", "country", "--limit", "300")
    (row,) = [line for line in text.splitlines() if " country:DEU " in line]
    assert row.split()[-1] == "+0%" and "DEU 2023" in row


def test_plan_window_at_80_columns(capsys, monkeypatch):
    text = lines_at_80(capsys, monkeypatch, *WINDOW, "--flex-hours", "72", "--interruptible", "--pause-cost-kwh", "0.05")
    assert "best interruptible" in text and "best contiguous" in text


def test_plan_regions_old_flag_names_still_work(capsys):
    code, out, _ = run_cli(capsys, "plan", "regions", "--energy-kwh", "1", "--top", "2")
    assert code == 0 and out.count(" country:") + out.count(" gcp:") + out.count(" aws:") == 2
    code, out, _ = run_cli(capsys, "plan", "regions", "--energy-kwh", "1", "--country-pue", "1.3", "--json")
    assert code == 0 and json.loads(out)["country_pue"]["value"] == 1.3
    code, _, err = run_cli(capsys, "plan", "regions", "--energy-kwh", "1", "--top", "2", "--limit", "3")
    assert code == 2 and "--top is the old name of --limit: give one of them" in err
    code, out, _ = run_cli(capsys, "plan", "regions", "--help")
    assert "--limit" in out and "--top" not in out and "--country-pue" not in out


def test_profile_says_what_it_profiles_without_a_config_and_that_it_replaced_a_file(capsys, monkeypatch, tmp_path):
    out_path = tmp_path / "profile.json"
    base = ["profile", *(a for k, v in {"data.dataset": "digits", "data.resolution": 8, "model.block_out_channels": "8,16",
                                        "optim.batch_size": 8, "run.max_steps": 40}.items() for a in ("--set", f"{k}={v}")),
            "-o", str(out_path), "--country", "FRA", "--no-gpu"]
    text = lines_at_80(capsys, monkeypatch, *base, "--train-steps", "6", "--unmetered-steps", "1")
    assert "no --config: profile the default job: recipe green, preset" in " ".join(text.split())
    assert "dataset digits at 8 px, batch 8" in " ".join(text.split())
    assert "(replaced" not in text and "per step: 5 measured steps after 1 unmetered (warm-up left out" in " ".join(text.split())
    assert json.loads(out_path.read_text())["forecast"]["unmetered_steps"] == 1
    code, out, err = run_cli(capsys, *base, "--steps", "5", "--warmup", "0")  # the old names, and the same file again
    assert code == 0, err
    flat = " ".join((out + err).split())
    assert f"wrote {out_path} (replaced the file that was there)" in flat
    assert "per step: all 5 steps, warm-up included" in flat
    forecast = json.loads(out_path.read_text())["forecast"]
    assert (forecast["profiled_steps"], forecast["unmetered_steps"], forecast["includes_warmup"]) == (5, 0, True)


def test_profile_and_hardware_help_show_only_the_new_names_within_80_columns(capsys, monkeypatch):
    for command in ("profile", "hardware"):
        text = lines_at_80(capsys, monkeypatch, command, "--help")
        assert "--train-steps" in text and "--unmetered-steps" in text, command
        assert "--steps " not in text and "--warmup " not in text, command
    for command in ("regions", "window"):
        lines_at_80(capsys, monkeypatch, "plan", command, "--help")


HW_TINY = ["--set", "data.dataset=digits", "--set", "data.resolution=8", "--set", "model.block_out_channels=8,16",
           "--set", "optim.batch_size=8", "--devices", "cpu", "--no-gpu", "--cpu-watts", "50", "--country", "FRA"]


def test_hardware_at_80_columns_says_what_the_figures_include_and_that_it_replaced_a_file(capsys, monkeypatch, tmp_path):
    out_path = tmp_path / "hw.json"
    text = " ".join(lines_at_80(capsys, monkeypatch, "hardware", *HW_TINY, "--train-steps", "2", "--unmetered-steps", "1",
                                "-o", str(out_path)).split())
    assert "no --config: measuring the default job: recipe green" in text
    assert "per sample: 2 measured steps after 1 unmetered (warm-up left out" in text and "(replaced" not in text
    assert "cpu method: " in text  # the method column is listed under the table at 80 columns, not cut
    report = json.loads(out_path.read_text())
    assert (report["train_steps"], report["unmetered_steps"], report["includes_warmup"]) == (2, 1, False)
    code, out, err = run_cli(capsys, "hardware", *HW_TINY, "--steps", "2", "--warmup", "0", "-o", str(out_path))
    assert code == 0, err  # the old names still work
    flat = " ".join((out + err).split())
    assert f"wrote {out_path} (replaced the file that was there)" in flat and "per sample: all 2 steps, warm-up included" in flat
    assert json.loads(out_path.read_text())["includes_warmup"] is True


def test_profile_and_hardware_take_their_defaults_from_the_jobs(capsys, monkeypatch):
    """The CLI writes no default of its own: an unset flag is the job's default, and the help says that one."""
    import greendiff.cli._hardware as cli_hardware
    import greendiff.cli._plan as cli_plan
    from greendiff.errors import UserInputError
    from greendiff.workflows import HardwareJob, ProfileJob

    seen = []

    def record(job, progress):
        seen.append(job)
        raise UserInputError("recorded")

    monkeypatch.setattr(ProfileJob.__dataclass_fields__["steps"], "default", 77)
    monkeypatch.setattr(HardwareJob.__dataclass_fields__["warmup"], "default", 9)
    monkeypatch.setattr(cli_plan, "run_profile_job", record)
    monkeypatch.setattr(cli_hardware, "run_hardware", record)
    assert run_cli(capsys, "profile")[0] == 2 and run_cli(capsys, "hardware")[0] == 2
    assert (seen[0].steps, seen[0].warmup) == (77, ProfileJob.__dataclass_fields__["warmup"].default)
    assert (seen[1].steps, seen[1].warmup) == (HardwareJob.__dataclass_fields__["steps"].default, 9)


def test_every_warm_up_message_uses_one_phrase(capsys, monkeypatch):
    from greendiff.cli._plan import warmup_line
    from greendiff.plan import WARMUP_COST

    assert WARMUP_COST in warmup_line(0, 20, "step") and WARMUP_COST in warmup_line(5, 20, "sample")
    monkeypatch.setenv("COLUMNS", "300")
    for command in ("profile", "hardware"):
        code, out, _ = run_cli(capsys, command, "--help")
        assert code == 0 and f"warm-up ({WARMUP_COST}). [default: 5]" in out, command


def test_plan_window_prints_its_job_through_the_one_formatter(capsys, monkeypatch):
    """"264 mWh over 0.0854749 h" read as a raw float: the job's duration is scaled like every duration."""
    text = lines_at_80(capsys, monkeypatch, "plan", "window", "--grid", "CISO", "--energy-kwh", "0.000264",
                       "--hours", "0.0854749", "--start", "2022-06-01T00:00", "--flex-hours", "24", "--pue", "1.2")
    assert text.splitlines()[0].startswith("264 mWh over 5.13 min, 2022 · ")
    assert "PUE 1.20; pause cost" in text


def test_hardware_figures_are_fixed_point_never_exponents():
    """The estimated table showed "A10G 1.07e+03"."""
    import io
    import re

    from rich.console import Console

    from greendiff.cli._hardware import render_hardware
    from greendiff.plan import Estimate, StepCost
    from greendiff.workflows import HardwareOutcome

    measured = StepCost("cpu", "Xeon", energy_per_sample_kwh=1.5e-9, s_per_sample=2.2e-4, method="estimate:x")
    estimates = (Estimate("A10G", 1.07e-3 / 3.6e6, 1234.6e-6, "a; b"), Estimate("H100", 2.5e-10 / 3.6e6, 2e-9, "a; b"))
    outcome = HardwareOutcome("green", 8, 8, 0.1, (measured,), (), (), 1e6, estimates, train_steps=2)
    out = io.StringIO()
    render_hardware(outcome, Console(file=out, width=80))
    text = out.getvalue()
    assert not re.search(r"\de[+-]\d", text), text
    rows = {cells[0]: cells for cells in (line.replace("│", " ").split() for line in text.splitlines()) if cells}
    assert rows["A10G"] == ["A10G", "1070", "1235"] and rows["H100"] == ["H100", "0.000250", "0.00200"]
    assert ["cpu", "Xeon", "5.40", "0.220", "24.5"] in [cells for cells in (line.replace("│", " ").split() for line in text.splitlines())]


@pytest.mark.parametrize("command", [["profile"], ["hardware"], ["plan", "window"], ["plan", "regions"]])
def test_help_names_what_each_option_takes_not_its_python_type(capsys, monkeypatch, command):
    """``profile --help`` showed ``--config <path>`` and ``--set <list[str]>``."""
    import re

    text = lines_at_80(capsys, monkeypatch, *command, "--help")
    placeholders = [line for line in text.splitlines() if re.search(r"<[a-z\[\]]+>", line) and "--help" not in line]
    assert placeholders == []  # (--help's own <bool> comes from the app, greendiff.cli._app)
    flat = " ".join(text.split())
    for option, metavar in {"profile": [("--config", "FILE"), ("--set", "KEY=VAL"), ("--output", "FILE")],
                            "hardware": [("--limits", "WATTS"), ("--devices", "DEVICES")],
                            "window": [("--start", "TIME"), ("--grid", "GRID"), ("--profile", "FILE")],
                            "regions": [("--provider", "PROVIDER"), ("--continent", "NAME")]}[command[-1]]:
        assert re.search(rf"{option}( -[a-z])? {metavar} ", flat), (option, metavar)
