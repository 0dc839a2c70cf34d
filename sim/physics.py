"""Closed-form physics used by the simulated lab, each with its source (see PHYSICS.md).

Pure functions of numbers: no state, no clock. The stateful models in
`sputter_tool.py` call these.
"""

from __future__ import annotations

import math

SCCM_TORR_L_S = 0.0127  # 1 sccm in Torr·L/s (PHYSICS.md §2)
BOLTZMANN_EV_K = 8.617333e-5


# --- conductivity (PHYSICS.md §3, §6) -------------------------------------------------
def arrhenius(sigma_ref_S_cm: float, ea_eV: float, temp_C: float, ref_C: float = 25.0) -> float:
    """σ(T) from σ at the reference temperature and the activation energy."""
    t, t_ref = temp_C + 273.15, ref_C + 273.15
    return sigma_ref_S_cm * math.exp(-ea_eV / BOLTZMANN_EV_K * (1 / t - 1 / t_ref))


def cosine_law_factor(radius_cm: float, throw_cm: float) -> float:
    """Thickness at `radius_cm` off axis relative to the axis, for a small source
    facing a flat substrate at distance `throw_cm`: (1 + (r/h)²)⁻²."""
    return (1 + (radius_cm / throw_cm) ** 2) ** -2
