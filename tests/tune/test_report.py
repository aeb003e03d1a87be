from __future__ import annotations

import random

import pytest

from greendiff.train import resolve_config
from greendiff.tune import StateTotals, TrialRow, best_row, export_toml, pareto_svg, summarize_study
from greendiff.tune._report import pareto_front
from greendiff.tune._study import exported_config


def row(number, state="COMPLETE", values=(1.0,), energy=1.0, steps=10, params=None):
    return TrialRow(number, state, values, params or {"optim.lr": 1e-3}, energy, 0.1, energy / 2, steps)


def test_pareto_front_is_the_non_dominated_set():
    rng = random.Random(0)
    for _ in range(30):
        rows = [row(i, values=(rng.randint(0, 9), rng.randint(0, 9))) for i in range(12)] + [row(99, "PRUNED", (0.0, 0.0))]
        front = pareto_front(rows)
        done = [r for r in rows if r.state == "COMPLETE"]
        brute = [r for r in done if not any(all(o.values[i] <= r.values[i] for i in (0, 1)) and o.values != r.values for o in done)]
        assert sorted(r.number for r in front) == sorted(r.number for r in brute)
        assert [r.values[1] for r in front] == sorted(r.values[1] for r in front)


def test_summary_without_complete_trials_has_no_pruning_estimate(spec):
    rows = [row(0, "PRUNED", energy=1.0), row(1, "FAIL", values=(), energy=0.5)]
    summary = summarize_study(spec(), rows)
    assert summary.energy_kwh == 1.5 and summary.no_pruning_estimate_kwh is None and summary.best_trial is None


def test_best_in_pareto_mode_is_the_front_point_with_the_lowest_metric(spec):
    rows = [row(0, values=(5.0, 1.0)), row(1, values=(3.0, 2.0)), row(2, values=(4.0, 3.0))]
    assert best_row(spec(mode="pareto", pruner="none"), rows).number == 1
    svg = pareto_svg(rows, "fid")
    assert svg.startswith("<svg") and svg.count("<circle") == 3 and svg.count("#2e7d32") == 3  # two front points and the line


def test_exported_toml_round_trips_into_the_trainer(tmp_path, spec):
    params = {"optim.lr": 2.5e-3, "optim.batch_size": 8, "model.block_out_channels": "8,16"}
    s = spec(space={"optim.lr": {"low": 1e-4, "high": 1e-2, "log": True}, "optim.batch_size": {"choices": [8, 16]},
                    "model.block_out_channels": {"choices": [[8, 16], [16, 32]]}})
    text = export_toml(s, row(3, values=(12.5,), steps=77, params=params), "study-x", "fid")
    assert text.startswith("# tuned by greendiff tune: study 'study-x', trial 3")
    path = tmp_path / "best.toml"
    path.write_text(text)
    config = resolve_config(path)
    assert config == exported_config(s, {"optim.lr": 2.5e-3, "optim.batch_size": 8, "model.block_out_channels": (8, 16)}, 77)
    assert (config.optim.lr, config.optim.batch_size, config.model.block_out_channels, config.run.max_steps) == (2.5e-3, 8, (8, 16), 77)
    assert config.model.preset == "nano" and config.data.resolution == 8  # the base travels too


@pytest.mark.parametrize("mode", ["budget", "pareto"])
def test_only_budget_mode_fixes_the_steps(spec, mode):
    s = spec(mode=mode, pruner="none")
    assert exported_config(s, {"optim.lr": 1e-3}, 55).run.max_steps == (55 if mode == "budget" else 30)


SCIENTIFIC = r"\d[eE][+-]?\d"


def test_the_exported_header_and_the_plot_print_quantities_in_fixed_point_with_a_scaled_unit(spec):
    # issue 20: "# fid 12.5 with 0.000153 kWh (trial budget 5e-05 kWh ...)" and axis ticks such as 7.67e-05
    import re

    s = spec(trial_budget_kwh=5e-5)
    text = export_toml(s, row(3, values=(0.00001234,), energy=1.53e-4, steps=77), "study-x", "kid")
    assert text.splitlines()[1] == "# kid 0.00001234 with 153 mWh (trial budget 50.0 mWh, 77 steps)"
    rows = [row(0, values=(312.456, 7.67e-5)), row(1, values=(250.0, 2.3e-4))]
    svg = pareto_svg(rows, "fid")
    assert "training energy (mWh)" in svg and ">76.7<" in svg and ">230<" in svg
    assert "<title>trial 0: fid 312.5, 76.7 mWh</title>" in svg
    assert not any(re.search(SCIENTIFIC, t) for t in re.findall(r">([^<]*)<", svg)) and not re.search(SCIENTIFIC, text.splitlines()[1])


def test_a_pruned_trial_s_stop_reason_prints_its_score_in_fixed_point():
    from greendiff.train import EvalEvent
    from greendiff.tune import TrialPruner

    class Always:
        def report(self, value, step):
            pass

        def should_prune(self):
            return True

    stop = TrialPruner(Always(), "kid", "budget", "median").on_evaluation(
        None, EvalEvent(step=5, energy_kwh=1e-6, eval_energy_kwh=0.0, scores={"kid": 0.0000123}))
    assert stop.reason == "pruned by the median pruner after evaluation 1 (kid 0.00001230)"


def test_a_bad_trial_budget_is_echoed_in_fixed_point(spec):
    from greendiff.errors import UserInputError
    from greendiff.tune import check_spec

    with pytest.raises(UserInputError, match=r"got -0\.00005$"):
        check_spec(spec(trial_budget_kwh=-5e-5))


def test_a_trial_just_over_its_budget_never_reads_over_budget_by_0_percent():
    # a tiny tune printed "stopped at the budget, over budget by 0%" for 20.1 mWh against 20.0 mWh
    from greendiff.tune import trial_note

    assert trial_note("energy budget: ...", 2.0082e-5, 2e-5) == "stopped at the budget, over budget by 0.41%"
    assert trial_note("energy budget: ...", 1.25e-4, 5e-5) == "stopped at the budget, over budget by 150%"
