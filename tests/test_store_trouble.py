"""Store trouble (issue 8): a damaged, foreign, newer, read-only, locked or full database,
an export aimed at the store, a NaN reading, a closed pipe. Each is met with one sentence
and the exit code of its class, and the database's bytes are what they were."""

from __future__ import annotations

import ctypes
import math
import os
import resource
import shutil
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from stores import digest

from lipon_hw import store_migrations
from lipon_hw.celltest.session import start_cycling
from lipon_hw.cli import main
from lipon_hw.errors import StoreFull, StoreUnusable
from lipon_hw.store import DB_NAME, Store
from lipon_hw.store_open import SCHEMA_VERSION

from recipes import short_recipe

LNMO_ONE_CYCLE = """
name: LNMO one cycle
kind: cycling
potentiostat: mes4
channels: 1-2
cell: {kind: lnmo, area_cm2: 0.049, capacity_uAh: 1.47}
record: {every_s: 60, every_mV: 20}
safety: {min_V: 2.5, max_V: 5.2}
steps:
  - eis: {from_Hz: 1.0e5, to_Hz: 10, amplitude_mV: 10, per_decade: 3}
  - cc: {current_A: 3.0e-6, until: {voltage_V: 5.1, time_h: 2}}
"""


# --- helpers ---------------------------------------------------------------------------------
def cli(*args, cwd, preexec_fn=None, stdout=subprocess.PIPE, timeout=120):
    """`lipon-hw ARGS` in a fresh interpreter."""
    return subprocess.run([sys.executable, "-m", "lipon_hw.cli", *map(str, args)], cwd=cwd,
                          stdout=stdout, stderr=subprocess.PIPE, text=True,
                          preexec_fn=preexec_fn, timeout=timeout)


def invoke(*args):
    """`lipon-hw ARGS` in this process: (exit code, stdout, stderr)."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def assert_one_sentence(stderr: str, *words: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    for word in words:
        assert word in lines[0], stderr


def without_dac_override() -> None:
    """For a child process: file permissions apply even to root (uid 0 without
    CAP_DAC_OVERRIDE obeys the mode bits), so a 0o555 directory is read-only to it."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH: dropped from the bounding set
            if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@pytest.fixture(scope="module")
def made_store(tmp_path_factory) -> Path:
    """A real small store: one short deposition run (about 200 KB)."""
    root = tmp_path_factory.mktemp("made")
    proc = cli("run", short_recipe(root, 5), "--data", root / "data", cwd=root)
    assert proc.returncode == 0, proc.stderr
    return root / "data"


@pytest.fixture
def data(made_store, tmp_path) -> Path:
    """A private copy of the made store (database only: no -wal, no -shm)."""
    d = tmp_path / "data"
    d.mkdir()
    shutil.copyfile(made_store / DB_NAME, d / DB_NAME)
    return d


# --- export never destroys data ------------------------------------------------------------
@pytest.mark.parametrize("target", ["db", "wal", "shm", "data dir", "symlink", "hard link"])
def test_export_refuses_every_path_to_the_stores_own_files(data, tmp_path, target):
    db = data / DB_NAME
    before = digest(db)
    out = {"db": db, "wal": Path(f"{db}-wal"), "shm": Path(f"{db}-shm"), "data dir": data,
           "symlink": tmp_path / "link.csv", "hard link": tmp_path / "hard.csv"}[target]
    if target == "symlink":
        out.symlink_to(db)
    if target == "hard link":
        os.link(db, out)
    code, _, err = invoke("export", 1, "--data", data, "--out", out)
    assert code == 2
    assert_one_sentence(err, str(out), "store")
    assert digest(db) == before
    assert sorted(p.name for p in data.iterdir()) in (
        [DB_NAME], [DB_NAME, f"{DB_NAME}-shm", f"{DB_NAME}-wal"])  # nothing written beside it
    assert Store(data, read_only=True).run(1).status == "completed"


def test_export_refuses_what_is_not_a_regular_file(data, tmp_path):
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    code, _, err = invoke("export", 1, "--data", data, "--out", fifo)
    assert code == 2
    assert_one_sentence(err, str(fifo), "FIFO")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    # a directory where the export's file would go
    out_dir = tmp_path / "exports"
    (out_dir / "run1.csv").mkdir(parents=True)
    code, _, err = invoke("export", 1, "--data", data, "--out", out_dir, "--force")
    assert code == 2
    assert_one_sentence(err, "run1.csv", "directory")
    assert (out_dir / "run1.csv").is_dir() and list((out_dir / "run1.csv").iterdir()) == []


