"""Planning: when and where to run, and on what hardware.

Example:
    >>> from datetime import datetime, timedelta, timezone
    >>> from greendiff.carbon import IntensitySegment
    >>> from greendiff.plan import Job, plan_window
    >>> t0 = datetime(2022, 6, 1, tzinfo=timezone.utc)
    >>> hours = [400, 300, 100, 120, 500, 90]
    >>> segments = [IntensitySegment(t0 + timedelta(hours=i), t0 + timedelta(hours=i + 1), v) for i, v in enumerate(hours)]
    >>> plan = plan_window(segments, Job(energy_kwh=2.0, duration_h=2.0))
    >>> plan.now.emissions_g, plan.contiguous.emissions_g, plan.interruptible.emissions_g
    (700.0, 220.0, 190.0)
"""

from __future__ import annotations

from greendiff.plan._carbon_aware import CarbonAwareController, SimulatedClock, WallClock, controller_for
from greendiff.plan._hardware import (
    Estimate, GpuSpec, StepCost, Sweep, estimate_gpus, gpu_table, limits_to_try, match_gpu, measure_cost, sweep_power_limits,
    training_steps,
)
from greendiff.plan._profile import Forecast, PhaseCosts, forecast, planned_counts, profile_config, run_profile
from greendiff.plan._regions import CONTINENTS, INDUSTRY_PUE, RegionOption, rank_regions
from greendiff.plan._window import Job, Schedule, WindowPlan, best_contiguous_start_s, interruptible_slots, plan_window, schedule_emissions_g

__all__ = [
    "Estimate",
    "GpuSpec",
    "StepCost",
    "Sweep",
    "estimate_gpus",
    "gpu_table",
    "limits_to_try",
    "match_gpu",
    "measure_cost",
    "sweep_power_limits",
    "training_steps",
    "CarbonAwareController",
    "SimulatedClock",
    "WallClock",
    "controller_for",
    "CONTINENTS",
    "INDUSTRY_PUE",
    "Forecast",
    "PhaseCosts",
    "RegionOption",
    "forecast",
    "planned_counts",
    "profile_config",
    "rank_regions",
    "run_profile",
    "Job",
    "Schedule",
    "WindowPlan",
    "best_contiguous_start_s",
    "interruptible_slots",
    "plan_window",
    "schedule_emissions_g",
]
