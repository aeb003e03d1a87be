from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from greendiff.cli._app import main
from greendiff.ledger import Ledger, Sample
from greendiff.report import emissions_statement
from greendiff.report._collect import power_series
from greendiff.display import duration_text, energy_text, fixed_point, mass_text
from greendiff.report._html import config_differences, pareto, training_kwh
from greendiff.report._svg import nice_ticks
from greendiff.tracking import RunSummary
from greendiff.report._collect import RunData


def test_nice_ticks_cover_the_range_with_round_steps():
    assert nice_ticks(0, 0.93) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(12, 47) == [10, 20, 30, 40, 50]
    assert nice_ticks(3.0, 3.0)[0] <= 3.0 <= nice_ticks(3.0, 3.0)[-1]


def test_pareto_keeps_the_points_nothing_beats():
    points = [("a", 1.0, 50.0), ("b", 2.0, 30.0), ("c", 3.0, 40.0), ("d", 0.5, 60.0), ("e", 2.0, 30.0)]
    assert pareto(points) == ["a", "b", "d", "e"]  # c is beaten by b; b and e tie


def test_power_series_is_energy_over_time_per_device():
    samples = [Sample(100.0, 0, {"gpu:0": 0.0, "cpu": 0.0}), Sample(110.0, 0, {"gpu:0": 3000.0, "cpu": 100.0}),
               Sample(130.0, 0, {"gpu:0": 5000.0, "cpu": 300.0})]
    series = power_series(samples, 100.0)
    assert series["gpu:0"] == [(10 / 60, 300.0), (30 / 60, 100.0)] and series["cpu"] == [(10 / 60, 10.0), (30 / 60, 10.0)]


def test_config_differences_list_only_what_differs():
    def run(config):
        return RunData(None, {}, "r", None, {}, [], config=config)

    diffs = config_differences([run({"optim": {"lr": 1e-3, "ema": True}, "run": {"name": "a"}}),
                                run({"optim": {"lr": 5e-4, "ema": True}, "run": {"name": "b"}, "stop": {"target": 1}})])
    assert diffs == [("optim.lr", ["0.001", "0.0005"]), ("stop.target", ["—", "1"])]


def report(capsys, *argv):
    code = main(["report", *map(str, argv)])
    return code, capsys.readouterr().err


def test_report_of_two_runs(capsys, two_runs, tmp_path, monkeypatch):
    root, (run_a, run_b) = two_runs
    monkeypatch.setenv("GREENDIFF_LEDGER", str(root / "ledger.sqlite"))
    out = tmp_path / "report.html"
    code, err = report(capsys, run_a, 2, "-o", out, "--title", "lr study")
    assert code == 0, err
    page = out.read_text()
    summary_a = json.loads((run_a / "emissions.json").read_text())
    summary_b = Ledger(root / "ledger.sqlite").get_run(2).summary
    # self-contained: no external reference at all
    assert not re.search(r'(src|href)="(https?:)?//', page) and "<link" not in page
    # per run: power, intensity, device and phase emissions, loss and FID against kWh: 6 charts each, 2 across runs
    assert page.count('data-chart="') == 2 * 6 + 2
    assert page.count("data:image/png;base64,") == 2 and page.count("co2_eq_emissions:") == 2
    assert "Comparison" in page and "(reference)" in page and "optim.lr" in page and "Pareto" in page
    assert "0.002" in page and "0.0005" in page  # the learning rates, in the config differences
    # the emissions statement carries the run's own figures and sources
    assert f"It consumed {energy_text(summary_a['energy_kwh'])} of electricity" in page
    assert f"corresponds to {mass_text(summary_b['emissions_kg'])} CO2e" in page
    statements = re.findall(r"<blockquote>(.*?)</blockquote>", page)
    assert len(statements) == 2 and all(" in France." in t and "country FRA" not in t for t in statements)
    assert "Our World in Data / Ember country table: FRA" in statements[0]
    # savings against the reference: run b's energy change, as the table prints it
    change = summary_b["energy_kwh"] / summary_a["energy_kwh"] - 1
    assert f"{change:+.1%}" in page
    # and its training energy's (previews and evaluations left out), beside it
    a, b = (RunSummary.from_dict(Ledger(root / "ledger.sqlite").get_run(i).summary) for i in (1, 2))
    trained = training_kwh(b) / training_kwh(a) - 1
    assert "training energy" in page and f"{trained:+.1%}" in page
    assert "wrote" in err


