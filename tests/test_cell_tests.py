"""Cell tests end to end on the simulated bench: protocol → engine → MethodSCRIPT driver →
link → emulator → simulated cells, and what the run leaves (summary, exports, resume)."""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bdf_check import check_with_reference
from stores import committed, samples_db

from lipon_hw.celltest.plan import load
from lipon_hw.celltest.session import resume_cycling, start_cycling
from lipon_hw.errors import InputError
from lipon_hw.station import load_station
from lipon_hw.store import Store
from lipon_hw.store_requests import os_user

from recipes import LNMO, LNMO_EIS

ROOT = Path(__file__).resolve().parents[1]
SEQUENCES = ROOT / "sequences"


def write(tmp_path: Path, text: str, name: str = "protocol.yaml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def cli(*args, cwd, timeout=300):
    return subprocess.run([sys.executable, "-m", "lipon_hw.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


# --- validation -----------------------------------------------------------------------------
@pytest.mark.parametrize("patch, message", [
    (("cc: {current_A: 3.0e-6,", "cc: {rate_C: 2,"), None),  # fine: the cell has a capacity
    (("capacity_uAh: 1.47", "capacity_uAh: 0"), "cell.capacity_uAh"),
    (("- cc: {current_A: -3.0e-6", "- ccc: {current_A: -3.0e-6"), "unknown step 'ccc'"),
    (("to: cycle", "to: nowhere"), "no tag 'nowhere' before this loop"),
    (("voltage_V: 5.1,", "current_A: 1.0e-9,"), "cannot end on current_A"),
    (("potentiostat: mes4", "potentiostat: mes5"), "instrument 'mes5' is not in station"),
    (("channels: 1-2", "channels: 1-17"), "mes4 has channels 1–16, not 17"),
    (("channels: 1-2", "channels: 2-1"), "'2-1' is not a channel"),
    (("potentiostat: mes4", "potentiostat: smu"), None),  # the SMU runs CC too
])
def test_protocol_errors_name_file_line_and_field(tmp_path, patch, message):
    text = LNMO.format(channels="1-2", cycles=3).replace(*patch)
    if "smu" in patch[1]:
        text = text.replace("channels: 1-2", "channels: 1")
    path = write(tmp_path, text)
    if message is None:
        load(path, load_station(), None)  # valid: no error
        return
    with pytest.raises(InputError) as err:
        start_cycling(path, tmp_path / "data")
    text_err = str(err.value)
    assert text_err.startswith(f"{path}:") and message in text_err, text_err
    assert not (tmp_path / "data" / "lipon.db").exists() or not Store(
        tmp_path / "data").runs(), "a refused protocol must not create a run"


@pytest.mark.parametrize("name", ["lipon_conductivity", "li_cu_plating", "lnmo_cycling",
                                  "lco_anodeless"])
def test_shipped_protocols_validate(name, tmp_path):
    proc = cli("validate", SEQUENCES / f"{name}.yaml", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["kind"] == "cycling"


def test_c_rate_without_capacity_and_eis_on_the_smu_are_refused(tmp_path):
    text = LNMO.format(channels="1", cycles=2).replace("capacity_uAh: 1.47", "temperature_C: 25")
    path = write(tmp_path, text.replace("current_A: 3.0e-6,", "rate_C: 2,"))
    with pytest.raises(InputError, match=r"protocol.yaml:\d+: channels: channel 1: a C-rate"):
        start_cycling(path, tmp_path / "data")
    eis = write(tmp_path, LNMO.format(channels="1", cycles=2).replace(
        "potentiostat: mes4", "potentiostat: smu").replace(
        "- tag: cycle", "- eis: {from_Hz: 1.0e5, to_Hz: 1, per_decade: 5}\n  - tag: cycle"),
        "eis.yaml")
    with pytest.raises(InputError, match=r"eis.yaml:10: steps\[0\].eis: smu \(keithley2450\) "
                                         r"cannot run eis"):
        start_cycling(eis, tmp_path / "data")


# --- the film: conductivities ----------------------------------------------------------------
def test_worker_processes_fit_their_channels_spectra_for_the_summary(tmp_path, monkeypatch):
    """With its channels in worker processes, each worker fits its own channels' spectra
    (in parallel): the run's process fits none (here it cannot), the summary holds the
    figures, the same as fitted from the store afterwards, and the run's Nyquist plot shows
    the worker's fit."""
    from lipon_hw.celltest import results

    fit = results.film_figures

    def engine_fits(*_args):
        raise AssertionError("the run's process fitted a spectrum its worker had fitted")

    # spawned workers import their own: only the run's process is made unable to fit
    monkeypatch.setattr(results, "film_figures", engine_fits)
    monkeypatch.setattr(results, "fit_spectrum", engine_fits)
    text = LNMO_EIS.format(channels="1-2", cycles=1).replace(  # the shipped one: resolved
        "from_Hz: 1.0e5, to_Hz: 1, per_decade: 4", "from_Hz: 3.0e6, to_Hz: 0.1, per_decade: 10")
    path = write(tmp_path, text)
    result = start_cycling(path, tmp_path / "data", workers=2)
    monkeypatch.undo()
    assert result.status == "completed", result.message
    assert any(p.endswith("ch1-nyquist.png") for p in result.plots), result.plots
    store = Store(tmp_path / "data")
    plans = {p.channel: p for p in load(path, load_station(), store).channels}
    for entry in result.summary["channels"]:
        expected = fit(store, result.run_id, plans[entry["channel"]])
        assert expected.get("film_resistance_ohm"), expected  # a spectrum was fitted
        for key, value in expected.items():
            assert entry[key] == (pytest.approx(value, rel=1e-12) if isinstance(value, float)
                                  else value), key
    store.close()


def test_conductivity_protocol_reports_the_films_sigma_and_exports_the_spectrum(tmp_path):
    from lipon_hw.sim.cells.factories import cell_from_spec

    proc = cli("run", SEQUENCES / "lipon_conductivity.yaml", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    truth = cell_from_spec({"kind": "blocking"})  # the seeds' Cu/LiPON/Cu the protocol mounts
    sigma_true = truth.lipon[0].sigma_S_cm
    assert summary["film_thickness_nm"] == 3700 and summary["area_cm2"] == 0.04
    assert summary["ionic_conductivity_S_cm"] == pytest.approx(sigma_true, rel=0.05)
    assert 1.2e-14 / 2 < summary["electronic_conductivity_S_cm"] < 1.2e-14 * 2
    out = tmp_path / "export"
    proc = cli("export", summary["run_id"], "--format", "csv", "--out", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    with open(out / f"run{summary['run_id']}-ch1-eis.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 76  # 3 MHz → 100 mHz: 7.48 decades at 10 per decade, ends included
    f = [float(r["Frequency / Hz"]) for r in rows]
    assert f[0] == pytest.approx(3.0e6) and f[-1] == pytest.approx(0.1)
    assert all(float(r["Imaginary Impedance / ohm"]) < 0 for r in rows)
    assert float(rows[-1]["Real Impedance / ohm"]) > float(rows[0]["Real Impedance / ohm"])


# --- cycling: isolation, summaries, BDF ------------------------------------------------------
def test_a_short_on_one_channel_stops_that_channel_alone(tmp_path):
    text = LNMO.format(channels="1-3", cycles=4).replace(
        "channels: 1-3", 'channels: {"1-2": {}, "3": {cell: {faults: '
                         '[{kind: hard_short, at_cycle: 1.5}]}}}')
    result = start_cycling(write(tmp_path, text), tmp_path / "data")
    assert result.status == "completed"
    by_channel = {c["channel"]: c for c in result.summary["channels"]}
    for n in (1, 2):
        assert by_channel[n]["status"] == "completed" and by_channel[n]["cycles"] == 4
        assert 1.2 < by_channel[n]["last_discharge_uAh"] < 1.47
        assert 0.97 < by_channel[n]["mean_coulombic_efficiency"] <= 1.0
    short = by_channel[3]
    assert short["status"] == "tripped" and "below min_V 2.5 V" in short["message"]
    assert short["cycles"] < 4
    store = Store(tmp_path / "data")
    assert {c.status for c in store.channels(result.run_id)} == {"completed", "tripped"}


def test_bdf_export_has_the_standard_columns_and_monotonic_counts(tmp_path):
    result = start_cycling(write(tmp_path, LNMO.format(channels="1", cycles=3)),
                           tmp_path / "data", workers=1)
    out = tmp_path / "bdf"
    proc = cli("export", result.run_id, "--data", tmp_path / "data", "--format", "bdf",
               "--out", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    check_with_reference(out / f"run{result.run_id}-ch1.bdf.csv")
    with open(out / f"run{result.run_id}-ch1.bdf.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for column in ("Test Time / s", "Voltage / V", "Current / A", "Unix Time / s",
                   "Cycle Count / 1", "Step Count / 1"):
        assert column in rows[0]
    steps = [int(r["Step Count / 1"]) for r in rows]
    cycles = [int(r["Cycle Count / 1"]) for r in rows]
    times = [float(r["Test Time / s"]) for r in rows]
    assert steps == sorted(steps) and cycles == sorted(cycles) and times == sorted(times)
    assert max(cycles) == 3 and max(steps) == 6
    charge = [float(r["Current / A"]) for r in rows if r["Step Type"] == "CC_CHG"]
    assert charge and all(i > 0 for i in charge)  # positive current charges (BDF)


def test_run_json_summary_has_every_channel(tmp_path):
    path = write(tmp_path, LNMO.format(channels="1-2", cycles=2))
    proc = cli("run", path, "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["status"] == "completed"
    assert [c["channel"] for c in summary["channels"]] == [1, 2]
    for ch in summary["channels"]:
        assert ch["cycles"] == 2
        assert ch["last_discharge_uAh"] > 1.0 and ch["mean_coulombic_efficiency"] > 0.95


# --- resume ----------------------------------------------------------------------------------
def _progress(db: Path) -> list[tuple[int, int]]:
    return committed(db, "SELECT channel, cycle FROM channels ORDER BY channel",
                     while_made=True)


def _statuses(db: Path) -> list[tuple[str]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return con.execute("SELECT status FROM channels").fetchall()
    finally:
        con.close()


def test_kill_9_mid_campaign_then_resume_continues_every_channel(tmp_path):
    # the run is paced (a real-time clock at 20,000 times wall speed, polled as in virtual
    # time): its 60 cycles take at least 10 s of wall time on any machine, so the kill,
    # made once the store shows every channel past cycle 6 (about a second in), lands
    # mid-run however fast the workers are; unpaced, a fast machine finished the campaign
    # before its progress reached the store, and the kill found every channel completed
    text = LNMO.format(channels="1-4", cycles=60).replace(
        "kind: cycling\n", "kind: cycling\npoll_every_s: 900\n")
    path = write(tmp_path, text)
    proc = subprocess.Popen([sys.executable, "-m", "lipon_hw.cli", "run", path, "--json",
                             "--speed", "20000", "--workers", "2"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    db = tmp_path / "lipon-data" / "lipon.db"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the run ended before it could be killed: " \
            f"{proc.stderr.read().decode(errors='replace')[-2000:]}"
        rows = _progress(db)
        if len(rows) == 4 and min(c for _, c in rows) >= 6:  # every channel under way
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # the workers saw their parent die (SIGTERM on its death): each stops its channels and
    # disconnects the cells, then says so in the store
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and ("running",) in _statuses(db):
        time.sleep(0.1)
    con = samples_db(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    before = con.execute("SELECT channel, MAX(step_count), MAX(cycle) FROM cell_samples"
                         " GROUP BY channel").fetchall()
    status_of = dict(con.execute("SELECT channel, status FROM channels"))
    assert set(status_of.values()) == {"interrupted"}
    con.close()
    # an interrupted channel may be anywhere in its program (the channels' progress
    # reaches the store once a second, so the kill lands where it lands): resume must
    # finish each from wherever it stopped, which is what follows checks
    assert all(cycle <= 60 for _, _, cycle in before)

    result = resume_cycling(1, tmp_path / "lipon-data")
    assert result.status == "completed"
    assert [c["cycles"] for c in result.summary["channels"]] == [60] * 4
    con = samples_db(db)
    for channel in range(1, 5):
        rows = con.execute("SELECT t_s, step_count, cycle FROM cell_samples WHERE channel=?"
                           " ORDER BY rowid", (channel,)).fetchall()
        t, steps, cycles = zip(*rows, strict=True)
        assert list(t) == sorted(t) and len(set(t)) == len(t), "time must not go back"
        assert list(steps) == sorted(steps) and list(cycles) == sorted(cycles)
        assert max(steps) == 120 and max(cycles) == 60
        assert set(range(1, 121)) == set(steps), "every step once, numbered without a gap"
    stats = con.execute("SELECT cycle FROM cycles WHERE channel=1 ORDER BY cycle").fetchall()
    assert [c for (c,) in stats] == list(range(1, 61))
    con.close()


# --- the seeds' figures ------------------------------------------------------------------------
def test_lnmo_thesis_figures_ce_above_99_7_percent_after_100_cycles(tmp_path):
    text = (SEQUENCES / "lnmo_cycling.yaml").read_text(encoding="utf-8")
    text = text.replace("channels: 1-16", "channels: 1").replace("times: 598", "times: 101")
    result = start_cycling(write(tmp_path, text), tmp_path / "data", workers=1)
    (channel,) = result.summary["channels"]
    assert channel["cycles"] == 103 and channel["status"] == "completed"
    stats = Store(tmp_path / "data").cycles(result.run_id, 1)
    after_100 = [s for s in stats if s["cycle"] > 100]
    assert after_100 and all(s["coulombic_efficiency"] > 0.997 for s in after_100)
    fast = [s["discharge_Ah"] for s in stats if s["cycle"] >= 3]
    assert fast[-1] / fast[0] > 0.98, "capacity stays stable over the first hundred cycles"
    assert 0.0300 * 0.049 * 0.85 < fast[0] * 1e3 < 0.0300 * 0.049  # 0.03 mAh/cm² on 4.9 mm²


def test_li_cu_plating_returns_the_seeds_coulombic_efficiency(tmp_path):
    text = (SEQUENCES / "li_cu_plating.yaml").read_text(encoding="utf-8")
    text = text.replace("channels: 1-4", "channels: 1").replace("times: 13", "times: 3")
    result = start_cycling(write(tmp_path, text), tmp_path / "data", workers=1)
    (channel,) = result.summary["channels"]
    assert channel["status"] == "completed" and channel["cycles"] == 3
    # seed 000: 82.7 % at 87.5 kPa stack pressure (stripped over plated)
    assert channel["mean_coulombic_efficiency"] == pytest.approx(0.827, abs=0.01)
    assert channel["last_discharge_uAh"] == pytest.approx(0.31e3 * 0.04, rel=0.01)  # plated
    con = samples_db(tmp_path / "data" / "lipon.db")
    first = con.execute("SELECT MIN(voltage_V) FROM cell_samples WHERE step_count=2").fetchone()
    con.close()
    assert first[0] < -0.5, "the nucleation dip of the first plating"


def test_two_protocols_goto_and_a_step_safety_limit(tmp_path):
    """Channel 1 cycles; channel 2 runs another protocol whose charge is cut by time and
    jumps (goto) past a step, and whose last step has a floor of its own that trips."""
    text = LNMO.format(channels="1", cycles=2).replace("channels: 1", '''channels:
  "1": {}
  "2": {protocol: probe}
protocols:
  probe:
    steps:
      - cc: {current_A: 3.0e-6, until: {voltage_V: 5.1, time_min: 10}, goto: {time_min: hold}}
      - cc: {current_A: -3.0e-6, until: {voltage_V: 3.5}}
      - tag: hold
      - rest: {until: {time_min: 5}}
      - cc: {current_A: -3.0e-6, until: {voltage_V: 2.0}, safety: {min_V: 3.4}}''')
    result = start_cycling(write(tmp_path, text), tmp_path / "data", workers=1)
    by_channel = {c["channel"]: c for c in result.summary["channels"]}
    assert by_channel[1]["status"] == "completed" and by_channel[1]["cycles"] == 2
    probe = by_channel[2]
    assert probe["status"] == "tripped" and "below min_V 3.4 V" in probe["message"]
    con = samples_db(tmp_path / "data" / "lipon.db")
    kinds = con.execute("SELECT step_count, step_id, MIN(t_s), MAX(t_s) FROM cell_samples"
                        " WHERE channel=2 GROUP BY step_count ORDER BY step_count").fetchall()
    con.close()
    assert [k[1] for k in kinds] == [0, 3, 4], "the charge's time end jumped over step 1"
    assert kinds[0][3] - kinds[0][2] == pytest.approx(600, abs=2)


def long_campaign(tmp_path: Path, cycles_done: int) -> tuple[subprocess.Popen, Path]:
    """`lipon-hw run` of a 2-channel, 2000-cycle campaign, once both channels are past
    `cycles_done` cycles; and its database."""
    path = write(tmp_path, LNMO.format(channels="1-2", cycles=2000))
    proc = subprocess.Popen([sys.executable, "-m", "lipon_hw.cli", "run", path, "--json"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    db = tmp_path / "lipon-data" / "lipon.db"
    wait_for(proc, lambda: len(rows := _progress(db)) == 2 and
             min(c for _, c in rows) >= cycles_done, f"{cycles_done} cycles on both channels")
    return proc, db


def wait_for(proc: subprocess.Popen, condition, what: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} never happened")


def test_operator_abort_stops_every_channel_and_leaves_the_campaign_resumable(tmp_path):
    proc, _ = long_campaign(tmp_path, 3)
    assert cli("abort", 1, cwd=tmp_path).returncode == 0
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["status"] == "aborted"
    assert {c["status"] for c in summary["channels"]} == {"aborted"}
    assert all(c["cycles"] < 2000 for c in summary["channels"])
    assert Store(tmp_path / "lipon-data").run(1).status == "aborted"  # resume takes it on


def test_operator_pause_puts_every_channel_at_open_circuit_until_continue(tmp_path):
    proc, db = long_campaign(tmp_path, 2)

    def statuses():
        con = sqlite3.connect(db)
        try:
            return {r[0] for r in con.execute("SELECT status FROM channels")}
        except sqlite3.Error:
            return set()
        finally:
            con.close()

    assert cli("pause", 1, cwd=tmp_path).returncode == 0
    wait_for(proc, lambda: statuses() == {"paused"}, "both channels paused")
    assert cli("continue", 1, cwd=tmp_path).returncode == 0
    wait_for(proc, lambda: statuses() == {"running"}, "both channels running again")
    assert cli("abort", 1, cwd=tmp_path).returncode == 0
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    assert json.loads(out.strip().splitlines()[-1])["status"] == "aborted"
    con = samples_db(db)
    paused = con.execute("SELECT channel, COUNT(*), MAX(ABS(current_A)) FROM cell_samples"
                         " WHERE step_type='PAUSE' GROUP BY channel").fetchall()
    con.close()
    assert [(ch, i) for ch, _, i in paused] == [(1, 0.0), (2, 0.0)]
    assert committed(db, "SELECT action, author FROM requests ORDER BY rowid") == [
        ("pause", os_user()), ("continue", os_user()), ("abort", os_user())]


def test_a_film_made_on_the_line_is_the_film_the_cell_test_measures(tmp_path):
    """The fab and the bench are one world: a LiPON layer sputtered here (sample T-1)
    becomes the electrolyte of the blocking cell the conductivity protocol measures, with
    the thickness the store holds and the conductivity the sputter tool gave it."""
    from lipon_hw.deposition.session import start_run
    from lipon_hw.sim.lab_hooks import true_films

    from recipes import short_recipe

    data = tmp_path / "data"
    start_run(str(short_recipe(tmp_path, thickness_nm=300)), data)
    (layer,) = Store(data).film_stack("T-1")
    assert "sim_truth" not in layer.properties  # the measured layer holds measurements
    (truth,) = true_films(Store(data), "T-1")  # the truth is the simulated lab's, apart
    text = (SEQUENCES / "lipon_conductivity.yaml").read_text(encoding="utf-8").replace(
        "channels: 1\ncell: {kind: blocking, area_cm2: 0.04, lipon_thickness_nm: 3700}",
        'channels: {"1": {sample: T-1}}\ncell: {kind: blocking, area_cm2: 0.04}')
    result = start_cycling(write(tmp_path, text), data, workers=1)
    summary = result.summary
    assert summary["film_thickness_nm"] == pytest.approx(layer.thickness_nm)
    assert summary["ionic_conductivity_S_cm"] == pytest.approx(truth["sigma_S_cm"], rel=0.05)
    assert truth["sigma_S_cm"] != pytest.approx(2.5e-6, rel=0.01)  # not the seeds' default
    cell = Store(data).sim_truths("cell", "T-1")[(result.run_id, 1)]  # its truth, apart too
    assert cell["kind"] == "blocking" and cell["layers"][0]["thickness_nm"] == \
        pytest.approx(truth["thickness_nm"])


def test_setpoints_past_the_stations_channel_window_are_refused(tmp_path):
    station = write(tmp_path, """
name: two-channel bench
sim: {seed: 1}
instruments:
  mes4:
    driver: methodscript
    address: "sim://mes4/{1-2}"
    limits: {max_V: 5.0, max_current_A: 1.0e-5}
tools: {cycler: {potentiostat: mes4}}
""", "station.yaml")
    path = write(tmp_path, LNMO.format(channels="1-2", cycles=2))
    with pytest.raises(InputError, match=r"protocol.yaml:11: steps\[1\].cc.until.voltage_V: "
                                         r"5.1 V is outside the channel window −∞…5 V of mes4"):
        start_cycling(path, tmp_path / "data", station_path=station)
    fast = write(tmp_path, LNMO.format(channels="1-2", cycles=2).replace(
        "5.1", "4.9").replace("3.0e-6", "3.0e-5"), "fast.yaml")
    with pytest.raises(InputError, match=r"fast.yaml:11: steps\[1\].cc.current_A: \|3e-05\| A "
                                         r"is above the station limit max_current_A = 1e-05"):
        start_cycling(fast, tmp_path / "data", station_path=station)
