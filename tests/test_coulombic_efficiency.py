"""One coulombic efficiency per cycle — what the cycle took out over what it put in,
whichever way the protocol starts — the same in the store, the summary, the export and
the plot; ≤ 100 % on every cycle of the shipped protocols' cells; and a discharge that
ends within one measurement of its cut-off (issue 9, item 3)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from bdf_check import check_with_reference

from lipon_hw.analysis import plots
from lipon_hw.analysis.cycles import CycleAccumulator
from lipon_hw.analysis.integrate import interval_integrals, step_leads
from lipon_hw.celltest.results import export_cell_run, write_cell_plots
from lipon_hw.celltest.session import start_cycling
from lipon_hw.errors import InputError
from lipon_hw.store import Store

SEQUENCES = Path(__file__).resolve().parents[1] / "sequences"


def shortened(tmp_path: Path, name: str, cycles: int, total: int) -> str:
    """A shipped protocol on one channel and fewer cycles (`total` in its loop)."""
    text = (SEQUENCES / name).read_text(encoding="utf-8")
    text = text.replace("channels: 1-4", "channels: 1")
    text = text.replace("times: 149", f"times: {cycles - 1}").replace(
        "cycles: 150,", f"cycles: {cycles},").replace("times: 13", f"times: {total}")
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def stored(data: Path, run_id: int, channel: int = 1) -> list[dict]:
    return Store(data).cycles(run_id, channel)


# --- the integration rule ---------------------------------------------------------------------
def test_open_circuit_between_steps_counts_no_charge():
    # a discharge at −1 mA ends at t = 10 s; the cell is off until the next step starts at
    # t = 99 s; its first sample (+2 mA) comes one 1 s measurement later, at t = 100 s
    t = np.array([9.0, 10.0, 100.0, 101.0])
    v = np.array([3.1, 3.0, 4.2, 4.2])
    i = np.array([-1e-3, -1e-3, 2e-3, 2e-3])
    steps = np.array([1, 1, 2, 2])
    ch, dis, _, _ = interval_integrals(t, v, i, step_leads(steps, 1.0))
    assert dis.sum() == pytest.approx(1e-3)  # 9→10 s only
    assert ch.sum() == pytest.approx(2 * 2e-3)  # the new step's first second, and 100→101
    # the old rule (a trapezoid across the open circuit) made up ~0.09 C of both
    ch_old, dis_old, _, _ = interval_integrals(t, v, i)
    assert dis_old.sum() > 10 * dis.sum() and ch_old.sum() > 10 * ch.sum()


def test_a_join_shorter_than_the_lead_counts_only_the_time_there_is():
    ch, _, _, _ = interval_integrals([0.0, 0.25], [4.0, 4.2], [-1e-3, 2e-3],
                                     step_leads([1, 2], [1.0, 1.0]))
    assert ch.sum() == pytest.approx(0.25 * 2e-3)


def test_efficiency_is_taken_out_over_put_in_whichever_sign_stores():
    # a plating cell stores with −50 nA for 100 s and gives back +50 nA for 80 s (its
    # first sample one 1 s measurement after the stripping starts)
    t = np.concatenate((np.arange(0, 101.0), np.arange(101, 181.0)))
    i = np.where(t <= 100, -5e-8, 5e-8)
    step = np.where(t <= 100, 1, 2)
    cycle = np.ones_like(t)
    for stores_with, expected in ((-1, 0.8), (1, 1 / 0.8)):
        acc = CycleAccumulator(stores_with)
        acc.feed(t, np.zeros_like(t), i, cycle, step=step, lead_s=1.0)
        (stats,) = acc.finish()
        assert stats.coulombic_efficiency == pytest.approx(expected, rel=1e-9)
    with pytest.raises(InputError, match="stores_with"):
        CycleAccumulator(0)


def test_a_saved_accumulator_keeps_its_direction_and_its_step():
    acc = CycleAccumulator(-1)
    acc.feed([0.0, 1.0], [0, 0], [-1e-6, -1e-6], [1, 1], step=[1, 1], lead_s=1.0)
    again = CycleAccumulator.from_state(acc.state())
    for a in (acc, again):
        a.feed([50.0, 51.0], [0, 0], [1e-6, 1e-6], [1, 1], step=[2, 2], lead_s=1.0)
    assert acc.finish() == again.finish()
    assert again.stores_with == -1


# --- end to end on the simulated bench ------------------------------------------------------
def test_plating_efficiency_is_one_number_in_store_summary_export_and_plot(tmp_path,
                                                                           monkeypatch):
    data = tmp_path / "data"
    result = start_cycling(shortened(tmp_path, "li_cu_plating.yaml", 0, 3), data, workers=1)
    cycles = stored(data, result.run_id)
    assert [c["cycle"] for c in cycles] == [1, 2, 3]
    ce = [c["coulombic_efficiency"] for c in cycles]
    # PHYSICS.md §6: 82.7 % at 87.5 kPa — stripped over plated, not its inverse (120.9 %)
    assert all(c == pytest.approx(0.827, abs=0.002) for c in ce)
    assert all(c["coulombic_efficiency"] == pytest.approx(c["charge_Ah"] / c["discharge_Ah"])
               for c in cycles)
    channel = result.summary["channels"][0]
    assert channel["mean_coulombic_efficiency"] == pytest.approx(np.mean(ce[1:]), rel=1e-6)

    files = export_cell_run(Store(data), result.run_id, "bdf", tmp_path / "out")
    for f in files:
        if f.name.endswith(".bdf.csv"):
            check_with_reference(f)
    table = next(f for f in files if f.name.endswith("-cycles.csv"))
    with open(table, encoding="utf-8") as fh:
        exported = [float(r["coulombic_efficiency"]) for r in csv.DictReader(fh)]
    assert exported == ce  # the stored numbers, as they are

    seen = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: seen.append(fig) or Path(path))
    write_cell_plots(Store(data), result.run_id, tmp_path / "plots")
    ce_axis = next(ax for fig in seen for ax in fig.axes
                   if "coulombic" in ax.get_ylabel())
    line = ce_axis.get_lines()[0]
    assert list(line.get_ydata()) == pytest.approx([100 * c for c in ce])
    fig = ce_axis.figure
    fig.canvas.draw()
    # the axis reads in percent: no offset such as "+1.209e2" to add to 0.02–0.05
    assert ce_axis.yaxis.get_major_formatter().get_offset() == ""
    labels = [float(t.get_text().replace("−", "-")) for t in ce_axis.get_yticklabels()
              if t.get_text()]
    assert min(labels) > 50 and max(labels) < 150


def test_lco_discharge_ends_at_its_cut_off_and_never_returns_more_than_it_took(tmp_path):
    data = tmp_path / "data"
    result = start_cycling(shortened(tmp_path, "lco_anodeless.yaml", 6, 0), data, workers=1)
    assert result.status == "completed"
    cycles = stored(data, result.run_id)
    assert len(cycles) == 6
    for c in cycles:
        assert c["coulombic_efficiency"] <= 1.0, c
    store = Store(data)
    rows = store.cell_samples(result.run_id, 1)
    by_step: dict[int, list] = {}
    for r in rows:
        if r[6] == "CC_DCHG":
            by_step.setdefault(r[4], []).append(r)
    assert len(by_step) == 6
    for step_rows in by_step.values():
        *_, before, last = step_rows
        assert before[1] > 3.0 >= last[1]  # the step ended on the first sample past 3.0 V
        # one measurement (1 s) past the cut-off on the emptied anode's knee: tens of mV,
        # not the 3 V collapse to ~0.1 V of a Li film that vanishes at once
        assert last[1] > 2.9, last
        assert last[0] - before[0] <= 1.0 + 1e-6 or before[1] - last[1] < 0.1

    # the BDF cycle columns at each cycle's last row are the stored cycle figures
    (bdf,) = [f for f in export_cell_run(store, result.run_id, "bdf", tmp_path / "out")
              if f.name.endswith(".bdf.csv")]
    check_with_reference(bdf)
    with open(bdf, encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))
    ends = {}
    for row in table:
        ends[int(row["Cycle Count / 1"])] = row
    for c in cycles:
        row = ends[c["cycle"]]
        assert float(row["Cycle Charging Capacity / Ah"]) == pytest.approx(c["charge_Ah"],
                                                                          rel=1e-9)
        assert float(row["Cycle Discharging Capacity / Ah"]) == pytest.approx(
            c["discharge_Ah"], rel=1e-9)
