"""The PostgreSQL store on a real server (issue 15): a killed run loses nothing it
committed and resumes; a data directory remembers its store; a database that is not a
lipon-hw store, or of a newer layout, is refused in one sentence; an older layout is
migrated by a writer and read as it stands by a reader; a connection the server dropped
is made again. Each test has a schema of its own (`pg_url`)."""

from __future__ import annotations

import json
import signal
import time

import pytest
from test_cli import DEPOSIT_STEP, cli, spawn

from lipon_hw import store_migrations, store_pg_schema
from lipon_hw.errors import InputError, StoreUnreachable, StoreUnusable
from lipon_hw.store import Store
from lipon_hw.store_location import RECORD_NAME, STORE_ENV
from lipon_hw.store_pg import PgConnection

from recipes import short_recipe


@pytest.fixture(autouse=True)
def _no_store_from_outside(monkeypatch):
    monkeypatch.delenv(STORE_ENV, raising=False)


def rows(url: str, sql: str, *args, missing_table_is_empty: bool = False) -> list[tuple]:
    """What is committed, read by a client of its own (psycopg imported here, not at
    collection: a worker process of the whole suite stays as small as it was)."""
    import psycopg

    try:
        with psycopg.connect(url, autocommit=True) as con:
            return con.execute(sql, args).fetchall()
    except psycopg.errors.UndefinedTable:
        if missing_table_is_empty:
            return []
        raise


