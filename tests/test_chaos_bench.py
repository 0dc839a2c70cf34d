"""bench/chaos.py: its JSON line has the figures the issue asks for, a killed run is
resumed and judged, and the store checks find what they are there to find (a duplicated
reading, a reading out of order, a step count going back, a gap, a cell left connected)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lipon_hw.store import Store

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

from chaos_checks import judge  # noqa: E402
from chaos_plan import SEQUENCES, plan_run, station_text  # noqa: E402

from lipon_hw.station import load_station  # noqa: E402

FIGURES = {"bench", "runs", "ended_safe", "killed", "kills", "resumed_to_completion",
           "resumed_to_interlock_abort", "resumed_as_twin", "resumed_otherwise",
           "readings_checked",
           "readings_lost", "readings_duplicated", "identical_duplicates", "stragglers",
           "statuses", "sequences", "wall_s", "findings"}


def test_two_short_runs_one_killed_give_the_json_line(tmp_path):
    proc = subprocess.run([sys.executable, str(BENCH / "chaos.py"), "--runs", "2",
                           "--seed", "3", "--kill-fraction", "1", "--max-kills", "1",
                           "--sequence", "short_lipon", "--keep", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 1), proc.stderr
    lines = proc.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    assert set(figures) >= FIGURES
    assert figures["bench"] == "chaos" and figures["runs"] == 2
    assert figures["sequences"] == {"short_lipon": 2}
    # every run was drawn for a kill: one that ended before it came is not counted killed
    assert figures["killed"] == len(list(tmp_path.glob("run*/resume1.err")))
    assert figures["killed"] >= 1, proc.stdout
    assert figures["resumed_to_completion"] + figures["resumed_to_interlock_abort"] \
        + figures["resumed_as_twin"] + figures["resumed_otherwise"] == figures["killed"]
    # a killed run that did not resume to completion was run again, never killed
    twins = len(list(tmp_path.glob("run*/twin/run.err")))
    assert twins == figures["resumed_as_twin"] + figures["resumed_otherwise"]
    assert 0 <= figures["ended_safe"] <= 2 and figures["readings_checked"] > 100
    assert proc.returncode == (0 if figures["ended_safe"] == 2 and not figures["readings_lost"]
                               and not figures["readings_duplicated"]
                               and not figures["resumed_otherwise"] else 1)
    assert len(figures["findings"]) <= 2
    assert sum(line[:4].strip().isdigit() for line in lines) == 2  # a row per run


def test_plans_are_seeded_and_their_stations_load():
    for index in range(40):
        plan = plan_run(index, 7, 0.3, 2)
        again = plan_run(index, 7, 0.3, 2)
        assert (plan.sequence, plan.faults, plan.kill) == (again.sequence, again.faults,
                                                           again.kill)
        assert 1 <= len(plan.faults) <= 3
        load_station(text=station_text(plan.faults, plan.seed), path="chaos.yaml")
    assert {plan_run(i, 7, 0.3, 2).sequence.name for i in range(80)} \
        == {s.name for s in SEQUENCES}


def _deposition(tmp_path: Path, extra=(), last_made_safe="rf, shutter made safe"):
    store = Store(tmp_path)
    run_id = store.create_run("r", "deposition", "r.yaml", "", "", 1, None)
    for t in [0.0, 5.0, 10.0, 15.0, 20.0, *extra]:
        store.add_readings(run_id, t, {"qcm.thickness_nm": t / 10, "rf.forward_power_W": 50})
    if last_made_safe:
        store.add_alarm(run_id, 20.0, "info", "engine", f"safe state: {last_made_safe}",
                        reaction="safe state")
    store.set_status(run_id, "completed", "all steps done", {})
    store.close()
    return judge(tmp_path / "lipon.db")


def test_a_clean_deposition_store_passes(tmp_path):
    v = _deposition(tmp_path)
    assert v.safe and v.status == "completed"
    assert (v.duplicates, v.disorder, v.gaps) == (0, 0, [])
    assert v.readings == 10


def test_a_duplicated_reading_and_a_gap_are_found(tmp_path):
    v = _deposition(tmp_path, extra=[15.0, 60.0, 65.0])  # 15 again; 20 → 60 with 5 s records
    assert v.duplicates == 2  # both quantities at t = 15
    assert v.identical_duplicates == 2
    assert v.disorder == 0  # a twin is counted once, as a duplicate
    assert sorted(v.gaps) == [("qcm.thickness_nm", 20.0, 60.0), ("rf.forward_power_W", 20.0,
                                                                  60.0)]


def test_a_gap_an_instrument_alarm_told_of_is_counted_apart(tmp_path):
    store = Store(tmp_path)
    run_id = store.create_run("r", "deposition", "r.yaml", "", "", 1, None)
    for t in (0.0, 5.0, 10.0, 20.0, 25.0):  # 15 refused by the gauge, and said so
        store.add_readings(run_id, t, {"gauge.pressure_torr": 1e-6})
    store.add_alarm(run_id, 15.0, "warning", "gauge.pressure_torr", "gauge refused")
    store.add_alarm(run_id, 25.0, "info", "engine", "safe state: gauge made safe",
                    reaction="safe state")
    store.set_status(run_id, "completed", "all steps done", {})
    store.close()
    v = judge(tmp_path / "lipon.db")
    assert v.gaps == [] and v.told_gaps == [("gauge.pressure_torr", 10.0, 20.0)]


def test_a_reading_out_of_order_is_found(tmp_path):
    v = _deposition(tmp_path, extra=[12.5])
    assert (v.duplicates, v.disorder) == (0, 2)


@pytest.mark.parametrize("message", ["rf made safe; FAILED for shutter (lost)", None])
def test_a_deposition_not_made_safe_is_not_safe(tmp_path, message):
    v = _deposition(tmp_path, last_made_safe=message)
    assert not v.safe and v.why_unsafe


def _cells(tmp_path: Path, rows, status="completed", message="protocol done",
           every_s=30):
    store = Store(tmp_path)
    text = f"name: p\nkind: cycling\nrecord: {{every_s: {every_s}}}\nsteps: []\n"
    run_id = store.create_run("p", "cycling", "p.yaml", text, "", 1, None)
    store.add_channel(run_id, 1, "mes4", None, "p")
    store.add_cell_samples(run_id, 1, rows)
    store.update_channel(run_id, 1, status, message, 1, 2, rows[-1][0], "{}")
    store.set_status(run_id, status, message, {})
    store.close()
    return judge(tmp_path / "lipon.db")


def _row(t, step=1, kind="CC_CHG"):
    return (t, 4.0, 1e-6, 1, step, step, kind)


def test_a_clean_cell_store_passes(tmp_path):
    v = _cells(tmp_path, [_row(t) for t in range(0, 300, 30)])
    assert v.safe and (v.duplicates, v.disorder, v.gaps) == (0, 0, [])


def test_cell_twins_steps_going_back_and_gaps_are_found(tmp_path):
    rows = [_row(0), _row(30), _row(60, 2), _row(60, 2), _row(90, 1), _row(300, 2)]
    v = _cells(tmp_path, rows)
    assert v.duplicates == 1 and v.identical_duplicates == 1
    assert v.disorder == 1  # step 2 → 1
    assert v.gaps == [("channel 1", 90.0, 300.0)]


def test_a_pause_excuses_a_gap(tmp_path):
    rows = [_row(0), _row(30), _row(31, 2, "PAUSE"), _row(900, 3)]
    assert _cells(tmp_path, rows).gaps == []


def test_a_cell_left_connected_is_not_safe(tmp_path):
    v = _cells(tmp_path, [_row(0), _row(30)], status="failed",
               message="lost; the cell could not be disconnected (sim://mes4/1 is lost)")
    assert not v.safe and "could not be disconnected" in v.why_unsafe


def _sheet(tmp_path: Path, cells, status="completed",
           last_safe="safe state: probe_pstat channels 1–32 off; stage needles up"):
    """A 2 × 3 sheet's screening with `cells` ((row, col, touchdown) in the order stored)."""
    from lipon_hw.store_schema import ScreenCell, Sheet

    store = Store(tmp_path)
    text = "name: s\nkind: screening\nsheet: {id: S-1, rows: 2, cols: 3}\n"
    run_id = store.create_run("s", "screening", "s.yaml", text, "", 1, "S-1")
    store.add_sheet(Sheet("S-1", None, 2, 3, 5.0, 5.0, run_id))
    for k, (row, col, touchdown) in enumerate(cells):
        store.add_screen_cells([ScreenCell(run_id, "S-1", row, col, col, touchdown, float(k),
                                           1, "ok", {"ocv_V": 4.2}, 1, "good", 1, "pass",
                                           True, "pass")])
        store.flush()
    if last_safe:
        store.add_alarm(run_id, 9.0, "info", "stage", last_safe, reaction="safe state")
    store.set_status(run_id, status, "done", {})
    store.close()
    return judge(tmp_path / "lipon.db")


