"""How a cell test ends, whatever ends it: what the store says must be true, and every cell
is disconnected first. The dangerous moments are provoked deterministically (a probe at a
known point of the run, a lock held by the test), never by timing."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from served import serve_on_consecutive_ports
from stores import committed

from lipon_hw.celltest.all_channels import run_channels
from lipon_hw.celltest.channels import ChannelState
from lipon_hw.celltest.groups import mount_cells
from lipon_hw.celltest.plan import load
from lipon_hw.celltest.session import resume_cycling, start_cycling
from lipon_hw.engine.lifecycle import OPERATOR_STOP, Interrupted, make_env
from lipon_hw.errors import InstrumentError, RunTakenOver, StoreError
from lipon_hw.station import load_station
from lipon_hw.store import Store

from recipes import LNMO


def write(tmp_path: Path, channels: str = "1", cycles: int = 3, min_V: float = 2.5) -> str:
    path = tmp_path / "protocol.yaml"
    text = LNMO.format(channels=channels, cycles=cycles)
    path.write_text(text.replace("min_V: 2.5,", f"min_V: {min_V},"), encoding="utf-8")
    return str(path)


# --- issue 9 item 2: a channel that says it never started has no samples -------------------
def test_a_channel_is_committed_running_before_its_cell_is_connected(tmp_path):
    """A worker killed with its parent used to run its channels for up to a second while
    their rows still said `pending` (the status rode on the next timed commit): a resume
    started meanwhile ran them again from t = 0 over the samples the worker then stored.
    Here nothing is committed by time (a flush every hour), and the probe looks at the store
    when the cell has been cycled once."""
    station = load_station(None)
    store = Store(tmp_path / "data", flush_every_s=3600.0)
    proto = load(write(tmp_path), station, store)
    run_id = store.create_run(proto.name, "cycling", "p.yaml", proto.text, station.text, 1, None)
    store.add_channel(run_id, 1, proto.potentiostat, None, "p")
    env = make_env(station, None)
    lab = station.connect(lambda: env.now, seed=1)
    seen = []

    def probe(channel, _cycles):
        seen.append(committed(store.path, "SELECT status FROM channels WHERE channel=?",
                              channel)[0][0])

    try:
        cells = mount_cells(lab, proto, store, 1, {}, run_id)
        run_channels(env, store, run_id, proto, lab.instruments[proto.potentiostat],
                     {1: ChannelState()}, cells, realtime=False, on_cycle=probe)
    finally:
        lab.close()
        store.close()
    assert seen and set(seen) == {"running"}, f"the store said {seen} while the cell ran"


def test_a_sigterm_during_a_commit_waits_for_it_even_when_another_thread_takes_it(tmp_path):
    """A worker's SIGTERM used to be held off a commit by a signal mask, but the kernel hands
    a signal the main thread blocks to another thread (numpy's pool), whose handler still
    has Python raise in the middle of the write, or after its COMMIT before the buffers were
    emptied (the samples then went in twice). Here a thread that does not block signals is
    running, the SIGTERM is sent from inside the write (a trace hook of the test's own
    connection to sqlite), and the test waits until the signal has reached the handler."""
    store = Store(tmp_path, flush_every_s=3600.0)
    run_id = store.create_run("p", "cycling", "p.yaml", "", "", 1, None)
    store.add_channel(run_id, 1, "mes4", None, "p")
    store.add_cell_samples(run_id, 1, [(t, 4.0, 3e-6, 1, 1, 1, "cc") for t in (1.0, 2.0)])
    idle = threading.Event()
    other = threading.Thread(target=idle.wait, daemon=True)
    other.start()
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    old_wakeup = signal.set_wakeup_fd(write_end)

    def interrupt(_signum, _frame):
        raise KeyboardInterrupt

    old_handler = signal.signal(signal.SIGTERM, interrupt)

    def during_write(sql):
        if sql.startswith("INSERT INTO cell_blocks"):
            os.kill(os.getpid(), signal.SIGTERM)
            os.read(read_end, 1)  # the C-level handler has run (in whichever thread)

    raw = store._db._con  # the sqlite3 connection under the store's error translation
    raw.set_trace_callback(during_write)
    try:
        with pytest.raises(KeyboardInterrupt):
            store.flush()
        raw.set_trace_callback(None)
        store.flush()
    finally:
        signal.signal(signal.SIGTERM, old_handler)
        signal.set_wakeup_fd(old_wakeup)
        os.close(read_end)
        os.close(write_end)
        idle.set()
        other.join()
        store.close()
    t = committed(tmp_path / "lipon.db", "SELECT t_s FROM cell_samples ORDER BY rowid")
    assert t == [(1.0,), (2.0,)], "every sample stored once"


# --- issue 8: no zombie run, no `completed` run of tripped channels ---------------------------
def test_resume_of_a_run_killed_after_its_channels_ended_finishes_it(tmp_path):
    """The store as a kill between the channels' end and the run's status leaves it: every
    channel ended, the run `running` with no summary. Resume used to refuse it ("no
    channel left to resume"), so it stayed running forever; it now writes its end."""
    data = tmp_path / "data"
    first = start_cycling(write(tmp_path, channels="1-2", cycles=2), data, workers=1)
    db = data / "lipon.db"
    con = sqlite3.connect(db)
    with con:
        con.execute("UPDATE runs SET status='running', message='', ended_at=NULL, summary='{}'")
    con.close()
    result = resume_cycling(first.run_id, data)
    assert (result.status, result.message) == ("completed", "completed: channels 1, 2")
    assert [c["cycles"] for c in result.summary["channels"]] == [2, 2]
    (row,) = committed(db, "SELECT status, message, ended_at IS NOT NULL, summary FROM runs")
    assert row[:3] == ("completed", "completed: channels 1, 2", 1)
    assert json.loads(row[3]) == first.summary


def test_a_run_whose_every_channel_tripped_is_not_completed(tmp_path):
    """The cells sit near 4 V; a floor of 4.6 V trips every channel at its first sample."""
    result = start_cycling(write(tmp_path, channels="1-2", min_V=4.6), tmp_path / "data",
                           workers=1)
    assert [c["status"] for c in result.summary["channels"]] == ["tripped", "tripped"]
    assert result.status == "failed"
    assert result.message.startswith("no channel got through its protocol (tripped: channels "
                                     "1, 2); channel 1: ")
    assert "below min_V 4.6 V" in result.message
    (row,) = committed(tmp_path / "data" / "lipon.db", "SELECT status, message FROM runs")
    assert row == (result.status, result.message)


# --- issue 8: every exit path leaves every cell disconnected, and the store true -------------
SHORT_CYCLES = """
name: short cycles over TCP
kind: cycling
potentiostat: mes4
channels:
  "1": {}
  "2": {protocol: hold}
record: {every_s: 10}
safety: {min_V: 2.5, max_V: 5.2}
steps:
  - tag: cycle
  - cc: {current_A: 3.0e-6, until: {voltage_V: 5.1, time_s: 60}}
  - cc: {current_A: -3.0e-6, until: {voltage_V: 3.5, time_s: 60}}
  - loop: {to: cycle, times: 200}
protocols:
  hold:  # one long step: its cell is on, a technique running, whenever channel 1 acts
    steps:
      - cc: {current_A: 1.0e-8, until: {voltage_V: 5.1, time_h: 10}, record: {every_s: 7200}}
"""
SPEED = 1000.0  # the served lab's clock, and the engine's: channel 2's step lasts 36 s wall


@pytest.fixture
def served(tmp_path):
    """The simulated lab behind TCP sockets, and a station that reaches channels 1-2 of its
    potentiostat over `socket://` (so the engine runs as on hardware, in real time)."""
    lab, base = serve_on_consecutive_ports(SPEED)
    station = tmp_path / "station.yaml"
    station.write_text("name: bench over TCP\ninstruments:\n  mes4:\n    driver: methodscript\n"
                       f"    address: 'socket://127.0.0.1:{{{base}-{base + 1}}}'\n",
                       encoding="utf-8")
    (tmp_path / "protocol.yaml").write_text(SHORT_CYCLES, encoding="utf-8")
    lab.station_path = str(station)
    yield lab
    lab.stop()


def emulators(lab) -> list:
    return [lab.lab.emulators[f"mes4/{n}"] for n in (1, 2)]


def assert_disconnected(lab) -> None:
    """Read from the emulators themselves, not from anything the engine says."""
    for n, emulator in enumerate(emulators(lab), start=1):
        assert not emulator.running, f"channel {n}: a technique still runs"
        assert not emulator.cell_is_on, f"channel {n}: the cell is still on"


def stored(data: Path) -> tuple[tuple, list[tuple]]:
    db = data / "lipon.db"
    (run,) = committed(db, "SELECT status, message FROM runs")
    return run, committed(db, "SELECT channel, status, message FROM channels ORDER BY channel")


def test_an_engine_error_mid_run_disconnects_every_cell_and_says_failed(served, tmp_path):
    def fault(channel, cycles):
        if (channel, cycles) == (1, 2):
            raise RuntimeError("a bug in a progress callback")

    with pytest.raises(RuntimeError):
        start_cycling(str(tmp_path / "protocol.yaml"), tmp_path / "data", served.station_path,
                      speed=SPEED, on_cycle=fault)
    assert_disconnected(served)
    run, channels = stored(tmp_path / "data")
    assert run == ("failed", "internal error: RuntimeError('a bug in a progress callback')")
    reasons = {"stopped by an error (internal error: RuntimeError('a bug in a progress "
               "callback'))", "stopped with the run (internal error: RuntimeError('a bug in a "
               "progress callback'))"}
    assert {status for _, status, _ in channels} == {"failed"}
    assert {message for *_, message in channels} == reasons


def test_a_store_that_refuses_writes_mid_run_disconnects_every_cell_first(served, tmp_path):
    """The store fails at a known point: the test's own connection adds a trigger that
    refuses every sample of cycle 3 (as a full disk would refuse them)."""
    data = tmp_path / "data"
    Store(data).close()
    con = sqlite3.connect(data / "lipon.db")
    con.execute("CREATE TRIGGER refuse BEFORE INSERT ON cell_blocks WHEN NEW.cycle >= 3 "
                "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END")
    con.commit()
    con.close()
    with pytest.raises(StoreError):  # the store's one sentence for the refused write
        start_cycling(str(tmp_path / "protocol.yaml"), data, served.station_path, speed=SPEED)
    assert_disconnected(served)
    (status, message), channels = stored(data)
    assert status == "failed"
    assert message.startswith("the store failed: ") and "database or disk is full" in message \
        and message.endswith(" buffered samples and readings were not stored)")
    assert {status for _, status, _ in channels} == {"failed"}
    assert all("the store failed: " in m and "database or disk is full" in m
               for *_, m in channels)
    assert not any("could not be disconnected" in m for *_, m in channels)


def test_a_run_taken_over_mid_run_disconnects_every_cell_and_writes_nothing_more(
        served, tmp_path):
    """Another engine takes the run over while this one drives it (a shared store's
    claim dropped unseen: `test_store_fencing`); here the test's own connection moves the
    run's driver epoch on and says it resumed elsewhere, at a known point (channel 1 past
    cycle 3). This engine's next write is refused: it disconnects
    every cell, stores nothing more (no channel's end, no alarm, not its run's status) and
    says so in one sentence."""
    data = tmp_path / "data"
    at: dict = {}

    def take_over(channel, cycles):
        if (channel, cycles) != (1, 3) or at:
            return
        db = data / "lipon.db"
        at["samples"] = committed(db, "SELECT COUNT(*) FROM cell_samples")[0][0]
        con = sqlite3.connect(db, timeout=30)
        with con:
            con.execute("UPDATE runs SET driver_epoch = driver_epoch + 1, status = 'running',"
                        " message = 'resumed elsewhere'")
        con.close()
        at["channels"] = committed(db, "SELECT channel, status, message FROM channels"
                                       " ORDER BY channel")
        at["alarms"] = committed(db, "SELECT COUNT(*) FROM alarms")[0][0]

    with pytest.raises(RunTakenOver) as caught:
        start_cycling(str(tmp_path / "protocol.yaml"), data, served.station_path,
                      speed=SPEED, on_cycle=take_over)
    assert at, "the run was never taken over"
    assert_disconnected(served)
    assert str(caught.value).startswith("run 1 was taken over by another engine in the store ")
    assert str(caught.value).endswith(" (its driver epoch is 2, this engine's 1), so this "
                                      "engine stores nothing more of it")
    run, channels = stored(data)
    assert run == ("running", "resumed elsewhere")  # the new driver's, not overwritten
    assert channels == at["channels"]  # as they were at the take-over
    db = data / "lipon.db"
    # what it stored before the take-over stays; nothing after it lands
    assert committed(db, "SELECT COUNT(*) FROM cell_samples")[0][0] == at["samples"]
    assert committed(db, "SELECT COUNT(*) FROM alarms")[0][0] == at["alarms"]


def test_a_run_taken_over_as_its_link_is_lost_still_says_which_cell_is_not_safe(
        served, tmp_path):
    """The take-over above and the lost lab below at once: nothing of the run can be
    stored any more, so the one sentence is all the operator learns, and it must say that
    channel 2's cell is still on (it said only that the run was taken over)."""
    said = _taken_over_and_unplugged(served, tmp_path, workers=None)
    assert said.startswith("the hardware was NOT all made safe: channel 1: the cell could "
                           "not be disconnected ("), said


def _taken_over_and_unplugged(served, tmp_path: Path, workers: int | None) -> str:
    """The run taken over and the lab unplugged at once, as channel 1 is past cycle 2 (as
    the engine hears it); the run's one sentence, which must name channel 2's cell as not
    made safe, and the take-over."""
    data = tmp_path / "data"
    done: list = []

    def take_over_and_unplug(channel, cycles):
        if channel == 1 and cycles >= 2 and not done:  # workers' progress comes in leaps
            done.append(channel)
            con = sqlite3.connect(data / "lipon.db", timeout=30)
            with con:
                con.execute("UPDATE runs SET driver_epoch = driver_epoch + 1")
            con.close()
            served.stop()

    with pytest.raises(InstrumentError) as caught:
        start_cycling(str(tmp_path / "protocol.yaml"), data, served.station_path,
                      speed=SPEED, on_cycle=take_over_and_unplug, workers=workers)
    assert emulators(served)[1].cell_is_on, "channel 2's instrument runs on, unreachable"
    said = str(caught.value)
    assert said.startswith("the hardware was NOT all made safe: channel "), said
    assert "channel 2: the cell could not be disconnected (" in said
    assert said.endswith("; and run 1 was taken over by another engine in the store "
                         f"{data / 'lipon.db'} (its driver epoch is 2, this engine's 1), so "
                         "this engine stores nothing more of it"), said
    return said


def test_worker_processes_taken_over_as_the_link_is_lost_say_which_cell_is_not_safe(
        served, tmp_path):
    """As above with each channel in a worker process of its own: the workers' alarms
    are refused as the engine's are, so each hands the parent the cells it could not
    disconnect, and the run's one sentence names them."""
    _taken_over_and_unplugged(served, tmp_path, workers=2)


def test_a_lost_link_is_reported_as_a_cell_that_could_not_be_disconnected(served, tmp_path):
    """The lab stops answering mid-run (its TCP servers stopped): the engine cannot reach
    the cells, and the store must not say it disconnected them: channel 2's cell is in
    fact still on, its instrument running its step."""
    ports = [f"socket://127.0.0.1:{served.ports[f'mes4/{n}']}" for n in (1, 2)]

    def unplug(channel, cycles):
        if cycles == 2:
            served.stop()

    with pytest.raises(InstrumentError) as caught:
        start_cycling(str(tmp_path / "protocol.yaml"), tmp_path / "data",
                      served.station_path, speed=SPEED, on_cycle=unplug)
    assert emulators(served)[1].running and emulators(served)[1].cell_is_on, \
        "channel 2's instrument runs on, unreachable"
    run, channels = stored(tmp_path / "data")
    # the run's end says what was not made safe: never "completed", nor a plain failure
    assert run[0] == "failed" and run[1] == str(caught.value)
    assert run[1].startswith("the hardware was NOT all made safe: channel 1: the cell could "
                             f"not be disconnected ({ports[0]} ")  # its re-open, refused
    for (_, status, message), port in zip(channels, ports, strict=True):
        assert status == "failed" and message.startswith(f"{port} is lost after 3 attempts"), \
            message
        # refused at once (its back-off still running) or at its re-open, as the run's clock
        # and the link's back-off happen to meet
        assert f"; the cell could not be disconnected ({port} is lost" in message or \
            f"; the cell could not be disconnected ({port} could not be opened: " in message, \
            message


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_lipon_hw_run_disconnects_every_cell_and_says_interrupted(
        served, tmp_path, signum):
    proc = subprocess.Popen([sys.executable, "-m", "lipon_hw.cli", "run", "protocol.yaml",
                             "--station", served.station_path, "--speed", str(SPEED)],
                            cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    db = tmp_path / "lipon-data" / "lipon.db"
    deadline = time.monotonic() + 60
    while not (db.exists() and _running_mid_campaign(db)):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert_disconnected(served)
    for port in (served.ports["mes4/1"], served.ports["mes4/2"]):
        with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
            raw.sendall(b"Z\n")  # abort: answered with error 0006 when no script runs
            assert raw.recv(64) == b"Z!0006\n"
    run, channels = stored(tmp_path / "lipon-data")
    assert run == ("interrupted", "stopped by the operator (Ctrl-C / SIGTERM)")
    assert channels == [(n, "interrupted", OPERATOR_STOP) for n in (1, 2)]


def test_kill_9_of_the_engine_leaves_the_guard_to_disconnect_every_cell(served, tmp_path):
    """No code of the engine's own runs after kill -9: the guard process it started (the
    station's addresses are sockets, as on hardware) sees its pipe close and stops both
    channels, cells off; the run is marked failed by the guard, and resumes."""
    proc = subprocess.Popen([sys.executable, "-m", "lipon_hw.cli", "run", "protocol.yaml",
                             "--station", served.station_path, "--speed", str(SPEED)],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    db = tmp_path / "lipon-data" / "lipon.db"
    deadline = time.monotonic() + 60
    while not (db.exists() and _running_mid_campaign(db)):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.05)
    assert any(e.cell_is_on for e in emulators(served)), "a cell is on when the engine dies"
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 20  # the guard: a new interpreter, the station, two ports
    while any(e.cell_is_on or e.running for e in emulators(served)):
        assert time.monotonic() < deadline, "the cells are still connected after kill -9"
        time.sleep(0.1)
    assert_disconnected(served)
    while time.monotonic() < deadline and stored(tmp_path / "lipon-data")[0][0] == "running":
        time.sleep(0.1)  # the guard writes the run's end after the cells are off
    (status, message), _ = stored(tmp_path / "lipon-data")
    assert status == "failed" and "the guard process made the hardware safe" in message
    assert "mes4 channels 1, 2" in message


def _running_mid_campaign(db: Path) -> bool:
    """Channel 1 in its second cycle, channel 2 in its long step."""
    try:
        rows = committed(db, "SELECT channel, MAX(cycle) FROM cell_samples GROUP BY channel")
    except sqlite3.OperationalError:
        return False
    return dict(rows).get(1, 0) >= 2 and 2 in dict(rows)


def test_every_cell_is_disconnected_before_any_channel_end_is_stored(served, tmp_path):
    """At the moment the engine fails, the test's own connection holds the database
    (BEGIN EXCLUSIVE): every cell must be off while no write can pass. A helper thread keeps
    the lock until it sees both cells off (or 5 s: channel 2's step would run 36 s on its
    own), then lets the engine store its ends."""
    data = tmp_path / "data"
    Store(data).close()
    locked, seen_off = threading.Event(), []

    def hold_the_store():
        con = sqlite3.connect(data / "lipon.db", isolation_level=None)
        con.execute("BEGIN EXCLUSIVE")
        locked.set()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not seen_off:
            if not any(e.running or e.cell_is_on for e in emulators(served)):
                seen_off.append(time.monotonic())
            time.sleep(0.01)
        con.execute("ROLLBACK")
        con.close()

    holder = threading.Thread(target=hold_the_store)

    def fault(channel, cycles):
        if (channel, cycles) == (1, 2):
            time.sleep(1.1)  # the store's 1 s flush cadence is due: what is stored next is
            # written at once, not buffered (so a write before a disconnect would wait)
            holder.start()
            locked.wait()
            raise RuntimeError("a bug in a progress callback")

    with pytest.raises(RuntimeError):
        start_cycling(str(tmp_path / "protocol.yaml"), data, served.station_path,
                      speed=SPEED, on_cycle=fault)
    holder.join()
    assert seen_off, "a cell stayed on while the engine waited to store a channel's end"
    run, channels = stored(data)
    assert run[0] == "failed" and {status for _, status, _ in channels} == {"failed"}


def test_an_error_in_the_parent_stops_every_worker_and_their_channels(tmp_path):
    """Channels in worker processes: the parent fails (its progress callback raises once
    a channel has cycled). The workers used to run on, unwatched, under a run that said
    `failed`; now each is stopped, its channels disconnected and stored as interrupted."""
    def fault(channel, cycles):
        if cycles >= 1:
            raise RuntimeError("a bug in a progress callback")

    data = tmp_path / "data"
    with pytest.raises(RuntimeError):
        start_cycling(write(tmp_path, channels="1-2", cycles=400), data, workers=2,
                      on_cycle=fault)
    assert multiprocessing.active_children() == [], "a worker runs on"
    run, channels = stored(data)
    assert run == ("failed", "internal error: RuntimeError('a bug in a progress callback')")
    assert {status for _, status, _ in channels} <= {"interrupted", "pending"}
    assert "interrupted" in {status for _, status, _ in channels}


def test_a_sigterm_inside_a_simulated_instrument_waits_for_its_answer(tmp_path, monkeypatch):
    """A SIGTERM (the CLI's handler) raised while the simulated potentiostat answers a
    poll, its cell's physics measured and its own clock not yet set: the signal waits for
    the instrument's answer (`lipon_hw.interrupts`), then stops the run at once, every cell
    disconnected and the run and channels interrupted. (What a signal cut off inside an
    instrument does is shown in tests/test_interrupts.py; here, that a held one still
    stops a whole run, safe.) Raised at that very point: the handler runs inside
    `raise_signal`."""
    from lipon_hw.cli import _stop_on_sigterm
    from lipon_hw.sim.recording import RecordLoop

    measure, polls = RecordLoop.run_to, []

    def run_to(loop, k_stop):
        sent = measure(loop, k_stop)  # the cell is at its last sample; the instrument's clock
        polls.append(k_stop)  # is set when this returns
        if len(polls) == 60:
            signal.raise_signal(signal.SIGTERM)
        return sent

    monkeypatch.setattr(RecordLoop, "run_to", run_to)
    with _stop_on_sigterm(), pytest.raises(Interrupted) as caught:
        start_cycling(write(tmp_path, channels="1-2", cycles=400), tmp_path / "data",
                      workers=1)
    assert str(caught.value) == "stopped by the operator (Ctrl-C / SIGTERM)"
    run, channels = stored(tmp_path / "data")
    assert run == ("interrupted", str(caught.value))
    assert channels == [(n, "interrupted", OPERATOR_STOP) for n in (1, 2)]
    assert 60 <= len(polls) < 80, "stopped at once"


@pytest.mark.parametrize("workers", [1, 2])
def test_a_cell_left_connected_in_any_process_ends_the_run_not_made_safe(tmp_path, workers):
    """A channel's link drops for good mid-campaign (the simulated lab's `link_drop`), so its
    cell cannot be disconnected. Whether its channels ran in this process or in a worker,
    the run must not end `completed` (the chaos bench found one that did): it ends failed,
    saying which cell was not made safe."""
    from faulty import CELL_2_NOT_SAFE, lost_cell_campaign

    protocol, station = lost_cell_campaign(tmp_path)
    with pytest.raises(InstrumentError, match=CELL_2_NOT_SAFE):
        start_cycling(protocol, tmp_path / "data", station, workers=workers)
    run, channels = stored(tmp_path / "data")
    assert run[0] == "failed" and run[1].startswith("the hardware was NOT all made safe")
    assert dict((c[0], c[1]) for c in channels)[1] == "completed"


@pytest.mark.parametrize("workers", [None, 2])
def test_a_ctrl_c_as_the_link_is_lost_says_which_cell_is_not_safe(served, tmp_path, workers):
    """Ctrl-C at the moment the lab stops answering: the cells cannot be reached to be
    disconnected, and the run's one sentence, the operator's and the store's, says so
    after what stopped it (it said only that the operator stopped the run). With worker
    processes, the engine's Ctrl-C is passed on to them as SIGTERM."""
    data = tmp_path / "data"
    done: list = []

    def ctrl_c_and_unplug(channel, cycles):
        if cycles >= 2 and not done:  # workers' progress comes in leaps
            done.append(channel)
            served.stop()
            raise KeyboardInterrupt

    with pytest.raises(Interrupted) as caught:
        start_cycling(str(tmp_path / "protocol.yaml"), data, served.station_path,
                      speed=SPEED, on_cycle=ctrl_c_and_unplug, workers=workers)
    assert emulators(served)[1].cell_is_on, "channel 2's instrument runs on, unreachable"
    said = str(caught.value)  # (the workers' channels in the order their alarms came)
    assert said.startswith("stopped by the operator (Ctrl-C / SIGTERM); the hardware was NOT "
                           "all made safe: channel "), said
    for n in (1, 2):
        assert f"channel {n}: the cell could not be disconnected (" in said, said
    run, _ = stored(data)
    assert run == ("interrupted", said)
