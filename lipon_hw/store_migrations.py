"""The store's layouts, and the steps that bring an older run database up to this one's.

Layout 1 is `store_schema.SCHEMA` as lipon-hw 0.1.0 wrote it; every later layout is one
`Migration` in `MIGRATIONS`, in order: the SQL that turns layout N-1 into N and, where an
older run's rows tell what the new table or column should hold, a `fill` that writes it.
A new database is layout 1 followed by every step, so a fresh store and a migrated one
have the same layout by construction (`tests/test_store_migrations.py` checks it against
a database 0.1.0 really wrote).

A writer that opens an older database applies the steps it lacks in one transaction,
stamping `PRAGMA user_version` in the same one: after a crash the file is either all old
or all new. A reader never migrates: it reads an older layout as it stands, without
writing a byte, and the store answers for what a later step added the way that step's
fill would (`Store.run_metadata`). A database of a newer layout than `LATEST` is refused.

To add a table or a column (e.g. a table of simulated ground truth): append
`Migration(N + 1, "what and why", sql="CREATE TABLE ... ;" or "ALTER TABLE t ADD COLUMN
..."; fill=... if older rows can tell its values)` and make the store's reader of it
answer for a store of an older layout (`Store.layout < N + 1`: usually nothing). Never
edit a step once released; databases made by it exist.

A PostgreSQL store takes the very same steps (`store_pg_schema`: each statement put in
PostgreSQL's words, `schema_version` for `user_version`), so a step's SQL sticks to what
both speak: CREATE TABLE / INDEX and ALTER TABLE ADD COLUMN with INTEGER, REAL, TEXT and
BLOB columns, and a `fill` that reads and writes through the store's connection (`?`).
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from lipon_hw import (
    store_cell_blocks,
    store_metadata,
    store_queue,
    store_run_steps,
    store_screening,
)
from lipon_hw.store_schema import SCHEMA


@dataclass(frozen=True)
class Migration:
    to_version: int
    what: str
    #: statements separated by `;` (none holding a `;` of its own)
    sql: str
    #: derives the new table's or columns' values from an older database's rows
    fill: Callable[[object], None] | None = None


def _fill_run_metadata(db) -> None:
    runs = db.execute("SELECT id, sequence_text, station_text FROM runs WHERE id NOT IN"
                      " (SELECT run_id FROM run_metadata) ORDER BY id").fetchall()
    for run_id, sequence_text, station_text in runs:
        store_metadata.insert(db, store_metadata.inferred(run_id, sequence_text, station_text))


MIGRATIONS: tuple[Migration, ...] = (
    Migration(2, "run metadata written at start: version, station, digests, host, user", """
        CREATE TABLE run_metadata (
            run_id INTEGER PRIMARY KEY REFERENCES runs(id),
            lipon_hw_version TEXT,
            station_name TEXT,
            simulated INTEGER,
            sequence_sha256 TEXT NOT NULL,
            station_sha256 TEXT NOT NULL,
            host_name TEXT,
            user_name TEXT,
            python_version TEXT,
            platform TEXT,
            recorded TEXT NOT NULL
        );""", fill=_fill_run_metadata),
    # written and read by the simulated lab only (`lipon_hw.sim`), never by the engine: the
    # true film of a layer (kind 'film': the sample, and the run and recipe step that laid
    # it down) or the true parameters of a cell (kind 'cell': the run and the channel it
    # was mounted on; sample '' unless built from one). Measurements stay in their tables.
    Migration(3, "the simulated lab's ground truth, apart from measurements", """
        CREATE TABLE sim_truth (
            kind TEXT NOT NULL,
            run_id INTEGER NOT NULL,
            sample_id TEXT NOT NULL,
            position INTEGER NOT NULL,
            truth TEXT NOT NULL,
            PRIMARY KEY (kind, run_id, sample_id, position)
        );"""),
    # a table, not a JSON column of `runs`: one row per step keyed like `steps` (run, idx),
    # typed columns a query can select on (which runs laid LiPON, read from which monitor)
    # without parsing a document, and room for a column more without rewriting `runs`
    Migration(4, "each run's steps as planned at start: kind, tool, and the film a step "
                 "lays down with the quantities holding its rate, thickness and shutter",
              store_run_steps.SQL, fill=store_run_steps.fill),
    # nullable: an older alarm was raised by no rule the store knows (the engine's own
    # faults and notes), and an interlock's condition is its rule (`store_alarms`)
    Migration(5, "each alarm's rule (what raised it) and reaction (what was done)", """
        ALTER TABLE alarms ADD COLUMN rule TEXT;
        ALTER TABLE alarms ADD COLUMN reaction TEXT"""),
    # sheet screening: sheets (samples with a geometry), each screened cell's metrics and
    # bins keyed by (run, row, col), and the genealogy roll → sheet → cell as links
    Migration(6, "sheets, screened cells with their bins, and links between samples",
              store_screening.SQL),
    # who asked: the OS user of `lipon-hw pause|continue|abort`, or the web user whose
    # token made the request (`lipon-hw serve`); NULL for a request made before layout 7
    Migration(7, "each operator request's author",
              "ALTER TABLE requests ADD COLUMN author TEXT"),
    # `lipon-hw serve`'s run queue: submitted sequences waiting in their tools' lanes
    # (`store_queue`); nothing older to fill it from
    Migration(8, "the run queue: submitted sequences, their lanes, states and who acted",
              store_queue.SQL),
    # a fencing token: an engine that lost its claim unseen (the server dropped the claim's
    # session, another machine resumed the run) must not write over its successor; every
    # engine taking a run to drive it moves the number on, and its writes check it
    # (`Store.take_over`); a run of an older layout is at its first driver's
    Migration(9, "each run's driver epoch, moved on by every engine that takes the run over",
              "ALTER TABLE runs ADD COLUMN driver_epoch INTEGER NOT NULL DEFAULT 1"),
    # the same within one engine's epoch, for the shards of a cluster campaign: Dask may
    # run a shard's task again while its first attempt still lives (a worker cut off from
    # the scheduler, not from the store), and both hold the run's shared worker claim; each
    # attempt moves its shard's number on and its writes check it (`Store.take_shard`)
    Migration(10, "each cluster shard's attempt, moved on by every attempt that takes it up",
              """CREATE TABLE shard_attempts (
                     run_id INTEGER NOT NULL REFERENCES runs(id),
                     shard TEXT NOT NULL,
                     attempt INTEGER NOT NULL,
                     PRIMARY KEY (run_id, shard))"""),
    # a cell test's samples in blocks (a poll's samples of one step: its times, voltages
    # and currents as BLOBs of doubles), not a row each: a fifth of the cost per sample,
    # a third of the space (`store_cell_blocks`); the rows of an older store are moved
    # into blocks, the same values in the same order, and `cell_samples` stays, empty
    Migration(11, "a cell test's samples in blocks of one step's samples, not a row each",
              store_cell_blocks.SQL, fill=store_cell_blocks.fill),
)

#: the layout this lipon-hw writes (`PRAGMA user_version`)
LATEST = MIGRATIONS[-1].to_version if MIGRATIONS else 1


def statements(sql: str) -> list[str]:
    return [s.strip() for s in sql.split(";") if s.strip()]


def steps_after(version: int) -> list[Migration]:
    """The steps a database of `version` lacks (0: an unversioned store of layout 1)."""
    return [m for m in MIGRATIONS if m.to_version > max(version, 1)]


def migrate(db, application_id: int, to_version: int = LATEST) -> int:
    """Bring the database on `db` (an autocommit connection) to `to_version` (LATEST; an
    older one makes a store of that layout, as `store_pg_schema.migrate` does) in one
    transaction; a new or empty file gets layout 1 and the steps. Returns the version it
    found. Another writer may have migrated it since it was examined: the version is
    read again under the write lock."""
    db.execute("BEGIN IMMEDIATE")  # outside the try: a lock refused leaves nothing to undo
    try:
        found = db.execute("PRAGMA user_version").fetchone()[0]
        if found < to_version:
            if found <= 1:  # layout 1, perhaps made before some of its tables existed
                for sql in statements(SCHEMA):
                    db.execute(sql)
            for step in steps_after(found):
                if step.to_version > to_version:
                    break
                for sql in statements(step.sql):
                    db.execute(sql)
                if step.fill is not None:
                    step.fill(db)
            db.execute(f"PRAGMA user_version={to_version}")
            db.execute(f"PRAGMA application_id={application_id}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return found


@functools.cache
def expected_layout(version: int) -> dict[str, list[tuple]]:
    """Table name -> its columns (name, declared type, not null, pk) in layout `version`."""
    con = sqlite3.connect(":memory:")
    try:
        for sql in statements(SCHEMA):
            con.execute(sql)
        for step in MIGRATIONS:
            if step.to_version <= version:
                for sql in statements(step.sql):
                    con.execute(sql)
        return layout_of(con)
    finally:
        con.close()


def layout_of(con) -> dict[str, list[tuple]]:
    """The tables of an open database, as `expected_layout` gives them."""
    tables = [r[0] for r in con.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite\\_%'"
        " ESCAPE '\\' ORDER BY name")]
    return {t: [(c[1], c[2].upper(), c[3], c[5]) for c in
                con.execute(f'PRAGMA table_info("{t}")')] for t in tables}