def test_training_energy_leaves_out_previews_and_evaluations_only(two_runs):
    root, _ = two_runs
    summary = RunSummary.from_dict(Ledger(root / "ledger.sqlite").get_run(1).summary)
    by_name = {p.name: p.energy_j for p in summary.phases}
    assert {"sample", "train"} <= set(by_name)  # the tiny run previews at its end
    left_out = sum(j for name, j in by_name.items() if name in ("sample", "eval"))
    assert training_kwh(summary) == pytest.approx(summary.energy_kwh - left_out / 3.6e6, rel=1e-12)
    assert 0 < training_kwh(summary) < summary.energy_kwh
    kept = dataclasses.replace(summary, phases=[p for p in summary.phases if p.name not in ("sample", "eval")])
    assert training_kwh(kept) == summary.energy_kwh  # no preview, no evaluation: all of it is training


def test_statement_names_hardware_hours_place_and_sources(two_runs):
    root, _ = two_runs
    summary = Ledger(root / "ledger.sqlite").get_run(1).summary
    text = emissions_statement(RunSummary.from_dict(summary))
    for piece in (f"for {duration_text(summary['duration_s'])} in France.", f"{energy_text(summary['energy_kwh'])} of",
                  f"{fixed_point(summary['intensity']['mean_g_per_kwh'])} gCO2e/kWh", f"PUE of {summary['pue']['value']:.2f}",
                  f"{mass_text(summary['emissions_kg'])} CO2e (range", summary["devices"][0]["name"]):
        assert piece in text, piece
    assert "--" not in text and not re.search(r"\de[-+]?\d", text)  # no CLI hint, no exponent


def test_bad_report_input(capsys, two_runs, tmp_path, monkeypatch):
    root, (run_a, _) = two_runs
    monkeypatch.setenv("GREENDIFF_LEDGER", str(root / "ledger.sqlite"))
    cases = [([99], "no run with id 99"), ([tmp_path], "not a finished run directory"), (["nope"], "unknown run 'nope'"),
             ([1, "-o", tmp_path / "missing" / "r.html"], "folder"), ([1, "-o", tmp_path / "r.pdf"], "must end in .html"),
             ([1, 2, "--reference", 3], "no run with id 3"), ([1, 1], "the same run is given twice"),
             ([1, "--metric", "is"], "--metric must be fid or kid")]
    for argv, message in cases:
        code, err = report(capsys, *argv)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (argv, err)
    (tmp_path / "taken.html").mkdir()  # a path that cannot be written as a file, even by root
    code, err = report(capsys, 1, "-o", tmp_path / "taken.html")
    assert code == 2 and re.search("cannot write|is a folder", err) and len(err.strip().splitlines()) == 1


def test_a_run_without_measurements_is_refused(capsys, tmp_path, monkeypatch):
    ledger = Ledger(tmp_path / "l.sqlite")
    run_id = ledger.start_run("empty", "measure", "x", {"location": {}}, [])
    monkeypatch.setenv("GREENDIFF_LEDGER", str(tmp_path / "l.sqlite"))
    code, err = report(capsys, run_id)
    assert code == 2 and "has no energy measurements to report" in err


