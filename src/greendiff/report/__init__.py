"""Reports people read: one self-contained HTML file per set of runs, and the emissions statement.

``collect`` reads run directories or ledger ids into :class:`RunData` (a run directory: the whole run, every
segment of a resumed run, as :func:`run_segments` finds them); ``build_report`` renders them
(charts of loss and quality against energy, savings against the first run, an emissions statement per
run) into one HTML file with no external resources. The SVG charts and table helpers stay in the
package's modules.

Example:
    >>> from greendiff.report import flatten
    >>> flatten({"optim": {"lr": 0.001, "ema": True}, "recipe": "green"})
    {'optim.lr': 0.001, 'optim.ema': True, 'recipe': 'green'}
"""

from __future__ import annotations

from greendiff.report._collect import RunData, collect
from greendiff.report._html import build_report, flatten
from greendiff.report._segments import RunSegments, run_segments
from greendiff.report._statement import emissions_statement

__all__ = ["RunData", "RunSegments", "build_report", "collect", "emissions_statement", "flatten", "run_segments"]
