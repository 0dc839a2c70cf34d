"""Sheet screening end to end on the simulated lab (issue 13): a roll deposited by the
sputter tool, its sheet screened by the shipped recipe (20 × 30 cells, 32 sites,
multisine impedance), scored against the simulated sheet's ground truth; the maps, the
exports, the genealogy; a kill -9 mid-sheet and a resume that measures every cell once;
contacts that fail, measured and binned as the tester's fault."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from stores import committed

from lipon_hw.cli import main
from lipon_hw.deposition.session import start_run
from lipon_hw.engine import lifecycle
from lipon_hw.errors import InstrumentError, LinkLost
from lipon_hw.kinds import RunOptions
from lipon_hw.screening.kind import KIND
from lipon_hw.screening.session import Prober
from lipon_hw.sim.sheet.hooks import SHEET_CELL
from lipon_hw.sim.sheet.score import score
from lipon_hw.store import Store

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "sequences" / "sheet_screening.yaml"
SHEET, ROLL = "SHEET-0001", "ROLL-0001"


@pytest.fixture(scope="module")
def screened(tmp_path_factory):
    """ROLL-0001's LiPON sputtered by the shipped 1 µm recipe, then its sheet screened."""
    data = tmp_path_factory.mktemp("screened") / "data"
    deposit = start_run(str(ROOT / "sequences" / "lipon_rf_sputter.yaml"), data,
                        sample_id=ROLL)
    assert deposit.status == "completed"
    result = lifecycle.start(KIND, str(RECIPE), RunOptions(str(data), seed=1))
    return data, deposit, result


def test_every_cell_is_measured_once_and_binned(screened):
    data, _, result = screened
    assert result.status == "completed", result.message
    store = Store(data, read_only=True)
    cells = store.screen_cells(result.run_id)
    assert len(cells) == len({(c.row, c.col) for c in cells}) == 600
    assert {c.touchdown for c in cells} == set(range(1, 21))  # 4 × 8 sites: 5 × 4 blocks
    s = result.summary
    assert s["cells_screened"] == 600 and s["sites"] == 32
    assert sum(s["hard_bins"].values()) == 600


def test_shorts_are_found_and_good_cells_kept_against_the_ground_truth(screened):
    """Acceptance: ≥ 99 % of shorted cells binned as shorts, ≤ 1 % of good cells out."""
    data, _, result = screened
    found = score(Store(data, read_only=True), result.run_id)
    assert found.shorts >= 10 and found.good >= 500  # the sheet has both to score
    assert found.short_detection >= 0.99, found.to_dict()
    assert found.good_loss <= 0.01, found.to_dict()
    assert found.unscored == 0


def test_test_time_per_cell_is_within_1_5_of_the_physical_limit(screened):
    s = screened[2].summary
    assert s["physical_limit_per_cell_s"] == pytest.approx(1.0 + 0.5 + 0.1 + 0.2)
    assert s["test_time_over_limit"] <= 1.5
    assert s["cells_per_hour"] > 10_000  # 32 sites, ~2 s a touchdown's tests


def test_the_maps_follow_the_depositions_thickness_gradient(screened):
    """Re Z at 10 kHz (the LiPON's bulk resistance) follows the true local LiPON
    thickness across the sheet, and the heat maps and bin map are drawn."""
    data, _, result = screened
    store = Store(data, read_only=True)
    truth = {pos: t for (_, pos), t in store.sim_truths(SHEET_CELL, SHEET).items()}
    good = [c for c in store.screen_cells(result.run_id) if c.passed]
    thickness = np.array([truth[(c.row - 1) * 30 + c.col - 1]["lipon_nm"] for c in good])
    r_hf = np.array([c.metrics["r_hf_ohm"] for c in good])
    assert np.corrcoef(thickness, r_hf)[0, 1] > 0.9
    centre = [c.metrics["r_hf_ohm"] for c in good if c.col in (15, 16)]
    edge = [c.metrics["r_hf_ohm"] for c in good if c.col in (1, 30)]
    assert 0.85 < np.mean(edge) / np.mean(centre) < 0.97  # ±5–10 % centre to edge
    names = {Path(p).name for p in result.plots}
    for metric in ("ocv_V", "z_10000Hz_ohm", "z_10Hz_ohm", "r_hf_ohm", "bins"):
        assert f"{SHEET}-{metric}.png" in names
    assert f"{SHEET}.stdf" in names and f"{SHEET}-cells.csv" in names


