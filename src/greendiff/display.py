"""Quantities as people read them: fixed-point numbers (never ``1.6e-07``), scaled to a unit that is printed.

One formatter for every human-facing figure, at the bottom of the layers so every package can use it: the
emissions statement, the report, the CLI tables, stop reasons and notes
(``greendiff.cli._render`` uses these). Machine-readable outputs keep one unit per quantity (kWh, kg)
and do not come through here.

Example:
    >>> fixed_point(1.644e-07), fixed_point(1234.6), fixed_point(9.996)
    ('0.000000164', '1235', '10.0')
    >>> energy_text(0.35), mass_text(1.644e-07), mass_text(1640.0)
    ('350 Wh', '0.164 mg', '1.64 t')
    >>> band_text(0.45, 0.55, ENERGY_UNITS, central=0.5), band_text(0.9, 1.1, ENERGY_UNITS, central=1.0)
    ('450–550 Wh', '0.900–1.10 kWh')
"""

from __future__ import annotations

import math
from decimal import Decimal

#: Units of energy from kWh, largest first: (name, size in kWh).
ENERGY_UNITS: tuple[tuple[str, float], ...] = (("MWh", 1e3), ("kWh", 1.0), ("Wh", 1e-3), ("mWh", 1e-6))
#: Units of mass from kg, largest first: (name, size in kg).
MASS_UNITS: tuple[tuple[str, float], ...] = (("t", 1e3), ("kg", 1.0), ("g", 1e-3), ("mg", 1e-6))
#: Units of time from seconds, largest first.
TIME_UNITS: tuple[tuple[str, float], ...] = (("h", 3600.0), ("min", 60.0), ("s", 1.0))


def fixed_point(value: float, significant: int = 3) -> str:
    """``value`` with ``significant`` significant digits, in fixed-point notation (``"n/a"`` if not finite);
    a value of ``significant`` digits or more before the point is rounded to a whole number."""
    if not math.isfinite(value):
        return "n/a"
    if abs(value) >= 10 ** (significant - 1):
        return f"{value:.0f}"
    rounded = float(f"{value:.{significant}g}")
    if rounded == 0:
        return "0"
    decimals = max(0, significant - 1 - math.floor(math.log10(abs(rounded))))
    return f"{rounded:.{decimals}f}"


def plain_number(value: float, significant: int = 3) -> str:
    """``value`` rounded to ``significant`` digits in fixed-point notation, trailing zeros dropped (chart ticks):
    ``plain_number(2e-07) == "0.0000002"``."""
    if not math.isfinite(value):
        return "n/a"
    text = format(Decimal(repr(float(f"{value:.{significant}g}"))), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def scale_for(values: list[float], units: tuple[tuple[str, float], ...]) -> tuple[str, float]:
    """One unit for a set of values (a chart's axis): the unit of the largest."""
    return unit_for(max((abs(v) for v in values if math.isfinite(v)), default=0.0), units)


def unit_for(value: float, units: tuple[tuple[str, float], ...]) -> tuple[str, float]:
    """The largest unit in which ``value`` (in the base unit) is at least 1; the smallest otherwise."""
    for name, size in units:
        if abs(value) >= size:
            return name, size
    return units[-1]


def quantity_text(value: float, units: tuple[tuple[str, float], ...], significant: int = 3) -> str:
    """``value`` (in the base unit of ``units``) scaled and printed with its unit: ``"28.0 g"``."""
    if not math.isfinite(value):
        return "n/a"
    name, size = unit_for(value, units)
    return f"{fixed_point(value / size, significant)} {name}"


def band_text(low: float, high: float, units: tuple[tuple[str, float], ...], central: float | None = None,
              significant: int = 3) -> str:
    """A range in one unit, the unit :func:`quantity_text` prints ``central`` in (default: ``high``):
    ``"450–550 Wh"``."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "n/a"
    name, size = unit_for(high if central is None or not math.isfinite(central) else central, units)
    return f"{fixed_point(low / size, significant)}–{fixed_point(high / size, significant)} {name}"


def energy_text(kwh: float) -> str:
    """Energy given in kWh, scaled: ``"1.20 kWh"``, ``"350 Wh"``, ``"0.0139 mWh"``."""
    return quantity_text(kwh, ENERGY_UNITS)


def mass_text(kg: float) -> str:
    """A mass (CO2e) given in kg, scaled: ``"1.64 t"``, ``"28.0 g"``, ``"0.164 mg"``."""
    return quantity_text(kg, MASS_UNITS)


def duration_text(seconds: float) -> str:
    """A duration given in seconds, scaled: ``"1.50 h"``, ``"27.8 min"``, ``"4.20 s"``; ``"<1 ms"`` below a
    millisecond (a run that measured nothing), not ``"0.000000954 s"``.

    Example:
        >>> duration_text(5400), duration_text(9.54e-7), duration_text(0)
        ('1.50 h', '<1 ms', '0 s')
    """
    return "<1 ms" if 0 < seconds < 1e-3 else quantity_text(seconds, TIME_UNITS)
