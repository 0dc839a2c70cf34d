"""The analysis layer (lipon_hw/analysis) against the simulated cells: cycle capacities and
CE of an LNMO cell cycled by hand, EIS fits of a blocking cell's spectrum, σ_e from a DC
polarization hold, Battery Data Format files and plots."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
from bdf_check import check_with_reference

from lipon_hw.analysis.bdf import (
    BDF_COLUMNS,
    SPECTRUM_COLUMNS,
    BdfMetadata,
    write_bdf,
    write_spectrum_csv,
)
from lipon_hw.analysis.cycles import CycleAccumulator, CycleStats, summarize
from lipon_hw.analysis.dcpol import analyze_dc_polarization, steady_state_current
from lipon_hw.analysis.eis import (
    film_conductivity_S_cm,
    fit_spectrum,
    ionic_conductivity_S_cm,
)
from lipon_hw.errors import InputError
from lipon_hw.sim.cells.factories import cell_from_spec

I_FAST_A = 3.0e-6  # seed 002's fast rate on the 4.9 mm² LNMO cell


# --- helpers -----------------------------------------------------------------------------------
def cycle_by_hand(cell, cycles: int, points: int = 30):
    """CC charge to 5.1 V and CC discharge to 3.5 V, sampled `points` times per half cycle
    (both ends included); yields one batch (t, V, I, cycle) per half cycle."""
    t = 0.0
    for n in range(1, cycles + 1):
        for current, v_min, v_max in ((I_FAST_A, None, 5.1), (-I_FAST_A, 3.5, None)):
            cell.set_control(t, "current", current)
            t_end = cell.next_crossing(t, v_min, v_max, None)
            ts = np.linspace(t, t_end, points)
            vs, cs = [], []
            for x in ts:
                vs.append(cell.voltage_V(x))
                cs.append(cell.current_A(x))
            yield ts, np.array(vs), np.array(cs), np.full(points, n)
            t = t_end


def blocking_spectrum(cell, noise: float = 0.0, seed: int = 7):
    """3 MHz → 0.1 Hz at 10 points per decade, with optional relative complex noise."""
    n = int(round(10 * math.log10(3e6 / 0.1))) + 1
    f = np.logspace(math.log10(3e6), -1, n)
    z = np.array([cell.impedance_ohm(0.0, x) for x in f])
    if noise:
        rng = np.random.default_rng(seed)
        z = z * (1 + noise * (rng.standard_normal(n) + 1j * rng.standard_normal(n)))
    return f, z


# --- cycles ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lnmo_batches():
    cell = cell_from_spec({"kind": "lnmo"})
    return cell, list(cycle_by_hand(cell, 4))


def run_accumulator(batches, acc=None):
    acc = acc or CycleAccumulator()
    out = []
    for b in batches:
        out += acc.feed(*b)
    return acc, out


def test_cycle_capacity_and_ce_of_an_lnmo_cell(lnmo_batches):
    cell, batches = lnmo_batches
    acc, out = run_accumulator(batches)
    assert len(out) == 3  # cycles 1–3 finished when the next began
    out += acc.finish()
    assert [s.cycle for s in out] == [1, 2, 3, 4]
    # constant current: the charge is exactly I × the charging time
    t_charge = batches[0][0][-1] - batches[0][0][0]
    assert out[0].charge_Ah == pytest.approx(I_FAST_A * t_charge / 3600, rel=1e-9)
    nominal_Ah = cell.capacity_Ah
    for s in out[1:]:
        assert 0.85 * nominal_Ah < s.discharge_Ah <= 1.02 * nominal_Ah
        assert 0.99 <= s.coulombic_efficiency < 1.0
        assert s.discharge_Wh / s.discharge_Ah == pytest.approx(4.6, abs=0.15)  # ~4.7 V plateau
        assert s.charge_Wh > s.discharge_Wh
    # the first charge also empties the ~3 % over-lithiated surface (seed 002): lower CE
    assert out[0].coulombic_efficiency < out[1].coulombic_efficiency
    assert out[0].retention == 1.0
    assert out[3].retention == pytest.approx(out[3].discharge_Ah / out[0].discharge_Ah)
    assert out[-1].t_end_s == batches[-1][0][-1]
    summary = summarize(out, from_cycle=2)
    assert summary.cycles == 4 and summary.last_discharge_Ah == out[-1].discharge_Ah
    assert summary.mean_coulombic_efficiency == pytest.approx(
        np.mean([s.coulombic_efficiency for s in out[1:]]))
    assert summary.retention == out[-1].retention


def test_accumulator_state_continues_exactly(lnmo_batches):
    _, batches = lnmo_batches
    acc_all, whole = run_accumulator(batches)
    whole += acc_all.finish()
    acc, first = run_accumulator(batches[:3])
    saved = json.loads(json.dumps(acc.state()))
    resumed, rest = run_accumulator(batches[3:], CycleAccumulator.from_state(saved))
    assert first + rest + resumed.finish() == whole  # same floats, not just close
    # a different batching (one sample at a time across a boundary) agrees closely
    acc1 = CycleAccumulator()
    single = []
    for t, v, i, c in zip(*[np.concatenate(x) for x in zip(*batches[:4], strict=True)],
                              strict=True):
        single += acc1.feed(t, v, i, c)
    single += acc1.finish()
    for a, b in zip(single, whole[:2], strict=True):
        assert a.charge_Ah == pytest.approx(b.charge_Ah, rel=1e-12)
        assert a.discharge_Wh == pytest.approx(b.discharge_Wh, rel=1e-12)


def test_accumulator_splits_a_sign_change_and_keeps_one_cycle():
    acc = CycleAccumulator()
    # current ramps +1 A → −1 A over 2 s at 2 V: 0.5 As in, 0.5 As out, 1 Ws each way
    assert acc.feed([0.0, 2.0], [2.0, 2.0], [1.0, -1.0], [0, 0]) == []
    (s,) = acc.finish()
    assert s.charge_Ah * 3600 == pytest.approx(0.5)
    assert s.discharge_Ah * 3600 == pytest.approx(0.5)
    assert s.charge_Wh * 3600 == pytest.approx(1.0)
    assert s.coulombic_efficiency == pytest.approx(1.0)
    # memory: the state stays a few numbers however many cycles pass
    acc = CycleAccumulator()
    for n in range(500):
        acc.feed([2.0 * n, 2.0 * n + 1], [4.0, 4.0], [1.0, -1.0], [n, n])
    assert len(json.dumps(acc.state())) < 300


def test_accumulator_rejects_bad_input():
    acc = CycleAccumulator()
    with pytest.raises(InputError, match="time order"):
        acc.feed([0.0, 2.0, 1.0], [1, 1, 1], [0, 0, 0], [0, 0, 0])
    with pytest.raises(InputError, match="different lengths"):
        acc.feed([0.0, 1.0], [1.0], [0.0, 0.0], [0, 0])
    acc.feed([5.0], [1.0], [0.0], [0])
    with pytest.raises(InputError, match="time order"):
        acc.feed([4.0], [1.0], [0.0], [0])
    with pytest.raises(InputError, match="not valid"):
        CycleAccumulator.from_state({"version": 1})


def test_summarize_without_discharge():
    s = summarize([CycleStats(0, 1e-6, 0.0, 4e-6, 0.0, 0.0, None, 10.0)])
    assert s.retention is None and s.reference_discharge_Ah is None
    assert s.mean_coulombic_efficiency == 0.0


# --- EIS -----------------------------------------------------------------------------------------
def film_sigma_truth(cell):
    (layer,) = cell.lipon
    return layer.thickness_nm * 1e-7 / (cell.film_resistance_ohm() * cell.area_cm2)


@pytest.mark.parametrize("noise", [0.0, 0.005])
def test_eis_fit_recovers_the_film_conductivity(noise):
    cell = cell_from_spec({"kind": "blocking"})
    f, z = blocking_spectrum(cell, noise)
    fit = fit_spectrum(f, z, n_arcs=2, blocking=True)
    assert fit.success
    truth = film_sigma_truth(cell)
    assert truth == pytest.approx(2.5e-6, rel=1e-9)  # seed 000: free-standing film, 25 °C
    sigma = film_conductivity_S_cm(fit, cell.lipon_thickness_nm, cell.area_cm2)
    assert sigma == pytest.approx(truth, rel=0.05)
    # the arcs come fastest first; the film's apex is the geometric-capacitance one
    assert fit.arcs[0].tau_s < fit.arcs[1].tau_s
    assert 1e5 < fit.film.f_peak_Hz < 1e6
    assert fit.tail is not None and 0.85 < fit.tail.alpha <= 1.0
    assert fit.rms_relative < (0.01 if noise == 0 else 0.02)
    zf = fit.impedance(f)
    assert np.max(np.abs(zf - z) / np.abs(z)) < 0.05


def test_eis_fit_of_a_hotter_cell_follows_arrhenius():
    cold = cell_from_spec({"kind": "blocking"})
    hot = cell_from_spec({"kind": "blocking", "temperature_C": 60.0})
    s_cold = film_conductivity_S_cm(fit_spectrum(*blocking_spectrum(cold)),
                                    cold.lipon_thickness_nm, cold.area_cm2)
    s_hot = film_conductivity_S_cm(fit_spectrum(*blocking_spectrum(hot)),
                                   hot.lipon_thickness_nm, hot.area_cm2)
    assert s_hot == pytest.approx(film_sigma_truth(hot), rel=0.05)
    assert s_hot / s_cold > 5  # Ea = 0.55 eV: ×10 between 25 and 60 °C


def test_eis_fit_recovers_an_exact_three_arc_circuit():
    f = np.logspace(6, -2, 81)
    w = 2 * np.pi * f
    truth = [(1000.0, 1e-6, 0.95), (300.0, 1e-4, 0.85), (2000.0, 1e-2, 0.8)]
    z = 20.0 + sum(r / (1 + (1j * w * t) ** a) for r, t, a in truth) + \
        1 / (1e-5 * (1j * w) ** 0.9)
    fit = fit_spectrum(f[::-1], z[::-1], n_arcs=3)  # any frequency order
    assert fit.R0_ohm == pytest.approx(20.0, rel=1e-4)
    for arc, (r, t, a) in zip(fit.arcs, truth, strict=True):
        assert (arc.R_ohm, arc.tau_s, arc.alpha) == pytest.approx((r, t, a), rel=1e-4)
        assert arc.Q * r / t ** a == pytest.approx(1.0, rel=1e-3)
    assert (fit.tail.Q, fit.tail.alpha) == pytest.approx((1e-5, 0.9), rel=1e-4)
    assert fit.rms_relative < 1e-6
    plain = fit_spectrum(f, 20.0 + sum(r / (1 + (1j * w * t) ** a) for r, t, a in truth[::2]),
                         n_arcs=2, blocking=False)
    assert plain.tail is None and plain.film_resistance_ohm == pytest.approx(1000.0, rel=1e-4)


def test_ionic_conductivity_formula_and_bad_input():
    assert ionic_conductivity_S_cm(3700.0, 3700.0, 0.04) == pytest.approx(2.5e-6)
    with pytest.raises(InputError, match="positive R_ohm"):
        ionic_conductivity_S_cm(0.0, 1000.0, 0.04)
    with pytest.raises(InputError, match="frequencies"):
        fit_spectrum([1.0, 2.0], [1 + 1j])
    with pytest.raises(InputError, match="cannot fit"):
        fit_spectrum([1e3, 1e2, 1e1], [1 - 1j, 2 - 2j, 3 - 3j])


# --- DC polarization -----------------------------------------------------------------------------
def dc_hold(hold_s: float, points: int = 200):
    cell = cell_from_spec({"kind": "blocking"})
    cell.set_control(0.0, "voltage", 1.0)
    ts = np.logspace(-3, math.log10(hold_s), points)
    return cell, ts, np.array([cell.current_A(t) for t in ts])


def test_dc_polarization_gives_the_electronic_conductivity():
    cell, ts, current = dc_hold(3600.0)
    result = analyze_dc_polarization(ts, current, 1.0, cell.lipon_thickness_nm, cell.area_cm2)
    assert 1.2e-14 / 2 < result.sigma_e_S_cm < 1.2e-14 * 2  # PHYSICS.md §6, seed 000
    # the cell's own leakage path, t/(σ_e·A)
    assert result.steady.I_ss_A == pytest.approx(1.0 / cell.electronic_resistance_ohm(),
                                                 rel=0.02)


def test_dc_polarization_extrapolates_a_short_hold():
    cell, ts, current = dc_hold(600.0)
    steady = steady_state_current(ts, current)
    truth = 1.0 / cell.electronic_resistance_ohm()
    assert steady.method == "fit" and steady.n_exp >= 1
    assert steady.tail_mean_A > 2 * truth  # still relaxing after 10 min
    assert steady.I_ss_A == pytest.approx(truth, rel=0.1)
    rng = np.random.default_rng(3)
    _, ts, current = dc_hold(3600.0)  # a settled hold with 5 % noise on the leakage
    noisy = current + truth * 0.05 * rng.standard_normal(len(current))
    assert steady_state_current(ts, noisy).I_ss_A == pytest.approx(truth, rel=0.1)


def test_dc_polarization_rejects_bad_input():
    with pytest.raises(InputError, match="at least 8"):
        steady_state_current([0.0, 1.0], [1e-9, 1e-9])
    with pytest.raises(InputError, match="time order"):
        steady_state_current(np.arange(10.0)[::-1], np.ones(10))


# --- Battery Data Format -------------------------------------------------------------------------
SPEC_LABELS = (  # the preferred labels of the format's ontology 1.2.0, typed out by hand
    "Test Time / s", "Voltage / V", "Current / A", "Unix Time / s", "Cycle Count / 1",
    "Step Count / 1", "Step ID", "Step Type", "Step Index / 1", "Step Time / s",
    "Record Index / 1", "Charging Capacity / Ah", "Discharging Capacity / Ah",
    "Charging Energy / Wh", "Discharging Energy / Wh", "Net Capacity / Ah",
    "Cumulative Capacity / Ah", "Cycle Charging Capacity / Ah",
    "Cycle Discharging Capacity / Ah", "Cycle Charging Energy / Wh",
    "Cycle Discharging Energy / Wh", "Power / W")
UNIX_START_S = 1_767_225_600.123456  # 2026-01-01T00:00:00.123456Z: needs float64


def bdf_rows(batches):
    """Rows of (t, V, I, cycle, step_count, step_id, step_type) for the hand-cycled cell:
    step 1 charges and step 2 discharges in every cycle; the step count never resets."""
    for k, (ts, vs, cs, cyc) in enumerate(batches):
        step_count = k + 1
        step_id, kind = (1, "CC_CHG") if k % 2 == 0 else (2, "CC_DCH")
        for row in zip(ts, vs, cs, cyc, strict=True):
            yield (*row, step_count, step_id, kind)


@pytest.mark.parametrize("name", ["A0001.bdf.csv", "A0001.bdf.parquet"])
def test_bdf_file_has_the_standard_labels_and_round_trips(lnmo_batches, tmp_path, name):
    _, batches = lnmo_batches
    meta = BdfMetadata(cell_name="A0001", unix_start_s=UNIX_START_S, institution="LAB")
    path = write_bdf(bdf_rows(batches), tmp_path / name, meta, batch_rows=7)
    assert tuple(BDF_COLUMNS) == SPEC_LABELS
    check_with_reference(path)  # the format's own reader validates it
    if name.endswith(".parquet"):
        table = pq.read_table(path)
        assert tuple(table.column_names) == SPEC_LABELS
        assert str(table.schema.field("Unix Time / s").type) == "double"
        assert str(table.schema.field("Step Count / 1").type) == "int64"
        cols = {n: table.column(n).to_pylist() for n in SPEC_LABELS}
    else:
        with open(path, newline="") as fh:
            reader = csv.reader(fh)
            assert tuple(next(reader)) == SPEC_LABELS
            data = list(reader)
        cols = {n: [r[j] for r in data] for j, n in enumerate(SPEC_LABELS)}
        cols = {n: v if n == "Step Type" else [float(x) for x in v] for n, v in cols.items()}
    rows = list(bdf_rows(batches))
    assert len(cols["Test Time / s"]) == len(rows)
    assert cols["Voltage / V"] == [r[1] for r in rows]  # exact: full float precision
    assert cols["Unix Time / s"][5] == UNIX_START_S + rows[5][0]
    assert cols["Step Count / 1"][-1] == len(batches)  # one step per half cycle
    assert cols["Step Index / 1"][:3] == [1, 2, 3] and cols["Step Index / 1"][30] == 1
    assert cols["Step Time / s"][30] == 0.0
    assert cols["Record Index / 1"][-1] == len(rows)
    assert cols["Step Type"][0] == "CC_CHG" and cols["Step Type"][30] == "CC_DCH"
    # the cycle columns at each cycle's last row equal the accumulator's figures
    acc, stats = run_accumulator(batches)
    stats += acc.finish()
    last_rows = [j for j in range(len(rows)) if j + 1 == len(rows) or rows[j + 1][3] != rows[j][3]]
    for s, j in zip(stats, last_rows, strict=True):
        assert cols["Cycle Discharging Capacity / Ah"][j] == pytest.approx(s.discharge_Ah,
                                                                           rel=1e-9)
        assert cols["Cycle Charging Energy / Wh"][j] == pytest.approx(s.charge_Wh, rel=1e-9)
    assert cols["Cycle Charging Capacity / Ah"][60] == 0.0  # first row of cycle 2
    total_ch = sum(s.charge_Ah for s in stats)
    assert cols["Charging Capacity / Ah"][-1] == pytest.approx(total_ch, rel=1e-9)
    assert cols["Net Capacity / Ah"][-1] == pytest.approx(
        total_ch - sum(s.discharge_Ah for s in stats), rel=1e-6)
    side = json.loads((tmp_path / f"{name}.json").read_text())
    assert side["cell_name"] == "A0001" and side["rows"] == len(rows)
    assert side["start_utc"].startswith("2026-01-01T00:00:00")


def test_bdf_rejects_bad_rows_and_leaves_no_file(tmp_path):
    meta = BdfMetadata(cell_name="X", unix_start_s=0.0)
    rows = [(0.0, 3.0, 1e-6, 0, 0, 1, "CC_CHG"), (1.0, 3.1, 1e-6, 0, 0, 1, "CC_CHG"),
            (0.5, 3.1, 1e-6, 0, 0, 1, "CC_CHG")]
    with pytest.raises(InputError, match="time goes back at row 3"):
        write_bdf(rows, tmp_path / "x.bdf", meta, batch_rows=2)
    with pytest.raises(InputError, match="step count goes back"):
        write_bdf([(0.0, 3.0, 0.0, 0, 1, 1, "REST"), (2.0, 3.0, 0.0, 0, 0, 1, "REST")],
                  tmp_path / "y.bdf", meta)
    with pytest.raises(InputError, match="whole counts"):
        write_bdf([(0.0, 3.0, 0.0, 0.5, 1, 1, "REST")], tmp_path / "w.bdf", meta)
    with pytest.raises(InputError, match="unknown"):
        write_bdf(rows[:1], tmp_path / "z.bdf", meta, fmt="xlsx")
    assert list(tmp_path.iterdir()) == []


def test_spectrum_csv(tmp_path):
    cell = cell_from_spec({"kind": "blocking"})
    f, z = blocking_spectrum(cell)
    rows = [(12.5 + k, fk, zk.real, zk.imag, 3, 7) for k, (fk, zk) in enumerate(zip(f, z,
                                                                                       strict=True))]
    path = write_spectrum_csv(rows, tmp_path / "eis.csv")
    with open(path, newline="") as fh:
        data = list(csv.DictReader(fh))
    assert tuple(data[0]) == SPECTRUM_COLUMNS
    assert "Frequency / Hz" in SPECTRUM_COLUMNS and "Imaginary Impedance / ohm" in SPECTRUM_COLUMNS
    assert len(data) == len(f)
    assert float(data[0]["Real Impedance / ohm"]) == z[0].real
    assert float(data[0]["Imaginary Impedance / ohm"]) == z[0].imag < 0
    assert float(data[-1]["Phase / deg"]) == pytest.approx(np.degrees(np.angle(z[-1])))
    assert data[4]["Cycle Count / 1"] == "3" and data[4]["Step Count / 1"] == "7"
    with pytest.raises(InputError, match="row 1"):
        write_spectrum_csv([(0.0, -1.0, 1.0, -1.0, 0, 0)], tmp_path / "bad.csv")
    assert not (tmp_path / "bad.csv").exists()


# --- plots ----------------------------------------------------------------------------------------
def test_plots_write_pngs(lnmo_batches, tmp_path):
    from lipon_hw.analysis.plots import (
        plot_capacity_ce,
        plot_nyquist,
        plot_voltage_capacity,
        select_cycles,
    )

    _, batches = lnmo_batches
    t, v, i, c = (np.concatenate(x) for x in zip(*batches, strict=True))
    acc, stats = run_accumulator(batches)
    stats += acc.finish()
    cell = cell_from_spec({"kind": "blocking"})
    f, z = blocking_spectrum(cell)
    paths = [plot_voltage_capacity(t, v, i, c, tmp_path / "vq.png"),
             plot_capacity_ce(stats, tmp_path / "sub" / "ce.png"),
             plot_nyquist(f, z, tmp_path / "nyq.png", fit=fit_spectrum(f, z))]
    for p in paths:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert select_cycles(range(1, 601), 6) == [1, 121, 241, 360, 480, 600]
    with pytest.raises(InputError, match="no cycles"):
        plot_capacity_ce([], tmp_path / "empty.png")
