"""Claims shared through a PostgreSQL store (issue 15: one store for many testers and
tools): a run, its workers and its sample are claimed for every data directory, on every
machine, that shares the store — by an advisory lock that dies with its holder — while
ports and channels stay the claims of one machine's lock files.

Two data directories on one store stand for two machines here: each has lock files of
its own, which never see each other, so only the store's claim can refuse the second."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from lipon_hw.engine import claims
from lipon_hw.engine.ownership import Busy, Ownership, Resource, held_by
from lipon_hw.store import Store

from recipes import LNMO, short_recipe


def _store_dirs(tmp_path, url, *names):
    """Data directories that all use the store at `url`."""
    dirs = []
    for name in names:
        Store(tmp_path / name, store=url).close()
        dirs.append(tmp_path / name)
    return dirs


def _holder_process(data_dir, resource_call: str, holder: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", (
        "import time\n"
        "from lipon_hw.engine import claims\n"
        "from lipon_hw.engine.ownership import Ownership\n"
        f"o = Ownership({str(data_dir)!r}, {holder!r})\n"
        f"o.take([claims.{resource_call}])\n"
        "print('held', flush=True)\n"
        "time.sleep(600)\n")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=data_dir)  # away from the source tree: the installed package is imported
    line = proc.stdout.readline().strip()
    assert line == "held", proc.stderr.read()
    return proc


def test_a_run_claimed_from_one_data_directory_is_refused_from_another_until_its_holder_dies(
        pg_url, tmp_path):
    here, there = _store_dirs(tmp_path, pg_url, "here", "there")
    holder = _holder_process(here, "run(1)", "run 1")
    try:
        # the other directory's lock file is free: only the store knows
        seen = held_by(there, claims.run(1))
        assert seen is not None and seen.startswith(f"run 1 (pid {holder.pid} on ")
        with pytest.raises(Busy, match=rf"run 1 is being driven by a live engine, run 1 \(pid "
                                       rf"{holder.pid} on .+\); wait for it to end"):
            Ownership(there).take([claims.run(1)], grace_s=0.05)
        # what is not the store's (a port) is this machine's alone
        port = Resource("port sim://rf", "busy {holder}")
        with Ownership(there) as mine:
            mine.take([port])
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the server lets the dead session's lock go as soon as it sees the socket close
    with Ownership(there, "run 1") as mine:
        mine.take([claims.run(1)], grace_s=10)
        assert held_by(here, claims.run(1)).startswith("run 1 (pid ")  # seen from the first
    assert held_by(here, claims.run(1)) is None
    assert held_by(there, claims.run(1)) is None


def test_a_sample_is_shared_by_cell_tests_and_refused_to_a_deposition_across_directories(
        pg_url, tmp_path):
    one, two, three = _store_dirs(tmp_path, pg_url, "one", "two", "three")
    with Ownership(one, "run 4") as a, Ownership(two, "run 5") as b:
        a.take([claims.sample("S-7", shared=True)])
        b.take([claims.sample("S-7", shared=True)])  # two cell tests measure one sample
        with pytest.raises(Busy, match=r"sample 'S-7' is in use by run [45] \(pid "):
            Ownership(three).take([claims.sample("S-7", shared=False)], grace_s=0.05)
    with Ownership(three, "run 6") as c:
        c.take([claims.sample("S-7", shared=False)])
        with pytest.raises(Busy, match=r"sample 'S-7' is being coated by run 6 \(pid "):
            Ownership(one).take([claims.sample("S-7", shared=True)], grace_s=0.05)


def test_two_stores_in_one_database_do_not_share_claims(pg_server, pg_url, tmp_path):
    import pgcluster

    schema = f"t_{uuid.uuid4().hex[:16]}"
    pgcluster.sql(pg_server, f"CREATE SCHEMA {schema}")
    try:
        first, = _store_dirs(tmp_path, pg_url, "first")
        second, = _store_dirs(tmp_path, pgcluster.in_schema(pg_server, schema), "second")
        with Ownership(first, "run 1") as a, Ownership(second, "run 1") as b:
            a.take([claims.run(1)])
            b.take([claims.run(1)], grace_s=0.05)  # run 1 of another store
    finally:
        pgcluster.sql(pg_server, f"DROP SCHEMA {schema} CASCADE")


def test_a_run_is_resumed_from_another_directory_only_once_its_engine_is_dead(
        pg_url, tmp_path):
    """The whole path: `lipon-hw resume` on the second machine refuses, in one sentence,
    a run the first still drives, and `lipon-hw pause` there reaches its engine; after the
    first engine is killed the second machine finishes the run."""
    there = tmp_path / "there"
    engine = _engine_running(pg_url, tmp_path)
    deadline = time.monotonic() + 120
    try:
        refused = subprocess.run([*CLI, "resume", "1", "--data", there, "--store", pg_url],
                                 cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert refused.returncode != 0
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in refused.stderr, refused.stderr
        assert "run 1 is being driven by a live engine" in lines[0]
        assert f"pid {engine.pid} on " in lines[0]
        # the second machine sees a live engine, so its operator's pause is taken, and acted on
        asked = subprocess.run([*CLI, "pause", "1", "--data", there], cwd=tmp_path,
                               capture_output=True, text=True, timeout=60)
        assert asked.returncode == 0, asked.stderr
        _until(lambda: _rows(pg_url, "SELECT 1 FROM alarms WHERE run_id = 1 AND source = "
                                     "'operator' AND reaction = 'pause'"),
               engine, deadline, "the engine did not pause within 120 s")
    finally:
        engine.send_signal(signal.SIGKILL)
        engine.wait()
    done = subprocess.run([*CLI, "resume", "1", "--data", there, "--store", pg_url, "--json"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["status"] == "completed"
    assert summary["thickness_nm"] == pytest.approx(60, abs=0.3)


CLI = [sys.executable, "-m", "lipon_hw.cli"]


def _engine_running(pg_url, tmp_path) -> subprocess.Popen:
    """`lipon-hw run` of a 60 nm deposition from data directory `here` on the store, at
    300× real time, once it has committed a checkpoint (it is killed if it ends first)."""
    engine = subprocess.Popen([*CLI, "run", short_recipe(tmp_path, 60), "--data",
                               tmp_path / "here", "--store", pg_url, "--speed", "300"],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    deadline = time.monotonic() + 120
    while not _rows(pg_url, "SELECT 1 FROM checkpoints WHERE run_id = 1"):
        if engine.poll() is not None or time.monotonic() > deadline:
            engine.kill()
            _, err = engine.communicate()
            raise AssertionError(f"no checkpoint of a live engine within 120 s: {err}")
        time.sleep(0.05)
    return engine


def _until(condition, engine: subprocess.Popen, deadline: float, failure: str):
    """Wait for `condition` while `engine` lives, until the monotonic `deadline`."""
    while not (found := condition()):
        assert engine.poll() is None, engine.communicate()[1]
        assert time.monotonic() < deadline, failure
        time.sleep(0.05)
    return found


def _end(engine: subprocess.Popen, other) -> None:
    """After a test of a live engine: the engine killed if it still lives, the other
    session (if any) closed."""
    if engine.poll() is None:
        engine.kill()
        engine.wait()
    if other is not None:
        other.close()


def _one_error(engine: subprocess.Popen, err: str) -> str:
    """The engine exited 1 with exactly one `error:` line and no traceback: that line."""
    assert engine.returncode == 1, err
    assert "Traceback" not in err
    said = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(said) == 1, err
    return said[0]


def _rows(url, sql):
    import psycopg

    try:
        with psycopg.connect(url, autocommit=True) as con:
            return con.execute(sql).fetchall()
    except psycopg.errors.UndefinedTable:  # the engine has not made the store yet
        return []


def test_an_sqlite_directory_claims_only_in_its_lock_files_whatever_the_environment_names(
        pg_url, tmp_path, monkeypatch):
    """A process whose environment names a PostgreSQL store (a Dask worker started for
    another campaign) still claims a run of an SQLite directory where that run lives."""
    from lipon_hw.store_location import STORE_ENV

    Store(tmp_path / "local", store="sqlite").close()
    monkeypatch.setenv(STORE_ENV, pg_url)
    with Ownership(tmp_path / "local", "run 1") as mine:
        mine.take([claims.run(1)])  # refused before: the environment contradicted the file
    one, two = _store_dirs(tmp_path, pg_url, "one", "two")
    with Ownership(one, "run 1") as mine:  # a directory that remembers its PostgreSQL store
        mine.take([claims.run(1)])
        with pytest.raises(Busy):
            Ownership(two).take([claims.run(1)], grace_s=0.05)


def _claims_backend(url, holder_prefix):
    """The server pid of the session holding claims under a name starting so."""
    rows = _rows(url, "SELECT pid FROM pg_stat_activity WHERE application_name LIKE "
                      f"'{holder_prefix}%'")
    assert len(rows) == 1, rows
    return rows[0][0]


def _terminate(url, pid):
    """The server drops a session, and it has gone when this returns: without the timeout
    pg_terminate_backend only signals it, and a look at the locks just after may still
    find the dying session's (CI once saw the engine's claim held, then held by nobody)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as con:
        assert con.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,)).fetchone()[0]


