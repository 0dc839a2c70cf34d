"""A run's driver epoch (a fencing token): an engine that lost its run without knowing yet
cannot write over the engine that took it over (issue 15: a shared store's claims are
advisory locks that a server restart or a cut network drops; another machine may resume
the run before the first engine notices).

Every engine that takes a run to drive it moves the run's driver epoch on
(`Store.take_over`), and every write transaction of its store checks that epoch; on
PostgreSQL the check holds the run's row to the commit, so a take-over waits for a write
under way, or the write sees it. Whatever the first engine stored before the take-over
stays; nothing after it lands."""

from __future__ import annotations

import threading
import time

import pytest
from test_store_claims import (
    _claims_backend,
    _end,
    _engine_running,
    _one_error,
    _rows,
    _terminate,
    _wait_in_line,
)

from lipon_hw.errors import RunTakenOver, ShardTakenOver
from lipon_hw.store import Store

TAKEN = (r"^run 1 was taken over by another engine in the store .+ \(its driver epoch is 2, "
         r"this engine's 1\), so this engine stores nothing more of it")


def _run(store: Store) -> int:
    run_id = store.create_run("r", "deposition", "r.yaml", "name: r", "name: s", 1, None)
    assert store.take_over(run_id, new=True) == 1
    return run_id


def test_a_run_taken_over_refuses_every_later_write_of_its_earlier_driver(backend, tmp_path):
    first = Store(tmp_path / "d")
    run_id = _run(first)
    first.add_readings(run_id, 0.0, {"gauge.pressure_torr": 1e-6})
    first.flush()
    worker = Store(tmp_path / "d")  # a worker process of the first engine
    worker.follow(run_id, first.epoch(run_id))
    worker.add_alarm(run_id, 1.0, "info", "ch1", "written under the first driver")

    second = Store(tmp_path / "d")  # the engine that resumes the run (another machine)
    assert second.take_over(run_id) == 2
    second.set_status(run_id, "running", "resumed from t = 0 s")

    first.add_readings(run_id, 5.0, {"gauge.pressure_torr": 2e-6})
    with pytest.raises(RunTakenOver, match=TAKEN + "$"):
        first.flush()
    with pytest.raises(RunTakenOver, match=TAKEN):
        first.set_status(run_id, "failed", "its claim was lost")
    with pytest.raises(RunTakenOver, match=TAKEN):
        first.set_status(run_id, "failed", "its claim was lost", wait_s=0.1)
    with pytest.raises(RunTakenOver, match=TAKEN):  # an alarm is written at once
        worker.add_alarm(run_id, 6.0, "info", "ch1", "written after the take-over")

    # the second driver writes, under its own epoch
    second.add_readings(run_id, 5.0, {"gauge.pressure_torr": 3e-6})
    second.flush()
    run = second.run(run_id)
    assert (run.status, run.message) == ("running", "resumed from t = 0 s")
    assert [v for _, _, v in second.readings(run_id)] == [1e-6, 3e-6]
    assert [a.message for a in second.alarms(run_id)] == ["written under the first driver"]
    second.close()
    for store in (first, worker):  # what they still buffer is never written
        with pytest.raises(RunTakenOver):
            store.close(wait_s=0.1)


def test_a_shard_taken_up_again_refuses_every_later_write_of_its_earlier_attempt(
        backend, tmp_path):
    """Two attempts of one cluster shard under one engine (Dask ran its task again while
    the first still lived, cut off from the scheduler): both follow the run's epoch and
    hold its shared worker claim; the shard's attempt number keeps them apart. Another
    shard of the same run is not touched."""
    engine = Store(tmp_path / "d")
    run_id = _run(engine)
    first, again, other = (Store(tmp_path / "d") for _ in range(3))  # shard 1 twice, 2 once
    for store in (first, again, other):
        store.follow(run_id, engine.epoch(run_id))
    assert first.take_shard(run_id, "1 t0k3n") == 1
    assert other.take_shard(run_id, "2 t0k3n") == 1
    first.add_cell_samples(run_id, 1, [(10.0, 3.9, 3e-6, 1, 1, 0, "CC")])
    first.flush()  # before the shard is taken up again: stored

    assert again.take_shard(run_id, "1 t0k3n") == 2
    first.add_cell_samples(run_id, 1, [(20.0, 4.0, 3e-6, 1, 1, 0, "CC")])
    with pytest.raises(ShardTakenOver, match=r"^shard 1 t0k3n of run 1 was taken up again "
                       r"by another attempt in the store .+ \(attempt 2, this one 1\), so "
                       r"this attempt stores nothing more of it$"):
        first.flush()
    with pytest.raises(ShardTakenOver):  # an alarm is written at once
        first.add_alarm(run_id, 21.0, "error", "channel 1", "written after the take-up")
    again.add_cell_samples(run_id, 1, [(20.0, 4.01, 3e-6, 1, 1, 0, "CC")])
    again.flush()
    other.add_cell_samples(run_id, 3, [(20.0, 3.8, 3e-6, 1, 1, 0, "CC")])
    other.flush()
    # the engine's own writes (its alarm relay, the run's end) follow the run, not a shard
    engine.set_status(run_id, "completed", "")
    assert [(ch, t, v) for ch, t, v, *_ in _cell_rows(engine, run_id)] == [
        (1, 10.0, 3.9), (1, 20.0, 4.01), (3, 20.0, 3.8)]
    assert engine.alarms(run_id) == []
    for store in (again, other, engine):
        store.close()
    with pytest.raises(ShardTakenOver):  # what it still buffers is never written
        first.close(wait_s=0.1)