def test_runs_of_different_data_need_force(capsys, two_runs, tmp_path, monkeypatch):
    root, _ = two_runs
    monkeypatch.setenv("GREENDIFF_LEDGER", str(root / "ledger.sqlite"))
    from tests.report.conftest import TINY

    other = [a if a != "8" else "12" for a in TINY]  # the same, at 12 px
    assert main(["train", *other, "--output-dir", str(tmp_path / "runs"), "--name", "c"]) == 0
    (run_c,) = (tmp_path / "runs").iterdir()
    capsys.readouterr()
    code, err = report(capsys, 1, run_c, "-o", tmp_path / "r.html")
    assert code == 2 and "different data" in err and "--force" in err and not (tmp_path / "r.html").exists()
    code, err = report(capsys, 1, run_c, "-o", tmp_path / "r.html", "--force")
    assert code == 0 and "warning: the runs use different data" in err and (tmp_path / "r.html").exists()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_the_page_check_counts_errors(tmp_path):
    """The page's own error counter works: a page with a broken script and a missing image counts them."""
    from greendiff.report._html import _CHECK

    page = tmp_path / "broken.html"
    page.write_text(f"<html><head>{_CHECK}</head><body><img src='missing.png'><script>console.error('x'); "
                    "undefinedFunction();</script></body></html>")
    if CHROMIUM is None:
        pytest.skip("no Chromium installed")
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                             capture_output=True, text=True, timeout=120)
    assert 'data-errors="3"' in re.search(r"<html[^>]*>", dom.stdout).group(0)


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (.ci/run installs Debian's chromium)")
def test_report_renders_in_a_real_browser(capsys, two_runs, tmp_path, monkeypatch):
    from PIL import Image, ImageStat

    root, (run_a, run_b) = two_runs
    monkeypatch.setenv("GREENDIFF_LEDGER", str(root / "ledger.sqlite"))
    out = tmp_path / "report.html"
    assert report(capsys, run_a, run_b, "-o", out)[0] == 0
    with tempfile.TemporaryDirectory() as profile:
        flags = [*FLAGS, f"--user-data-dir={profile}"]
        dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", out.as_uri()], capture_output=True, text=True, timeout=120)
        shot = tmp_path / "shot.png"
        subprocess.run([CHROMIUM, *flags, "--window-size=1200,3000", f"--screenshot={shot}", out.as_uri()],
                       capture_output=True, text=True, timeout=120)
    html_tag = re.search(r"<html[^>]*>", dom.stdout).group(0)
    total = int(re.search(r'data-charts-total="(\d+)"', html_tag).group(1))
    assert total == 14 and f'data-charts-drawn="{total}"' in html_tag, html_tag  # every chart drew marks
    assert 'data-errors="0"' in html_tag  # no script or resource error, nothing on console.error
    assert "Uncaught" not in dom.stderr
    image = Image.open(shot).convert("L")
    assert image.size == (1200, 3000)
    assert ImageStat.Stat(image).stddev[0] > 20  # not a blank page
    assert len(image.getcolors(1 << 16)) > 30  # text, lines, the sample grids
    assert Path(shot).stat().st_size > 50_000


# -- run directories written by other tools or older versions (issue 18) -------------------------------

def _copy_run(run_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / run_dir.name
    shutil.copytree(run_dir, copy)
    return copy


@pytest.mark.parametrize(("content", "message"), [
    ("[1, 2]", "emissions.json: should be a JSON object, got list"),
    ('"a string"', "emissions.json: should be a JSON object, got str"),
    ('{"ledger_run_ids": ["1"]}', "emissions.json: ledger_run_ids should be a list of run ids"),
    ('{"ledger_run_ids": [99999999999999999999]}', "emissions.json: ledger_run_ids should be a list of run ids"),
    ('{"energy_kwh": 1.0}', "emissions.json: names no ledger run"),
    ('{"ledger_run_ids": [1', "emissions.json is not valid JSON"),
])
def test_a_run_directory_whose_emissions_json_is_damaged_is_one_line_naming_it(capsys, two_runs, tmp_path, monkeypatch,
                                                                                content, message):
    root, (run_a, _) = two_runs
    monkeypatch.setenv("GREENDIFF_LEDGER", str(root / "ledger.sqlite"))
    copy = _copy_run(run_a, tmp_path)
    (copy / "emissions.json").write_text(content)
    code, err = report(capsys, copy, "-o", tmp_path / "r.html")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0] and str(copy) in lines[0], err


def test_damaged_files_of_a_run_directory_are_warnings_naming_them(capsys, caplog, two_runs, tmp_path, monkeypatch):
    root, (run_a, _) = two_runs
    monkeypatch.setenv("GREENDIFF_LEDGER", str(root / "ledger.sqlite"))
    copy = _copy_run(run_a, tmp_path)
    emissions = json.loads((copy / "emissions.json").read_text())
    (copy / "emissions.json").write_text(json.dumps({**emissions, "carbon_aware": {"policy": 3}, "run_total_energy_kwh": "x"}))
    lines = (copy / "metrics.jsonl").read_text().splitlines()
    losses = sum('"loss"' in line for line in lines)
    garbage = [*lines, "not json", "[1, 2]", '{"loss": NaN, "energy_kwh": 0.1}', '"text"', lines[-1][: len(lines[-1]) // 2]]
    (copy / "metrics.jsonl").write_text("\n".join(garbage))
    (copy / "config.toml").write_text("[data\nbroken =")
    out = tmp_path / "r.html"
    code, err = report(capsys, copy, "-o", out)
    assert code == 0, err
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    n = len(lines)
    assert f"{copy}/metrics.jsonl: 4 lines not a JSON record (line {n + 1}, {n + 2}, {n + 4}, {n + 5}); skipped" in warned
    assert any(w.startswith(f"{copy}/emissions.json: carbon_aware.") and w.endswith("; ignored") for w in warned)
    assert any(w.startswith(f"{copy}/emissions.json: run_total_energy_kwh") for w in warned)
    assert any(w.startswith(f"{copy}/config.toml: cannot be read") for w in warned)
    page = out.read_text()
    assert "Loss against energy" in page and "Carbon-aware training" not in page
    from greendiff.report._collect import collect

    data = collect(str(copy), Ledger(root / "ledger.sqlite"))
    assert len(data.losses()) == losses  # the NaN loss and the damaged lines are not plotted