def test_export_replaces_an_existing_file_only_with_force(data, tmp_path):
    out = tmp_path / "run.csv"
    out.write_text("precious\n")
    code, _, err = invoke("export", 1, "--data", data, "--out", out)
    assert code == 2
    assert_one_sentence(err, f"--out {out} exists; pass --force to replace it")
    assert out.read_text() == "precious\n" and not Path(f"{out}.json").exists()
    code, stdout, err = invoke("export", 1, "--data", data, "--out", out, "--force")
    assert code == 0, err
    assert out.read_text().startswith("t_s,") and Path(f"{out}.json").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []


def test_an_export_that_fails_midway_leaves_the_old_file_whole(tmp_path):
    """The disk fills (a 64 KB file-size limit in the child) while a ~300 KB export is
    written."""
    store = Store(tmp_path / "data")
    run_id = store.create_run("long", "deposition", "x.yaml", "", "", None, None)
    for i in range(4000):
        store.add_readings(run_id, float(i), {"qcm.rate_A_s": 1.0 + i / 7, "rf.power_W": 50.0})
    store.close()
    out = tmp_path / "run.csv"

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))

    proc = cli("export", run_id, "--data", tmp_path / "data", "--out", out, cwd=tmp_path,
               preexec_fn=small_files)
    assert proc.returncode == 1
    assert_one_sentence(proc.stderr, str(out), "could not be written")
    assert not out.exists()
    out.write_text("old export\n")
    proc = cli("export", run_id, "--data", tmp_path / "data", "--out", out, "--force",
               cwd=tmp_path, preexec_fn=small_files)
    assert proc.returncode == 1
    assert_one_sentence(proc.stderr, str(out), "could not be written")
    assert out.read_text() == "old export\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_cell_test_export_checks_every_file_before_writing_one(tmp_path):
    proto = tmp_path / "lnmo.yaml"
    proto.write_text(LNMO_ONE_CYCLE)
    result = start_cycling(str(proto), tmp_path / "data", workers=1)
    out = tmp_path / "out"
    out.mkdir()
    (out / f"run{result.run_id}-ch2.csv").write_text("precious\n")
    code, _, err = invoke("export", result.run_id, "--data", tmp_path / "data", "--format",
                          "csv", "--out", out)
    assert code == 2
    assert_one_sentence(err, f"run{result.run_id}-ch2.csv exists; pass --force")
    assert [p.name for p in out.iterdir()] == [f"run{result.run_id}-ch2.csv"]  # ch1 unwritten
    code, _, err = invoke("export", result.run_id, "--data", tmp_path / "data", "--format",
                          "csv", "--out", tmp_path / "data")
    assert code == 2
    assert_one_sentence(err, "data directory")
    code, stdout, err = invoke("export", result.run_id, "--data", tmp_path / "data",
                               "--format", "csv", "--out", out, "--force")
    assert code == 0, err
    assert (out / f"run{result.run_id}-ch2.csv").read_text().startswith("t_s,")
    # two channels, each its samples, its spectrum and its cycles
    assert len(stdout.split()) == 6


# --- opening a database that is not a sound lipon-hw store ---------------------------------
def _junk(db: Path) -> None:
    db.write_bytes(os.urandom(64 * 1024))


def _truncated(db: Path) -> None:
    db.write_bytes(db.read_bytes()[:50_000])


def _foreign(db: Path) -> None:
    db.unlink()
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    con.commit()
    con.close()


def _newer(db: Path) -> None:
    con = sqlite3.connect(db)
    con.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    con.commit()
    con.close()


def _other_layout(db: Path) -> None:
    con = sqlite3.connect(db)
    con.execute("ALTER TABLE runs ADD COLUMN operator TEXT")
    con.commit()
    con.close()