def run_sql(url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as con:
        con.execute(sql)


def test_kill_9_mid_deposit_then_resume_keeps_every_committed_reading_once(tmp_path, pg_url):
    data = tmp_path / "d"
    recipe = short_recipe(tmp_path, 120)
    proc = spawn("run", recipe, "--data", data, "--store", pg_url, cwd=tmp_path)
    deadline = time.monotonic() + 60
    while True:  # a few checkpoints inside the deposit, then the kill
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint inside the deposit within 60 s"
        n = rows(pg_url, "SELECT COUNT(*) FROM checkpoints c JOIN steps s ON s.run_id ="
                         " c.run_id AND s.idx = %s AND s.status = 'running' WHERE"
                         " c.step_idx = %s", DEPOSIT_STEP, DEPOSIT_STEP,
                 missing_table_is_empty=True)
        if n and n[0][0] >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    assert (data / RECORD_NAME).read_text().strip() == pg_url
    assert rows(pg_url, "SELECT status FROM runs") == [("running",)]
    cp_t = rows(pg_url, "SELECT MAX(t_s) FROM checkpoints")[0][0]
    reading_sql = ("SELECT r.t_s, q.name, r.value FROM readings r JOIN quantities q ON"
                   " q.id = r.quantity_id ORDER BY r.t_s, q.name, r.rowid")
    before = [r for r in rows(pg_url, reading_sql) if r[0] <= cp_t]
    assert before

    # no --store: the data directory names its store
    out = cli("resume", 1, "--data", data, "--json", cwd=tmp_path).stdout
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["status"] == "completed"
    assert summary["thickness_nm"] == pytest.approx(120, abs=0.3)
    after = rows(pg_url, reading_sql)
    assert [r for r in after if r[0] <= cp_t] == before  # each committed reading, once
    times: dict[str, list[float]] = {}
    for t, name, _ in after:
        times.setdefault(name, []).append(t)
    for name, ts in times.items():
        assert len(ts) == len(set(ts)), f"duplicated {name} readings"
    rf = times["rf.forward_power_W"]
    assert max(b - a for a, b in zip(rf, rf[1:], strict=False)) <= 5.0 + 1e-6
    assert not (data / "lipon.db").exists()
    listed = json.loads(cli("runs", "--data", data, "--json", cwd=tmp_path).stdout)
    assert [r["status"] for r in listed] == ["completed"]
    cli("export", 1, "--data", data, "--out", tmp_path / "run.csv", cwd=tmp_path)
    lines = (tmp_path / "run.csv").read_text().splitlines()
    assert len(lines) == 1 + len({t for t, _, _ in after})  # a row per time, read back whole


def test_a_data_directory_keeps_to_its_store(tmp_path, pg_url, monkeypatch):
    pg = tmp_path / "pg"
    Store(pg, store=pg_url).close()
    assert Store(pg, read_only=True).where == pg_url  # remembered
    with pytest.raises(InputError, match="keeps its runs in postgresql"):
        Store(pg, store="sqlite")
    lite = tmp_path / "lite"
    Store(lite).close()
    with pytest.raises(InputError, match="keeps its runs in its SQLite file lipon.db"):
        Store(lite, store=pg_url)
    monkeypatch.setenv(STORE_ENV, pg_url)  # a tester's environment names the shared store
    assert Store(tmp_path / "new").where == pg_url
    with pytest.raises(InputError, match="holds a password"):
        Store(tmp_path / "other", store="postgresql://u:secret@localhost/db")
    done = cli("runs", "--data", lite, "--store", pg_url, cwd=tmp_path, check=False)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr


def test_a_server_that_cannot_be_reached_is_one_sentence(tmp_path):
    url = f"postgresql:///lipon?host={tmp_path / 'no-server'}"
    with pytest.raises(StoreUnreachable, match="cannot be reached"):
        Store(tmp_path / "d", store=url)
    done = cli("runs", "--data", tmp_path / "d", "--store", url, cwd=tmp_path, check=False)
    assert done.returncode == 1 and "cannot be reached" in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_a_schema_of_another_program_or_a_newer_layout_is_refused_untouched(tmp_path, pg_url):
    run_sql(pg_url, "CREATE TABLE invoices (id int)")
    with pytest.raises(StoreUnusable, match="'invoices' is not a lipon-hw table"):
        Store(tmp_path / "a", store=pg_url)
    assert rows(pg_url, "SELECT table_name FROM information_schema.tables WHERE"
                        " table_schema = current_schema()") == [("invoices",)]
    run_sql(pg_url, "DROP TABLE invoices")
    Store(tmp_path / "b", store=pg_url).close()
    run_sql(pg_url, "UPDATE schema_version SET version = version + 1")
    with pytest.raises(StoreUnusable, match="written by a newer lipon-hw"):
        Store(tmp_path / "b")


def test_an_older_layout_is_read_as_it_stands_and_migrated_by_a_writer(tmp_path, pg_url):
    db = PgConnection(pg_url, pg_url)
    store_pg_schema.migrate(db, to_version=7)  # before the run queue
    db.execute("INSERT INTO runs (name, kind, sequence_path, sequence_text, station_text,"
               " status, started_at) VALUES ('old', 'deposition', 'r.yaml', '', '', 'completed',"
               " 1.0)")
    db.close()
    reader = Store(tmp_path, read_only=True, store=pg_url)
    assert reader.layout == 7 and reader.queue_entries() == []
    assert [r.name for r in reader.runs()] == ["old"]
    reader.close()
    assert rows(pg_url, "SELECT version FROM schema_version") == [(7,)]
    writer = Store(tmp_path, store=pg_url)
    assert writer.layout == store_migrations.LATEST
    assert writer.queue_add(["sputter"], "q", "deposition", "r", "text", {}, "me") == 1
    writer.close()
    assert rows(pg_url, "SELECT version FROM schema_version") == [(store_migrations.LATEST,)]
    tables = store_pg_schema.layout_of(PgConnection(pg_url, pg_url))
    assert tables == store_pg_schema.expected_layout(store_migrations.LATEST)


def test_a_connection_the_server_dropped_is_made_again_and_nothing_is_lost(tmp_path, pg_url):
    store = Store(tmp_path, store=pg_url)
    run_id = store.create_run("r", "deposition", "r.yaml", "", "", None, None)
    store.add_readings(run_id, 1.0, {"qcm.thickness_nm": 1.0})
    store.flush()
    pid = store._db.execute("SELECT pg_backend_pid()").fetchone()[0]
    rows(pg_url, "SELECT pg_terminate_backend(%s)", pid)
    store.add_readings(run_id, 2.0, {"qcm.thickness_nm": 2.0})
    store.checkpoint(run_id, 2.0, 0, {"step_idx": 0})
    store.flush()
    assert store.unwritable_since is None
    assert [t for t, _, _ in store.readings(run_id)] == [1.0, 2.0]
    assert store.last_checkpoint(run_id).t_s == 2.0
    store.close()


def test_bulk_rows_go_by_copy_and_read_back_in_order(tmp_path, pg_url):
    store = Store(tmp_path, store=pg_url)
    run_id = store.create_run("c", "cycling", "p.yaml", "", "", None, None)
    store.add_channel(run_id, 1, "mes4", None, "p")
    samples = [(i * 0.5, 3.5 + i * 1e-6, -1e-6, 1, 2, 3, "cc") for i in range(50_000)]
    store.add_cell_samples(run_id, 1, samples)
    store.add_spectrum(run_id, 1, [(1.0, 1, 2, 1000.0, 10.0, -5.0)])
    store.flush()
    assert list(store.cell_samples(run_id, 1)) == samples
    assert store.spectra(run_id, 1) == [(1.0, 1, 2, 1000.0, 10.0, -5.0)]
    store.close()
