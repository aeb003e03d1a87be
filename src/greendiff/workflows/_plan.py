"""Planning a job before it runs: the bundled regions ranked by its emissions, compared with where the user runs
now (:func:`run_plan_regions`), and the lowest-emission time on an hourly intensity series before a deadline
(:func:`run_plan_window`). Both resolve the location, provider and PUE here, so the CLI only parses and renders.

Example:
    >>> from datetime import datetime, timezone
    >>> from greendiff.workflows import WindowJob, run_plan_window
    >>> plan = run_plan_window(WindowJob(energy_kwh=2.0, duration_h=2.0, grid="CISO",
    ...                                  start=datetime(2022, 6, 1, tzinfo=timezone.utc),
    ...                                  deadline=datetime(2022, 6, 2, tzinfo=timezone.utc)))
    >>> plan.contiguous.emissions_g <= plan.now.emissions_g
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from greendiff.carbon import (
    Location, Pue, resolve_location, resolve_provider, resolve_pue, unsourced_cloud_regions,
)
from greendiff.display import duration_text
from greendiff.errors import UserInputError
from greendiff.plan import Job, LocalCost, RegionOption, WindowPlan, local_cost, plan_window, rank_regions


@dataclass(frozen=True)
class RegionsJob:
    """Rank places to run a job of ``energy_kwh`` (IT energy, kWh).

    Args:
        energy_kwh: IT energy of the job.
        providers: keep only these (``gcp``, ``aws``, ``azure``, ..., ``country``); empty keeps all.
        continent: keep only this continent (case-insensitive).
        country, cloud, grid: where the user runs now, to compare with (all None: no comparison).
        pue: the user's PUE (>= 1; None: the provider's figure or 1.0). Country rows are priced at it too (your
            hardware moved there), so the country you run in compares at 0 %.
    """

    energy_kwh: float
    providers: tuple[str, ...] = ()
    continent: str | None = None
    country: str | None = None
    cloud: str | None = None
    grid: str | None = None
    pue: str | float | None = None


@dataclass(frozen=True)
class RegionsOutcome:
    """The places, lowest emissions first, the job priced where the user runs now (None: location unknown),
    the PUE country rows are priced at, and the cloud regions left out for want of a citable figure."""

    energy_kwh: float
    regions: list[RegionOption]
    current: LocalCost | None
    pue: Pue
    dropped: dict[str, str] = field(default_factory=dict)

    def versus(self, option: RegionOption) -> float | None:
        """The change in emissions of running at ``option`` instead of the current location (-0.4 = 40 % less)."""
        if self.current is None or self.current.emissions_kg <= 0:
            return None
        return option.emissions_kg / self.current.emissions_kg - 1

    def to_dict(self) -> dict:
        return {"energy_kwh": self.energy_kwh, "basis": "location-based",
                "country_pue": {"value": self.pue.value, "source": self.pue.source},
                "current": None if self.current is None else self.current.to_dict(),
                "regions": [o.to_dict() for o in self.regions], "dropped": dict(self.dropped)}


def run_plan_regions(job: RegionsJob) -> RegionsOutcome:
    """Rank the bundled cloud regions and countries by ``job``'s emissions (PUE included), on one basis with the
    user's own location: the same rule, and the user's PUE for the country rows."""
    location = resolve_location(job.country, job.cloud, job.grid)
    pue = resolve_pue(job.pue, location)
    options = rank_regions(job.energy_kwh, tuple(p.lower() for p in job.providers), job.continent, pue)
    return RegionsOutcome(job.energy_kwh, options, local_cost(location, pue, job.energy_kwh), pue,
                          dict(unsourced_cloud_regions()))


@dataclass(frozen=True)
class WindowJob:
    """When to run a job of ``energy_kwh`` lasting ``duration_h`` between ``start`` and ``deadline``.

    Args:
        energy_kwh: IT energy of the job.
        duration_h: its running time in hours.
        start, deadline: the earliest start and latest end (timezone-aware).
        grid: an hourly series, a bundled US grid (CISO, PJM, ...) or a ``timestamp,intensity`` CSV; or
        live: ``uk`` for Great Britain's 48 h forecast (``none``: use ``grid``). Exactly one of the two.
        pause_cost_kwh: energy of one pause (checkpoint + restart) of an interruptible schedule.
        pue: data-centre PUE (>= 1; None: the provider's figure or 1.0).
    """

    energy_kwh: float
    duration_h: float
    start: datetime
    deadline: datetime
    grid: str | None = None
    live: str = "none"
    pause_cost_kwh: float = 0.0
    pue: str | float | None = None


def run_plan_window(job: WindowJob) -> WindowPlan:
    """Start now, the best contiguous window and the best interruptible schedule of ``job``, with their emissions."""
    if job.live not in ("none", "uk"):
        raise UserInputError(f"--live {job.live}: only 'uk' offers a forecast (Electricity Maps' past-range has none); "
                             "use --live uk, --grid NAME or --grid FILE.csv")
    if (job.grid is None) == (job.live == "none"):
        raise UserInputError("give exactly one hourly series: --grid NAME|FILE.csv or --live uk")
    location = Location(grid=job.grid) if job.grid else Location(country="GBR")
    provider = resolve_provider(location, job.live)
    pue_value = resolve_pue(job.pue, location).value
    window_h = (job.deadline - job.start).total_seconds() / 3600
    if job.duration_h > window_h + 1e-9:
        raise UserInputError(f"the job needs {duration_text(job.duration_h * 3600)} but --start to --deadline is "
                             f"{duration_text(window_h * 3600)}; move the deadline or shorten the job")
    intensity = provider.series(job.start, job.deadline)
    return plan_window(list(intensity.segments), Job(job.energy_kwh, job.duration_h, job.pause_cost_kwh), pue_value,
                       intensity.source, intensity.notes)

