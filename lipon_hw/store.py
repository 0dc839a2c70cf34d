"""Everything a run produces, written as it happens to one SQLite database (WAL).

Readings are buffered and committed at least once a wall-clock second; a
checkpoint is committed in the same transaction as every reading taken before
it, so after a `kill -9` the store holds exactly the readings up to the last
commit and the checkpoint never points past them. Alarms, step boundaries and
run status are committed at once.

Readings are stored long (run, time, quantity, value) so any instrument can add
a quantity without a schema change; exports pivot them wide.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from lipon_hw.errors import InputError

DB_NAME = "lipon.db"

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    sequence_path TEXT NOT NULL,
    sequence_text TEXT NOT NULL,
    station_text TEXT NOT NULL,
    seed INTEGER,
    sample_id TEXT,
    status TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    started_at REAL NOT NULL,
    ended_at REAL,
    summary TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS steps (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    idx INTEGER NOT NULL,
    kind TEXT NOT NULL,
    params TEXT NOT NULL,
    status TEXT NOT NULL,
    t_start_s REAL NOT NULL,
    t_end_s REAL,
    PRIMARY KEY (run_id, idx)
);
CREATE TABLE IF NOT EXISTS quantities (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS readings (
    run_id INTEGER NOT NULL,
    t_s REAL NOT NULL,
    quantity_id INTEGER NOT NULL,
    value REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS readings_by_run ON readings(run_id, t_s);
CREATE TABLE IF NOT EXISTS alarms (
    run_id INTEGER NOT NULL,
    t_s REAL NOT NULL,
    severity TEXT NOT NULL,
    source TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    run_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    t_s REAL NOT NULL,
    step_idx INTEGER NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE IF NOT EXISTS requests (
    run_id INTEGER NOT NULL,
    action TEXT NOT NULL,
    made_at REAL NOT NULL,
    taken INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS tooling (
    instrument TEXT NOT NULL,
    film TEXT NOT NULL,
    tooling_pct REAL NOT NULL,
    run_id INTEGER,
    set_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS samples (
    id TEXT PRIMARY KEY,
    substrate TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS layers (
    sample_id TEXT NOT NULL REFERENCES samples(id),
    seq INTEGER NOT NULL,
    run_id INTEGER NOT NULL,
    material TEXT NOT NULL,
    thickness_nm REAL NOT NULL,
    rate_A_s REAL,
    tool TEXT NOT NULL,
    t_s REAL NOT NULL,
    properties TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (sample_id, seq)
);
CREATE TABLE IF NOT EXISTS channels (
    run_id INTEGER NOT NULL,
    channel INTEGER NOT NULL,
    instrument TEXT NOT NULL,
    sample_id TEXT,
    protocol TEXT NOT NULL,
    status TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    cycle INTEGER NOT NULL DEFAULT 0,
    step_count INTEGER NOT NULL DEFAULT 0,
    t_s REAL NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, channel)
);
CREATE TABLE IF NOT EXISTS cell_samples (
    run_id INTEGER NOT NULL,
    channel INTEGER NOT NULL,
    t_s REAL NOT NULL,
    voltage_V REAL NOT NULL,
    current_A REAL NOT NULL,
    cycle INTEGER NOT NULL,
    step_count INTEGER NOT NULL,
    step_id INTEGER NOT NULL,
    step_type TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS cell_samples_by_channel ON cell_samples(run_id, channel, t_s);
CREATE TABLE IF NOT EXISTS spectra (
    run_id INTEGER NOT NULL,
    channel INTEGER NOT NULL,
    t_s REAL NOT NULL,
    cycle INTEGER NOT NULL,
    step_count INTEGER NOT NULL,
    f_Hz REAL NOT NULL,
    z_re_ohm REAL NOT NULL,
    z_im_ohm REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS cycles (
    run_id INTEGER NOT NULL,
    channel INTEGER NOT NULL,
    cycle INTEGER NOT NULL,
    stats TEXT NOT NULL,
    PRIMARY KEY (run_id, channel, cycle)
);
"""

