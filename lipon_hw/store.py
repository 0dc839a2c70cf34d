"""Everything a run produces, written as it happens to one database: the data directory's
SQLite file (WAL), or a PostgreSQL database shared by many testers (`store_location` says
which; `store_pg` is that back end, the same queries and the same guarantees).

Readings are buffered and committed at least once a wall-clock second; a
checkpoint is committed in the same transaction as every reading taken before
it, so after a `kill -9` the store holds exactly the readings up to the last
commit and the checkpoint never points past them. Alarms, step boundaries and
run status are committed at once.

What a power cut can take: commits are crash-safe for the process (WAL), but synced to
the disk only at checkpoints (at most one sync per `SYNC_EVERY_S` of wall time, so a
run in virtual time is not slowed by thousands of syncs) and when a run's status
changes. A power cut therefore loses at most the readings since the last synced
checkpoint — a checkpoint interval in real time — and never leaves a checkpoint that
points past its readings: the database opens consistent, and `resume` goes on from it.
A killed process (kill -9) loses only what it had not committed: at most its last wall
second of readings. What `resume` makes of a loss — readings measured again in a world
that rolls back, the host's absence accounted on hardware — is the run kinds' (see
`deposition.downtime`); a dead link costs its instrument's readings while it is down,
marked in the store by link-health readings and alarms (`deposition.link_watch`).

While another process holds the database's write lock, a run must go on
sampling and checking its interlocks: the writes made while it runs (readings,
alarms, steps, checkpoints) wait at most `TRY_WAIT_S` for the lock, then stay
buffered, in order, and are retried at the next flush. `unwritable_since` says
since when the store has refused them, so the engine can stop the run to its safe
state once that lasts too long; the buffers are bounded (`MAX_PENDING_ROWS`).

Readings are stored long (run, time, quantity, value) so any instrument can add
a quantity without a schema change; exports pivot them wide. The tables and the records
returned are in `store_schema`, the layouts and migrations in `store_migrations`, opening
and checking the file in `store_open`. `Store` is the one writer and reader of a run's
data, deposition and cell test alike: the cell test's tables (`store_cells`), the
samples' (`store_samples`) and the alarms (`store_alarms`) are mixins of it, as their
writes share its buffers and its one transaction; the operator requests
(`store_requests`) are an object it holds.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from math import isfinite
from pathlib import Path

from lipon_hw import (
    store_cell_blocks,
    store_location,
    store_metadata,
    store_migrations,
    store_open,
    store_plumbing,
    store_run_steps,
)
from lipon_hw.errors import (
    InputError,
    StoreBusy,
    StoreError,
    StoreUnreachable,
    StoreUnusable,
)
from lipon_hw.store_alarms import AlarmRecords
from lipon_hw.store_cells import CellTestRecords, PendingCells
from lipon_hw.store_fences import Fences
from lipon_hw.store_open import GuardedConnection
from lipon_hw.store_pages import PagedReads
from lipon_hw.store_plumbing import Transaction, finite, is_busy, signals_held
from lipon_hw.store_queue import QueueRecords
from lipon_hw.store_requests import OperatorRequests
from lipon_hw.store_samples import SampleRecords
from lipon_hw.store_schema import (  # noqa: F401 (the store's API)
    CELL_SAMPLE_COLUMNS,
    Alarm,
    Channel,
    Checkpoint,
    Layer,
    Run,
    RunMetadata,
    RunStep,
    Sample,
    SampleLink,
    ScreenCell,
    Sheet,
    StepFilm,
)
from lipon_hw.store_screening import ScreeningRecords

DB_NAME = store_location.DB_NAME
#: the bulk tables' columns, in the order their buffered rows hold them (a cell test's
#: samples: `store_cell_blocks.BLOCK_COLUMNS`)
READING_COLUMNS = ("run_id", "t_s", "quantity_id", "value")
SPECTRUM_COLUMNS = ("run_id", "channel", "t_s", "cycle", "step_count", "f_Hz", "z_re_ohm",
                    "z_im_ohm")
#: how long a write made while a run goes on waits for another process's lock
TRY_WAIT_S = 0.05
#: buffered rows kept while the store is unwritable before the writer gives up
MAX_PENDING_ROWS = 500_000
#: wall seconds between two checkpoints synced to disk (those between are crash-safe only)
SYNC_EVERY_S = 1.0
CHECK_CLAIMS_EVERY_S = 1.0


class Store(AlarmRecords, CellTestRecords, SampleRecords, ScreeningRecords, PagedReads,
            QueueRecords, Fences):
    """One data directory, one database. Single writer (the run), many readers.

    `store`: `postgresql://…` or `sqlite`, as `--store` (default: what the directory
    remembers, else LIPON_HW_STORE, else its SQLite file: `store_location.resolve`).

    `read_only=True` opens an existing store without ever writing to it (listing,
    exports, plots), also in a read-only directory and while a run holds it locked, and
    also a store of an older layout, which it reads as it stands (`layout`).
    A writer refuses, with one StoreUnusable sentence and before writing a byte, a file
    that is not a sound lipon-hw database of a layout it knows (`store_open.examine`),
    and migrates one of an older layout (`store_migrations`)."""

    def __init__(self, data_dir: Path | str, flush_every_s: float = 1.0,
                 read_only: bool = False, store: str | None = None):
        self.data_dir = Path(data_dir)
        #: the SQLite file of the data directory (also for a PostgreSQL store: never
        #: written there, but an export still never overwrites it)
        self.path = self.data_dir / DB_NAME
        self.location = store_location.resolve(self.data_dir, store)
        #: how messages name the store: its file, or its PostgreSQL address
        self.where = self.location.shown
        # several processes write a cell test (one per group of channels): wait for the lock
        self._busy_timeout_s = 30.0
        self.read_only = read_only
        #: the layout of the open database (`store_migrations`); a writer's is the latest
        self.layout = store_migrations.LATEST
        if read_only:
            self._db, self.layout = store_open.open_reader(self.data_dir, self.location)
        else:
            self._db = store_open.open_writer(self.data_dir, self.location)
        self._quantities: dict[str, int] = dict(self._db.execute(
            "SELECT name, id FROM quantities").fetchall())
        self._pending: list[tuple[int, float, int, float]] = []
        self._pending_cells = PendingCells()  # rows and blocks of columns
        self._pending_spectra: list[tuple] = []
        self._pending_channels: dict[tuple[int, int], tuple] = {}
        self._non_finite_seen: set[tuple] = set()
        #: writes other than rows (alarms, steps, checkpoints...), each fn(db), in order
        self._pending_writes: list[Callable[[GuardedConnection], None]] = []
        #: hears every alarm as it is made (`store_alarms`); set by the run's lifecycle
        self.on_alarm: Callable[[Alarm], None] | None = None
        #: told of every reading, cell sample, alarm, step and status (`store_plumbing.tell`)
        self.taps: list = []
        #: called after a write, at most once every CHECK_CLAIMS_EVERY_S of wall time (the
        #: engine's check that it still holds its claims in a shared store: `Ownership.keep`)
        self.after_write: list[Callable[[], None]] = []
        self._last_after_write = time.monotonic()
        #: run → the driver epoch this store writes it under; (run, shard) → the attempt
        #: of that cluster shard it writes (`store_fences`)
        self._fences: dict[int, int] = {}
        self._shard_fences: dict[tuple[int, str], int] = {}
        self._announced: set[tuple] = set()
        #: operator requests to a running engine (pause, continue, abort)
        self.requests = OperatorRequests(self._db, self._write_soon)
        self._flush_every_s = flush_every_s
        self._last_flush = time.monotonic()
        self._last_synced = -SYNC_EVERY_S  # the first checkpoint is synced to disk
        #: monotonic time of the first write refused since the last one that succeeded
        self.unwritable_since: float | None = None
        self.last_write_error: StoreError | None = None

    def close(self, wait_s: float | None = None) -> None:
        """Write what is buffered (waiting up to `wait_s` for a lock; default: the
        connection's 30 s), then close; the connection is closed even if that write fails.
        The last write checks nothing more (`after_write`): the run is over by then."""
        self.after_write.clear()
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
        """The run's row and its metadata (`store_metadata.at_start`), committed together."""
        with self._transaction():
            run_id = self._db.insert_id(
                "INSERT INTO runs (name, kind, sequence_path, sequence_text, station_text, seed,"
                " sample_id, status, started_at) VALUES (?,?,?,?,?,?,?,?,?)",
                (name, kind, sequence_path, sequence_text, station_text, seed, sample_id,
                 "running", time.time()))
            store_metadata.insert(self._db, store_metadata.at_start(run_id, sequence_text,
                                                                    station_text))
        return run_id

    def set_status(self, run_id: int, status: str, message: str = "",
                   summary: Mapping | None = None, wait_s: float | None = None) -> None:
        """Commit everything buffered and the run's status, in one transaction (checked
        like every write: `take_over`). With `wait_s`, wait at most that long for another
        process's lock, then raise StoreError. A status not written stays buffered: a later
        write that succeeds, such as `close`, still stores it."""
        ended = time.time() if status != "running" else None
        if summary is None:
            sql, args = ("UPDATE runs SET status=?, message=?, ended_at=? WHERE id=?",
                         (status, message, ended, run_id))
        else:
            sql, args = ("UPDATE runs SET status=?, message=?, ended_at=?, summary=? WHERE id=?",
                         (status, message, ended, json.dumps(summary), run_id))
        if self.taps:
            store_plumbing.tell(self.taps, "status", run_id, status, message, summary)
        self._pending_writes.append(lambda db: db.execute(sql, args))
        with self._synced():  # how a run ended survives a power cut once stored
            if wait_s is None:
                self.flush()
            elif not self.try_flush(wait_s):
                raise self.unavailable()

    def run(self, run_id: int) -> Run:
        row = self._db.execute(
            "SELECT id, name, kind, sequence_path, sequence_text, station_text, seed, sample_id,"
            " status, message, started_at, ended_at, summary FROM runs WHERE id=?",
            (run_id,)).fetchone()
        if row is None:
            raise InputError(f"run {run_id} is not in {self.where}")
        summary = self._json(row[-1])
        if not isinstance(summary, dict):
            raise StoreUnusable(f"{self.where} holds a damaged record (run {run_id}'s summary)")
        return Run(*row[:-1], summary=summary)

    def runs(self) -> list[Run]:
        ids = [r[0] for r in self._db.execute("SELECT id FROM runs ORDER BY id")]
        return [self.run(i) for i in ids]

    def run_metadata(self, run_id: int) -> RunMetadata:
        """Where and with what the run ran. A store of layout 1, read without migrating
        it, answers as its migration would fill it (`store_metadata.inferred`)."""
        if self.layout < 2:
            run = self.run(run_id)
            return store_metadata.inferred(run_id, run.sequence_text, run.station_text)
        meta = store_metadata.select(self._db, run_id)
        if meta is None:
            self.run(run_id)  # no such run: says so
            raise StoreUnusable(f"{self.where} holds no metadata of run {run_id}")
        return meta

    def add_run_steps(self, run_id: int, steps: list[RunStep]) -> None:
        """The run's steps as planned at its start (`store_run_steps`), written once."""
        steps = list(steps)
        self._write_soon(lambda db: store_run_steps.insert(db, run_id, steps))

    def run_steps(self, run_id: int) -> list[RunStep]:
        """The run's steps as planned at its start, in order (none for a run whose kind
        records none). A store older than layout 4, read without migrating it, answers
        as its migration would fill it (`store_run_steps.inferred`)."""
        self.try_flush()
        if self.layout < 4:
            self.run(run_id)  # no such run: says so
            return store_run_steps.inferred(self._db, run_id)
        steps = store_run_steps.select(self._db, run_id)
        if not steps:
            self.run(run_id)
        return steps

    # --- steps ---------------------------------------------------------------
    def begin_step(self, run_id: int, idx: int, kind: str, params: Mapping, t_s: float) -> None:
        """A step starts, or starts again on resume: then it keeps its first start (the
        readings since then are its own) and is running again, its end forgotten."""
        row = (run_id, idx, kind, json.dumps(params), "running", t_s)
        if self.taps:
            store_plumbing.tell(self.taps, "step", run_id, idx, "running", t_s, kind, params)
        self._write_soon(lambda db: db.execute(
            "INSERT INTO steps (run_id, idx, kind, params, status, t_start_s)"
            " VALUES (?,?,?,?,?,?) ON CONFLICT (run_id, idx) DO UPDATE SET kind=excluded.kind,"
            " params=excluded.params, status=excluded.status, t_end_s=NULL,"
            " t_start_s=CASE WHEN excluded.t_start_s < steps.t_start_s"
            " THEN excluded.t_start_s ELSE steps.t_start_s END", row))

    def end_step(self, run_id: int, idx: int, status: str, t_s: float) -> None:
        if self.taps:
            store_plumbing.tell(self.taps, "step", run_id, idx, status, t_s)
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
        pending, quantities = self._pending, self._quantities
        t_finite = finite(t_s)
        for name, value in values.items():
            if value is None:
                continue
            value = float(value)
            if not (t_finite and isfinite(value)):
                self._nonfinite(run_id, t_s, name, f"{name} = {value!r} at t = {t_s!r} s")
                continue
            qid = quantities.get(name)
            pending.append((run_id, t_s, qid if qid is not None else self._quantity_id(name),
                            value))
        if self.taps:
            store_plumbing.tell(self.taps, "readings", run_id, t_s, values)
        self._maybe_flush(retry_while_refused=True)

    def flush(self) -> None:
        """Write everything buffered, waiting for a lock as long as the connection allows."""
        if self._has_pending():
            with signals_held():
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
            with signals_held():
                self._db.wait_for_locks(wait_s)
                try:
                    with self._transaction():
                        self._write_pending()
                    self._clear_pending()
                finally:
                    self._db.wait_for_locks(self._busy_timeout_s)
        except StoreError as exc:
            if not is_busy(exc):
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
        if isinstance(exc, StoreUnreachable):
            error: StoreError = exc
        elif exc is None or is_busy(exc):
            error = StoreBusy(f"the store {self.where} is locked by another process")
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
        now = self._last_flush = time.monotonic()
        self.unwritable_since = None
        self.last_write_error = None
        self.keep_claims(now)

    def keep_claims(self, now: float | None = None) -> None:
        """The `after_write` checks, at most once every CHECK_CLAIMS_EVERY_S: called after
        each write, and by an engine that only watches (its workers write)."""
        now = time.monotonic() if now is None else now
        if self.after_write and now - self._last_after_write >= CHECK_CLAIMS_EVERY_S:
            self._last_after_write = now
            for call in self.after_write:
                call()

    def _write_soon(self, write: Callable[[GuardedConnection], None]) -> None:
        """A write committed at once when the lock comes within TRY_WAIT_S, else buffered
        (after every row buffered before it) until the next flush."""
        self._pending_writes.append(write)
        self.try_flush()

    def _write_pending(self) -> None:
        """Inside a transaction; the buffers are emptied only once it commits
        (`_clear_pending`), so an interrupted write loses nothing: the next one redoes it."""
        self._db.insert_rows("readings", READING_COLUMNS, self._pending)
        if self._pending_cells:
            self._db.insert_rows("cell_blocks", store_cell_blocks.BLOCK_COLUMNS,
                                 store_cell_blocks.chunks_to_blocks(self._pending_cells.chunks))
        if self._pending_spectra:
            self._db.insert_rows("spectra", SPECTRUM_COLUMNS, self._pending_spectra)
        for *head, state, run_id, channel in self._pending_channels.values():
            text = state if isinstance(state, str) else json.dumps(state)
            self._db.execute("UPDATE channels SET status=?, message=?, cycle=?, step_count=?,"
                             " t_s=?, state=? WHERE run_id=? AND channel=?",
                             (*head, text, run_id, channel))
        for write in self._pending_writes:
            write(self._db)
        self._check_fences()  # last: the run's row is held from here to the commit only

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
            self._db.execute("INSERT INTO quantities (name) VALUES (?) ON CONFLICT DO NOTHING",
                             (name,))
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
        yield from self._db.stream(sql + " ORDER BY r.t_s, q.name", args)

    def last_reading_t(self, run_id: int) -> float | None:
        self.flush()
        return self._db.execute("SELECT MAX(t_s) FROM readings WHERE run_id=?",
                                (run_id,)).fetchone()[0]

    def quantity_names(self, run_id: int) -> list[str]:
        self.flush()
        return [r[0] for r in self._db.execute(
            "SELECT DISTINCT q.name FROM readings r JOIN quantities q ON q.id = r.quantity_id"
            " WHERE r.run_id=? ORDER BY q.name", (run_id,))]

    # --- checkpoints -------------------------------------------------------------
    def checkpoint(self, run_id: int, t_s: float, step_idx: int, state: Mapping) -> None:
        """Commit every pending reading and the checkpoint together."""
        text = json.dumps(state)

        def write(db: GuardedConnection) -> None:
            db.serialize(f"checkpoints of run {run_id}")
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM checkpoints"
                             " WHERE run_id=?", (run_id,)).fetchone()[0]
            db.execute("INSERT INTO checkpoints (run_id, seq, t_s, step_idx, state)"
                       " VALUES (?,?,?,?,?)",
                       (run_id, seq, t_s, step_idx, text))
            db.execute("DELETE FROM checkpoints WHERE run_id=? AND seq < ?", (run_id, seq - 2))

        if time.monotonic() - self._last_synced < SYNC_EVERY_S:
            self._write_soon(write)
            return
        with self._synced():
            self._write_soon(write)

    @contextlib.contextmanager
    def _synced(self) -> Iterator[None]:
        """Commits made inside are on the disk before they return (`synchronous=FULL`: the
        WAL is synced at each commit; PostgreSQL: `synchronous_commit` on), so a power cut
        cannot take them back; elsewhere (`NORMAL`, off) a commit survives a killed process
        but a power cut may undo the last ones since the WAL was last synced."""
        self._db.durable(True)
        try:
            yield
        finally:
            self._db.durable(False)
            self._last_synced = time.monotonic()

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

    # --- plumbing ----------------------------------------------------------------
    def _json(self, text):
        """A JSON column's value; a damaged one is the store's fault, said in one sentence."""
        try:
            return json.loads(text)
        except (TypeError, ValueError) as exc:
            raise StoreUnusable(f"{self.where} holds a damaged record ({exc})") from None

    def _transaction(self):
        return Transaction(self._db)
