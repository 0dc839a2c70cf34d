"""The one QCM model: an AT-cut quartz crystal's frequency ↔ areal mass ↔ film thickness.

Pure functions of numbers (PHYSICS.md §5): the simulated crystal (`sim.crystal`) uses them to
turn the mass a tool puts on it into a frequency, and every thickness monitor emulator uses
them to turn frequencies back into the rate and thickness the instrument displays, so the
same film on the same crystal reads the same on every monitor.

- Sauerbrey: Δf = −C_f·Δm, C_f = 2 f_q² / √(ρ_q μ_q) (≈ 81.5 Hz·cm²/µg at 6 MHz), the
  small-load limit; kept for checks, no instrument computes with it.
- Z-match (Lu–Lewis): m = N_q ρ_q / (π Z F_c) · atan(Z · tan(π (F_q − F_c) / F_q)), thickness
  m / ρ_f, with F_q the uncoated crystal's frequency, F_c the coated crystal's now and Z the
  film's Z-ratio (quartz acoustic impedance over the film's).

Which formula the instruments use, and why both emulators use the same one: INFICON documents
one thickness equation for its monitors and controllers, the Z-match equation above with the
active film's density and Z-ratio and F_q defined as the *uncoated* crystal's frequency
(protocols.md §1.1 quotes it as written in INFICON manuals; which section of the SQM-160
manual PN 074-511 and of the SQC-310 manual PN 074-550 prints it is unverified). So
`thickness_since_zero_A` is that equation taken between the frequency at the last zero and
now, both measured from F_q, times the toolings: the film grown since the zero, even on a
crystal that already carries earlier films. The emulators take F_q from the simulated crystal,
as if the instrument had measured it when the fresh crystal was installed (how the real
instruments learn F_q is an assumption). Using the zero frequency as F_q instead (what the
SQM-160 emulator did) treats the film already on the crystal as quartz: identical for Z = 1,
but a Cu film (Z 0.437) grown on a crystal at 5.9 MHz reads 0.2 % thin that way.
Frequency constant N_q = 1.668e13 Hz·Å and ρ_q = 2.648 g/cm³ as PHYSICS.md §5 (INFICON's
manuals print 1.661e13 Hz·Å and 2.649 g/cm³, per protocols.md; the simulated crystal and the
instruments share one pair, so a reading carries no error from the choice).
"""

from __future__ import annotations

import math

RHO_QUARTZ_G_CM3 = 2.648
MU_QUARTZ_G_CM_S2 = 2.947e11
N_QUARTZ_HZ_A = 1.668e13  # frequency constant of AT-cut quartz, Hz·Å
A_PER_CM = 1e8


def sauerbrey_Hz_cm2_per_ug(f0_Hz: float) -> float:
    """C_f = 2 f0² / sqrt(ρq μq), in Hz·cm²/µg (≈81.5 at 6 MHz)."""
    return 2 * f0_Hz**2 / math.sqrt(RHO_QUARTZ_G_CM3 * MU_QUARTZ_G_CM_S2) * 1e-6


def zmatch_thickness_A(f0_Hz: float, f_Hz: float, density_g_cm3: float, z_ratio: float) -> float:
    """Film thickness in Å that loads a crystal of uncoated frequency `f0_Hz` down to `f_Hz`
    (negative above `f0_Hz`, so that differences stay signed)."""
    if f_Hz >= f0_Hz:
        return -zmatch_thickness_A(f_Hz, f0_Hz, density_g_cm3, z_ratio) if f_Hz > f0_Hz else 0.0
    phase = math.pi * (f0_Hz - f_Hz) / f0_Hz
    return (N_QUARTZ_HZ_A * RHO_QUARTZ_G_CM3 / (math.pi * density_g_cm3 * z_ratio * f_Hz)
            * math.atan(z_ratio * math.tan(phase)))


def zmatch_areal_mass_g_cm2(f0_Hz: float, f_Hz: float, z_ratio: float) -> float:
    """Areal mass on the crystal that the Z-match equation implies (density cancels)."""
    return zmatch_thickness_A(f0_Hz, f_Hz, 1.0, z_ratio) * 1e-8  # Å·g/cm³ -> g/cm²


