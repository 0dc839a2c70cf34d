"""Everything a run produces, written as it happens to one SQLite database (WAL).

Readings are buffered and committed at least once a wall-clock second; a
checkpoint is committed in the same transaction as every reading taken before
it, so after a `kill -9` the store holds exactly the readings up to the last
commit and the checkpoint never points past them. Alarms, step boundaries and
run status are committed at once.

While another process holds the database's write lock, a run must go on
sampling and checking its interlocks: the writes made while it runs (readings,
alarms, steps, checkpoints) wait at most `TRY_WAIT_S` for the lock, then stay
buffered, in order, and are retried at the next flush. `unwritable_since` says
since when the store has refused them, so the engine can stop the run to its safe
state once that lasts too long; the buffers are bounded (`MAX_PENDING_ROWS`).

Readings are stored long (run, time, quantity, value) so any instrument can add
a quantity without a schema change; exports pivot them wide. The tables are in
`store_schema`, opening and checking the file in `store_open`; this module is the one
writer and reader of a run's data, deposition and cell test alike (the two kinds' methods
share its buffers and its one transaction, which is why they are not split apart).
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

from lipon_hw import store_open
from lipon_hw.errors import InputError, StoreBusy, StoreError, StoreUnusable
from lipon_hw.store_open import GuardedConnection
from lipon_hw.store_schema import (  # noqa: F401 (the store's API)
    CELL_SAMPLE_COLUMNS,
    SCHEMA,
    Checkpoint,
    Run,
)

DB_NAME = "lipon.db"
#: how long a write made while a run goes on waits for another process's lock
TRY_WAIT_S = 0.05
#: buffered rows kept while the store is unwritable before the writer gives up
MAX_PENDING_ROWS = 500_000

class Store:
    """One data directory, one database. Single writer (the run), many readers.

    `read_only=True` opens an existing store without ever writing to it (listing,
    exports, plots), also in a read-only directory and while a run holds it locked.
    A writer refuses, with one StoreUnusable sentence and before writing a byte, a file
    that is not a sound lipon-hw database of a layout it knows (`store_open.examine`)."""

    def __init__(self, data_dir: Path | str, flush_every_s: float = 1.0,
                 read_only: bool = False):
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / DB_NAME
        # several processes write a cell test (one per group of channels): wait for the lock
        self._busy_timeout_s = 30.0
        self.read_only = read_only
        if read_only:
            self._db = self._open_reader()
        else:
            self._db = self._open_writer()
        self._quantities: dict[str, int] = dict(self._db.execute(
            "SELECT name, id FROM quantities").fetchall())
        self._pending: list[tuple[int, float, int, float]] = []
        self._pending_cells: list[tuple] = []
        self._pending_spectra: list[tuple] = []
        self._pending_channels: dict[tuple[int, int], tuple] = {}
        self._non_finite_seen: set[tuple] = set()
        #: writes other than rows (alarms, steps, checkpoints...), each fn(db), in order
        self._pending_writes: list[Callable[[sqlite3.Connection], None]] = []
        self._taken_requests: set[int] = set()
        self._flush_every_s = flush_every_s
        self._last_flush = time.monotonic()
        #: monotonic time of the first write refused since the last one that succeeded
        self.unwritable_since: float | None = None
        self.last_write_error: StoreError | None = None

    def _open_reader(self) -> GuardedConnection:
        found = store_open.examine(self.path, SCHEMA, thorough=False)
        if found in ("missing", "empty"):
            raise StoreUnusable(f"{self.data_dir} holds no lipon-hw data (no runs in "
                                f"{self.path}); pass --data DIR of an earlier run")
        return GuardedConnection(store_open.connect_read_only(self.path), self.path)

    def _open_writer(self) -> GuardedConnection:
        if self.data_dir.exists() and not self.data_dir.is_dir():
            raise StoreUnusable(f"{self.data_dir} is not a directory")
        found = store_open.examine(self.path, SCHEMA, thorough=True)
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnusable(f"{self.data_dir} cannot be created ({exc.strerror})") from exc
        store_open.require_writable(self.data_dir, self.path)
        db = GuardedConnection(store_open.connect_writer(self.path), self.path)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            if found != "current":  # new, or an unversioned store of this layout: adopt it
                db.executescript(SCHEMA + f"PRAGMA user_version={store_open.SCHEMA_VERSION};"
                                 f"PRAGMA application_id={store_open.APPLICATION_ID};")
            else:
                db.executescript(SCHEMA)  # tables added since, without a layout change
        except BaseException:
            db.close()
            raise
        return db

    def close(self, wait_s: float | None = None) -> None:
        """Write what is buffered (waiting up to `wait_s` for a lock; default: the
        connection's 30 s), then close; the connection is closed even if that write fails."""
        try:
            if wait_s is None:
                self.flush()
            elif not self.try_flush(wait_s):
                raise self.unavailable()
        finally:
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
                   summary: Mapping | None = None, wait_s: float | None = None) -> None:
        """Commit everything buffered, then the run's status. With `wait_s`, wait at most
        that long for another process's lock, then raise StoreError (the status stays
        buffered: a later write that succeeds, such as `close`, still stores it)."""
        ended = time.time() if status != "running" else None
        if summary is None:
            sql, args = ("UPDATE runs SET status=?, message=?, ended_at=? WHERE id=?",
                         (status, message, ended, run_id))
        else:
            sql, args = ("UPDATE runs SET status=?, message=?, ended_at=?, summary=? WHERE id=?",
                         (status, message, ended, json.dumps(summary), run_id))
        if wait_s is None:
            self.flush()
            self._db.execute(sql, args)
            return
        self._pending_writes.append(lambda db: db.execute(sql, args))
        if not self.try_flush(wait_s):
            raise self.unavailable()

    def run(self, run_id: int) -> Run:
        row = self._db.execute(
            "SELECT id, name, kind, sequence_path, sequence_text, station_text, seed, sample_id,"
            " status, message, started_at, ended_at, summary FROM runs WHERE id=?",
            (run_id,)).fetchone()
        if row is None:
            raise InputError(f"run {run_id} is not in {self.path}")
        summary = self._json(row[-1])
        if not isinstance(summary, dict):
            raise StoreUnusable(f"{self.path} holds a damaged record (run {run_id}'s summary)")
        return Run(*row[:-1], summary=summary)

    def runs(self) -> list[Run]:
        ids = [r[0] for r in self._db.execute("SELECT id FROM runs ORDER BY id")]
        return [self.run(i) for i in ids]

    # --- steps ---------------------------------------------------------------
    def begin_step(self, run_id: int, idx: int, kind: str, params: Mapping, t_s: float) -> None:
        """A step starts, or starts again on resume: then it keeps its first start (the
        readings since then are its own) and is running again, its end forgotten."""
        row = (run_id, idx, kind, json.dumps(params), "running", t_s)
        self._write_soon(lambda db: db.execute(
            "INSERT INTO steps (run_id, idx, kind, params, status, t_start_s)"
            " VALUES (?,?,?,?,?,?) ON CONFLICT (run_id, idx) DO UPDATE SET kind=excluded.kind,"
            " params=excluded.params, status=excluded.status, t_end_s=NULL,"
            " t_start_s=MIN(t_start_s, excluded.t_start_s)", row))

    def end_step(self, run_id: int, idx: int, status: str, t_s: float) -> None:
        self._write_soon(lambda db: db.execute(
            "UPDATE steps SET status=?, t_end_s=? WHERE run_id=? AND idx=?",
            (status, t_s, run_id, idx)))

    def steps(self, run_id: int) -> list[dict]:
        self.try_flush()
        rows = self._db.execute(
            "SELECT idx, kind, params, status, t_start_s, t_end_s FROM steps WHERE run_id=?"
            " ORDER BY idx", (run_id,)).fetchall()
        return [{"idx": r[0], "kind": r[1], "params": self._json(r[2]), "status": r[3],
                 "t_start_s": r[4], "t_end_s": r[5]} for r in rows]

    # --- readings --------------------------------------------------------------
    def add_readings(self, run_id: int, t_s: float, values: Mapping[str, float]) -> None:
        """Buffer readings; None is no reading. A NaN or infinite value (an instrument's
        garbage, a broken model) is not stored: the first of each quantity raises one alarm,
        and the export shows an empty cell there, as for any time it was not read."""
        for name, value in values.items():
            if value is None:
                continue
            value = float(value)
            if not (_finite(value) and _finite(t_s)):
                self._non_finite(run_id, t_s, name, f"{name} = {value!r} at t = {t_s!r} s")
                continue
            self._pending.append((run_id, t_s, self._quantity_id(name), value))
        self._maybe_flush(retry_while_refused=True)

    def flush(self) -> None:
        """Write everything buffered, waiting for a lock as long as the connection allows."""
        if self._has_pending():
            with _signals_held():
                try:
                    with self._transaction():
                        self._write_pending()
                except StoreError as exc:
                    self._refused(exc)
                    raise
                self._clear_pending()
            self._written()
        self._last_flush = time.monotonic()

    def try_flush(self, wait_s: float = TRY_WAIT_S) -> bool:
        """Write everything buffered if the lock comes within `wait_s`; True when nothing
        is left buffered. A refused write keeps the buffers for the next attempt."""
        if not self._has_pending():
            self._last_flush = time.monotonic()
            return True
        try:
            with _signals_held():
                self._db.execute(f"PRAGMA busy_timeout = {max(int(wait_s * 1000), 0)}")
                try:
                    with self._transaction():
                        self._write_pending()
                    self._clear_pending()
                finally:
                    self._db.execute(
                        f"PRAGMA busy_timeout = {int(self._busy_timeout_s * 1000)}")
        except StoreError as exc:
            if not _is_busy(exc):
                raise
            self._refused(exc)
            self._last_flush = time.monotonic()
            if self._pending_rows() > MAX_PENDING_ROWS:
                raise self.unavailable(f"{self._pending_rows()} rows are waiting to be "
                                       "written") from None
            return False
        self._written()
        return True

    def unavailable(self, detail: str = "", exc: BaseException | None = None) -> StoreError:
        """One sentence naming the database and why it refuses writes (`exc`, or the last
        write refused)."""
        exc = exc or self.last_write_error
        if exc is None or _is_busy(exc):
            error: StoreError = StoreBusy(f"the store {self.path} is locked by another process")
        else:
            error = store_open.store_error(exc, self.path)
        if detail:
            error = type(error)(f"{error}; {detail}")
        return error

    def _has_pending(self) -> bool:
        return bool(self._pending or self._pending_cells or self._pending_spectra
                    or self._pending_channels or self._pending_writes)

    def _pending_rows(self) -> int:
        return (len(self._pending) + len(self._pending_cells) + len(self._pending_spectra)
                + len(self._pending_writes))

    def _refused(self, exc: StoreError) -> None:
        self.last_write_error = exc
        if self.unwritable_since is None:
            self.unwritable_since = time.monotonic()

    def _written(self) -> None:
        self._last_flush = time.monotonic()
        self.unwritable_since = None
        self.last_write_error = None

    def _write_soon(self, write: Callable[[sqlite3.Connection], None]) -> None:
        """A write committed at once when the lock comes within TRY_WAIT_S, else buffered
        (after every row buffered before it) until the next flush."""
        self._pending_writes.append(write)
        self.try_flush()

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
        for write in self._pending_writes:
            write(self._db)

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
        self._pending_writes.clear()

    def _maybe_flush(self, retry_while_refused: bool = False) -> None:
        """Periodic: once a wall second. A run's readings (a sample each record period)
        also retry at every sample while the store refuses writes, so a run in virtual time,
        whose run clock outpaces the wall, sees a brief lock end before it gives up."""
        if ((retry_while_refused and self.unwritable_since is not None)
                or time.monotonic() - self._last_flush >= self._flush_every_s):
            self.try_flush()

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
        return [{**dict(zip(keys, r[:-1], strict=True)), "state": self._json(r[-1])}
                for r in rows]

    def add_cell_samples(self, run_id: int, channel: int, rows: Iterable[tuple]) -> None:
        """Rows of (t_s, voltage_V, current_A, cycle, step_count, step_id, step_type).
        A row with a non-finite time, voltage or current is not stored (one alarm per
        channel says so), so it cannot fail the NOT NULL columns of every later flush."""
        rows = rows if isinstance(rows, list) else list(rows)
        try:  # the common case in one pass: every row finite (NaN and ±inf propagate)
            kept = [(run_id, channel, *r) for r in rows if math.isfinite(r[0] + r[1] + r[2])]
        except TypeError:
            kept = []
        if len(kept) != len(rows):
            kept = []
            for r in rows:
                if _finite(r[0], r[1], r[2]):
                    kept.append((run_id, channel, *r))
                else:
                    self._non_finite(run_id, r[0], f"channel {channel}",
                                     f"channel {channel} sample t = {r[0]!r} s, "
                                     f"{r[1]!r} V, {r[2]!r} A")
        self._pending_cells.extend(kept)
        self._maybe_flush()

    def add_spectrum(self, run_id: int, channel: int, rows: Iterable[tuple]) -> None:
        """Rows of (t_s, cycle, step_count, f_Hz, z_re_ohm, z_im_ohm); as for samples, a
        point with a non-finite value is left out with one alarm per channel."""
        for r in rows:
            if _finite(r[0], r[3], r[4], r[5]):
                self._pending_spectra.append((run_id, channel, *r))
            else:
                self._non_finite(run_id, r[0], f"channel {channel} impedance",
                                 f"channel {channel} impedance at {r[3]!r} Hz, t = {r[0]!r} s: "
                                 f"{r[4]!r}, {r[5]!r} ohm")
        self._maybe_flush()

    def _non_finite(self, run_id: int, t_s, source: str, what: str) -> None:
        """One alarm per run and source for values that cannot be stored (NaN, ±inf)."""
        if (run_id, source) in self._non_finite_seen:
            return
        self._non_finite_seen.add((run_id, source))
        self._db.execute("INSERT INTO alarms VALUES (?,?,?,?,?)",
                         (run_id, t_s if _finite(t_s) else 0.0, "warning", "store",
                          f"{what} is not a finite number and was not stored; later "
                          f"non-finite values of {source} are left out silently"))

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
        return [self._json(r[0]) for r in self._db.execute(
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
        row = (run_id, t_s, severity, source, message)
        self._write_soon(lambda db: db.execute("INSERT INTO alarms VALUES (?,?,?,?,?)", row))

    def alarms(self, run_id: int) -> list[dict]:
        self.try_flush()
        rows = self._db.execute("SELECT t_s, severity, source, message FROM alarms WHERE run_id=?"
                                " ORDER BY t_s, rowid", (run_id,)).fetchall()
        return [{"t_s": r[0], "severity": r[1], "source": r[2], "message": r[3]} for r in rows]

    # --- checkpoints -------------------------------------------------------------
    def checkpoint(self, run_id: int, t_s: float, step_idx: int, state: Mapping) -> None:
        """Commit every pending reading and the checkpoint together."""
        text = json.dumps(state)

        def write(db: sqlite3.Connection) -> None:
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM checkpoints"
                             " WHERE run_id=?", (run_id,)).fetchone()[0]
            db.execute("INSERT INTO checkpoints VALUES (?,?,?,?,?)",
                       (run_id, seq, t_s, step_idx, text))
            db.execute("DELETE FROM checkpoints WHERE run_id=? AND seq < ?", (run_id, seq - 2))

        self._write_soon(write)

    def last_checkpoint(self, run_id: int) -> Checkpoint | None:
        self.try_flush()
        row = self._db.execute("SELECT seq, t_s, step_idx, state FROM checkpoints WHERE run_id=?"
                               " ORDER BY seq DESC LIMIT 1", (run_id,)).fetchone()
        return None if row is None else Checkpoint(row[0], row[1], row[2], self._json(row[3]))

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
        """Requests not yet acted on, oldest first; taking them marks them taken (in memory
        at once, in the database at the next write it allows)."""
        rows = [r for r in self._db.execute(
            "SELECT rowid, action FROM requests WHERE run_id=? AND taken=0 ORDER BY rowid",
            (run_id,)).fetchall() if r[0] not in self._taken_requests]
        if rows:
            ids = ",".join(str(r[0]) for r in rows)
            self._taken_requests.update(r[0] for r in rows)
            self._write_soon(lambda db: db.execute(
                f"UPDATE requests SET taken=1 WHERE rowid IN ({ids})"))
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
        row = (sample_id, substrate, time.time())
        self._write_soon(lambda db: db.execute(
            "INSERT OR IGNORE INTO samples (id, substrate, created_at) VALUES (?,?,?)", row))

    def add_layer(self, sample_id: str, run_id: int, material: str, thickness_nm: float,
                  rate_A_s: float | None, tool: str, t_s: float,
                  properties: Mapping | None = None) -> None:
        """A layer on top of the sample's stack; a layer of the same run and step that was
        recorded partial (the run stopped while it grew, then resumed) is replaced."""
        props = dict(properties or {})
        text = json.dumps(props)

        def write(db: sqlite3.Connection) -> None:
            partial = db.execute(
                "SELECT seq FROM layers WHERE sample_id=? AND run_id=? AND"
                " json_extract(properties, '$.step')=? AND"
                " json_extract(properties, '$.partial')=1", (sample_id, run_id,
                                                             props.get("step"))).fetchone()
            if partial is not None:
                db.execute("UPDATE layers SET material=?, thickness_nm=?, rate_A_s=?, tool=?,"
                           " t_s=?, properties=? WHERE sample_id=? AND seq=?",
                           (material, thickness_nm, rate_A_s, tool, t_s, text, sample_id,
                            partial[0]))
                return
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM layers WHERE sample_id=?",
                             (sample_id,)).fetchone()[0]
            db.execute("INSERT INTO layers VALUES (?,?,?,?,?,?,?,?,?)",
                       (sample_id, seq, run_id, material, thickness_nm, rate_A_s, tool, t_s,
                        text))

        self._write_soon(write)

    def film_stack(self, sample_id: str) -> list[dict]:
        self.try_flush()
        rows = self._db.execute(
            "SELECT seq, run_id, material, thickness_nm, rate_A_s, tool, properties FROM layers"
            " WHERE sample_id=? ORDER BY seq", (sample_id,)).fetchall()
        return [{"seq": r[0], "run_id": r[1], "material": r[2], "thickness_nm": r[3],
                 "rate_A_s": r[4], "tool": r[5], "properties": self._json(r[6])} for r in rows]

    def sample(self, sample_id: str) -> dict:
        row = self._db.execute("SELECT id, substrate, created_at FROM samples WHERE id=?",
                               (sample_id,)).fetchone()
        if row is None:
            raise InputError(f"sample {sample_id!r} is not in {self.path}")
        return {"id": row[0], "substrate": row[1], "created_at": row[2],
                "layers": self.film_stack(sample_id)}

    # --- the simulated lab's ground truth, apart from measurements (read by sim/ only) ---
    def put_sim_truth(self, kind: str, run_id: int, sample_id: str, position: int,
                      truth: Mapping) -> None:
        """The simulated truth of one film ('film': position = the recipe step that laid it
        down) or cell ('cell': position = its channel); a second one of the same key wins."""
        row = (kind, run_id, sample_id, position, json.dumps(dict(truth)))
        self._write_soon(lambda db: db.execute(
            "INSERT OR REPLACE INTO sim_truth VALUES (?,?,?,?,?)", row))

    def sim_truths(self, kind: str, sample_id: str) -> dict[tuple[int, int], dict]:
        """(run_id, position) → truth of the sample's `kind` records."""
        self.try_flush()
        rows = self._db.execute("SELECT run_id, position, truth FROM sim_truth WHERE kind=? AND"
                                " sample_id=?", (kind, sample_id)).fetchall()
        return {(r[0], r[1]): self._json(r[2]) for r in rows}

    # --- plumbing ----------------------------------------------------------------
    def _json(self, text):
        """A JSON column's value; a damaged one is the store's fault, said in one sentence."""
        try:
            return json.loads(text)
        except (TypeError, ValueError) as exc:
            raise StoreUnusable(f"{self.path} holds a damaged record ({exc})") from None

    def _transaction(self):
        return _Transaction(self._db)


def _finite(*values) -> bool:
    """All finite numbers. One sum tests a whole row (NaN and ±inf propagate); only a sum
    that overflows is looked at value by value."""
    try:
        return math.isfinite(sum(values)) or all(math.isfinite(v) for v in values)
    except TypeError:
        return False


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


def _is_busy(exc: BaseException) -> bool:
    """The database is locked by another connection (SQLITE_BUSY / SQLITE_LOCKED)."""
    if isinstance(exc, StoreBusy):
        return True
    text = str(exc).lower()
    return isinstance(exc, sqlite3.Error) and ("locked" in text or "busy" in text)


class _Transaction:
    def __init__(self, db: GuardedConnection):
        self._db = db

    def __enter__(self):
        self._db.execute("BEGIN IMMEDIATE")
        return self._db

    def __exit__(self, exc_type, exc, tb):
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
        return False
