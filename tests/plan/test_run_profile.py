from __future__ import annotations

from greendiff.plan import run_profile


def test_a_profile_hands_its_progress_to_on_log_and_forecasts_from_every_step(tmp_path, tiny_data, tiny_config, tracker):
    """run_profile trains through a trainer callback: ``on_log`` (a progress bar) sees the start record and one
    record per step, and the forecast is made from all the profiled steps."""
    told = []
    forecast = run_profile(tiny_config(run__max_steps=200), tiny_data, tracker, tmp_path / "profile", steps=8, warmup=2,
                           on_log=told.append)
    assert [r.get("event", "log") for r in told] == ["start"] + ["log"] * 8
    assert [r["step"] for r in told[1:]] == list(range(1, 9))
    assert (forecast.profiled_steps, forecast.steps) == (8, 200)
    assert forecast.energy_per_step_j > 0 and forecast.seconds_per_step > 0
