"""The CLI's progress bars fit the console: the label, the count and a bar always show; the text beside them keeps
its most important fields (whole words) in what is left (at 80 columns it lost all three: `tra… 20/…`)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from rich.console import Console

from greendiff.cli._progress import RichProgress, fit_fields
from greendiff.train import LogEvent, PhaseProgress
from greendiff.workflows._progress import Advance

FIRST = LogEvent(20, 0.82814, 1e-4, 159.2, 5.29e-6, 2.96e-7, None, warmup=True, projected_energy_kwh=2.6e-4,
                 projected_with_warmup=True)


def shown(width: int, label: str, total: int, *events) -> list[str]:
    """The bar's last frame on a terminal ``width`` columns wide (not interactive: one frame, printed at the end)."""
    console = Console(width=width, force_terminal=True, force_interactive=False, record=True)
    progress = RichProgress(console)
    progress.on_start(label, total)
    for event in events:
        progress.on_log(event)
    progress.on_end()
    return [line for line in console.export_text().splitlines() if line.strip()]


@pytest.mark.parametrize("width", [60, 80, 120])
def test_a_training_bar_keeps_its_label_count_and_bar_and_the_most_important_figures(width):
    lines = shown(width, "train", 1000, FIRST)
    assert len(lines) == 1 and all(len(line) <= width for line in lines), lines
    line = lines[0]
    assert line.startswith("train ━") and " 20/1000 " in line and "…" not in line
    assert "loss 0.8281 · " in line and "5.29 mWh" in line  # the first to keep
    if width >= 80:
        assert "5.29 mWh · 0.296 mg CO2e" in line
    if width >= 120:
        assert "loss 0.8281 · 159 img/s incl. warm-up · 5.29 mWh · 0.296 mg CO2e" in line


def test_a_wide_console_shows_every_figure_in_order():
    line, = shown(200, "train", 1000, FIRST)
    assert ("20/1000 loss 0.8281 · 159 img/s incl. warm-up · 5.29 mWh · 0.296 mg CO2e · projected 260 mWh incl. "
            "warm-up") in line


@pytest.mark.parametrize("label", ["finetune", "distill", "profile", "sample"])
def test_other_bars_keep_their_label_and_count_at_80_columns(label):
    lines = shown(80, label, 64, Advance(6, "batch 3/32 · 1.23 mWh · 0.296 mg CO2e · sampling 50 steps with the EMA weights"))
    assert all(len(line) <= 80 for line in lines), lines
    assert lines[0].startswith(f"{label} ━") and " 6/64 " in lines[0] and "batch 3/32 · 1.23 mWh" in lines[0]


def test_a_pause_row_under_the_bar_keeps_both_labels_and_cuts_its_text_at_a_word():
    wait = PhaseProgress("wait", 600, 3600, "paused for a cleaner grid until 2022-06-01 05:00 UTC")
    lines = shown(60, "train", 1000, FIRST, wait)
    assert len(lines) == 2 and all(len(line) <= 60 for line in lines), lines
    assert lines[0].startswith("train  ━") and " 20/1000 " in lines[0] and "loss 0.8281" in lines[0]
    assert lines[1].startswith("paused ━") and " 10.0 min/1.00 h paused for a… " in lines[1]
    wide, = [line for line in shown(120, "train", 1000, FIRST, wait) if line.startswith("paused")]
    assert "paused for a cleaner grid until 2022-06-01 05:00 UTC" in wide


def test_fit_fields_keeps_the_most_important_whole_fields_in_their_order():
    fields = ("loss 0.8281", "159 img/s", "5.29 mWh", "0.296 mg CO2e")
    assert fit_fields(fields, 200, (0, 2, 3, 1)) == "loss 0.8281 · 159 img/s · 5.29 mWh · 0.296 mg CO2e"
    assert fit_fields(fields, 40, (0, 2, 3, 1)) == "loss 0.8281 · 5.29 mWh · 0.296 mg CO2e"
    assert fit_fields(fields, 22, (0, 2, 3, 1)) == "loss 0.8281 · 5.29 mWh"
    assert fit_fields(fields, 21, (0, 2, 3, 1)) == "loss 0.8281"
    assert fit_fields(fields, 8, (0, 2, 3, 1)) == "loss…"
    assert fit_fields(fields, 4, (0, 2, 3, 1)) == ""
    assert fit_fields(("batch 3/32", "1.23 mWh"), 15) == "batch 3/32"
    assert fit_fields((), 10) == ""
