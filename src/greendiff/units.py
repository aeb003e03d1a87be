"""Unit constants. Names say the unit; conversions happen in one place."""

from __future__ import annotations

J_PER_KWH = 3.6e6
J_PER_WH = 3.6e3
MJ_TO_J = 1e-3  # NVML reports millijoules
UJ_TO_J = 1e-6  # powercap reports microjoules
MW_TO_W = 1e-3  # NVML reports milliwatts
G_PER_KG = 1e3
BYTES_PER_GB = 1e9


def joules_to_kwh(energy_j: float) -> float:
    return energy_j / J_PER_KWH


def kwh_to_joules(energy_kwh: float) -> float:
    return energy_kwh * J_PER_KWH
