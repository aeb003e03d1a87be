"""Planning: when and where to run, and on what hardware. Before a run: :func:`plan_window` (the cleanest
hours on an hourly intensity trace), :func:`rank_regions` (countries and cloud regions by grams per kWh),
:func:`run_profile` (a short measured profile forecast to the whole run), the hardware sweeps behind
``greendiff hardware``. During one: :class:`CarbonAwareController`, a trainer callback that pauses while the
grid is dirtier than a threshold.

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

from greendiff.plan._carbon_aware import CarbonAwareController, SimulatedClock, controller_for
from greendiff.plan._hardware import (
    Estimate, StepCost, Sweep, estimate_gpus, limits_to_try, match_gpu, measure_cost, sweep_power_limits, training_steps,
)
from greendiff.plan._profile import (
    WARMUP_COST, Forecast, PhaseCosts, forecast, planned_counts, profile_config, run_profile,
)
from greendiff.plan._regions import INDUSTRY_PUE, LocalCost, RegionOption, job_emissions_kg, local_cost, rank_regions
from greendiff.plan._window import Job, WindowPlan, plan_window

__all__ = [
    # when: the cleanest window, and pausing while training
    "Job", "WindowPlan", "plan_window", "CarbonAwareController", "SimulatedClock", "controller_for",
    # where
    "INDUSTRY_PUE", "LocalCost", "RegionOption", "job_emissions_kg", "local_cost", "rank_regions",
    # how much: a measured profile forecast to the whole run
    "Forecast", "PhaseCosts", "forecast", "planned_counts", "profile_config", "run_profile", "WARMUP_COST",
    # on what hardware
    "StepCost", "Sweep", "Estimate", "estimate_gpus", "limits_to_try", "match_gpu", "measure_cost", "sweep_power_limits", "training_steps",
]