def _wait_in_line(url, key):
    """Another session asking for `key` and waiting for it (a blocking advisory lock, first
    in the server's queue), on a thread; returns (thread, its connection)."""
    import threading

    import psycopg

    from lipon_hw.store_claims import claim_key

    con = psycopg.connect(url, autocommit=True, application_name="the other engine")
    schema = con.execute("SELECT current_schema()").fetchone()[0]
    waiting = threading.Thread(
        target=lambda: con.execute("SELECT pg_advisory_lock(%s)", (claim_key(schema, key),)),
        daemon=True)
    waiting.start()
    deadline = time.monotonic() + 10
    while not _rows(url, "SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                         " WHERE a.application_name = 'the other engine' AND NOT l.granted"):
        assert time.monotonic() < deadline, "the other session never queued for the claim"
        time.sleep(0.02)
    return waiting, con


def test_a_claim_dropped_by_the_server_is_taken_again_or_its_loss_is_one_sentence(
        pg_url, tmp_path):
    from lipon_hw.errors import ClaimLost

    here, there = _store_dirs(tmp_path, pg_url, "here", "there")
    with Ownership(here, "run 1") as mine:
        mine.take([claims.run(1)])
        # the server drops the claim's session (a restart, a cut network): taken again
        _terminate(pg_url, _claims_backend(pg_url, f"run 1 (pid {os.getpid()} "))
        mine.keep()
        assert held_by(there, claims.run(1)).startswith(f"run 1 (pid {os.getpid()} on ")
        # dropped again, and another engine was waiting for it: it has it now
        waiting, other = _wait_in_line(pg_url, "run 1")
        try:
            _terminate(pg_url, _claims_backend(pg_url, f"run 1 (pid {os.getpid()} "))
            waiting.join(10)
            assert not waiting.is_alive()
            with pytest.raises(ClaimLost, match=r"^run 1 was claimed by this engine in the "
                                                r"store .+ until the server dropped the claim's "
                                                r"connection; the other engine holds it now, so "
                                                r"this engine stops$"):
                mine.keep()
        finally:
            other.close()


def test_an_engine_whose_run_claim_went_to_another_stops_with_the_hardware_safe(
        pg_url, tmp_path):
    engine = _engine_running(pg_url, tmp_path)
    other = None
    try:
        waiting, other = _wait_in_line(pg_url, "run 1")
        _terminate(pg_url, _claims_backend(pg_url, f"run 1 (pid {engine.pid} "))
        _, err = engine.communicate(timeout=120)
    finally:
        _end(engine, other)
    said = _one_error(engine, err)
    assert said.startswith("error: run 1 was claimed by this engine in the store ")
    assert said.endswith("; the other engine holds it now, so this engine stops")
    status = _rows(pg_url, "SELECT status FROM runs WHERE id = 1")
    assert status == [("failed",)]
    # the engine's way out made the tool safe first, and stored that it did
    safe = [m for (m,) in _rows(pg_url, "SELECT message FROM alarms WHERE run_id = 1")
            if m.startswith("safe state: ")]
    assert len(safe) == 1 and "rf, shutter" in safe[0] and "made safe after: run 1 was " \
        "claimed by this engine" in safe[0], safe


def test_a_worker_takes_its_claim_on_the_run_again_after_the_server_dropped_it(
        pg_url, tmp_path):
    """A cell test's worker processes hold a shared claim on their run while they write, so
    that a resume waits for them. A claim whose session the server dropped (a restart, a
    cut network) is taken again at the worker's next write: a resume from another machine
    is still kept out. The run's own process, which only watches them, keeps its claim on
    the run too."""
    here, there = _store_dirs(tmp_path, pg_url, "here", "there")
    protocol = tmp_path / "lnmo.yaml"
    protocol.write_text(LNMO.format(channels="1-2", cycles=5000), encoding="utf-8")
    engine = subprocess.Popen([sys.executable, "-c", (
        "from lipon_hw.celltest.session import start_cycling\n"
        f"start_cycling({str(protocol)!r}, {str(here)!r}, workers=2)\n")],
        cwd=here, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    worker_sessions = ("SELECT a.pid, a.application_name FROM pg_stat_activity a JOIN pg_locks l"
                       " ON l.pid = a.pid WHERE l.locktype = 'advisory' AND l.granted AND"
                       " a.application_name LIKE 'a worker of run 1 %'")
    try:
        def both_workers():
            rows = _rows(pg_url, worker_sessions)
            return rows if len(rows) >= 2 else None

        held = _until(both_workers, engine, time.monotonic() + 120, "no two workers in 120 s")
        pid, name = held[0]
        _terminate(pg_url, pid)
        _until(lambda: any(n == name and p != pid for p, n in _rows(pg_url, worker_sessions)),
               engine, time.monotonic() + 60, f"{name} never took its claim again")
        assert held_by(there, claims.run_workers(1)).startswith("a worker of run 1 (pid ")
        # the run's own process only watches its workers: it keeps its claim all the same
        _terminate(pg_url, _claims_backend(pg_url, f"run 1 (pid {engine.pid} "))
        _until(lambda: held_by(there, claims.run(1)), engine, time.monotonic() + 60,
               "the engine never took its claim again")
        assert held_by(there, claims.run(1)).startswith(f"run 1 (pid {engine.pid} on ")
    finally:
        engine.send_signal(signal.SIGTERM)
        engine.communicate(timeout=120)