SHEET = [(1, 1, 1), (1, 2, 1), (1, 3, 1), (2, 1, 2), (2, 2, 2), (2, 3, 2)]


def test_a_clean_screening_store_passes(tmp_path):
    v = _sheet(tmp_path, SHEET)
    assert v.safe and (v.duplicates, v.disorder, v.gaps, v.readings) == (0, 0, [], 6)


def test_a_touchdown_stored_after_a_later_one_and_a_missing_cell_are_found(tmp_path):
    v = _sheet(tmp_path, [(1, 1, 1), (1, 2, 1), (1, 3, 3), (2, 1, 2), (2, 3, 2)])
    assert v.disorder == 2 and v.duplicates == 0  # touchdown 2 after touchdown 3, twice
    assert v.gaps == [("cell R02C02", 0.0, 0.0)]


def test_a_screening_that_did_not_complete_is_not_judged_for_its_missing_cells(tmp_path):
    assert _sheet(tmp_path, SHEET[:3], status="failed").gaps == []


@pytest.mark.parametrize("last", [
    "safe state: stage needles up; FAILED probe_pstat channel 5: sim://probe/5 is lost", None])
def test_a_screening_whose_needles_are_not_known_up_or_channels_off_is_not_safe(
        tmp_path, last):
    v = _sheet(tmp_path, SHEET, last_safe=last)
    assert not v.safe and v.why_unsafe