def frequency_for_areal_mass_Hz(f0_Hz: float, mass_g_cm2: float, z_ratio: float) -> float:
    """Inverse of `zmatch_areal_mass_g_cm2`: the loaded crystal's frequency.

    Newton's method on the Z-match equation with its exact derivative, from the Z = 1
    solution (closed form: f = c·f0 / (m·f0 + c), c = N_q·ρ_q·1e-8), to a step below
    NEWTON_TOL_HZ: a deterministic function of its arguments (no history), within 3e-7 Hz
    of the bracketing solve it replaces (scipy's brentq at xtol 1e-6 Hz, about ten times
    slower). The last answer is kept: the same crystal state asked again (the readings of
    one sample) is not solved again. A mass at or past the quarter-wave limit, or an
    iteration that does not settle, goes to brentq, which raises for the former as before."""
    if mass_g_cm2 <= 0:
        return f0_Hz
    global _last_solve
    last = _last_solve
    if last[0] == f0_Hz and last[1] == mass_g_cm2 and last[2] == z_ratio:
        return last[3]
    f = _newton_frequency_Hz(f0_Hz, mass_g_cm2, z_ratio)
    if f is None:
        f = _bracketed_frequency_Hz(f0_Hz, mass_g_cm2, z_ratio)
    _last_solve = (f0_Hz, mass_g_cm2, z_ratio, f)
    return f


#: Newton stops once a step is below this (Hz); the next step would be ~1e-12 Hz
NEWTON_TOL_HZ = 1e-7
NEWTON_MAX_STEPS = 40
#: (f0, mass, Z, frequency) of the last solve
_last_solve: tuple[float, float, float, float] = (math.nan, math.nan, math.nan, math.nan)


def _newton_frequency_Hz(f0_Hz: float, mass_g_cm2: float, z_ratio: float) -> float | None:
    """Newton's method kept inside the bracket (f0/2, f0) the root lies in (a step that
    would leave what is left of it bisects instead); None for a mass at or past the
    quarter-wave limit c/(Z·f0), which no frequency carries, or if it does not settle."""
    c = N_QUARTZ_HZ_A * RHO_QUARTZ_G_CM3 / A_PER_CM  # Hz·g/cm²: m·f = c/(πZ)·atan(Z tan φ)
    if mass_g_cm2 * z_ratio * f0_Hz >= c:
        return None
    k = c / (math.pi * z_ratio)
    z2 = z_ratio * z_ratio
    low, high = f0_Hz * 0.5, f0_Hz  # the mass is above the target at low, below at high
    f = c * f0_Hz / (mass_g_cm2 * f0_Hz + c)  # exact for Z = 1
    if not low < f < high:
        f = (low + high) / 2
    for _ in range(NEWTON_MAX_STEPS):
        t = math.tan(math.pi * (f0_Hz - f) / f0_Hz)
        excess = k / f * math.atan(z_ratio * t) - mass_g_cm2
        if excess > 0:
            low = f
        else:
            high = f
        slope = -(excess + mass_g_cm2) / f - c / (f * f0_Hz) * (1 + t * t) / (1 + z2 * t * t)
        step = excess / slope
        if abs(step) <= NEWTON_TOL_HZ:
            return f - step
        f -= step
        if not low < f < high:
            f = (low + high) / 2
    return None


def _bracketed_frequency_Hz(f0_Hz: float, mass_g_cm2: float, z_ratio: float) -> float:
    # the quarter-wave limit (π(f0−f)/f0 → π/2, f → f0/2) bounds any physical solution
    low = f0_Hz * 0.5 + 1e-6
    from scipy.optimize import brentq  # here: a cell test's workers never need scipy

    return brentq(lambda f: zmatch_areal_mass_g_cm2(f0_Hz, f, z_ratio) - mass_g_cm2,
                  low, f0_Hz, xtol=1e-6, rtol=1e-15)


def thickness_since_zero_A(f0_Hz: float, zero_Hz: float, f_Hz: float, density_g_cm3: float,
                           z_ratio: float, tooling: float) -> float:
    """What an INFICON monitor displays: the film grown between the zero and now, by the
    Z-match equation from the uncoated frequency `f0_Hz`, times the tooling (a fraction)."""
    grown = (zmatch_thickness_A(f0_Hz, f_Hz, density_g_cm3, z_ratio)
             - zmatch_thickness_A(f0_Hz, zero_Hz, density_g_cm3, z_ratio))
    return grown * tooling


def rate_A_s(mass_rate_g_cm2_s: float, density_g_cm3: float, tooling: float) -> float:
    """Film rate a monitor derives from the crystal's mass rate, times the tooling."""
    return mass_rate_g_cm2_s / density_g_cm3 * A_PER_CM * tooling


def crystal_life_pct(f_Hz: float, f_min_Hz: float, f_max_Hz: float) -> float:
    """Where the frequency sits between the configured end-of-life and fresh frequencies
    (0 for a crystal that does not oscillate)."""
    if f_Hz <= 0 or f_max_Hz <= f_min_Hz:
        return 0.0
    return min(100.0, max(0.0, 100 * (f_Hz - f_min_Hz) / (f_max_Hz - f_min_Hz)))