CASES = {  # how the file is spoiled -> words of the sentence
    "junk": (_junk, "is not an SQLite database"),
    "truncated": (_truncated, "damaged"),
    "foreign": (_foreign, "an SQLite database of something else"),
    "newer": (_newer, "newer lipon-hw"),
    "other layout": (_other_layout, "another layout"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_spoiled_database_is_refused_in_one_sentence_and_left_as_it_is(data, tmp_path, case):
    spoil, words = CASES[case]
    db = data / DB_NAME
    spoil(db)
    before = digest(db)
    recipe = short_recipe(tmp_path, 5)
    for args in (("runs",), ("sample", "T-1"), ("export", 1, "--out", tmp_path / "x.csv"),
                 ("report", 1), ("abort", 1), ("run", recipe)):
        code, stdout, err = invoke(*args, "--data", data)
        assert code == 2, (args, err)
        assert_one_sentence(err, str(db), words)
        assert digest(db) == before, args
    assert sorted(p.name for p in data.iterdir()) in (
        [DB_NAME], [DB_NAME, f"{DB_NAME}-shm", f"{DB_NAME}-wal"])
    assert not (tmp_path / "x.csv").exists()


def _break_readings_tree(db: Path) -> None:
    """Turn the root page of the readings table into an invalid b-tree page: `runs` still
    reads, but the file fails its integrity check."""
    con = sqlite3.connect(db)
    root = con.execute("SELECT rootpage FROM sqlite_master WHERE name='readings'").fetchone()[0]
    page_size = con.execute("PRAGMA page_size").fetchone()[0]
    con.close()
    with open(db, "r+b") as fh:
        fh.seek((root - 1) * page_size)
        fh.write(b"\x00")


def test_run_does_not_write_into_a_database_that_fails_its_integrity_check(data, tmp_path):
    db = data / DB_NAME
    _break_readings_tree(db)
    before = digest(db)
    code, stdout, err = invoke("runs", "--data", data)
    assert code == 0 and "short LiPON" in stdout  # what can be read, is
    proc = cli("run", short_recipe(tmp_path, 5), "--data", data, cwd=tmp_path)
    assert proc.returncode == 2
    assert_one_sentence(proc.stderr, str(db), "fails its integrity check")
    assert digest(db) == before
    assert not (data / "runs" / "2").exists()


def test_an_unversioned_store_of_layout_1_is_adopted(data, tmp_path):
    """Stores made before layouts had versions are of layout 1: without a version, and
    without the tables and columns later layouts added."""
    db = data / DB_NAME
    con = sqlite3.connect(db)
    layout_1 = store_migrations.expected_layout(1)
    for table, columns in store_migrations.layout_of(con).items():  # what migrations added
        if table not in layout_1:
            con.execute(f"DROP TABLE {table}")
            continue
        for column in {c[0] for c in columns} - {c[0] for c in layout_1[table]}:
            con.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    con.execute("PRAGMA user_version=0")
    con.execute("PRAGMA application_id=0")
    con.commit()
    con.close()
    before = digest(db)
    code, stdout, _ = invoke("runs", "--data", data)
    assert code == 0 and "short LiPON" in stdout and digest(db) == before  # readers only read
    Store(data).close()
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
    assert con.execute("SELECT count(*) FROM run_metadata").fetchone()[0] == 1
    con.close()


def test_a_writer_refuses_a_spoiled_file_before_creating_anything(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _junk(data / DB_NAME)
    before = digest(data / DB_NAME)
    with pytest.raises(StoreUnusable, match="is not an SQLite database"):
        Store(data)
    assert digest(data / DB_NAME) == before and [p.name for p in data.iterdir()] == [DB_NAME]


# --- a read-only directory, a locked database, a full disk ---------------------------------
@pytest.fixture
def read_only_data(data):
    data.chmod(0o555)
    (data / DB_NAME).chmod(0o444)
    yield data
    data.chmod(0o755)


def test_reading_commands_work_in_a_read_only_data_directory(read_only_data, tmp_path):
    db = read_only_data / DB_NAME
    before = digest(db)
    proc = cli("runs", "--data", read_only_data, cwd=tmp_path, preexec_fn=without_dac_override)
    assert proc.returncode == 0, proc.stderr
    assert "short LiPON" in proc.stdout
    proc = cli("export", 1, "--data", read_only_data, "--out", tmp_path / "x.csv", cwd=tmp_path,
               preexec_fn=without_dac_override)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "x.csv").read_text().startswith("t_s,")
    proc = cli("report", 1, "--data", read_only_data, cwd=tmp_path,
               preexec_fn=without_dac_override)
    assert proc.returncode == 1  # the plots go beside the database: say so, no traceback
    assert_one_sentence(proc.stderr, "plots of run 1 cannot be written")
    assert digest(db) == before and [p.name for p in read_only_data.iterdir()] == [DB_NAME]


def test_run_into_a_read_only_data_directory_is_refused_before_anything_moves(read_only_data,
                                                                               tmp_path):
    db = read_only_data / DB_NAME
    before = digest(db)
    proc = cli("run", short_recipe(tmp_path, 5), "--data", read_only_data, cwd=tmp_path,
               preexec_fn=without_dac_override)
    assert proc.returncode == 2
    assert_one_sentence(proc.stderr, "read-only")
    assert "step 1" not in proc.stderr  # the station was never driven
    assert digest(db) == before and [p.name for p in read_only_data.iterdir()] == [DB_NAME]


def test_a_wal_that_a_read_only_directory_keeps_from_being_read_is_said_not_skipped(data,
                                                                                     tmp_path):
    """A crash left lipon.db-wal with committed runs but no -shm: read-only, SQLite could
    only read the file as it was before them. Say so rather than list a stale store."""
    con = sqlite3.connect(data / DB_NAME, isolation_level=None)
    con.execute("PRAGMA wal_autocheckpoint=0")
    con.execute("INSERT INTO runs (name, kind, sequence_path, sequence_text, station_text,"
                " status, started_at) VALUES ('in the wal', 'deposition', '', '', '', "
                "'running', 0)")
    stale = tmp_path / "stale"
    stale.mkdir()
    for suffix in ("", "-wal"):  # as a crash leaves them, without the -shm
        shutil.copyfile(f"{data / DB_NAME}{suffix}", f"{stale / DB_NAME}{suffix}")
    con.close()
    stale.chmod(0o555)
    try:
        before = digest(stale / DB_NAME)
        proc = cli("runs", "--data", stale, cwd=tmp_path, preexec_fn=without_dac_override)
        assert proc.returncode == 2
        assert_one_sentence(proc.stderr, f"{DB_NAME}-wal holds writes not yet in")
        assert digest(stale / DB_NAME) == before
    finally:
        stale.chmod(0o755)


def test_readers_answer_while_another_process_holds_the_write_lock(data, tmp_path):
    """A writer's open transaction does not stop a reader of the WAL store; a lock nobody
    can read past (exclusive locking mode) is said in one sentence within seconds, where
    a writer would wait 30 s for it."""
    db = data / DB_NAME
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("INSERT INTO alarms (run_id, t_s, severity, source, message)"
                   " VALUES (1, 0, 'info', 'test', 'uncommitted')")
    try:
        proc = cli("runs", "--data", data, cwd=tmp_path, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert "short LiPON" in proc.stdout
        proc = cli("export", 1, "--data", data, "--out", tmp_path / "x.csv", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
    finally:
        holder.execute("ROLLBACK")
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("INSERT INTO alarms (run_id, t_s, severity, source, message)"
                   " VALUES (1, 0, 'info', 'test', 'uncommitted')")
    try:
        t0 = time.monotonic()
        proc = cli("runs", "--data", data, cwd=tmp_path, timeout=60)
        elapsed = time.monotonic() - t0
        assert proc.returncode == 1
        assert_one_sentence(proc.stderr, str(db), "is locked by another process")
        assert elapsed < 15
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_full_disk_during_a_run_is_one_sentence_and_the_store_stays_sound(tmp_path):
    """A file-size limit in the child makes every write past 600 KB fail (EFBIG), as a
    full disk would, some simulated minutes into the run (in virtual time a commit holds
    ten minutes of the run: `runner.VIRTUAL_CHECKPOINT_S`; the first fits, a later
    one does not)."""
    data = tmp_path / "data"

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (600_000, 600_000))

    proc = cli("run", short_recipe(tmp_path, 5), "--data", data, cwd=tmp_path,
               preexec_fn=small_files)
    assert proc.returncode == 1
    assert "step 1/8" in proc.stderr  # it failed while the run was writing
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1, proc.stderr
    assert_one_sentence(errors[0], str(data / DB_NAME), "could not be written",
                        "file-size limit")
    con = sqlite3.connect(data / DB_NAME)
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert con.execute("SELECT name FROM runs").fetchall() == [("short LiPON",)]
        assert con.execute("SELECT count(*) FROM readings").fetchone()[0] > 0
    finally:
        con.close()


def test_a_write_that_finds_the_disk_full_loses_nothing_and_the_next_one_succeeds(tmp_path):
    """In this process, for one flush: a file-size limit just above what the store holds."""
    store = Store(tmp_path / "data", flush_every_s=1e9)
    run_id = store.create_run("full", "deposition", "x.yaml", "", "", None, None)
    for i in range(20_000):
        store.add_readings(run_id, float(i), {"qcm.rate_A_s": 1.0 + i / 7})
    wal = Path(f"{store.path}-wal")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE,
                       (max(wal.stat().st_size, store.path.stat().st_size, 65536) + 16384, hard))
    try:
        with pytest.raises(StoreFull, match="file-size limit"):
            store.flush()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    store.flush()  # the failed transaction was rolled back; the buffered rows are still here
    assert store.last_reading_t(run_id) == 19_999.0
    assert len(list(store.readings(run_id))) == 20_000
    store.close()
    con = sqlite3.connect(tmp_path / "data" / DB_NAME)
    assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    con.close()


# --- NaN readings ---------------------------------------------------------------------------
def test_a_nan_reading_is_left_out_with_one_alarm_and_later_flushes_go_on(tmp_path, backend):
    store = Store(tmp_path / "data", flush_every_s=0.0)
    run_id = store.create_run("nan", "deposition", "x.yaml", "", "", None, None)
    store.add_readings(run_id, 1.0, {"qcm.rate_A_s": 1.5, "cell.soc": math.nan})
    store.add_readings(run_id, 2.0, {"qcm.rate_A_s": math.inf, "cell.soc": 0.5})
    store.add_readings(run_id, 3.0, {"qcm.rate_A_s": 1.7, "cell.soc": math.nan})
    store.flush()
    assert list(store.readings(run_id)) == [(1.0, "qcm.rate_A_s", 1.5), (2.0, "cell.soc", 0.5),
                                            (3.0, "qcm.rate_A_s", 1.7)]
    alarms = store.alarms(run_id)
    assert [a.t_s for a in alarms] == [1.0, 2.0]  # once per quantity
    assert "cell.soc = nan" in alarms[0].message and "not stored" in alarms[0].message
    store.close()


def test_non_finite_cell_samples_and_impedance_do_not_poison_the_buffer(tmp_path, backend):
    store = Store(tmp_path / "data", flush_every_s=0.0)
    run_id = store.create_run("nan", "cycling", "x.yaml", "", "", None, None)
    store.add_channel(run_id, 1, "mes4", None, "p")
    store.add_cell_samples(run_id, 1, [(0.0, 3.9, 1e-6, 1, 1, 0, "CC_CHG"),
                                       (1.0, math.nan, 1e-6, 1, 1, 0, "CC_CHG"),
                                       (2.0, 4.0, -math.inf, 1, 1, 0, "CC_CHG"),
                                       (3.0, 4.1, 1e-6, 1, 1, 0, "CC_CHG")])
    store.add_spectrum(run_id, 1, [(5.0, 1, 2, 1e3, 100.0, -5.0),
                                   (5.0, 1, 2, 1e2, math.nan, -7.0)])
    store.update_channel(run_id, 1, "running", "", 1, 2, 5.0, {})
    store.flush()
    assert [r[0] for r in store.cell_samples(run_id, 1)] == [0.0, 3.0]
    assert [r[3] for r in store.spectra(run_id, 1)] == [1e3]
    assert store.channels(run_id)[0].t_s == 5.0
    assert len(store.alarms(run_id)) == 2  # one for the samples, one for the spectrum
    store.close()


def test_a_runs_sample_census_counts_samples_twins_and_channels(tmp_path, backend):
    """What an exactly-once check reads (bench/scale.py), the same on both back ends: a
    sample stored twice at one time of one channel is one twin; another run's samples
    are not counted."""
    store = Store(tmp_path / "data", flush_every_s=3600.0)
    run_id, other = (store.create_run(n, "cycling", "x.yaml", "", "", None, None)
                     for n in ("census", "other"))
    for channel in (1, 2, 3):
        store.add_channel(run_id, channel, "mes4", None, "p")
    store.add_channel(other, 1, "mes4", None, "p")
    assert store.sample_census(run_id) == (0, 0, 0)
    store.add_cell_columns(run_id, 1, [0.0, 1.0, 2.0], [3.9, 3.91, 3.92], [1e-6] * 3,
                           1, 1, 0, "CC_CHG")
    store.add_cell_samples(run_id, 2, [(0.0, 3.9, 1e-6, 1, 1, 0, "CC_CHG"),
                                       (1.0, 3.9, 1e-6, 1, 1, 0, "CC_CHG"),
                                       (1.0, 3.9, 1e-6, 1, 1, 0, "CC_CHG")])
    store.add_cell_samples(other, 1, [(1.0, 3.9, 1e-6, 1, 1, 0, "CC_CHG")])
    assert store.sample_census(run_id) == (6, 1, 2)  # unflushed samples counted too
    assert store.sample_census(other) == (1, 0, 1)
    store.close()


# --- a closed pipe -----------------------------------------------------------------------------
@pytest.mark.parametrize("args", [("runs",), ("runs", "--json"), ("sample", "T-1")])
def test_a_listing_into_a_closed_pipe_ends_quietly(data, tmp_path, args):
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader (`head`) is gone before the first write
    try:
        proc = cli(*args, "--data", data, cwd=tmp_path, stdout=write_end)
    finally:
        os.close(write_end)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


@pytest.mark.parametrize("args", [("runs", "--json"), ("sample", "T-1")])
def test_a_schema_byte_that_is_not_utf8_is_a_damaged_store_in_one_sentence(data, args):
    """The generated corpus below once overwrote a schema statement with b"'\\x80": SQLite
    then reports a syntax error quoting that byte, and Python cannot decode its message
    (a UnicodeDecodeError, not an sqlite3 error). One sentence, exit 2, file unchanged."""
    db = data / DB_NAME
    raw = db.read_bytes()
    at = raw.find(b"CREATE TABLE alarms (") + len(b"CREATE TABLE alarms ")
    db.write_bytes(raw[:at] + b"\x80" + raw[at + 1:])  # the "(" becomes a byte not UTF-8
    before = digest(db)
    code, _, err = invoke(*args, "--data", data)
    assert code == 2, err
    assert_one_sentence(err, "holds a damaged record (text that is not UTF-8")
    assert digest(db) == before


# --- a generated corpus of damaged stores ------------------------------------------------------
def _damage_strategy():
    from hypothesis import strategies as st

    truncate = st.tuples(st.just("truncate"), st.floats(0.0, 1.0), st.just(b""))
    overwrite = st.tuples(st.just("overwrite"), st.floats(0.0, 1.0),
                          st.binary(min_size=1, max_size=512))
    return st.one_of(truncate, overwrite)


def test_every_damaged_store_is_read_or_refused_in_one_sentence_and_never_changed(
        made_store, tmp_path):
    from hypothesis import HealthCheck, given, settings

    pristine = (made_store / DB_NAME).read_bytes()
    counter = iter(range(10**6))
    outcomes = {"read": 0, "refused": 0}

    @settings(max_examples=150, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow])
    @given(_damage_strategy())
    def check(damage):
        how, where, junk = damage
        offset = int(where * len(pristine))
        spoiled = (pristine[:offset] if how == "truncate"
                   else pristine[:offset] + junk + pristine[offset + len(junk):])
        d = tmp_path / f"d{next(counter)}"
        d.mkdir()
        db = d / DB_NAME
        db.write_bytes(spoiled)
        before = digest(db)
        for args in (("runs", "--json"), ("sample", "T-1"),
                     ("export", 1, "--out", d.with_suffix(".csv"), "--force")):
            code, _, err = invoke(*args, "--data", d)
            assert code in (0, 2), (args, err)
            if code:
                assert_one_sentence(err)
            outcomes["refused" if code else "read"] += 1
            assert digest(db) == before, args
        try:  # a writer opens a sound file (an unversioned one it adopts), and no other
            Store(d).close()
        except StoreUnusable:
            assert digest(db) == before
        shutil.rmtree(d)

    check()
    assert outcomes["read"] and outcomes["refused"], outcomes  # the corpus has both kinds


_SWITCH_TO_ROLLBACK_JOURNAL = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=0)
try:
    print(con.execute("PRAGMA journal_mode=DELETE").fetchone()[0])
except sqlite3.OperationalError as exc:
    print(exc)
"""


def test_a_second_store_on_the_file_keeps_the_first_ones_locks(data):
    """Closing any descriptor of a file drops every POSIX lock the process holds on it: a
    second Store that read the database's header as a plain file dropped the first one's
    locks, and another process could then take the file from under it (check-point and
    remove the WAL, or leave WAL mode, as here); the first Store's next write found
    'database disk image is malformed'."""
    def other_process() -> str:
        return subprocess.run([sys.executable, "-c", _SWITCH_TO_ROLLBACK_JOURNAL,
                               str(data / DB_NAME)], capture_output=True, text=True,
                              timeout=60, check=True).stdout.strip()

    first = Store(data)
    try:
        assert other_process() == "database is locked"
        Store(data).close()
        assert other_process() == "database is locked"
        run = first.create_run("after the second store", "deposition", "", "", "", None, None)
        first.add_alarm(run, 1.0, "info", "test", "the first store still writes")
    finally:
        first.close()
    assert other_process() == "delete"  # the check can tell: with no Store, it switches
