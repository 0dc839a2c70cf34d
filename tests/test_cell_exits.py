"""How a cell test ends, whatever ends it: what the store says must be true, and every cell
is disconnected first. The dangerous moments are provoked deterministically (a probe at a
known point of the run, a lock held by the test), never by timing."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
from pathlib import Path

import pytest

from lipon_hw.engine.cell_session import load, mount_cells, resume_cycling, start_cycling
from lipon_hw.engine.cycling import ChannelState, run_channels
from lipon_hw.engine.session import make_env
from lipon_hw.station import load_station
from lipon_hw.store import Store

PROTOCOL = """
name: LNMO short
kind: cycling
potentiostat: mes4
channels: {channels}
cell: {{kind: lnmo, area_cm2: 0.049, capacity_uAh: 1.47}}
record: {{every_s: 30, every_mV: 5}}
safety: {{min_V: {min_V}, max_V: 5.2}}
steps:
  - tag: cycle
  - cc: {{current_A: 3.0e-6, until: {{voltage_V: 5.1, time_h: 2}}}}
  - cc: {{current_A: -3.0e-6, until: {{voltage_V: 3.5, time_h: 2}}}}
  - loop: {{to: cycle, times: {cycles}}}
"""


def write(tmp_path: Path, channels: str = "1", cycles: int = 3, min_V: float = 2.5) -> str:
    path = tmp_path / "protocol.yaml"
    path.write_text(PROTOCOL.format(channels=channels, cycles=cycles, min_V=min_V),
                    encoding="utf-8")
    return str(path)


def committed(db: Path, sql: str, *args) -> list[tuple]:
    """What another process (an operator, `lipon-hw resume`, a kill -9) sees right now."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


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
        cells = mount_cells(lab, proto, store, 1, {})
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
    other = threading.Thread(target=idle.wait)
    other.start()
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    old_wakeup = signal.set_wakeup_fd(write_end)

    def interrupt(_signum, _frame):
        raise KeyboardInterrupt

    old_handler = signal.signal(signal.SIGTERM, interrupt)

    def during_write(sql):
        if sql.startswith("INSERT INTO cell_samples"):
            os.kill(os.getpid(), signal.SIGTERM)
            os.read(read_end, 1)  # the C-level handler has run (in whichever thread)

    store._db.set_trace_callback(during_write)
    try:
        with pytest.raises(KeyboardInterrupt):
            store.flush()
        store._db.set_trace_callback(None)
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