def test_exports_and_the_genealogy_both_ways(screened, tmp_path):
    data, deposit, result = screened
    cli = CliRunner()
    out = cli.invoke(main, ["export", str(result.run_id), "--data", str(data), "--format",
                            "stdf", "--out", str(tmp_path / "sheet.stdf")])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "sheet.stdf").stat().st_size > 10_000
    cell = cli.invoke(main, ["sample", f"{SHEET}-R01C01", "--data", str(data), "--json"])
    assert cell.exit_code == 0, cell.output
    doc = json.loads(cell.output)
    assert [a["parent"] for a in doc["ancestors"]] == [SHEET, ROLL]
    assert str(deposit.run_id) in json.dumps(doc["runs"])  # the run that laid the LiPON
    assert doc["screening"][0]["run_id"] == result.run_id
    roll = cli.invoke(main, ["sample", ROLL, "--data", str(data)])
    assert roll.exit_code == 0 and SHEET in roll.output, roll.output


def test_the_shipped_cycling_of_screened_cells_validates_on_the_screened_sheet(screened):
    data = screened[0]
    out = CliRunner().invoke(main, ["validate", str(ROOT / "sequences" /
                                                    "screened_cells_cycling.yaml"),
                                    "--data", str(data), "--json"])
    assert out.exit_code == 0, out.output


