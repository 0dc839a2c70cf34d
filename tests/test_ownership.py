"""One live engine per run, instrument, channel and sample; no run left `running` with no
engine; resumed steps keep their labels (issue 8, severe 2). Live engines are real
processes; each is caught in the state a test needs by watching its database, and killed
with SIGKILL where the test is about a crash."""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from stores import committed

from recipes import LNMO, short_recipe

ROOT = Path(__file__).resolve().parents[1]

def cli(*args, cwd, timeout=120):
    return subprocess.run([sys.executable, "-m", "lipon_hw.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def spawn(*args, cwd):
    return subprocess.Popen([sys.executable, "-m", "lipon_hw.cli", *map(str, args)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def query(db: Path, sql: str, args=()) -> list[tuple]:
    return committed(db, sql, *args, while_made=True)


def wait_for(db: Path, proc, sql: str, ready, what: str, timeout_s: float = 60):
    """Poll the run's database until `ready(rows)`; the engine must still be alive."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc is None or proc.poll() is None, f"the engine ended before {what}"
        rows = query(db, sql)
        if ready(rows):
            return rows
        time.sleep(0.02)
    raise AssertionError(f"no {what} within {timeout_s} s")


def checkpoints(db: Path, proc, n: int = 1, step: int = 0):
    """Until run 1 has `n` checkpoints at step index `step` or later."""
    return wait_for(db, proc, "SELECT t_s, step_idx FROM checkpoints WHERE run_id=1",
                    lambda rows: sum(s >= step for _, s in rows) >= n,
                    f"{n} checkpoint(s) past step {step}")


@contextlib.contextmanager
def live(*args, cwd):
    """A live engine, killed with SIGKILL when the test is done with it."""
    proc = spawn(*args, cwd=cwd)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def kill_9(proc) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def untouched(db: Path):
    """What a second engine would change: readings stored so far (a resume rewinds them),
    runs, layers, its 'resumed' alarm. Call it, then compare with a second call."""
    (t_max,), = query(db, "SELECT MAX(t_s) FROM readings")
    return lambda: (query(db, "SELECT COUNT(*) FROM readings WHERE t_s <= ?", (t_max,)),
                    query(db, "SELECT COUNT(*) FROM runs"),
                    query(db, "SELECT COUNT(*) FROM layers"),
                    query(db, "SELECT COUNT(*) FROM alarms WHERE message LIKE 'resumed%'"))


def refused(proc, *words) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


# --- deposition: one engine per run; the kernel frees it on kill -9 ----------------------------
def test_resume_of_a_live_deposition_is_refused_and_after_kill_9_allowed(tmp_path):
    data, db = tmp_path / "d", tmp_path / "d" / "lipon.db"
    recipe = short_recipe(tmp_path, 60)
    with live("run", recipe, "--data", data, "--speed", "50", cwd=tmp_path) as proc:
        checkpoints(db, proc, n=2)
        state = untouched(db)
        before = state()
        second = cli("resume", 1, "--data", data, cwd=tmp_path)
        refused(second, "run 1 is being driven by a live engine", f"pid {proc.pid}")
        assert proc.poll() is None, "the live engine runs on"
        assert query(db, "SELECT status FROM runs") == [("running",)]
        assert state() == before, "nothing rewound, no run, layer or alarm added"
        kill_9(proc)
    # no code of the dead engine ran, yet its lock is gone: the resume goes on
    out = cli("resume", 1, "--data", data, "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert query(db, "SELECT status FROM runs") == [("completed",)]
    assert len(query(db, "SELECT * FROM layers")) == 1
    dupes = query(db, "SELECT t_s, quantity_id, COUNT(*) FROM readings GROUP BY t_s,"
                      " quantity_id HAVING COUNT(*) > 1")
    assert dupes == []


def test_operator_requests_to_a_run_with_no_live_engine_say_so(tmp_path):
    data, db = tmp_path / "d", tmp_path / "d" / "lipon.db"
    recipe = short_recipe(tmp_path, 600)
    with live("run", recipe, "--data", data, "--speed", "50", cwd=tmp_path) as proc:
        checkpoints(db, proc)
        assert cli("pause", 1, "--data", data, cwd=tmp_path).returncode == 0  # alive: queued
        kill_9(proc)
    assert query(db, "SELECT status FROM runs") == [("running",)]  # as the kill left it
    before = query(db, "SELECT action, taken FROM requests")
    for action in ("pause", "continue", "abort"):
        refused(cli(action, 1, "--data", data, cwd=tmp_path), "no engine is driving it",
                "lipon-hw resume 1")
    assert query(db, "SELECT action, taken FROM requests") == before, "nothing queued"


# --- the same tool, the same sample --------------------------------------------------------
def renamed_station(tmp_path: Path) -> Path:
    """The built-in lab with its sputter instruments and tool under other names: the
    same hardware (the same addresses) described by another station file."""
    from lipon_hw.station import default_station_text

    text = default_station_text()
    for old, new in (("  rf:\n", "  generator:\n"), ("rf_supply: rf", "rf_supply: generator"),
                     ("  qcm:\n", "  crystal:\n"), ("thickness_monitor: qcm",
                                                    "thickness_monitor: crystal"),
                     ("  sputter:\n", "  chamber_a:\n")):
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "renamed.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_second_run_on_the_same_instruments_or_sample_is_refused(tmp_path):
    data, db = tmp_path / "d", tmp_path / "d" / "lipon.db"
    recipe = short_recipe(tmp_path, 600)
    other = tmp_path / "other.yaml"  # another sample, the same instruments under other names
    other.write_text(recipe.read_text(encoding="utf-8").replace("tool: sputter",
                     "tool: chamber_a").replace("id: T-1", "id: T-2"), encoding="utf-8")
    evap = tmp_path / "evap.yaml"  # other instruments (the evaporator), the same sample
    evap.write_text((ROOT / "sequences/cu_collector.yaml").read_text(encoding="utf-8")
                    .replace("id: FS-001", "id: T-1"), encoding="utf-8")
    with live("run", recipe, "--data", data, "--speed", "50", cwd=tmp_path) as proc:
        checkpoints(db, proc)
        state = untouched(db)
        before = state()
        refused(cli("run", other, "--station", renamed_station(tmp_path), "--data", data,
                    cwd=tmp_path), "instrument", "of tool chamber_a", "is in use by run 1",
                f"pid {proc.pid}")
        refused(cli("run", evap, "--data", data, cwd=tmp_path),
                "sample 'T-1' is in use by run 1")
        assert state() == before, "no run row or layer for the refused runs"
        assert proc.poll() is None


# --- cell tests: channels, a live engine, orphaned workers ------------------------------------
def test_the_same_channel_is_refused_another_channel_of_the_potentiostat_is_not(tmp_path):
    from lipon_hw.celltest.session import start_cycling
    from lipon_hw.errors import InputError

    data, db = tmp_path / "d", tmp_path / "d" / "lipon.db"
    first = tmp_path / "first.yaml"
    first.write_text(LNMO.format(channels="1-2", cycles=50), encoding="utf-8")
    clash = tmp_path / "clash.yaml"
    clash.write_text(LNMO.format(channels="2-3", cycles=1), encoding="utf-8")
    beside = tmp_path / "beside.yaml"
    beside.write_text(LNMO.format(channels="3", cycles=1), encoding="utf-8")
    with live("run", first, "--data", data, "--speed", "3600", cwd=tmp_path) as proc:
        wait_for(db, proc, "SELECT COUNT(*) FROM cell_samples", lambda r: r and r[0][0] > 0,
                 "samples of the first test")
        with pytest.raises(InputError, match=r"channel 2 of mes4 is in use by run 1"):
            start_cycling(str(clash), data)
        result = start_cycling(str(beside), data)  # channel 3, alongside: fine
        assert result.status == "completed"
        assert proc.poll() is None
        assert query(db, "SELECT id FROM runs") == [(1,), (2,)]  # none for the refused
        assert query(db, "SELECT DISTINCT run_id, channel FROM cell_samples ORDER BY 1, 2"
                     )[-1][1] == 3


def test_resume_of_a_live_cell_test_is_refused_and_after_kill_9_waits_for_its_workers(tmp_path):
    from lipon_hw.celltest.session import resume_cycling
    from lipon_hw.engine import claims
    from lipon_hw.engine.ownership import held_by

    data, db = tmp_path / "d", tmp_path / "d" / "lipon.db"
    path = tmp_path / "p.yaml"
    path.write_text(LNMO.format(channels="1-2", cycles=12), encoding="utf-8")
    with live("run", path, "--data", data, "--speed", "3600", "--workers", "2",
              cwd=tmp_path) as proc:
        wait_for(db, proc, "SELECT MIN(cycle) FROM channels", lambda r: r and (r[0][0] or 0) >= 2,
                 "two cycles on both channels")
        refused(cli("resume", 1, "--data", data, cwd=tmp_path),
                "run 1 is being driven by a live engine", f"pid {proc.pid}")
        worker = held_by(data, claims.run_workers(1))  # spawned: a lock of their own
        assert worker and worker.startswith("a worker of run 1") and str(proc.pid) not in worker
        kill_9(proc)
    # at once: the workers of the dead engine are still stopping their channels; the resume
    # waits for them (their lock) instead of racing them
    result = resume_cycling(1, data)
    assert result.status == "completed"
    assert [c["cycles"] for c in result.summary["channels"]] == [12, 12]
    for channel in (1, 2):
        rows = query(db, "SELECT t_s, step_count, cycle FROM cell_samples WHERE channel=?"
                         " ORDER BY rowid", (channel,))
        t, steps, cycles = zip(*rows, strict=True)
        assert list(t) == sorted(t) and len(set(t)) == len(t), "time never goes back"
        assert list(steps) == sorted(steps) and list(cycles) == sorted(cycles)


def test_a_resume_waits_for_workers_of_a_killed_engine_still_writing(tmp_path, monkeypatch):
    """Deterministic: the test holds the workers' lock as an orphaned worker would."""
    from lipon_hw.celltest.session import resume_cycling
    from lipon_hw.engine import claims
    from lipon_hw.engine.ownership import Busy, Ownership, Resource

    data, db = tmp_path / "d", tmp_path / "d" / "lipon.db"
    path = tmp_path / "p.yaml"
    path.write_text(LNMO.format(channels="1", cycles=8), encoding="utf-8")
    with live("run", path, "--data", data, "--speed", "7200", cwd=tmp_path) as proc:
        wait_for(db, proc, "SELECT MIN(cycle) FROM channels", lambda r: r and (r[0][0] or 0) >= 2,
                 "two cycles")
        kill_9(proc)
    samples = query(db, "SELECT COUNT(*) FROM cell_samples")
    channels = query(db, "SELECT * FROM channels")
    worker = claims.run_workers(1)
    monkeypatch.setattr(claims, "WORKERS_WAIT_S", 0.3)
    with Ownership(data, "a worker of run 1") as orphan:
        orphan.take([Resource(worker.key, worker.busy, shared=True)])
        with pytest.raises(Busy, match="worker processes of an earlier engine of run 1 are "
                                       "still stopping"):
            resume_cycling(1, data)
    assert query(db, "SELECT COUNT(*) FROM cell_samples") == samples, "nothing rewound"
    assert query(db, "SELECT * FROM channels") == channels
    assert query(db, "SELECT status FROM runs") == [("running",)]
    assert resume_cycling(1, data).status == "completed"  # the worker has gone: on it goes


# --- no zombie runs ------------------------------------------------------------------------
def dead_socket_station(tmp_path: Path) -> Path:
    """The sputter tool's instruments at a TCP port where nothing listens."""
    import socket

    import yaml

    from lipon_hw.station import default_station_text

    spec = yaml.safe_load(default_station_text())
    spec.pop("sim")
    tool = spec["tools"]["sputter"]
    ports: dict[str, int] = {}  # one dead port per simulated port (a shared bus stays shared)
    held = []  # bound together so no two get the same port; closed again: connections refused
    for name in tool.values():
        address = spec["instruments"][name]["address"]
        if address not in ports:
            held.append(socket.socket())
            held[-1].bind(("127.0.0.1", 0))
            ports[address] = held[-1].getsockname()[1]
    for s in held:
        s.close()
    spec["instruments"] = {
        name: {**inst, "address": f"socket://127.0.0.1:{ports[inst['address']]}"}
        for name, inst in spec["instruments"].items() if name in tool.values()}
    for inst in spec["instruments"].values():
        inst.pop("sim", None)
    spec["tools"] = {"sputter": tool}
    path = tmp_path / "dead.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def test_a_run_that_cannot_start_ends_failed_with_its_reason(tmp_path):
    from lipon_hw.deposition.session import resume_run, start_run
    from lipon_hw.store import Store

    data = tmp_path / "d"
    recipe = short_recipe(tmp_path, 30)
    out = cli("run", recipe, "--station", dead_socket_station(tmp_path), "--data", data,
              cwd=tmp_path)
    assert out.returncode == 1 and "Connection refused" in out.stderr
    assert Store(data).run(1).status == "failed"
    # a port that never answered is not waited for (it was, 31 s of the run clock)
    assert "; it has not answered since the run started, so the run does not wait for it" \
        in out.stderr
    assert [a for a in Store(data).alarms(1) if a.reaction == "hold"] == []

    def progress_bar_gone(_run_id, _recipe):  # e.g. the terminal closed under the bar
        raise BrokenPipeError(32, "Broken pipe")

    with pytest.raises(BrokenPipeError):
        resume_run(1, data, on_start=progress_bar_gone)
    run = Store(data).run(1)
    assert run.status == "failed" and "could not start" in run.message
    assert "Broken pipe" in run.message

    def ctrl_c(_run_id, _recipe):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        start_run(str(recipe), data, on_start=ctrl_c)
    run = Store(data).run(2)
    assert run.status == "interrupted" and "before the engine started" in run.message
    # and the claims were let go: the same tool runs again at once
    assert start_run(str(recipe), data).status == "completed"


# --- resume keeps the steps' labels ---------------------------------------------------------
def test_export_labels_every_reading_after_three_kill_and_resume_cycles(tmp_path):
    data, db = tmp_path / "d", tmp_path / "d" / "lipon.db"
    recipe = short_recipe(tmp_path, 400)
    deposit = 4
    proc = spawn("run", recipe, "--data", data, cwd=tmp_path)
    checkpoints(db, proc, n=1, step=deposit - 1)  # killed in the presputter or just after
    kill_9(proc)
    for _ in range(2):  # killed twice more, each time 800 s further into the deposit
        (t_cp,), = query(db, "SELECT MAX(t_s) FROM checkpoints")
        proc = spawn("resume", 1, "--data", data, cwd=tmp_path)
        wait_for(db, proc, "SELECT MAX(t_s) FROM checkpoints WHERE step_idx = 4",
                 lambda r, t=t_cp: r and (r[0][0] or 0) > t + 800, "a checkpoint 800 s later")
        kill_9(proc)
    assert cli("resume", 1, "--data", data, cwd=tmp_path).returncode == 0
    assert len(query(db, "SELECT * FROM alarms WHERE message LIKE 'resumed%'")) == 3

    out = cli("export", 1, "--data", data, "--out", tmp_path / "run1.csv", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    with open(tmp_path / "run1.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(r["step"] != "" for r in rows), "every reading has its step"
    labels = [int(r["step"]) for r in rows]
    assert labels == sorted(labels), "steps follow one another, none comes back"
    assert {0, 3, 4, 7} <= set(labels)  # a step of no duration (gas off) may have no row

    steps = {i: (k, t0, t1) for i, k, t0, t1 in
             query(db, "SELECT idx, kind, t_start_s, t_end_s FROM steps ORDER BY idx")}
    assert [k for k, _, _ in steps.values()] == [
        "pump_down", "gas", "rf", "presputter", "deposit", "rf", "gas", "vent"]
    ends = [t1 for _, _, t1 in steps.values()]
    starts = [t0 for _, t0, _ in steps.values()]
    assert starts[1:] == ends[:-1], "each step starts where the one before ended"
    for r in rows:
        k, t0, t1 = steps[int(r["step"])]
        assert r["step_kind"] == k and t0 <= float(r["t_s"]) <= t1


def test_lock_files_name_their_holder_and_die_with_it(tmp_path):
    """The mechanism itself: a lock of a live process is busy (its pid in the sentence);
    the kernel frees it when that process is killed."""
    from lipon_hw.engine.ownership import Busy, Ownership, Resource, held_by

    res = Resource("port socket://127.0.0.1:5001", "port busy: {holder}")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from lipon_hw.engine.ownership import Ownership, Resource\n"
        f"o = Ownership({str(tmp_path)!r}, 'run 9')\n"
        f"o.take([Resource({res.key!r}, '')])\n"
        "print('held', flush=True)\n"
        "time.sleep(600)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert held_by(tmp_path, res) == f"run 9 (pid {holder.pid})"
        with pytest.raises(Busy, match=rf"port busy: run 9 \(pid {holder.pid}\)"):
            Ownership(tmp_path).take([res], grace_s=0.05)
    finally:
        holder.kill()
        holder.wait()
    assert held_by(tmp_path, res) is None
    with Ownership(tmp_path) as mine:
        mine.take([res])
        assert mine.holds(res.key)
    assert os.listdir(tmp_path / "locks")  # the files stay; only the locks come and go


def test_a_cell_test_is_refused_on_a_sample_being_coated_and_shares_it_otherwise(tmp_path):
    """A deposition holds its sample alone; cell tests measuring it share it."""
    from lipon_hw.celltest.session import start_cycling
    from lipon_hw.engine import claims
    from lipon_hw.engine.ownership import Busy, Ownership
    from lipon_hw.store import Store

    data = tmp_path / "d"
    path = tmp_path / "p.yaml"
    path.write_text(LNMO.format(channels='{"1": {sample: T-1}}', cycles=1), encoding="utf-8")
    made = Store(data)  # the sample exists, with the films of an LNMO cell (as if deposited)
    made.ensure_sample("T-1", "glass")
    for layer in ({"material": "LNMO", "thickness_nm": 650.0},
                  {"material": "LiPON", "thickness_nm": 1000.0},
                  {"material": "Li", "thickness_nm": 570.0}):
        made.add_layer("T-1", 0, layer["material"], layer["thickness_nm"], 1.0, "sputter", 0.0)
    made.close()
    with Ownership(data, "run 7") as coating:
        coating.take([claims.sample("T-1", shared=False)])
        with pytest.raises(Busy, match=r"sample 'T-1' is being coated by run 7 \(pid"):
            start_cycling(str(path), data)
    with Ownership(data, "run 8") as measuring:  # another cell test on the same sample
        measuring.take([claims.sample("T-1", shared=True)])
        with pytest.raises(Busy, match="sample 'T-1' is in use by run 8"):
            Ownership(data).take([claims.sample("T-1", shared=False)], grace_s=0.05)
        with Ownership(data) as second:  # a second test on it: fine
            second.take([claims.sample("T-1", shared=True)])
    assert Store(data).runs() == [], "no run row for the refused test"
