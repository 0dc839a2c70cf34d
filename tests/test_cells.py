"""Simulated cells (sim/cells/) against the seeds' numbers (PHYSICS.md §6) and the cell
contract: exact lazy integration, next_crossing, faults, snapshots."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest

from lipon_hw.sim.cells.blocking import BlockingCell
from lipon_hw.sim.cells.factories import cell_from_films, cell_from_spec, default_layers
from lipon_hw.sim.cells.faults import draw_faults
from lipon_hw.sim.cells.full import FullCell
from lipon_hw.sim.cells.params import LI_UAH_CM2_PER_UM, LiponLayer
from lipon_hw.sim.cells.plating import PlatingCell
from lipon_hw.sim.physics import BOLTZMANN_EV_K

LNMO_AREA_CM2 = 0.049  # 4.9 mm² (seed 002)


def cycle(cell, t, current_A, v_max, v_min, cv_until_A=None):
    """One CC(-CV) charge and CC discharge through the contract only; returns
    (t_end, charge_C, discharge_C) — the charge of a CV step is not integrated."""
    cell.set_control(t, "current", current_A)
    t_charged = cell.next_crossing(t, None, v_max, None)
    q_ch = current_A * (t_charged - t)
    if cv_until_A is not None:
        cell.set_control(t_charged, "voltage", v_max)
        t_charged = cell.next_crossing(t_charged, None, None, cv_until_A)
    cell.set_control(t_charged, "current", -current_A)
    t_end = cell.next_crossing(t_charged, v_min, None, None)
    return t_end, q_ch, current_A * (t_end - t_charged)


def blocking_spectrum(cell, per_decade=10):
    f = np.logspace(math.log10(3e6), -1, int(per_decade * (math.log10(3e6) + 1)) + 1)
    return f, np.array([cell.impedance_ohm(0.0, x) for x in f])


# --- Cu / LiPON / Cu -------------------------------------------------------------------------
def test_blocking_film_resistance_is_thickness_over_sigma_area():
    cell = cell_from_spec({"kind": "blocking"})  # FS-LiPON 3.7 µm, 2.5e-6 S/cm, 0.04 cm²
    assert cell.film_resistance_ohm() == pytest.approx(3.7e-4 / (2.5e-6 * 0.04), rel=1e-12)
    f, z = blocking_spectrum(cell)
    # the first arc closes where −Im(Z) has its first minimum: its real part is R_s + R1
    minus_im = -z.imag
    first_min = next(i for i in range(1, len(f) - 1)
                     if minus_im[i] < minus_im[i - 1] and minus_im[i] <= minus_im[i + 1])
    r1_read = z.real[first_min] - cell.params.contact_ohm
    assert r1_read == pytest.approx(3700.0, rel=0.10)
    # its apex sits at σ/(2π ε0 εr), whatever the geometry
    apex = int(np.argmax(minus_im[:first_min]))
    f_apex = 2.5e-6 / (2 * math.pi * 8.854e-14 * cell.params.lipon_permittivity)
    assert f_apex / 1.5 < f[apex] < f_apex * 1.5
    # low frequencies: the blocking capacitive tail
    assert -z.imag[-1] > 10 * z.real[-1]


def test_thicker_film_doubles_the_arc():
    thin = cell_from_films("blocking", [{"material": "LiPON", "thickness_nm": 1000.0,
                                         "sigma_S_cm": 3e-6}], 0.04)
    thick = cell_from_films("blocking", [{"material": "LiPON", "thickness_nm": 2000.0,
                                          "sigma_S_cm": 3e-6}], 0.04)
    assert thick.film_resistance_ohm() == pytest.approx(2 * thin.film_resistance_ohm())
    f = 1e3  # between the film arc and the interface arc of both
    assert thick.impedance_ohm(0, 3e7).real < 100  # both arcs start near R_s
    assert thick.impedance_ohm(0, f).real > thin.impedance_ohm(0, f).real


def test_dc_polarization_settles_to_sigma_e_picoamps():
    cell = cell_from_spec({"kind": "blocking"})
    cell.set_control(0.0, "voltage", 1.0)
    transient = cell.current_A(1.0)
    settled = cell.current_A(3600.0)
    assert 1e-13 < settled < 1e-11  # picoamps (seed 000: 1.2e-14 S/cm at 1 V)
    assert transient > 100 * settled  # the double-layer charging transient
    sigma_e = settled * 3.7e-4 / (1.0 * 0.04)
    assert sigma_e == pytest.approx(1.2e-14, rel=0.02)
    # the current decays monotonically to it once the fast charging is over
    currents = [cell.current_A(t) for t in (3700.0, 7200.0, 36000.0)]
    assert all(a >= b * (1 - 1e-6) for a, b in zip(currents, currents[1:], strict=False))


# --- Li / LiPON / Cu -------------------------------------------------------------------------
def test_plating_dips_to_minus_one_volt_then_plateaus():
    cell = cell_from_spec({"kind": "plating"})
    assert cell.voltage_V(0.0) == pytest.approx(2.8)  # bare Cu against Li
    cell.set_control(0.0, "current", -50e-9)
    times = np.arange(0.0, 3 * 3600.0, 30.0)
    volts = np.array([cell.voltage_V(t) for t in times])
    bottom = int(np.argmin(volts))
    assert -1.1 < volts[bottom] < -0.9  # seed 000: "~−1 V" nucleation dip
    assert 0 < times[bottom] < 3600.0
    late = [cell.voltage_V(t) for t in (10 * 3600.0, 20 * 3600.0, 40 * 3600.0)]
    assert all(-0.15 < v < 0 for v in late)  # "then stable"
    assert max(late) - min(late) < 0.005
    cell.set_control(40 * 3600.0, "open", 0.0)
    assert abs(cell.voltage_V(40 * 3600.0 + 60)) < 0.01  # Li on Cu rests at ~0 V


def test_plating_capacity_thickness_and_coulombic_efficiency():
    um_per_mAh_cm2 = 1000 / LI_UAH_CM2_PER_UM
    assert um_per_mAh_cm2 == pytest.approx(4.85)
    cell = cell_from_spec({"kind": "plating"})
    area, current = cell.area_cm2, 50e-9
    t_plate = 0.31e-3 * 3600 * area / current  # 0.31 mAh/cm² (seed 000)
    cell.set_control(0.0, "current", -current)
    cell.voltage_V(t_plate)
    ce = cell.coulombic_efficiency
    assert ce == pytest.approx(0.827)  # at 87.5 kPa (seed 000)
    assert cell.plated_li_um(t_plate) == pytest.approx(0.31 * 4.85 * ce, rel=0.01)
    cell.set_control(t_plate, "current", current)
    t_stripped = cell.next_crossing(t_plate, None, 1.0, None)
    assert (t_stripped - t_plate) / t_plate == pytest.approx(0.827, abs=0.003)
    no_pressure = cell_from_spec({"kind": "plating", "params": {"pressure_kPa": 0.0}})
    assert no_pressure.coulombic_efficiency < ce  # "worse with no pressure"


def test_later_platings_and_au_seed_dip_less():
    def dip(cell, t0=0.0):
        cell.set_control(t0, "current", -50e-9)
        return min(cell.voltage_V(t0 + t) for t in np.arange(30.0, 3 * 3600.0, 60.0))

    bare = cell_from_spec({"kind": "plating"})
    first = dip(bare)
    bare.set_control(3 * 3600.0, "current", 50e-9)
    t_back = bare.next_crossing(3 * 3600.0, None, 1.0, None)
    assert dip(bare, t_back) > first + 0.2
    layers = default_layers("plating") + [{"material": "Au", "thickness_nm": 3.0}]
    seeded = cell_from_films("plating", layers, 0.04)
    assert dip(seeded) > first + 0.3


# --- full cells --------------------------------------------------------------------------------
def test_lnmo_capacity_at_c10_and_the_4p7_volt_plateau():
    cell = cell_from_spec({"kind": "lnmo"})
    assert isinstance(cell, FullCell)
    assert 2.8 <= cell.voltage_V(0.0) < 3.0  # pristine, overlithiated surface (seed 002)
    expected_C = 0.03e-3 * 3600 * LNMO_AREA_CM2
    assert cell.design_capacity_C == pytest.approx(expected_C)
    c10 = expected_C / 3600 / 10  # ≈ 150 nA (seed 002)
    assert c10 == pytest.approx(150e-9, rel=0.03)
    t, q_ch, _ = cycle(cell, 0.0, c10, 5.1, 3.5)
    assert q_ch > expected_C  # first charge adds the 2.9 V plateau
    t_charged = t
    cell.set_control(t, "current", c10)
    t = cell.next_crossing(t, None, 5.1, None)
    cell.set_control(t, "current", -c10)
    t_end = cell.next_crossing(t, 3.5, None, None)
    assert c10 * (t_end - t) == pytest.approx(expected_C, rel=0.05)
    volts = [cell.voltage_V(x) for x in np.linspace(t, t_end, 200)]
    assert 4.65 < float(np.median(volts)) < 4.75  # the 4.7 V plateau
    assert t_charged < t


def test_lnmo_coulombic_efficiency_and_stable_capacity():
    cell = cell_from_spec({"kind": "lnmo"})
    t, rows = 0.0, []
    for _ in range(400):
        t, q_ch, q_dis = cycle(cell, t, 3e-6, 5.1, 3.5)
        rows.append((q_ch, q_dis))
    ce = [d / c for c, d in rows]
    assert min(ce[99:]) > 0.9970  # seed 002: beyond 99.70 % after 100 cycles
    assert ce[399] > 0.9985  # and 99.85 % after 400
    assert rows[399][1] / rows[9][1] > 0.98  # "no obvious degradation"
    assert rows[9][1] > 0.85 * cell.design_capacity_C  # 3 µA (~2C) still gives most of it


def test_lco_anodeless_formation_cv_charge_and_retention():
    cell = cell_from_spec({"kind": "lco_anodeless"})
    per_um = 69.0 * 3.6e-3  # C/cm² per µm of LCO (seed 004)
    assert 0.80 * 10 * per_um <= cell.design_capacity_C <= 0.95 * 10 * per_um
    assert cell.voltage_V(0.0) < 1.0  # no Li yet: LCO against the bare collector
    q = cell.design_capacity_C / 3600
    t = 0.0
    r_ct = [cell.charge_transfer_ohm()]
    discharges = []
    for n in range(150):
        cell.set_control(t, "current", q / 5 if n else q / 10)
        t_cv = cell.next_crossing(t, None, 4.2, None)
        if n == 0:
            assert cell.state_C(t_cv)[1] > 0.8 * q * 3600 * 0.8  # Li plated on the 1st charge
        cell.set_control(t_cv, "voltage", 4.2)
        i_start = cell.current_A(t_cv)
        t_ch = cell.next_crossing(t_cv, None, None, q / 20)
        assert cell.current_A(0.5 * (t_cv + t_ch)) < i_start  # CV: the current decays
        cell.set_control(t_ch, "current", -q / 5)
        t = cell.next_crossing(t_ch, 3.0, None, None)
        discharges.append(q / 5 * (t - t_ch))
        r_ct.append(cell.charge_transfer_ohm())
    assert 0.92 < discharges[0] / cell.design_capacity_C < 0.98  # 3 % first-charge loss + IR
    assert discharges[149] / discharges[1] == pytest.approx(0.95, abs=0.02)  # 004: ~95 %
    assert r_ct[20] < 0.4 * r_ct[0]  # R_ct falls over the first ~20 cycles (003)
    assert r_ct[149] == pytest.approx(r_ct[100], rel=0.01)


@pytest.mark.parametrize("discharge_C_rate", [0.5, 0.2])
def test_lco_anodeless_delivers_the_production_papers_capacity_per_cm2(discharge_C_rate):
    """004: 10 µm LCO, 0.69 mAh/cm² in theory, 80–95 % utilisation → 0.55–0.66 mAh/cm²
    delivered. The nominal cell, run as sequences/lco_anodeless.yaml runs it (formation at
    C/10, CV at 4.2 V to C/20, galvanostatic discharge to 3.0 V), must deliver that on its
    first cycles (issue 9: 0.51 with a first-charge CE of 0.88)."""
    area = 1.0
    cell = cell_from_spec({"kind": "lco_anodeless", "area_cm2": area})
    c = cell.design_capacity_C / 3600  # 1C in A
    t, delivered = 0.0, []
    for n in range(3):
        cell.set_control(t, "current", c / 10 if n == 0 else c / 5)
        t = cell.next_crossing(t, None, 4.2, None)
        cell.set_control(t, "voltage", 4.2)
        t = cell.next_crossing(t, None, None, c / 20)
        cell.set_control(t, "current", -discharge_C_rate * c)
        t_end = cell.next_crossing(t, 3.0, None, None)
        delivered.append(discharge_C_rate * c * (t_end - t) / 3.6 / area)  # mAh/cm²
        assert cell.voltage_V(t_end) == pytest.approx(3.0, abs=1e-6)
        t = t_end
    for mAh_cm2 in delivered:
        assert 0.55 <= mAh_cm2 <= 0.66


def test_arrhenius_between_25_and_60_celsius():
    cold = cell_from_spec({"kind": "blocking"})
    hot = cell_from_spec({"kind": "blocking", "temperature_C": 60.0})
    factor = math.exp(0.55 / BOLTZMANN_EV_K * (1 / 298.15 - 1 / 333.15))
    assert factor == pytest.approx(9.5, rel=0.01)
    assert cold.film_resistance_ohm() / hot.film_resistance_ohm() == pytest.approx(factor)
    cold.set_temperature(0.0, 60.0)  # a temperature step applies from then on
    assert cold.film_resistance_ohm() == pytest.approx(hot.film_resistance_ohm())
    assert cold.impedance_ohm(0.0, 1e4) == pytest.approx(hot.impedance_ohm(0.0, 1e4))


# --- faults ------------------------------------------------------------------------------------
def rest_drop(cell):
    t, _, _ = cycle(cell, 0.0, 150e-9, 5.1, 3.5)
    cell.set_control(t, "current", 150e-9)
    t = cell.next_crossing(t, None, 4.8, None)
    cell.set_control(t, "open", 0.0)
    return cell.voltage_V(t + 60) - cell.voltage_V(t + 10 * 3600)


def test_soft_short_self_discharges_and_leaks():
    healthy, shorted = (cell_from_spec({"kind": "lnmo", "faults": f}) for f in
                        ([], ["soft_short"]))
    assert rest_drop(shorted) > 10 * rest_drop(healthy)
    pinhole = cell_from_spec({"kind": "blocking", "faults": [{"kind": "soft_short",
                                                              "ohm": 1e8}]})
    pinhole.set_control(0.0, "voltage", 1.0)
    assert pinhole.current_A(3600.0) == pytest.approx(1e-8, rel=0.01)  # not picoamps
    t, q_ch, q_dis = cycle(cell_from_spec({"kind": "lnmo", "faults": ["soft_short"]}),
                           0.0, 150e-9, 5.1, 3.5)
    assert q_dis / q_ch < 0.9


def test_hard_short_collapses_and_open_contact_blocks():
    short = cell_from_spec({"kind": "lnmo", "faults": ["hard_short"]})
    short.set_control(0.0, "current", 150e-9)
    assert abs(short.voltage_V(10.0)) < 1e-3
    assert short.impedance_ohm(10.0, 1e3) == pytest.approx(10.0)
    assert short.next_crossing(10.0, 3.0, 5.1, None) == 10.0
    opened = cell_from_spec({"kind": "lnmo", "faults": ["open"]})
    opened.set_control(0.0, "current", 150e-9)
    assert opened.voltage_V(1.0) > 1e3  # a real channel would hit its compliance
    assert opened.next_crossing(1.0, 2.0, 5.1, None) == 1.0
    assert abs(opened.impedance_ohm(1.0, 1e3)) > 1e12
    blocking_open = cell_from_spec({"kind": "blocking", "faults": ["open"]})
    blocking_open.set_control(0.0, "voltage", 1.0)
    assert blocking_open.current_A(3600.0) < 1e-13


def test_high_interface_resistance_shows_in_the_spectrum_not_the_film():
    healthy = cell_from_spec({"kind": "lnmo"})
    voids = cell_from_spec({"kind": "lnmo", "faults": ["high_interface"]})
    assert voids.film_resistance_ohm() == healthy.film_resistance_ohm()
    assert voids.impedance_ohm(0, 3e6).real == pytest.approx(healthy.impedance_ohm(0, 3e6).real,
                                                               rel=0.05)
    assert voids.impedance_ohm(0, 1.0).real > healthy.impedance_ohm(0, 1.0).real + \
        10 * healthy.charge_transfer_ohm()


def test_faults_switch_on_at_a_time_or_a_cycle():
    cell = cell_from_spec({"kind": "lnmo", "faults": [{"kind": "hard_short", "at_s": 5000.0}]})
    cell.set_control(0.0, "current", 150e-9)
    assert cell.active_faults == []
    assert cell.next_crossing(0.0, 2.0, 5.1, None) == pytest.approx(5000.0)
    assert cell.voltage_V(4999.0) > 3.0
    assert abs(cell.voltage_V(5001.0)) < 1e-3
    assert cell.active_faults == ["hard_short"]
    later = cell_from_spec({"kind": "lnmo", "faults": [{"kind": "soft_short", "at_cycle": 2}]})
    t = 0.0
    for _ in range(3):
        assert later.active_faults == ([] if t == 0.0 or later.age_cycles < 2
                                       else ["soft_short"])
        t, _, _ = cycle(later, t, 3e-6, 5.1, 3.5)
    later.set_control(t, "open", 0.0)
    assert later.active_faults == ["soft_short"]
    with pytest.raises(ValueError, match="fault kind"):
        cell_from_spec({"kind": "lnmo", "faults": ["melted"]})


# --- the contract ------------------------------------------------------------------------------
def brute_force(cell, t0, dt, until, test):
    """First sampled time after t0 at which test(cell, t) holds (step dt)."""
    t = t0
    while t < until:
        t += dt
        if test(cell, t):
            return t
    return None


@pytest.mark.parametrize("window_mV", [None, 5.0])
def test_next_crossing_agrees_with_brute_force_stepping(window_mV):
    cell = cell_from_spec({"kind": "lnmo"})
    t, _, _ = cycle(cell, 0.0, 3e-6, 5.1, 3.5)
    cell.set_control(t, "current", 3e-6)  # reversal: RC branches relax against the OCV
    t = cell.next_crossing(t, None, 4.72, None)
    cell.set_control(t, "current", -3e-6)
    snap = json.loads(json.dumps(cell.snapshot()))
    v0 = cell.voltage_V(t)
    v_min, v_max = (3.5, 5.1) if window_mV is None else \
        (v0 - window_mV / 1000, v0 + window_mV / 1000)
    exact = cell.next_crossing(t, v_min, v_max, None)
    assert exact is not None and exact > t
    v_hit = cell.voltage_V(exact)
    assert v_hit <= v_min + 1e-9 or v_hit >= v_max - 1e-9
    stepper = cell_from_spec(cell.spec)
    stepper.restore(snap)
    dt = 0.5
    sampled = brute_force(stepper, t, dt, exact + 10 * dt,
                          lambda c, x: not v_min < c.voltage_V(x) < v_max)
    assert sampled is not None and exact <= sampled < exact + dt + 1e-9


def test_next_crossing_of_a_cv_current_agrees_with_stepping():
    cell = cell_from_spec({"kind": "lco_anodeless"})
    q = cell.design_capacity_C / 3600
    cell.set_control(0.0, "current", q / 5)
    t = cell.next_crossing(0.0, None, 4.2, None)
    cell.set_control(t, "voltage", 4.2)
    snap = cell.snapshot()
    exact = cell.next_crossing(t, None, None, q / 20)
    assert abs(cell.current_A(exact)) <= q / 20 * (1 + 1e-9)
    stepper = cell_from_spec(cell.spec)
    stepper.restore(snap)
    dt = 10.0
    sampled = brute_force(stepper, t, dt, exact + 10 * dt,
                          lambda c, x: abs(c.current_A(x)) <= q / 20)
    assert exact <= sampled < exact + dt + 1e-9


def test_snapshot_restore_round_trip():
    cell = cell_from_spec({"kind": "lnmo", "faults": [{"kind": "soft_short", "at_s": 2e4}]})
    t, _, _ = cycle(cell, 0.0, 3e-6, 5.1, 3.5)
    cell.set_control(t, "current", 3e-6)
    cell.voltage_V(t + 333.0)
    state = json.loads(json.dumps(cell.snapshot()))  # JSON-serialisable
    twin = cell_from_spec(json.loads(json.dumps(cell.spec)))
    twin.restore(state)
    for x in (t + 400.0, t + 900.0, t + 2.5e4):
        assert twin.voltage_V(x) == cell.voltage_V(x)
    assert twin.next_crossing(t + 2.5e4, 3.5, 5.1, None) == \
        cell.next_crossing(t + 2.5e4, 3.5, 5.1, None)
    with pytest.raises(ValueError, match="snapshot"):
        cell_from_spec({"kind": "blocking"}).restore(state)


def test_time_only_moves_forward_and_modes_are_checked():
    cell = cell_from_spec({"kind": "blocking"})
    cell.voltage_V(10.0)
    with pytest.raises(ValueError, match="before the cell's present time"):
        cell.voltage_V(5.0)
    with pytest.raises(ValueError, match="control mode"):
        cell.set_control(10.0, "power", 1.0)
    assert cell.next_crossing(10.0, None, None, None) is None
    cell.set_control(10.0, "current", 1e-9)
    assert cell.next_crossing(10.0, None, None, 1e-6) == 10.0  # already below


def test_one_lnmo_cycle_costs_a_handful_of_calls():
    cell = cell_from_spec({"kind": "lnmo"})
    calls = 0
    for name in ("set_control", "next_crossing", "voltage_V", "current_A"):
        method = getattr(cell, name)

        def counted(*args, _m=method):
            nonlocal calls
            calls += 1
            return _m(*args)

        setattr(cell, name, counted)
    start, t = time.perf_counter(), 0.0
    for _ in range(600):
        t, _, _ = cycle(cell, t, 3e-6, 5.1, 3.5)
    elapsed = time.perf_counter() - start
    assert calls == 600 * 4
    assert elapsed < 3.0  # 600 cycles of one channel; the 16-channel campaign is 16×


# --- factories ---------------------------------------------------------------------------------
def test_cells_take_their_parameters_from_the_film_stack():
    stack = [  # as the simulated World records a sample
        {"material": "Cu", "thickness_nm": 100.0, "t_start_s": 0.0, "t_end_s": 1e3},
        {"material": "LiPON", "thickness_nm": 800.0, "sigma_S_cm": 2.0e-6,
         "activation_eV": 0.50, "sigma_electronic_S_cm": 5e-14, "t_start_s": 1e3},
        {"material": "LiPON", "thickness_nm": 200.0, "sigma_S_cm": 3.0e-6,
         "activation_eV": 0.55, "sigma_electronic_S_cm": 1.2e-14},
        {"material": "Li", "thickness_nm": 570.0, "mean_rate_A_s": 3.2},
    ]
    cell = cell_from_films("full", stack, 0.049)
    assert cell.params.cathode == "LNMO" and cell.li_nm == 570.0
    assert cell.film_resistance_ohm() == pytest.approx(
        (0.8e-4 / 2.0e-6 + 0.2e-4 / 3.0e-6) / 0.049)
    assert cell.electronic_resistance_ohm() == pytest.approx(
        (0.8e-4 / 5e-14 + 0.2e-4 / 1.2e-14) / 0.049)
    blocking = cell_from_films("blocking", stack, 0.04)
    assert isinstance(blocking, BlockingCell)
    assert isinstance(cell_from_films("plating", stack, 0.04), PlatingCell)
    anodeless = cell_from_films("full", [{"material": "LiCoO2", "thickness_nm": 5000.0},
                                         *stack[1:3]], 1.0)
    assert anodeless.anodeless and anodeless.params.cathode == "LCO"
    with pytest.raises(ValueError, match="no LiPON"):
        cell_from_films("blocking", [{"material": "Cu", "thickness_nm": 100.0}], 0.04)
    with pytest.raises(ValueError, match="cell kind"):
        cell_from_films("supercap", stack, 0.04)


def test_seeded_scatter_and_spec_round_trip():
    a = cell_from_films("lco", default_layers("lco"), 1.0, rng=np.random.default_rng(7))
    b = cell_from_films("lco", default_layers("lco"), 1.0, rng=np.random.default_rng(7))
    c = cell_from_films("lco", default_layers("lco"), 1.0, rng=np.random.default_rng(8))
    assert a.design_capacity_C == b.design_capacity_C != c.design_capacity_C
    assert 0.80 <= a.params.utilisation <= 0.95
    again = cell_from_spec(a.spec)
    assert again.design_capacity_C == a.design_capacity_C
    assert again.charge_transfer_ohm() == a.charge_transfer_ohm()
    assert isinstance(LiponLayer(1000.0).area_resistance_ohm_cm2(25.0), float)


def test_draw_faults_is_seeded():
    rates = {"soft_short": 0.3, "hard_short": 0.1, "open": 0.1, "high_interface": 0.3}
    first = [draw_faults(np.random.default_rng(3), rates, within_cycles=600) for _ in range(2)]
    assert first[0] == first[1]
    many = [draw_faults(np.random.default_rng(k), rates) for k in range(400)]
    share = sum(any(f["kind"] == "soft_short" for f in fs) for fs in many) / len(many)
    assert 0.2 < share < 0.4
    assert cell_from_spec({"kind": "blocking"}).capacity_Ah is None


@pytest.mark.parametrize("spec, mode, value", [
    ({"kind": "lnmo", "params": {"initial_soc": 0.0}}, "current", 3e-6),
    ({"kind": "lnmo", "params": {"initial_soc": 1.0}}, "current", -3e-6),
    ({"kind": "lco_anodeless"}, "current", 5e-6),
    ({"kind": "lnmo", "faults": [{"kind": "soft_short", "at_s": 3000.5}]}, "current", 3e-6),
    ({"kind": "lnmo", "faults": [{"kind": "hard_short", "at_s": 5000}]}, "current", 3e-6),
    ({"kind": "lnmo", "params": {"initial_soc": 0.5}}, "current", 0.0),
    ({"kind": "lnmo", "params": {"initial_soc": 0.3}}, "voltage", 4.75),  # a CV hold
    ({"kind": "lco"}, "voltage", 4.2),
    ({"kind": "lnmo", "params": {"initial_soc": 0.3},
      "faults": [{"kind": "soft_short", "at_s": 3000.5}]}, "voltage", 4.75),
])
def test_readings_on_a_grid_are_the_readings_one_by_one(spec, mode, value):
    """readings_on_grid reads a segment's track as single readings do: the same numbers to
    the bit across table breakpoints and fault onsets, and the same state afterwards."""
    current_A = value if mode == "current" else None
    one, bulk = cell_from_spec(spec), cell_from_spec(spec)
    t0, step, n = 100.0, 0.7, 12000
    for cell in (one, bulk):
        cell.set_control(t0, mode, value)
    singles, segments = [], set()
    for k in range(1, n + 1):
        singles.append((one.voltage_V(t0 + k * step), one.current_A(t0 + k * step)))
        segments.add(None if one._track is None else one._track.t0)
    grid, k = [], 1
    while k <= n:
        volts, amps = bulk.readings_on_grid(t0, step, k, min(n, k + 2999))
        grid += zip(volts.tolist(), amps.tolist(), strict=True)
        k += len(volts)
        bulk.voltage_V(t0 + (k - 1) * step)
    assert grid == singles
    assert bulk.snapshot() == one.snapshot()
    assert len(segments) >= (3 if mode == "voltage" else 5 if current_A else 1)  # breakpoints