#: one row of `cell_samples` after (run_id, channel)
CELL_SAMPLE_COLUMNS = ("t_s", "voltage_V", "current_A", "cycle", "step_count", "step_id",
                       "step_type")


@dataclass(frozen=True)
class Run:
    id: int
    name: str
    kind: str
    sequence_path: str
    sequence_text: str
    station_text: str
    seed: int | None
    sample_id: str | None
    status: str
    message: str
    started_at: float
    ended_at: float | None
    summary: dict


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    t_s: float
    step_idx: int
    state: dict


class Store:
    """One data directory, one database. Single writer (the run), many readers."""

    def __init__(self, data_dir: Path | str, flush_every_s: float = 1.0):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.data_dir / DB_NAME
        # several processes write a cell test (one per group of channels): wait for the lock
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._quantities: dict[str, int] = dict(self._db.execute(
            "SELECT name, id FROM quantities").fetchall())
        self._pending: list[tuple[int, float, int, float]] = []
        self._pending_cells: list[tuple] = []
        self._pending_spectra: list[tuple] = []
        self._pending_channels: dict[tuple[int, int], tuple] = {}
        self._flush_every_s = flush_every_s
        self._last_flush = time.monotonic()

    def close(self) -> None:
        self.flush()
        self._db.close()

    # --- runs ----------------------------------------------------------------
    def create_run(self, name: str, kind: str, sequence_path: str, sequence_text: str,
                   station_text: str, seed: int | None, sample_id: str | None) -> int:
        cur = self._db.execute(
            "INSERT INTO runs (name, kind, sequence_path, sequence_text, station_text, seed,"
            " sample_id, status, started_at) VALUES (?,?,?,?,?,?,?,?,?)",
            (name, kind, sequence_path, sequence_text, station_text, seed, sample_id, "running",
             time.time()))
        return int(cur.lastrowid)

    def set_status(self, run_id: int, status: str, message: str = "",
                   summary: Mapping | None = None) -> None:
        self.flush()
        ended = time.time() if status != "running" else None
        if summary is None:
            self._db.execute("UPDATE runs SET status=?, message=?, ended_at=? WHERE id=?",
                             (status, message, ended, run_id))
        else:
            self._db.execute(
                "UPDATE runs SET status=?, message=?, ended_at=?, summary=? WHERE id=?",
                (status, message, ended, json.dumps(summary), run_id))

    def run(self, run_id: int) -> Run:
        row = self._db.execute(
            "SELECT id, name, kind, sequence_path, sequence_text, station_text, seed, sample_id,"
            " status, message, started_at, ended_at, summary FROM runs WHERE id=?",
            (run_id,)).fetchone()
        if row is None:
            raise InputError(f"run {run_id} is not in {self.path}")
        return Run(*row[:-1], summary=json.loads(row[-1]))

    def runs(self) -> list[Run]:
        ids = [r[0] for r in self._db.execute("SELECT id FROM runs ORDER BY id")]
        return [self.run(i) for i in ids]

    # --- steps ---------------------------------------------------------------
    def begin_step(self, run_id: int, idx: int, kind: str, params: Mapping, t_s: float) -> None:
        self.flush()
        self._db.execute(
            "INSERT OR REPLACE INTO steps (run_id, idx, kind, params, status, t_start_s)"
            " VALUES (?,?,?,?,?,?)", (run_id, idx, kind, json.dumps(params), "running", t_s))

    def end_step(self, run_id: int, idx: int, status: str, t_s: float) -> None:
        self.flush()
        self._db.execute("UPDATE steps SET status=?, t_end_s=? WHERE run_id=? AND idx=?",
                         (status, t_s, run_id, idx))

    def steps(self, run_id: int) -> list[dict]:
        rows = self._db.execute(
            "SELECT idx, kind, params, status, t_start_s, t_end_s FROM steps WHERE run_id=?"
            " ORDER BY idx", (run_id,)).fetchall()
        return [{"idx": r[0], "kind": r[1], "params": json.loads(r[2]), "status": r[3],
                 "t_start_s": r[4], "t_end_s": r[5]} for r in rows]

    # --- readings --------------------------------------------------------------
    def add_readings(self, run_id: int, t_s: float, values: Mapping[str, float]) -> None:
        for name, value in values.items():
            if value is None:
                continue
            self._pending.append((run_id, t_s, self._quantity_id(name), float(value)))
        if time.monotonic() - self._last_flush >= self._flush_every_s:
            self.flush()

    def flush(self) -> None:
        if self._pending or self._pending_cells or self._pending_spectra \
                or self._pending_channels:
            with _signals_held():
                with self._transaction():
                    self._write_pending()
                self._clear_pending()
        self._last_flush = time.monotonic()

    def _write_pending(self) -> None:
        """Inside a transaction; the buffers are emptied only once it commits
        (`_clear_pending`), so an interrupted write loses nothing: the next one redoes it."""
        self._db.executemany("INSERT INTO readings VALUES (?,?,?,?)", self._pending)
        if self._pending_cells:
            self._db.executemany("INSERT INTO cell_samples VALUES (?,?,?,?,?,?,?,?,?)",
                                 self._pending_cells)
        if self._pending_spectra:
            self._db.executemany("INSERT INTO spectra VALUES (?,?,?,?,?,?,?,?)",
                                 self._pending_spectra)
        for args in self._pending_channels.values():
            self._db.execute("UPDATE channels SET status=?, message=?, cycle=?, step_count=?,"
                             " t_s=?, state=? WHERE run_id=? AND channel=?", args)

    def drop_unwritten_samples(self) -> int:
        """After a write failed: forget the buffered readings, samples and spectra (the
        channels' states stay, to be written); returns how many rows were lost."""
        lost = len(self._pending) + len(self._pending_cells) + len(self._pending_spectra)
        self._pending.clear()
        self._pending_cells.clear()
        self._pending_spectra.clear()
        return lost

    def _clear_pending(self) -> None:
        self._pending.clear()
        self._pending_cells.clear()
        self._pending_spectra.clear()
        self._pending_channels.clear()

    def _maybe_flush(self) -> None:
        if time.monotonic() - self._last_flush >= self._flush_every_s:
            self.flush()

    def _quantity_id(self, name: str) -> int:
        qid = self._quantities.get(name)
        if qid is None:
            self._db.execute("INSERT OR IGNORE INTO quantities (name) VALUES (?)", (name,))
            qid = self._db.execute("SELECT id FROM quantities WHERE name=?", (name,)).fetchone()[0]
            self._quantities[name] = qid
        return qid

    def readings(self, run_id: int, names: Iterable[str] | None = None
                 ) -> Iterator[tuple[float, str, float]]:
        """(t_s, quantity, value) in time order."""
        self.flush()
        sql = ("SELECT r.t_s, q.name, r.value FROM readings r JOIN quantities q"
               " ON q.id = r.quantity_id WHERE r.run_id=?")
        args: list = [run_id]
        if names is not None:
            names = list(names)
            sql += f" AND q.name IN ({','.join('?' * len(names))})"
            args += names
        yield from self._db.execute(sql + " ORDER BY r.t_s, q.name", args)

    def last_reading_t(self, run_id: int) -> float | None:
        self.flush()
        return self._db.execute("SELECT MAX(t_s) FROM readings WHERE run_id=?",
                                (run_id,)).fetchone()[0]

    def quantity_names(self, run_id: int) -> list[str]:
        self.flush()
        return [r[0] for r in self._db.execute(
            "SELECT DISTINCT q.name FROM readings r JOIN quantities q ON q.id = r.quantity_id"
            " WHERE r.run_id=? ORDER BY q.name", (run_id,))]

    # --- cell tests --------------------------------------------------------------
    def add_channel(self, run_id: int, channel: int, instrument: str, sample_id: str | None,
                    protocol: str) -> None:
        self._db.execute("INSERT OR IGNORE INTO channels (run_id, channel, instrument, sample_id,"
                         " protocol, status) VALUES (?,?,?,?,?,'pending')",
                         (run_id, channel, instrument, sample_id, protocol))

    def update_channel(self, run_id: int, channel: int, status: str, message: str, cycle: int,
                       step_count: int, t_s: float, state: Mapping | str) -> None:
        """The channel's progress and resume state (a mapping, or its JSON); committed with
        the samples before it."""
        text = state if isinstance(state, str) else json.dumps(state)
        self._pending_channels[(run_id, channel)] = (
            status, message, cycle, step_count, t_s, text, run_id, channel)
        self._maybe_flush()

    def channels(self, run_id: int) -> list[dict]:
        self.flush()
        rows = self._db.execute(
            "SELECT channel, instrument, sample_id, protocol, status, message, cycle, step_count,"
            " t_s, state FROM channels WHERE run_id=? ORDER BY channel", (run_id,)).fetchall()
        keys = ("channel", "instrument", "sample_id", "protocol", "status", "message", "cycle",
                "step_count", "t_s")
        return [{**dict(zip(keys, r[:-1], strict=True)), "state": json.loads(r[-1])}
                for r in rows]

    def add_cell_samples(self, run_id: int, channel: int, rows: Iterable[tuple]) -> None:
        """Rows of (t_s, voltage_V, current_A, cycle, step_count, step_id, step_type)."""
        self._pending_cells.extend((run_id, channel, *r) for r in rows)
        self._maybe_flush()

    def add_spectrum(self, run_id: int, channel: int, rows: Iterable[tuple]) -> None:
        """Rows of (t_s, cycle, step_count, f_Hz, z_re_ohm, z_im_ohm)."""
        self._pending_spectra.extend((run_id, channel, *r) for r in rows)
        self._maybe_flush()

    def add_cycle(self, run_id: int, channel: int, cycle: int, stats: Mapping) -> None:
        self._db.execute("INSERT OR REPLACE INTO cycles VALUES (?,?,?,?)",
                         (run_id, channel, cycle, json.dumps(dict(stats))))

    def cell_samples(self, run_id: int, channel: int) -> Iterator[tuple]:
        """Rows as CELL_SAMPLE_COLUMNS, in time order."""
        self.flush()
        yield from self._db.execute(
            f"SELECT {', '.join(CELL_SAMPLE_COLUMNS)} FROM cell_samples WHERE run_id=? AND"
            " channel=? ORDER BY t_s, rowid", (run_id, channel))

    def cell_samples_of_cycles(self, run_id: int, channel: int, cycles: list[int]
                               ) -> list[tuple]:
        self.flush()
        return self._db.execute(
            f"SELECT {', '.join(CELL_SAMPLE_COLUMNS)} FROM cell_samples WHERE run_id=? AND"
            f" channel=? AND cycle IN ({','.join('?' * len(cycles))}) ORDER BY t_s, rowid",
            (run_id, channel, *cycles)).fetchall()

    def spectra(self, run_id: int, channel: int) -> list[tuple]:
        """(t_s, cycle, step_count, f_Hz, z_re_ohm, z_im_ohm) in time order."""
        self.flush()
        return self._db.execute(
            "SELECT t_s, cycle, step_count, f_Hz, z_re_ohm, z_im_ohm FROM spectra WHERE run_id=?"
            " AND channel=? ORDER BY t_s, rowid", (run_id, channel)).fetchall()

    def cycles(self, run_id: int, channel: int) -> list[dict]:
        self.flush()
        return [json.loads(r[0]) for r in self._db.execute(
            "SELECT stats FROM cycles WHERE run_id=? AND channel=? ORDER BY cycle",
            (run_id, channel))]

    def last_cell_sample_t(self, run_id: int, channel: int) -> float:
        self.flush()
        row = self._db.execute("SELECT MAX(t_s) FROM cell_samples WHERE run_id=? AND"
                               " channel=?", (run_id, channel)).fetchone()
        return row[0] or 0.0

    def max_step_count(self, run_id: int, channel: int) -> int:
        self.flush()
        row = self._db.execute("SELECT MAX(step_count) FROM cell_samples WHERE run_id=? AND"
                               " channel=?", (run_id, channel)).fetchone()
        return row[0] or 0

    def rewind_channel(self, run_id: int, channel: int, t_s: float) -> None:
        """Forget what one channel recorded after `t_s` (its simulated cell rolled back)."""
        self.flush()
        with self._transaction():
            for table in ("cell_samples", "spectra"):
                self._db.execute(f"DELETE FROM {table} WHERE run_id=? AND channel=? AND t_s > ?",
                                 (run_id, channel, t_s))
            self._db.execute("DELETE FROM cycles WHERE run_id=? AND channel=? AND"
                             " json_extract(stats, '$.t_end_s') > ?", (run_id, channel, t_s))

    # --- alarms ---------------------------------------------------------------
    def add_alarm(self, run_id: int, t_s: float, severity: str, source: str, message: str) -> None:
        self.flush()
        self._db.execute("INSERT INTO alarms VALUES (?,?,?,?,?)",
                         (run_id, t_s, severity, source, message))

    def alarms(self, run_id: int) -> list[dict]:
        rows = self._db.execute("SELECT t_s, severity, source, message FROM alarms WHERE run_id=?"
                                " ORDER BY t_s, rowid", (run_id,)).fetchall()
        return [{"t_s": r[0], "severity": r[1], "source": r[2], "message": r[3]} for r in rows]

    # --- checkpoints -------------------------------------------------------------
    def checkpoint(self, run_id: int, t_s: float, step_idx: int, state: Mapping) -> None:
        """Commit every pending reading and the checkpoint together."""
        with _signals_held():
            with self._transaction():
                self._write_pending()
                seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM checkpoints"
                                       " WHERE run_id=?", (run_id,)).fetchone()[0]
                self._db.execute("INSERT INTO checkpoints VALUES (?,?,?,?,?)",
                                 (run_id, seq, t_s, step_idx, json.dumps(state)))
                self._db.execute("DELETE FROM checkpoints WHERE run_id=? AND seq < ?",
                                 (run_id, seq - 2))
            self._clear_pending()
        self._last_flush = time.monotonic()

    def last_checkpoint(self, run_id: int) -> Checkpoint | None:
        row = self._db.execute("SELECT seq, t_s, step_idx, state FROM checkpoints WHERE run_id=?"
                               " ORDER BY seq DESC LIMIT 1", (run_id,)).fetchone()
        return None if row is None else Checkpoint(row[0], row[1], row[2], json.loads(row[3]))

    def rewind(self, run_id: int, t_s: float) -> int:
        """Forget what a run recorded after `t_s` (a simulated world rolled back to a
        checkpoint has not lived through it). Returns the number of readings removed."""
        with self._transaction():
            n = self._db.execute("DELETE FROM readings WHERE run_id=? AND t_s > ?",
                                 (run_id, t_s)).rowcount
            self._db.execute("DELETE FROM alarms WHERE run_id=? AND t_s > ?", (run_id, t_s))
            self._db.execute("DELETE FROM layers WHERE run_id=? AND t_s > ?", (run_id, t_s))
        return n

    # --- operator requests to a running engine (pause, continue, abort) ---------------
    def request(self, run_id: int, action: str) -> None:
        self._db.execute("INSERT INTO requests (run_id, action, made_at) VALUES (?,?,?)",
                         (run_id, action, time.time()))

    def pending_requests(self, run_id: int) -> list[str]:
        """Requests not yet acted on, left pending (every worker of a run sees them)."""
        return [r[0] for r in self._db.execute(
            "SELECT action FROM requests WHERE run_id=? AND taken=0 ORDER BY rowid", (run_id,))]

    def take_requests(self, run_id: int) -> list[str]:
        """Requests not yet acted on, oldest first; taking them marks them taken."""
        rows = self._db.execute("SELECT rowid, action FROM requests WHERE run_id=? AND taken=0"
                                " ORDER BY rowid", (run_id,)).fetchall()
        if rows:
            self._db.execute(f"UPDATE requests SET taken=1 WHERE rowid IN "
                             f"({','.join(str(r[0]) for r in rows)})")
        return [r[1] for r in rows]

    # --- calibrated tooling factors (override the station's, newest wins) ------------
    def set_tooling(self, instrument: str, film: str, tooling_pct: float, run_id: int) -> None:
        self._db.execute("INSERT INTO tooling VALUES (?,?,?,?,?)",
                         (instrument, film, tooling_pct, run_id, time.time()))

    def tooling(self, instrument: str, film: str) -> float | None:
        row = self._db.execute("SELECT tooling_pct FROM tooling WHERE instrument=? AND film=?"
                               " ORDER BY rowid DESC LIMIT 1", (instrument, film)).fetchone()
        return None if row is None else row[0]

    # --- samples and their film stacks --------------------------------------------
    def ensure_sample(self, sample_id: str, substrate: str = "") -> None:
        self._db.execute("INSERT OR IGNORE INTO samples (id, substrate, created_at)"
                         " VALUES (?,?,?)", (sample_id, substrate, time.time()))

    def add_layer(self, sample_id: str, run_id: int, material: str, thickness_nm: float,
                  rate_A_s: float | None, tool: str, t_s: float,
                  properties: Mapping | None = None) -> None:
        self.flush()
        with self._transaction():
            seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM layers"
                                   " WHERE sample_id=?", (sample_id,)).fetchone()[0]
            self._db.execute("INSERT INTO layers VALUES (?,?,?,?,?,?,?,?,?)",
                             (sample_id, seq, run_id, material, thickness_nm, rate_A_s, tool,
                              t_s, json.dumps(dict(properties or {}))))

    def film_stack(self, sample_id: str) -> list[dict]:
        rows = self._db.execute(
            "SELECT seq, run_id, material, thickness_nm, rate_A_s, tool, properties FROM layers"
            " WHERE sample_id=? ORDER BY seq", (sample_id,)).fetchall()
        return [{"seq": r[0], "run_id": r[1], "material": r[2], "thickness_nm": r[3],
                 "rate_A_s": r[4], "tool": r[5], "properties": json.loads(r[6])} for r in rows]

    def sample(self, sample_id: str) -> dict:
        row = self._db.execute("SELECT id, substrate, created_at FROM samples WHERE id=?",
                               (sample_id,)).fetchone()
        if row is None:
            raise InputError(f"sample {sample_id!r} is not in {self.path}")
        return {"id": row[0], "substrate": row[1], "created_at": row[2],
                "layers": self.film_stack(sample_id)}

    # --- plumbing ----------------------------------------------------------------
    def _transaction(self):
        return _Transaction(self._db)


@contextlib.contextmanager
def _signals_held():
    """Ctrl-C and SIGTERM wait until a write and the emptying of its buffers are both done,
    so an interrupt neither loses buffered rows nor writes them twice."""
    if threading.current_thread() is not threading.main_thread():
        yield  # Python runs signal handlers in the main thread only
        return
    # deferred at the Python level: a mask would not do, as the kernel hands a blocked
    # signal to another thread (numpy's), whose C handler still wakes this one up
    caught: list[int] = []
    held = {sig: signal.signal(sig, lambda signum, _frame: caught.append(signum))
            for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in held.items():
            signal.signal(sig, handler)
        for signum in caught:
            if callable(held[signum]):
                held[signum](signum, None)
            elif held[signum] == signal.SIG_DFL:
                signal.raise_signal(signum)


class _Transaction:
    def __init__(self, db: sqlite3.Connection):
        self._db = db

    def __enter__(self):
        self._db.execute("BEGIN IMMEDIATE")
        return self._db

    def __exit__(self, exc_type, exc, tb):
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
        return False
