"""The one QCM model (sim/qcm.py) against textbook numbers and a Z-match example by hand,
and the simulated crystal (sim/crystal.py) that follows it."""

import math

import numpy as np
import pytest

from lipon_hw.sim import crystal, qcm
from lipon_hw.sim.chamber import ChamberState
from lipon_hw.sim.crystal import CrystalParams


def test_sauerbrey_constant_at_6_MHz():
    assert qcm.sauerbrey_Hz_cm2_per_ug(6.0e6) == pytest.approx(81.5, rel=2e-3)


@pytest.mark.parametrize("z", [0.381, 0.437, 1.0, 5.9])
def test_zmatch_inverse_round_trips(z):
    f = qcm.frequency_for_areal_mass_Hz(6.0e6, 2.5e-4, z)
    assert qcm.zmatch_areal_mass_g_cm2(6.0e6, f, z) == pytest.approx(2.5e-4, rel=1e-9)


def test_zmatch_reduces_to_sauerbrey_for_thin_films():
    mass_ug = 1.0
    f = qcm.frequency_for_areal_mass_Hz(6.0e6, mass_ug * 1e-6, 1.0)
    assert 6.0e6 - f == pytest.approx(qcm.sauerbrey_Hz_cm2_per_ug(6.0e6) * mass_ug, rel=1e-3)


def test_zmatch_thickness_of_copper_worked_by_hand():
    """Cu (8.93 g/cm³, Z 0.437) that takes a 6.000 MHz crystal to 5.900 MHz:
    phase  π·(6.0 − 5.9)/6.0 = π/60 = 0.0523599 rad; tan = 0.0524078; × Z = 0.0229022;
    atan = 0.0228982; prefactor Nq·ρq/(π·ρf·Z·f) = 1.668e13 × 2.648 / (π × 8.93 × 0.437 ×
    5.9e6) = 4.41686e13 / 7.23327e7 = 610632 Å; T = 610632 × 0.0228982 = 13982 Å (1.398 µm),
    i.e. 1.2486e-3 g/cm². Sauerbrey would say 1.0e5 Hz / 81.5 Hz·cm²/µg = 1227 µg/cm²: the
    thin-film limit undercounts this film by 1.7 %."""
    assert math.tan(math.pi / 60) * 0.437 == pytest.approx(0.0229022, rel=1e-5)
    assert qcm.zmatch_thickness_A(6.0e6, 5.9e6, 8.93, 0.437) == pytest.approx(13982, rel=1e-4)
    assert qcm.zmatch_areal_mass_g_cm2(6.0e6, 5.9e6, 0.437) == pytest.approx(1.2486e-3,
                                                                              rel=1e-4)
    sauerbrey_ug = 1.0e5 / qcm.sauerbrey_Hz_cm2_per_ug(6.0e6)
    assert sauerbrey_ug == pytest.approx(1227, rel=1e-3)


def test_thickness_since_zero_counts_only_the_new_film():
    """100 nm of Cu on a crystal already at 5.8 MHz: from the uncoated frequency the
    instruments' equation gives 100 nm back; taking the zero as the uncoated frequency (the
    old SQM-160 emulator) would read 99.1 nm."""
    f0, z, rho = 6.0e6, 0.437, 8.93
    before = qcm.zmatch_areal_mass_g_cm2(f0, 5.8e6, z)
    after = qcm.frequency_for_areal_mass_Hz(f0, before + 1000e-8 * rho, z)
    assert qcm.thickness_since_zero_A(f0, 5.8e6, after, rho, z, 1.0) == pytest.approx(
        1000.0, abs=1e-3)
    assert qcm.thickness_since_zero_A(f0, 5.8e6, after, rho, z, 0.8) == pytest.approx(
        800.0, abs=1e-3)
    assert qcm.zmatch_thickness_A(5.8e6, after, rho, z) == pytest.approx(991.07, abs=0.01)


def test_rate_and_crystal_life():
    # 1 Å/s of Cu is 8.93e-8 g/cm²/s; a tooling of 125 % reports 1.25 Å/s
    assert qcm.rate_A_s(8.93e-8, 8.93, 1.25) == pytest.approx(1.25)
    assert qcm.crystal_life_pct(5.75e6, 5.0e6, 6.0e6) == pytest.approx(75.0)
    assert qcm.crystal_life_pct(6.1e6, 5.0e6, 6.0e6) == 100.0
    assert qcm.crystal_life_pct(0.0, 5.0e6, 6.0e6) == 0.0


def test_a_new_material_continues_the_crystal_frequency():
    """Li (Z 5.9) on a crystal carrying 1 mg/cm² of Cu (Z 0.437): the frequency must not jump
    when the material changes, and the Li layer reads back its own thickness through the
    instruments' equation (recomputing all the mass with Li's Z jumped 1.7 kHz)."""
    s = ChamberState()
    crystal.fresh(s, CrystalParams(fundamental_spread_Hz=0.0, fail_below_Hz=4.0e6),
                  np.random.default_rng(0))
    crystal.load(s, 1e-3, 0.437)
    before = crystal.frequency_Hz(s)
    crystal.load(s, 1e-12, 5.9)
    assert crystal.frequency_Hz(s) == pytest.approx(before, abs=0.01)
    li_mass = 100e-7 * 0.53  # 100 nm of Li
    crystal.load(s, li_mass, 5.9)
    grown_A = qcm.thickness_since_zero_A(6.0e6, before, crystal.frequency_Hz(s), 0.53, 5.9, 1.0)
    assert grown_A == pytest.approx(1000.0, abs=0.01)
