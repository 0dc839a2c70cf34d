"""Simulated sheets (issue 13, point 1): thickness maps by the integrated cosine law,
seeded defects, formation and dwell by the cell model, ground truth kept apart."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from lipon_hw.errors import InputError
from lipon_hw.sim.physics import cosine_law_factor
from lipon_hw.sim.sheet import SHEET, SHEET_CELL, Coater, SheetParams, SimSheet
from lipon_hw.station import load_station
from lipon_hw.store import Store

DAY_H = 24.0


def _sheet(rows=20, cols=30, seed=1, dwell_h=DAY_H, sim=None, **kw) -> SimSheet:
    return SimSheet("SH-1", rows, cols, (5.0, 5.0), dwell_h=dwell_h, seed=seed,
                    params=SheetParams.from_mapping(sim), **kw)


def _by_class(sheet: SimSheet) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for truth in sheet.truths():
        out.setdefault(truth["class"], []).append(truth)
    return out


# --- thickness ------------------------------------------------------------------------------
def test_the_cross_web_profile_is_the_cosine_law_integrated_over_target_and_travel():
    coater = Coater(throw_cm=7.0, target_length_cm=28.0)
    s = np.linspace(-14.0, 14.0, 561)  # along the target, cm
    y = np.linspace(-80.0, 80.0, 3201)  # the web's travel under it, cm (tails ∝ y⁻⁴)

    def collected(x_cm: float) -> float:
        r = np.hypot(x_cm - s[:, None], y[None, :])
        return np.trapezoid(np.trapezoid(cosine_law_factor(r, 7.0), y, axis=1), s)

    for x_mm in (20.0, 50.0, 72.5):
        expected = collected(x_mm / 10) / collected(0.0)
        assert coater.cross_web(x_mm) == pytest.approx(expected, rel=2e-4)


def test_a_20x30_sheet_thins_5_to_10_percent_from_centre_to_edge_monotonically():
    sheet = _sheet()
    summary = sheet.summary()
    for name, centre in (("cathode_nm", 10000.0), ("lipon_nm", 1000.0)):
        assert summary[name]["centre"] == centre
        assert 0.05 <= summary[name]["edge_falloff"] <= 0.10
        assert summary[name]["max"] <= centre * 1.001  # only the wear drift lifts early rows
    maps = sheet.thickness_maps_nm()
    assert not np.allclose(maps["cathode_nm"] / 1e4, maps["lipon_nm"] / 1e3)  # own coaters
    for m in maps.values():
        across = m[9]  # one row, across the web: thickest at the middle, mirror-symmetric
        half = across[15:]
        assert np.all(np.diff(half) < 0) and np.all(np.diff(across[:15]) > 0)
        np.testing.assert_allclose(across, across[::-1], rtol=1e-12)
        down = m[:, 0]  # down the web: coated later, slightly thinner (target wear)
        assert np.all(np.diff(down) < 0) and down[0] / down[-1] - 1 < 0.002
    # each cell's films are the map's (a thin electrolyte's aside)
    truth = sheet.truth(1, 1)
    if truth["class"] != "thin_electrolyte":
        assert truth["lipon_nm"] == pytest.approx(maps["lipon_nm"][0, 0], rel=1e-12)
    assert truth["cathode_nm"] == pytest.approx(maps["cathode_nm"][0, 0], rel=1e-12)


# --- determinism ------------------------------------------------------------------------------
def test_the_same_seed_gives_the_same_sheet_whatever_order_its_cells_are_built_in():
    a, b = _sheet(6, 8, seed=4, sim={"defects": {"soft_short": 0.3}}), \
        _sheet(6, 8, seed=4, sim={"defects": {"soft_short": 0.3}})
    spots = [(1, 1), (3, 5), (6, 8), (2, 7), (5, 2)]
    cells_a = {rc: a.cell(*rc) for rc in spots}
    cells_b = {rc: b.cell(*rc) for rc in reversed(spots)}
    for rc in spots:
        assert a.truth(*rc) == b.truth(*rc)
        assert cells_a[rc].spec == cells_b[rc].spec
        assert cells_a[rc].voltage_V(100.0) == pytest.approx(cells_b[rc].voltage_V(100.0),
                                                             rel=1e-12, abs=1e-12)
    assert a.cell(3, 5) is cells_a[(3, 5)]  # handed out once, then the same object
    other = _sheet(6, 8, seed=5, sim={"defects": {"soft_short": 0.3}})
    assert other.truths() != a.truths()
    assert SimSheet("SH-2", 6, 8, seed=4).truths() != SimSheet("SH-1", 6, 8, seed=4).truths()


def test_defect_rates_over_a_large_sheet_are_the_set_rates():
    rates = {"soft_short": 0.03, "hard_short": 0.01, "high_impedance": 0.02,
             "thin_electrolyte": 0.01}
    sheet = _sheet(100, 100, seed=2, sim={"defects": rates})
    truths = sheet.truths()
    n = len(truths)
    for kind, p in rates.items():
        count = sum(any(d["kind"] == kind for d in t["defects"]) for t in truths)
        assert abs(count - n * p) < 4 * math.sqrt(n * p * (1 - p)), kind
    ohms = [d["ohm"] for t in truths for d in t["defects"] if d["kind"] == "soft_short"]
    assert np.median(ohms) == pytest.approx(3e6, rel=0.3)
    thin = [d["fraction"] for t in truths for d in t["defects"] if d["kind"] == "thin_electrolyte"]
    assert min(thin) >= 0.4 and max(thin) <= 0.7
    assert json.loads(json.dumps(truths)) == truths  # JSON-able as it stands
    assert {t["class"] for t in truths} == {"good", "soft_short", "hard_short",
                                            "high_impedance", "thin_electrolyte"}
    none = _sheet(10, 10, sim={"defects": {k: 0.0 for k in rates}}).truths()
    assert {t["class"] for t in none} == {"good"}


# --- formation and dwell -------------------------------------------------------------------
def test_a_soft_short_has_drained_over_the_dwell_far_below_the_good_cells_spread():
    sim = {"defects": {"soft_short": 0.25, "hard_short": 0.05}}
    rested, fresh = _sheet(6, 10, seed=7, sim=sim), _sheet(6, 10, seed=7, sim=sim, dwell_h=0)
    classes = _by_class(rested)
    assert len(classes["soft_short"]) >= 8 and classes["hard_short"]
    good = np.array([rested.cell(t["row"], t["col"]).voltage_V(0.0) for t in classes["good"]])
    assert np.all(np.abs(good - 4.2) < 0.002)  # formed to 4.2 V, held through the dwell
    spread = good.max() - good.min()
    on_curve = 0
    for t in classes["soft_short"]:
        cell, before = rested.cell(t["row"], t["col"]), fresh.cell(t["row"], t["col"])
        v = cell.voltage_V(0.0)
        assert v < good.min() - max(0.005, 100 * spread)
        assert before.voltage_V(0.0) > v + 0.005  # the dwell drained it, not the formation
        (ohm,) = [d["ohm"] for d in t["defects"] if d["kind"] == "soft_short"]
        if v > 3.9:  # still on the LCO curve: the charge lost is what the leak carried
            on_curve += 1
            lost = before.state_C(0.0)[0] - cell.state_C(0.0)[0]
            carried = 0.5 * (v + before.voltage_V(0.0)) * DAY_H * 3600 / ohm
            assert lost == pytest.approx(carried, rel=0.05)
    assert on_curve >= 3
    for t in classes["hard_short"]:
        assert abs(rested.cell(t["row"], t["col"]).voltage_V(0.0)) < 1e-3


def test_cells_are_ready_at_the_labs_clock_and_go_on_self_discharging():
    sheet = _sheet(4, 4, seed=3, sim={"defects": {"soft_short": 1.0}}, t_ready_s=5000.0)
    cell = sheet.cell(2, 2)
    assert cell.t == 5000.0
    v0, v1 = cell.voltage_V(5000.0), cell.voltage_V(5000.0 + 6 * 3600)
    assert v1 < v0
    with pytest.raises(ValueError):
        cell.voltage_V(4000.0)  # time moves forward only


def test_thin_electrolyte_lowers_high_frequency_impedance_and_a_bad_interface_raises_low():
    sheet = _sheet(6, 10, seed=11, sim={"defects": {"thin_electrolyte": 0.2,
                                                    "high_impedance": 0.2}})
    classes = _by_class(sheet)
    assert len(classes["thin_electrolyte"]) >= 3 and len(classes["high_impedance"]) >= 3

    def z(truth, f_Hz):
        return abs(sheet.cell(truth["row"], truth["col"]).impedance_ohm(0.0, f_Hz))

    good_hf = [z(t, 1e4) for t in classes["good"]]
    good_lf = [z(t, 1.0) for t in classes["good"]]
    for t in classes["thin_electrolyte"]:  # R_LiPON ∝ thickness: |Z| at 10 kHz drops
        (fraction,) = [d["fraction"] for d in t["defects"] if d["kind"] == "thin_electrolyte"]
        assert z(t, 1e4) < min(good_hf) - 0.2 * (1 - fraction) * t["r_bulk_ohm"] / fraction
        assert z(t, 1e5) == pytest.approx(t["r_bulk_ohm"], rel=0.1)
    for t in classes["high_impedance"]:  # R_ct × 3–10: the low frequencies rise
        assert z(t, 1.0) > 2 * max(good_lf)
        assert t["contact"] == "high_impedance"
    assert {t["contact"] for t in classes["good"]} == {"ok"}


# --- the lab hook -----------------------------------------------------------------------------
def _spec(**kw):
    base = dict(id="SH-9", roll=None, rows=20, cols=30, pitch_x_mm=5.0, pitch_y_mm=5.0,
                cell_kind="lco_anodeless", area_cm2=0.16, dwell_h=DAY_H)
    return SimpleNamespace(**{**base, **kw})


def test_the_lab_hook_stores_every_cells_truth_apart_from_measurements(tmp_path):
    store = Store(tmp_path)
    clock = [3600.0]
    lab = load_station().connect(lambda: clock[0], seed=1)
    try:
        assert lab.sheets is not None
        lab.sheets.load(store, 7, _spec(), seed=5)
        sheet = lab.sim.sheet
        truths = store.sim_truths(SHEET_CELL, "SH-9")
        assert len(truths) == 600
        assert truths[(7, 0)] == sheet.truth(1, 1)
        assert truths[(7, 29)]["col"] == 30 and truths[(7, 30)]["row"] == 2
        assert truths[(7, 599)] == sheet.truth(20, 30)
        assert store.film_stack("SH-9") == []  # nothing of it among the measured samples
        assert sheet.cell(20, 30).t == 3600.0  # ready at the lab's clock
        assert sheet.area_cm2 == 0.16 and (sheet.rows, sheet.cols) == (20, 30)
        record = store.sim_truths(SHEET, "SH-9")[(7, 0)]
        assert record["t_ready_s"] == 3600.0 and record["summary"] == sheet.summary()
        assert record["params"]["defects"]["soft_short"] == 0.03
        clock[0] = 9000.0  # the run resumed later: its sheet is the one it loaded first
        lab.sheets.load(store, 7, _spec(), seed=5)
        assert lab.sim.sheet is not sheet and lab.sim.sheet.cell(20, 30).t == 3600.0
        assert lab.sim.sheet.truths() == sheet.truths()
        lab.sheets.load(store, 8, _spec(), seed=5)  # another run's: ready now
        assert lab.sim.sheet.cell(1, 1).t == 9000.0
    finally:
        lab.close()
        store.close()


def test_a_sheet_from_a_roll_takes_the_rolls_true_films(tmp_path):
    store = Store(tmp_path)
    store.ensure_sample("ROLL-1", "stainless steel")
    store.add_layer("ROLL-1", 1, "LiPON", 1500.0, 0.5, "sputter", 10.0, {"step": 4})
    store.put_sim_truth("film", 1, "ROLL-1", 4, {"material": "LiPON", "thickness_nm": 1400.0,
                                                 "sigma_S_cm": 2.0e-6})
    lab = load_station().connect(lambda: 0.0, seed=1)
    try:
        lab.sheets.load(store, 8, _spec(roll="ROLL-1", rows=4, cols=6,
                                        sim={"defects": {"thin_electrolyte": 0.0}}), seed=1)
        summary = lab.sim.sheet.summary()
        assert summary["lipon_nm"]["centre"] == 1400.0  # the truth, not the 1500 measured
        assert summary["cathode_nm"]["centre"] == 10000.0  # the seed's LCO under it
        cell = lab.sim.sheet.cell(1, 1)
        assert cell.lipon[0].sigma_S_cm == 2.0e-6
        with pytest.raises(InputError, match=r"sheet SH-9: .*sim\.defects\.soft_sort"):
            lab.sheets.load(store, 9, _spec(sim={"defects": {"soft_sort": 0.1}}), seed=1)
        # a roll the store holds no layers of (made outside its records): the seeds' stack
        lab.sheets.load(store, 9, _spec(roll="ROLL-2"), seed=1)
        assert lab.sim.sheet.summary()["lipon_nm"]["centre"] == 1000.0
        with pytest.raises(InputError, match="does not fit"):
            lab.sheets.load(store, 9, _spec(area_cm2=0.3), seed=1)
    finally:
        lab.close()
        store.close()