def test_a_killed_sheet_resumes_and_measures_every_cell_exactly_once(tmp_path):
    """kill -9 mid-sheet (real-time clock at 20×, so the moment comes), then resume: 600
    cells, each stored once; what was stored before the kill is kept as it was."""
    data = tmp_path / "data"
    db = data / "lipon.db"
    proc = subprocess.Popen([sys.executable, "-m", "lipon_hw.cli", "run", str(RECIPE), "--data",
                             str(data), "--speed", "20"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while not committed(db, "SELECT 1 FROM screen_cells WHERE touchdown >= 3", while_made=True):
        assert proc.poll() is None, proc.stderr.read().decode(errors="replace")[-2000:]
        assert time.monotonic() < deadline, "the moment to kill never came"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    proc.stderr.close()
    before = committed(db, "SELECT row, col, t_s, metrics, soft_bin FROM screen_cells "
                           "ORDER BY row, col")
    assert 64 <= len(before) < 600
    assert committed(db, "SELECT status FROM runs") == [("running",)]
    resume = subprocess.run([sys.executable, "-m", "lipon_hw.cli", "resume", "1", "--data",
                             str(data), "--json"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300)
    assert resume.returncode == 0, resume.stderr
    assert json.loads(resume.stdout.strip().splitlines()[-1])["status"] == "completed"
    rows = committed(db, "SELECT row, col FROM screen_cells")
    assert len(rows) == len(set(rows)) == 600
    kept = committed(db, "SELECT row, col, t_s, metrics, soft_bin FROM screen_cells")
    assert set(before) <= set(kept)  # measured before the kill: kept as it was


def test_lost_contacts_are_measured_retouched_and_binned_as_the_testers_fault(tmp_path):
    """A prober whose needles miss half the time: no crash; a site without contact is
    lowered again; one that never made it is a tester fault, never a bad cell."""
    station = tmp_path / "station.yaml"
    text = (ROOT / "lipon_hw" / "data" / "sim_lab.yaml").read_text(encoding="utf-8")
    assert "contact_miss: 0.003" in text
    station.write_text(text.replace("contact_miss: 0.003", "contact_miss: 0.5"),
                       encoding="utf-8")
    recipe = tmp_path / "small.yaml"
    recipe.write_text(RECIPE.read_text(encoding="utf-8").replace("rows: 20", "rows: 4")
                      .replace("cols: 30", "cols: 16"), encoding="utf-8")
    result = lifecycle.start(KIND, str(recipe), RunOptions(str(tmp_path / "d"),
                                                           str(station), seed=3))
    assert result.status == "completed", result.message
    cells = Store(tmp_path / "d", read_only=True).screen_cells(result.run_id)
    assert len(cells) == 64
    lost = [c for c in cells if c.contact == "lost"]
    retouched = [c for c in cells if c.attempts == 2]
    assert lost and len(retouched) > len(lost)  # some found contact on the second touch
    assert all(c.soft_bin == 98 and c.hard_bin == 8 and not c.passed for c in lost)
    assert all(c.soft_bin != 98 for c in cells if c.contact == "ok")
    assert result.summary["tester_faults"] == len(lost)


def test_an_operator_abort_stops_between_touchdowns_with_the_probes_up_and_resumes(tmp_path):
    """`lipon-hw abort` reaches the prober at its next touchdown: the run ends aborted,
    the needles lifted and the sites' cells disconnected; a resume screens the rest."""
    data = tmp_path / "d"
    recipe = tmp_path / "small.yaml"
    recipe.write_text(RECIPE.read_text(encoding="utf-8").replace("rows: 20", "rows: 8")
                      .replace("cols: 30", "cols: 16"), encoding="utf-8")

    def abort_at_once(run_id, plan):
        other = Store(data)
        other.requests.make(run_id, "abort")
        other.close()

    result = lifecycle.start(KIND, str(recipe), RunOptions(str(data), seed=1),
                             lifecycle.Watch(start=abort_at_once))
    assert result.status == "aborted" and "before touchdown 1" in result.message
    assert Store(data, read_only=True).screen_cells(result.run_id) == []
    again = lifecycle.resume(KIND, result.run_id, RunOptions(str(data)))
    assert again.status == "completed", again.message
    assert len(Store(data, read_only=True).screen_cells(result.run_id)) == 128


def _small_sheet_with_a_dropped_channel(tmp_path, at_s: float, for_s: float | None,
                                       fault: str = "link_drop"):
    """An 8 × 16 sheet's recipe, and a station whose probe channel 5 port drops (or has
    another `fault` of the catalogue) at `at_s` for `for_s` (None: for good)."""
    station = tmp_path / "station.yaml"
    text = (ROOT / "lipon_hw" / "data" / "sim_lab.yaml").read_text(encoding="utf-8")
    lasting = "" if for_s is None else f", for_s: {for_s:g}"
    station.write_text(text.replace("sim:\n  seed: 1\n", "sim:\n  seed: 1\n  faults:\n"
                                    f"    - {{fault: {fault}, instrument: probe_pstat, "
                                    f"channel: 5, at_s: {at_s:g}{lasting}}}\n"),
                       encoding="utf-8")
    recipe = tmp_path / "small.yaml"
    recipe.write_text(RECIPE.read_text(encoding="utf-8").replace("rows: 20", "rows: 8")
                      .replace("cols: 30", "cols: 16"), encoding="utf-8")
    return recipe, station


def _every_cell_once(recipe, station, data):
    """The small sheet screened to completion: its store, the result and its 128 cells,
    each stored once."""
    result = lifecycle.start(KIND, str(recipe), RunOptions(str(data), str(station), seed=1))
    assert result.status == "completed", result.message
    store = Store(data, read_only=True)
    cells = store.screen_cells(result.run_id)
    assert len(cells) == 128 and len({(c.row, c.col) for c in cells}) == 128
    return store, result, cells


def test_a_channel_lost_for_a_moment_is_ridden_out_and_its_cell_measured_again(tmp_path):
    """Channel 5's port drops for 20 s mid-sheet: its site waits for the link (alarm
    `hold`), the other sites measure on, then it stops what its channel still ran and
    measures its cell again (alarm `resume`); the sheet completes with every cell once,
    as the same sheet without the drop (it failed the whole sheet)."""
    recipe, station = _small_sheet_with_a_dropped_channel(tmp_path, at_s=5, for_s=20)
    store, result, cells = _every_cell_once(recipe, station, tmp_path / "d")
    held = [a for a in store.alarms(result.run_id) if a.reaction == "hold"]
    again = [a for a in store.alarms(result.run_id) if a.reaction == "resume"]
    assert [a.source for a in held] == [a.source for a in again] == ["probe_pstat channel 5"]
    assert "sim://probe/5" in held[0].message and "waits for the link" in held[0].message
    assert 20 <= again[0].t_s - held[0].t_s <= 20 + 30 + 1  # the next try after it is back
    clean = lifecycle.start(KIND, str(recipe), RunOptions(str(tmp_path / "clean"), seed=1))
    assert [c.contact for c in cells] == [c.contact for c in Store(
        tmp_path / "clean", read_only=True).screen_cells(clean.run_id)]


@pytest.mark.parametrize("retouch", [1, 0])
def test_a_channel_in_fault_for_a_moment_is_switched_off_before_the_needles_come_down(
        tmp_path, retouch):
    """Channel 5 fails (a heavy overload, `!0032`) mid-measurement at touchdown 2 and
    refuses every command for 10 s: the needles go up, and come down again (the retouch,
    or the next touchdown) only once it has switched its cell off; its cell is measured
    by the retouch, or without one is binned as a tester fault in the channel's words,
    never as a bad cell. The sheet completes with every cell once, the others binned as
    the same sheet without the fault bins them (the fault failed the whole sheet)."""
    recipe, station = _small_sheet_with_a_dropped_channel(tmp_path, at_s=5, for_s=10,
                                                          fault="channel_fault")
    recipe.write_text(recipe.read_text(encoding="utf-8").replace(
        "retouch: 1", f"retouch: {retouch}"), encoding="utf-8")
    store, result, cells = _every_cell_once(recipe, station, tmp_path / "d")
    (hit,) = [c for c in cells if c.site == 5 and c.touchdown == 2]
    if retouch:
        assert (hit.contact, hit.attempts) == ("ok", 2)
    else:
        assert (hit.contact, hit.hard_bin) == ("lost", 8)
        assert hit.rule.startswith("probe_pstat channel 5 ended its OCV with !0032"), hit.rule
    alarms = [a for a in store.alarms(result.run_id) if a.source == "probe_pstat channel 5"]
    assert [a.reaction for a in alarms] == [None, "hold", "resume"], alarms
    assert "refused ['set_pgstat_chan 0', 'cell_off'] with !0032" in alarms[1].message
    assert 15 <= alarms[2].t_s <= 15 + 30 + 1  # the next try after the fault cleared
    clean = lifecycle.start(KIND, str(recipe), RunOptions(str(tmp_path / "clean"), seed=1))
    bins = {(c.row, c.col): c.soft_bin for c in Store(
        tmp_path / "clean", read_only=True).screen_cells(clean.run_id)}
    assert {(c.row, c.col): c.soft_bin for c in cells if c is not hit or retouch} == \
        {k: v for k, v in bins.items() if k != (hit.row, hit.col) or retouch}


def test_a_channel_that_refuses_for_long_fails_the_sheet_with_the_needles_up(tmp_path):
    """Channel 5 refuses every command (its protocol's error) for 300 s from t = 5 s: its
    cell is a tester fault, but the needles do not come down on the next cells while it
    may still hold its cell on; after a minute of trying it the sheet fails in its words,
    and the safe state ends with every channel off and the needles up."""
    recipe, station = _small_sheet_with_a_dropped_channel(tmp_path, at_s=5, for_s=300,
                                                          fault="error_reply")
    data = tmp_path / "d"
    with pytest.raises(InstrumentError) as failed:
        lifecycle.start(KIND, str(recipe), RunOptions(str(data), str(station), seed=1))
    said = str(failed.value)
    assert "probe_pstat channel 5 still not switched off after" in said, said
    assert "so the needles stay up" in said and "NOT all made safe" not in said, said
    store = Store(data, read_only=True)
    (run,) = store.runs()
    assert run.status == "failed" and run.message == said
    assert 0 < len(store.screen_cells(run.id)) < 128  # the touchdowns before it, kept
    safe = [a.message for a in store.alarms(run.id) if a.reaction == "safe state"]
    assert "probe_pstat channels 1–32 off; stage needles up" in safe[-1], safe


def test_a_channel_silent_mid_measurement_is_asked_for_its_end_and_ridden_out(tmp_path):
    """Channel 5 goes silent for 20 s mid-measurement at touchdown 2 (it reads and never
    answers; the end of its technique is lost meanwhile): the site stops waiting for an end
    once it is overdue, finds the link lost when it asks (`Z`), rides it out and measures
    its cell again; the sheet completes (the site polled for the lost end forever: a run
    in its own process, so a hang fails the test instead of the suite)."""
    recipe, station = _small_sheet_with_a_dropped_channel(tmp_path, at_s=5, for_s=20,
                                                          fault="silent")
    data = tmp_path / "d"
    proc = subprocess.run([sys.executable, "-m", "lipon_hw.cli", "run", str(recipe),
                           "--station", str(station), "--data", str(data), "--json"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    store = Store(data, read_only=True)
    (run,) = store.runs()
    assert run.status == "completed"
    cells = store.screen_cells(run.id)
    assert len({(c.row, c.col) for c in cells}) == 128
    (hit,) = [c for c in cells if c.site == 5 and c.touchdown == 2]
    assert hit.contact == "ok"
    said = [(a.reaction, a.message) for a in store.alarms(run.id)
            if a.source == "probe_pstat channel 5"]
    assert [r for r, _ in said] == ["hold", "resume"], said
    assert "sim://probe/5 is lost" in said[0][1] and "measured again" in said[1][1]


@pytest.mark.parametrize("fault", ["garble", "link_drop"])
def test_the_stage_lost_for_a_moment_is_ridden_out_from_where_it_was(tmp_path, fault):
    """The stage's link garbles or drops for 10 s mid-sheet: the prober waits for it
    (alarm `hold` from the stage), finds the stage where it left it, and goes on (alarm
    `resume`); the sheet completes as it does without the fault (it failed the sheet)."""
    recipe, station = _small_sheet_with_a_dropped_channel(tmp_path, at_s=0, for_s=None)
    text = (ROOT / "lipon_hw" / "data" / "sim_lab.yaml").read_text(encoding="utf-8")
    station.write_text(text.replace("sim:\n  seed: 1\n", "sim:\n  seed: 1\n  faults:\n"
                                    f"    - {{fault: {fault}, instrument: stage, at_s: 5, "
                                    "for_s: 10}\n"), encoding="utf-8")  # the stage's, alone
    store, result, cells = _every_cell_once(recipe, station, tmp_path / "d")
    said = [(a.reaction, a.message) for a in store.alarms(result.run_id)
            if a.source == "stage" and a.reaction != "safe state"]
    assert [r for r, _ in said] == ["hold", "resume"], said
    assert "sim://stage is lost" in said[0][1] and "where it was left" in said[1][1]
    clean = lifecycle.start(KIND, str(recipe), RunOptions(str(tmp_path / "clean"), seed=1))
    assert [(c.row, c.col, c.soft_bin) for c in cells] == [
        (c.row, c.col, c.soft_bin) for c in Store(tmp_path / "clean", read_only=True)
        .screen_cells(clean.run_id)]


def test_a_stage_whose_board_resets_on_reconnect_fails_the_sheet_with_its_needles_told(
        tmp_path):
    """The same 10 s drop on a board that resets when its port is opened again: the stage
    answers in Alarm at (0, 0, 0), so the sheet fails ("home it, then resume the run"),
    every site's cell is switched off, and the safe state says the needles may still be
    down instead of "needles up" (it would have unlocked the stage and lifted Z to a
    clear height counted from the wrong zero); no round of retries for it."""
    recipe, station = _small_sheet_with_a_dropped_channel(tmp_path, at_s=0, for_s=None)
    text = (ROOT / "lipon_hw" / "data" / "sim_lab.yaml").read_text(encoding="utf-8")
    text = text.replace("      potentiostat: probe_pstat\n", "      potentiostat: probe_pstat\n"
                        "      resets_on_reconnect: true\n")
    station.write_text(text.replace("sim:\n  seed: 1\n", "sim:\n  seed: 1\n  faults:\n"
                                    "    - {fault: link_drop, instrument: stage, at_s: 5, "
                                    "for_s: 10}\n"), encoding="utf-8")
    data = tmp_path / "d"
    with pytest.raises(InstrumentError) as failed:
        lifecycle.start(KIND, str(recipe), RunOptions(str(data), str(station), seed=1))
    said = str(failed.value)
    assert "stage reports Alarm at machine (0.000, 0.000, 0.000) mm, not where it was left" \
        in said and "home it, then resume the run" in said, said
    assert "the hardware was NOT all made safe: stage (needles up): " in said, said
    store = Store(data, read_only=True)
    safe = [a for a in store.alarms(1) if a.reaction == "safe state"]
    assert len(safe) == 1, safe  # said once: not retried
    assert safe[0].severity == "error" and "probe_pstat channels 1–32 off" in safe[0].message
    assert "FAILED stage (needles up): " in safe[0].message
    assert "so the needles may still be down: home it ($H)" in safe[0].message
    assert "needles up;" not in safe[0].message and not safe[0].message.endswith("needles up")


def test_a_channel_that_never_answers_fails_the_sheet_at_once(tmp_path):
    """Channel 5's port is dead from the start (a wrong address, a cable not plugged in):
    the sheet is not kept waiting for it; it fails in the port's words, at once, and says
    that the channel it could never reach is not known to be off."""
    recipe, station = _small_sheet_with_a_dropped_channel(tmp_path, at_s=0, for_s=None)
    data = tmp_path / "d"
    with pytest.raises(InstrumentError) as failed:
        lifecycle.start(KIND, str(recipe), RunOptions(str(data), str(station), seed=1))
    said = str(failed.value)
    assert said.startswith("sim://probe/5 could not be opened: "), said
    assert "; it has not answered since the run started, so the run does not wait for it; " \
           "the hardware was NOT all made safe: probe_pstat channel 5: " in said, said
    assert failed.value.exit_code == LinkLost.exit_code
    store = Store(data, read_only=True)
    assert [a for a in store.alarms(1) if a.reaction == "hold"] == []


def test_a_dead_channel_fails_the_sheet_with_every_cell_off_and_the_needles_up(tmp_path):
    """A potentiostat port that drops mid-sheet for longer than the ride-out: the run
    fails in the link's words, what was measured is kept, and the safe state keeps trying
    that channel as the clock moves on until its port answers again, the needles lifted
    meanwhile; the alarms say so."""
    recipe, station = _small_sheet_with_a_dropped_channel(tmp_path, at_s=5, for_s=300)
    data = tmp_path / "d"
    with pytest.raises(Exception) as failed:
        lifecycle.start(KIND, str(recipe), RunOptions(str(data), str(station), seed=1))
    store = Store(data, read_only=True)
    (run,) = store.runs()
    assert run.status == "failed" and "probe/5" in run.message, run.message
    assert "still lost after" in run.message, run.message
    assert "NOT all made safe" not in run.message and "probe/5" in str(failed.value)
    assert 0 < len(store.screen_cells(run.id)) < 128  # the touchdowns before it, kept
    safe = [a.message for a in store.alarms(run.id) if a.reaction == "safe state"]
    assert any("FAILED so far for probe_pstat channel 5" in m for m in safe), safe
    assert "probe_pstat channels 1–32 off; stage needles up" in safe[-1], safe


def _channel_5_lost_after_touchdown_1(tmp_path, monkeypatch, take_over: bool):
    """Run an 8 × 16 sheet whose channel 5 port drops for good after touchdown 1 (and, if
    `take_over`, the run taken over by another engine at that moment); the error it
    stops with, and the data directory."""
    labs: list = []
    real_init = Prober.__init__

    def keeping_the_lab(prober, env, lab, *args, **kwargs):  # the lab, to unplug a port
        labs.append(lab)
        real_init(prober, env, lab, *args, **kwargs)

    monkeypatch.setattr(Prober, "__init__", keeping_the_lab)
    data = tmp_path / "d"
    recipe = tmp_path / "small.yaml"
    recipe.write_text(RECIPE.read_text(encoding="utf-8").replace("rows: 20", "rows: 8")
                      .replace("cols: 30", "cols: 16"), encoding="utf-8")
    fired: list = []

    def unplug(index, _total, _done):
        if index >= 1 and not fired:
            fired.append(index)
            if take_over:
                con = sqlite3.connect(data / "lipon.db", timeout=30)
                with con:
                    con.execute("UPDATE runs SET driver_epoch = driver_epoch + 1, message ="
                                " 'resumed elsewhere'")
                con.close()
            labs[0].sim.emulators["probe/5"].faults.unplugged = True

    with pytest.raises(InstrumentError) as failed:
        lifecycle.start(KIND, str(recipe), RunOptions(str(data), seed=1),
                        lifecycle.Watch(progress=unplug))
    return failed.value, data


def test_a_sheet_whose_channel_drops_for_good_says_in_its_error_what_is_not_safe(
        tmp_path, monkeypatch):
    """The port's loss is the error in flight when the safe state cannot switch channel 5
    off: the error the operator gets (the command line's one line, the API's exception)
    says so, in the stored message's words, with the lost link's exit code (it said only
    that the port was lost: the 'NOT all made safe' was in the store alone)."""
    error, data = _channel_5_lost_after_touchdown_1(tmp_path, monkeypatch, take_over=False)
    said = str(error)
    assert said.startswith("sim://probe/5 is lost after 3 attempts"), said
    assert "; the hardware was NOT all made safe: probe_pstat channel 5: " in said, said
    assert error.exit_code == LinkLost.exit_code
    assert isinstance(error.__cause__, LinkLost)
    assert committed(data / "lipon.db", "SELECT status, message FROM runs") == [
        ("failed", said)]


def test_a_sheet_taken_over_as_a_channel_drops_still_says_what_is_not_safe(tmp_path,
                                                                            monkeypatch):
    """Another engine takes the run over (the test's own connection moves its driver epoch
    on) at the moment channel 5's port drops for good, after touchdown 1: nothing of the
    run can be stored any more (the site's ride-out alarm is refused first), the safe
    state's alarms included, so the one sentence is all the operator learns, and it must
    say that channel 5 was not made safe (it said only that the run was taken over: the
    refused summary replaced it)."""
    error, data = _channel_5_lost_after_touchdown_1(tmp_path, monkeypatch, take_over=True)
    said = str(error)  # the take-over (met as the site's ride-out alarm is refused), and
    # what is not safe
    assert said.startswith("run 1 was taken over by another engine in the store "
                           f"{data / 'lipon.db'} (its driver epoch is 2, this engine's 1), "
                           "so this engine stores nothing more of it; the hardware was NOT "
                           "all made safe: probe_pstat channel 5: sim://probe/5 "), said
    assert committed(data / "lipon.db", "SELECT status, message, driver_epoch FROM runs") == [
        ("running", "resumed elsewhere", 2)]  # the new driver's, not overwritten
