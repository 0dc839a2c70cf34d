"""The command line, as a user (or a crash) meets it: real processes, real signals."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from recipes import short_recipe

DEPOSIT_STEP = 4


def cli(*args, cwd, check=True, timeout=120):
    """`lipon-hw ARGS` in a fresh interpreter, away from the source tree."""
    proc = subprocess.run([sys.executable, "-m", "lipon_hw.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr}")
    return proc


def spawn(*args, cwd):
    return subprocess.Popen([sys.executable, "-m", "lipon_hw.cli", *map(str, args)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


#: times real time for runs a signal must find mid-deposit (a 120 nm deposit: ~10 s of wall)
DEPOSIT_SPEED = 300


def wait_for_deposit_checkpoint(db: Path, proc, min_checkpoints: int = 3,
                                step: int = DEPOSIT_STEP) -> None:
    """Until the running deposit (step index `step`) has written a few checkpoints."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        if db.exists():
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
            try:
                n = con.execute("SELECT COUNT(*) FROM checkpoints c JOIN steps s ON"
                                " s.run_id = c.run_id AND s.idx = ? AND s.status = 'running'"
                                " WHERE c.step_idx = ?", (step, step)
                                ).fetchone()[0]
            except sqlite3.OperationalError:
                n = 0
            finally:
                con.close()
            if n >= min_checkpoints:
                return
        time.sleep(0.05)
    raise AssertionError("no checkpoint inside the deposit within 60 s")


def readings(db: Path) -> list[tuple[float, str, float]]:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT r.t_s, q.name, r.value FROM readings r JOIN quantities q"
                           " ON q.id = r.quantity_id ORDER BY r.t_s, q.name, r.rowid").fetchall()
    finally:
        con.close()


def test_run_json_summary(tmp_path):
    recipe = short_recipe(tmp_path, 25)
    out = cli("run", recipe, "--data", tmp_path / "d", "--json", cwd=tmp_path).stdout
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["status"] == "completed"
    assert summary["thickness_nm"] == pytest.approx(25, abs=0.3)
    assert summary["duration_s"] > 1200  # pump-down to 2e-5 Torr alone takes ~25 min
    assert summary["wall_s"] < 30
    runs = json.loads(cli("runs", "--data", tmp_path / "d", "--json", cwd=tmp_path).stdout)
    assert runs[0]["run_id"] == summary["run_id"] and runs[0]["status"] == "completed"
    stack = json.loads(cli("sample", "T-1", "--data", tmp_path / "d", "--json",
                           cwd=tmp_path).stdout)
    assert [(la["material"], round(la["thickness_nm"])) for la in stack["layers"]] == [
        ("LiPON", 25)]
    csv_path = tmp_path / "out.csv"
    cli("export", summary["run_id"], "--data", tmp_path / "d", "--format", "csv", "--out",
        csv_path, cwd=tmp_path)
    header = csv_path.read_text().splitlines()[0].split(",")
    assert header[0] == "t_s" and "qcm.thickness_nm" in header and "rf.forward_power_W" in header


def test_shipped_lipon_recipe_deposits_one_micron_in_about_six_hours(tmp_path):
    repo = Path(__file__).resolve().parent.parent
    data = tmp_path / "d"
    out = cli("run", repo / "sequences/lipon_rf_sputter.yaml", "--data", data, "--json",
              cwd=tmp_path).stdout
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["status"] == "completed"
    assert summary["thickness_nm"] == pytest.approx(1000, abs=20)
    assert summary["wall_s"] < 60
    con = sqlite3.connect(data / "lipon.db")
    start, end = con.execute("SELECT t_start_s, t_end_s FROM steps WHERE kind = 'deposit'"
                             ).fetchone()
    con.close()
    assert (end - start) / 3600 == pytest.approx(6.0, rel=0.15)


def test_station_prints_the_default_simulated_lab(tmp_path):
    text = cli("station", cwd=tmp_path).stdout
    station = yaml.safe_load(text)
    assert station["instruments"]["rf"]["driver"] == "ae_bus"
    assert "sim" in station


