"""The QCM crystal every tool carries: mass loading, frequency, end-of-life failure.

State lives on the tool's state object (`crystal_f0_Hz`, `crystal_mass_g_cm2`,
`crystal_z`, `crystal_fail_Hz`, `crystal_failed`) so it is checkpointed with it.
Frequency follows the Z-match (Lu–Lewis) relation of `lipon_hw.sim.qcm` (PHYSICS.md §5):
`crystal_mass_g_cm2` is the areal mass that, with the Z-ratio `crystal_z` of the material
being deposited, loads the crystal down to its frequency. While one material is deposited
that is its true mass. When the material changes, the mass already on the crystal is
re-expressed in the new Z at the same frequency, so the frequency is continuous and each
layer shifts it by what the Z-match equation with that layer's own Z says — the model the
INFICON instruments compute with, which reads each layer back exactly (a full multilayer
acoustic model is not attempted). Recomputing the whole mass with the last material's Z, as
before, made the frequency jump at every change of material (1.7 kHz, "384 nm of Li", for Li
after 1 mg/cm² of Cu).
"""

from __future__ import annotations

from dataclasses import dataclass

from lipon_hw.sim import qcm


@dataclass
class CrystalParams:
    fundamental_Hz: float = 6.0e6  # PHYSICS.md §5
    fundamental_spread_Hz: float = 2000.0  # assumption: crystals differ slightly
    fail_below_Hz: float = 5.25e6  # assumption: crystals die near the end of life
    fail_spread_Hz: float = 5.0e4


def fresh(s, p: CrystalParams, rng) -> None:
    s.crystal_f0_Hz = p.fundamental_Hz + rng.normal(0, p.fundamental_spread_Hz)
    s.crystal_fail_Hz = p.fail_below_Hz + abs(rng.normal(0, p.fail_spread_Hz))
    s.crystal_mass_g_cm2, s.crystal_failed = 0.0, False


def load(s, mass_g_cm2: float, z_ratio: float) -> None:
    if z_ratio != s.crystal_z and s.crystal_mass_g_cm2 > 0:
        s.crystal_mass_g_cm2 = qcm.zmatch_areal_mass_g_cm2(s.crystal_f0_Hz, frequency_Hz(s),
                                                           z_ratio)
    s.crystal_mass_g_cm2 += mass_g_cm2
    s.crystal_z = z_ratio
    if not s.crystal_failed and frequency_Hz(s) < s.crystal_fail_Hz:
        s.crystal_failed = True


def frequency_Hz(s) -> float:
    return qcm.frequency_for_areal_mass_Hz(s.crystal_f0_Hz, s.crystal_mass_g_cm2,
                                               s.crystal_z)


def reading(s, mass_rate_g_cm2_s: float) -> dict:
    """What the crystal offers a monitor: fundamental, frequency, failed, true mass rate."""
    return {"fundamental_Hz": s.crystal_f0_Hz, "frequency_Hz": frequency_Hz(s),
            "failed": s.crystal_failed, "mass_rate_g_cm2_s": mass_rate_g_cm2_s,
            "z_ratio": s.crystal_z}
