"""Closed-form physics used by the simulated lab, each with its source (see PHYSICS.md).

Pure functions of numbers: no state, no clock. The stateful models in
`sputter_tool.py` call these.
"""

from __future__ import annotations

import math

from scipy.optimize import brentq

# --- quartz (PHYSICS.md §5, textbook) -------------------------------------------------
RHO_QUARTZ_G_CM3 = 2.648
MU_QUARTZ_G_CM_S2 = 2.947e11
N_QUARTZ_HZ_A = 1.668e13  # frequency constant of AT-cut quartz, Hz·Å
SCCM_TORR_L_S = 0.0127  # 1 sccm in Torr·L/s (PHYSICS.md §2)
BOLTZMANN_EV_K = 8.617333e-5


def sauerbrey_Hz_cm2_per_ug(f0_Hz: float) -> float:
    """C_f = 2 f0² / sqrt(ρq μq), in Hz·cm²/µg (≈81.5 at 6 MHz)."""
    return 2 * f0_Hz**2 / math.sqrt(RHO_QUARTZ_G_CM3 * MU_QUARTZ_G_CM_S2) * 1e-6


def zmatch_thickness_A(f0_Hz: float, f_Hz: float, density_g_cm3: float, z_ratio: float) -> float:
    """Film thickness from crystal frequencies by the Lu–Lewis (Z-match) equation.

    T = Nq ρq / (π ρf Z f) · atan(Z · tan(π (f0 − f) / f0))
    """
    if f_Hz >= f0_Hz:
        return -zmatch_thickness_A(f_Hz, f0_Hz, density_g_cm3, z_ratio) if f_Hz > f0_Hz else 0.0
    phase = math.pi * (f0_Hz - f_Hz) / f0_Hz
    return (N_QUARTZ_HZ_A * RHO_QUARTZ_G_CM3 / (math.pi * density_g_cm3 * z_ratio * f_Hz)
            * math.atan(z_ratio * math.tan(phase)))


def zmatch_areal_mass_g_cm2(f0_Hz: float, f_Hz: float, z_ratio: float) -> float:
    """Areal mass on the crystal that the Z-match equation implies (density cancels)."""
    return zmatch_thickness_A(f0_Hz, f_Hz, 1.0, z_ratio) * 1e-8


def frequency_for_areal_mass_Hz(f0_Hz: float, mass_g_cm2: float, z_ratio: float) -> float:
    """Inverse of `zmatch_areal_mass_g_cm2`: the loaded crystal's frequency."""
    if mass_g_cm2 <= 0:
        return f0_Hz
    # the quarter-wave limit (π(f0−f)/f0 → π/2, f → f0/2) bounds any physical solution
    low = f0_Hz * 0.5 + 1e-6
    return brentq(lambda f: zmatch_areal_mass_g_cm2(f0_Hz, f, z_ratio) - mass_g_cm2,
                  low, f0_Hz, xtol=1e-6, rtol=1e-15)


# --- conductivity (PHYSICS.md §3, §6) -------------------------------------------------
def arrhenius(sigma_ref_S_cm: float, ea_eV: float, temp_C: float, ref_C: float = 25.0) -> float:
    """σ(T) from σ at the reference temperature and the activation energy."""
    t, t_ref = temp_C + 273.15, ref_C + 273.15
    return sigma_ref_S_cm * math.exp(-ea_eV / BOLTZMANN_EV_K * (1 / t - 1 / t_ref))


def cosine_law_factor(radius_cm: float, throw_cm: float) -> float:
    """Thickness at `radius_cm` off axis relative to the axis, for a small source
    facing a flat substrate at distance `throw_cm`: (1 + (r/h)²)⁻²."""
    return (1 + (radius_cm / throw_cm) ** 2) ** -2