def test_unknown_run_and_missing_data_dir(tmp_path):
    proc = cli("resume", 7, "--data", tmp_path / "none", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "holds no lipon-hw data" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("sample_committed", [True, False], ids=["as-killed", "sample-lost"])
def test_kill_9_then_resume_finishes_without_gaps_or_duplicates(tmp_path, sample_committed):
    """`sample-lost`: the host died between the checkpoint's commit and the commit of the
    sample of that instant (the store commits them apart), which the store is left as
    here; the resumed run samples at once instead of a period on."""
    data = tmp_path / "d"
    db = data / "lipon.db"
    recipe = short_recipe(tmp_path, 120)
    proc = spawn("run", recipe, "--data", data, cwd=tmp_path)
    wait_for_deposit_checkpoint(db, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL

    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    cp_t = con.execute("SELECT MAX(t_s) FROM checkpoints").fetchone()[0]
    status = con.execute("SELECT status FROM runs").fetchone()[0]
    con.close()
    assert status == "running"  # nobody had the chance to say otherwise
    if not sample_committed:
        con = sqlite3.connect(db)
        with con:
            con.execute("DELETE FROM readings WHERE t_s >= ?", (cp_t,))
        con.close()
    # what the resume must keep as it was: up to the checkpoint (before it, when the
    # sample of its instant is the resume's to take)
    kept = (lambda t: t <= cp_t) if sample_committed else (lambda t: t < cp_t)
    before = [r for r in readings(db) if kept(r[0])]

    out = cli("resume", 1, "--data", data, "--json", cwd=tmp_path).stdout
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["status"] == "completed"
    assert summary["thickness_nm"] == pytest.approx(120, abs=0.3)

    after = readings(db)
    assert [r for r in after if kept(r[0])] == before  # nothing before the checkpoint changed
    by_quantity: dict[str, list[float]] = {}
    for t, name, _ in after:
        by_quantity.setdefault(name, []).append(t)
    for name, times in by_quantity.items():
        assert len(times) == len(set(times)), f"duplicated {name} readings"
    # the sampler's cadence carries straight on across the crash: no hole in the record
    times = by_quantity["rf.forward_power_W"]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert max(gaps) <= 5.0 + 1e-6
    stack = json.loads(cli("sample", "T-1", "--data", data, "--json", cwd=tmp_path).stdout)
    assert len(stack["layers"]) == 1


def test_ctrl_c_leaves_the_tool_safe_and_the_run_resumable(tmp_path):
    data = tmp_path / "d"
    recipe = short_recipe(tmp_path, 120)
    # on a real-time clock the deposit lasts ~10 s of wall time, so the signal lands in it
    # (in virtual time it lasts a fraction of a second and a loaded machine can miss it)
    proc = spawn("run", recipe, "--data", data, "--speed", DEPOSIT_SPEED, cwd=tmp_path)
    wait_for_deposit_checkpoint(data / "lipon.db", proc, min_checkpoints=1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    con = sqlite3.connect(data / "lipon.db")
    status, = con.execute("SELECT status FROM runs").fetchone()
    safe = con.execute("SELECT message FROM alarms WHERE message LIKE 'safe state%'").fetchall()
    con.close()
    assert status == "interrupted"
    assert safe and "rf" in safe[-1][0] and "FAILED" not in safe[-1][0]
    summary = json.loads(cli("resume", 1, "--data", data, "--json", cwd=tmp_path)
                         .stdout.strip().splitlines()[-1])
    assert summary["status"] == "completed"
    assert summary["thickness_nm"] == pytest.approx(120, abs=0.3)


def test_sigterm_is_handled_like_ctrl_c(tmp_path):
    data = tmp_path / "d"
    proc = spawn("run", short_recipe(tmp_path, 120), "--data", data, "--speed", DEPOSIT_SPEED,
                 cwd=tmp_path)
    wait_for_deposit_checkpoint(data / "lipon.db", proc, min_checkpoints=1)
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "Traceback" not in err


def test_completed_run_cannot_resume(tmp_path):
    cli("run", short_recipe(tmp_path, 10), "--data", tmp_path / "d", cwd=tmp_path)
    proc = cli("resume", 1, "--data", tmp_path / "d", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "is completed" in proc.stderr


def test_speed_runs_on_a_real_time_clock(tmp_path):
    recipe = short_recipe(tmp_path, 5)
    wall = time.monotonic()
    out = cli("run", recipe, "--data", tmp_path / "d", "--speed", 2000, "--json",
              cwd=tmp_path).stdout
    wall = time.monotonic() - wall
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["status"] == "completed"
    # ~1700 s of process time at 2000x is ~0.85 s of wall time, not "as fast as possible"
    assert summary["duration_s"] / 2000 * 0.9 <= summary["wall_s"] < wall