def _cell_rows(store: Store, run_id: int) -> list[tuple]:
    return sorted((ch, *row) for ch in (1, 3) for row in store.cell_samples(run_id, ch))


def test_a_take_over_waits_for_a_write_under_way_on_postgresql(pg_url, tmp_path):
    """The check holds the run's row (FOR SHARE) to the commit: a take-over that comes in
    between waits for that commit, so the write lands before it, whole."""
    first = Store(tmp_path / "d", store=pg_url)
    run_id = _run(first)
    second = Store(tmp_path / "d", store=pg_url)
    db = first._db  # a write transaction of the first, open at its check
    db.execute(db.begin_sql)
    try:
        db.execute("INSERT INTO alarms (run_id, t_s, severity, source, message) VALUES"
                   " (?, 1.0, 'info', 'engine', 'under way')", (run_id,))
        first._check_fences()
        taken: list[int] = []
        taking = threading.Thread(target=lambda: taken.append(second.take_over(run_id)),
                                  daemon=True)
        taking.start()
        deadline = time.monotonic() + 30
        while not _rows(pg_url, "SELECT 1 FROM pg_stat_activity WHERE wait_event_type ="
                                " 'Lock' AND query LIKE 'UPDATE runs SET driver_epoch%'"):
            assert taking.is_alive(), "the take-over did not wait for the write under way"
            assert time.monotonic() < deadline, "the take-over never queued for the run's row"
            time.sleep(0.02)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    taking.join(timeout=30)
    assert taken == [2]
    assert [a.message for a in second.alarms(run_id)] == ["under way"]
    first.add_readings(run_id, 2.0, {"gauge.pressure_torr": 1e-6})
    with pytest.raises(RunTakenOver):
        first.flush()
    second.close()


def test_an_engine_whose_run_was_taken_over_stores_nothing_more_and_says_so(pg_url, tmp_path):
    """The whole path: the server drops a live engine's claim; another machine takes the
    claim and the run over (its epoch and status written in one transaction, as a resume
    does). The first engine stops with its hardware safe, and nothing it does afterwards
    (its readings, its safe-state alarm, its 'failed') is stored over the resumed run."""
    engine = _engine_running(pg_url, tmp_path)
    other = None
    try:
        import psycopg

        resumer = psycopg.connect(pg_url)  # one transaction: the take-over and its status
        resumer.execute("UPDATE runs SET driver_epoch = driver_epoch + 1, status = 'running',"
                        " message = 'resumed elsewhere' WHERE id = 1")
        waiting, other = _wait_in_line(pg_url, "run 1")
        _terminate(pg_url, _claims_backend(pg_url, f"run 1 (pid {engine.pid} "))
        waiting.join(timeout=60)
        assert not waiting.is_alive(), "the other engine never got the claim"
        before = _rows(pg_url, "SELECT count(*), max(t_s) FROM readings WHERE run_id = 1")
        resumer.commit()
        resumer.close()
        _, err = engine.communicate(timeout=120)
    finally:
        _end(engine, other)
    said = _one_error(engine, err)
    assert said.startswith("error: run 1 was taken over by another engine in the store ")
    assert "; this engine stopped, and the hardware was made safe (" in said, said
    assert _rows(pg_url, "SELECT status, message FROM runs WHERE id = 1") == [
        ("running", "resumed elsewhere")]
    assert _rows(pg_url, "SELECT count(*), max(t_s) FROM readings WHERE run_id = 1") == before
    assert not [m for (m,) in _rows(pg_url, "SELECT message FROM alarms WHERE run_id = 1")
                if m.startswith("safe state: ")]
