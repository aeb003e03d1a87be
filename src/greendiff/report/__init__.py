"""Reports people read: one self-contained HTML file per set of runs, and the emissions statement.

Example:
    >>> from greendiff.report import nice_ticks
    >>> nice_ticks(0.0, 0.93)
    [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
"""

from __future__ import annotations

from greendiff.report._collect import RunData, collect, power_series, resolve
from greendiff.report._html import build_report, config_differences, flatten, pareto
from greendiff.report._statement import emissions_statement
from greendiff.report._svg import Series, bar_chart, line_chart, nice_ticks, scatter_chart

__all__ = [
    "RunData",
    "Series",
    "bar_chart",
    "build_report",
    "collect",
    "config_differences",
    "emissions_statement",
    "flatten",
    "line_chart",
    "nice_ticks",
    "pareto",
    "power_series",
    "resolve",
    "scatter_chart",
]
