"""A cell test's samples as the store keeps them: in blocks, one row of `cell_blocks` for a
run of samples of one channel that share their cycle, step count, step id and step type
(what one poll of a step brought), their times, voltages and currents each one BLOB of
little-endian 64-bit floats.

Why blocks: a row per sample cost SQLite some 1.8 µs a sample (the row, its index entry
and the binding of nine values), half the cell model's own cost per sample in a campaign
(`bench/cycling.py`); a block costs ~0.2 µs a sample and a third of the space, on
PostgreSQL too (COPY of bytea). A block's values are the floats as given, bit for bit.

Samples are read back in (time, row) order: blocks by (t_first_s, rowid), a block's
samples in the order they came (a channel's blocks do not overlap in time: a rewind cuts
the blocks after its time). Each sample has a number, `seq` = the block's rowid ×
`MAX_BLOCK` + its place in it, rising in that order: a page's cursor (t_s, seq) as a
row's was (t_s, rowid). A store of a layout before 11 (read without migrating it) keeps
a row per sample in `cell_samples`; it is read as blocks of one (`seq` = its rowid).

For a look at the samples with SQL, `sample_rows` gives them as rows and `rows_table`
puts them in a temporary table named `cell_samples`, with the columns of layout 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import chain, groupby

import numpy as np

from lipon_hw.store_schema import CELL_SAMPLE_COLUMNS

#: the most samples one block holds (a longer run of samples is cut into several)
MAX_BLOCK = 4096
#: the first layout that keeps samples in blocks (`store_migrations`)
BLOCKS_LAYOUT = 11
#: a row of `cell_blocks`
BLOCK_COLUMNS = ("run_id", "channel", "t_first_s", "t_last_s", "n", "cycle", "step_count",
                 "step_id", "step_type", "t_s", "voltage_V", "current_A")

SQL = """
    CREATE TABLE cell_blocks (
        run_id INTEGER NOT NULL,
        channel INTEGER NOT NULL,
        t_first_s REAL NOT NULL,
        t_last_s REAL NOT NULL,
        n INTEGER NOT NULL,
        cycle INTEGER NOT NULL,
        step_count INTEGER NOT NULL,
        step_id INTEGER NOT NULL,
        step_type TEXT NOT NULL,
        t_s BLOB NOT NULL,
        voltage_V BLOB NOT NULL,
        current_A BLOB NOT NULL
    );
    CREATE INDEX cell_blocks_by_channel ON cell_blocks(run_id, channel, t_first_s)"""

_F8 = np.dtype("<f8")


def pack(values) -> bytes:
    """Floats as little-endian doubles."""
    return np.asarray(values, dtype=_F8).tobytes()


def unpack(blob) -> list[float]:
    return np.frombuffer(blob, dtype=_F8).tolist()


def block_rows(run_id: int, channel: int, times, volts, currents, keys: tuple
               ) -> Iterator[tuple]:
    """Rows of `cell_blocks` for samples given as columns (lists of floats or 1-D float
    arrays) sharing `keys` (cycle, step count, step id, step type), cut at MAX_BLOCK."""
    for a in range(0, len(times), MAX_BLOCK):
        t = times[a: a + MAX_BLOCK]
        first, last = (float(t.min()), float(t.max())) if isinstance(t, np.ndarray) else \
            (min(t), max(t))
        yield (run_id, channel, first, last, len(t), *keys, pack(t),
               pack(volts[a: a + MAX_BLOCK]), pack(currents[a: a + MAX_BLOCK]))


def rows_to_blocks(rows: Iterable[tuple]) -> Iterator[tuple]:
    """Rows of `cell_blocks` for rows (run_id, channel, t_s, voltage_V, current_A, cycle,
    step_count, step_id, step_type) in order: each run of rows sharing all but the three
    values one block (or more)."""
    for key, group in groupby(rows, key=lambda r: (r[0], r[1], *r[5:9])):
        cols = list(zip(*group, strict=True))
        yield from block_rows(key[0], key[1], list(cols[2]), list(cols[3]), list(cols[4]),
                              key[2:])


# --- reading ------------------------------------------------------------------------------
def block_query(layout: int, columns: str, where: str, order: str = "t_first_s, rowid") -> str:
    """SQL reading blocks as (seq0, n, cycle, step_count, step_id, step_type, t, V, I)
    after `columns` (SQL expressions of the block: rowid, t_first_s, …), `where` and
    `order` written with the block's names (t_first_s, t_last_s); for a store before
    BLOCKS_LAYOUT the same from its rows (each a block of one)."""
    return for_layout(layout, f"SELECT {columns}{', ' if columns else ''}rowid * {MAX_BLOCK},"
                              " n, cycle, step_count, step_id, step_type, t_s, voltage_V,"
                              f" current_A FROM cell_blocks WHERE {where} ORDER BY {order}")


def for_layout(layout: int, sql: str) -> str:
    """A query of `cell_blocks` as it reads a store of `layout`: as written, or, before
    BLOCKS_LAYOUT, of its rows as blocks of one (`cell_samples`, t_s for the first and
    last times, 1 for n, the rowid for the first seq)."""
    if layout >= BLOCKS_LAYOUT:
        return sql
    return (sql.replace(f"rowid * {MAX_BLOCK}", "rowid").replace(", n,", ", 1,")
            .replace("cell_blocks", "cell_samples").replace("t_first_s", "t_s")
            .replace("t_last_s", "t_s"))


def decoded(block: tuple, skip: int = 0) -> tuple[list, list, list]:
    """(times, volts, currents) of a block as `block_query` reads it (its last nine
    columns; `skip` columns before them)."""
    t, v, i = block[skip + 6: skip + 9]
    if isinstance(t, float | int):  # a row of a store before BLOCKS_LAYOUT
        return [t], [v], [i]
    return unpack(t), unpack(v), unpack(i)


def times_of(block: tuple, skip: int = 0) -> np.ndarray:
    """The times of a block as `block_query` reads it, as an array."""
    t = block[skip + 6]
    if isinstance(t, float | int):  # a row of a store before BLOCKS_LAYOUT
        return np.array([t], dtype=float)
    return np.frombuffer(t, dtype=_F8)


def samples_of(blocks: Iterable[tuple], skip: int = 0) -> Iterator[tuple]:
    """Samples as CELL_SAMPLE_COLUMNS from blocks as `block_query` reads them."""
    for b in blocks:
        t, v, i = decoded(b, skip)
        keys = b[skip + 2: skip + 6]
        yield from zip(t, v, i, *(([k] * len(t)) for k in keys), strict=True)


def sample_rows(db, layout: int, where: str = "1=1", args=(),
                order: str = "run_id, channel, t_first_s, rowid") -> Iterator[tuple]:
    """(run_id, channel, *CELL_SAMPLE_COLUMNS) of every sample of the blocks `where`
    selects, by run, channel and (time, row), or in the blocks' `order` ("channel, rowid":
    each channel's as they were written)."""
    for b in db.execute(block_query(layout, "run_id, channel", where, order), args).fetchall():
        yield from ((b[0], b[1], *s) for s in samples_of((b,), 2))


def rows_table(con, layout: int) -> None:
    """A temporary table `cell_samples` (run_id, channel, *CELL_SAMPLE_COLUMNS) on an open
    connection (sqlite3 or psycopg) holding every sample, rowid in (run, channel, time)
    order: the layout-1 view of the samples, for a query in SQL."""
    sqlite = hasattr(con, "create_function")
    rows = list(sample_rows(con, layout))  # first: the table would hide an older store's
    con.execute("CREATE TEMPORARY TABLE cell_samples (run_id BIGINT, channel BIGINT, t_s"
                " DOUBLE PRECISION, voltage_V DOUBLE PRECISION, current_A DOUBLE PRECISION,"
                " cycle BIGINT, step_count BIGINT, step_id BIGINT, step_type TEXT"
                + ("" if sqlite else ", rowid BIGINT GENERATED ALWAYS AS IDENTITY") + ")")
    if rows:
        columns = ", ".join(("run_id", "channel", *CELL_SAMPLE_COLUMNS))
        marks = ",".join(["?" if sqlite else "%s"] * 9)
        con.cursor().executemany(f"INSERT INTO cell_samples ({columns}) VALUES ({marks})", rows)


def fill(db) -> None:
    """Layout 11: the samples of an older store (a row each in `cell_samples`) moved into
    blocks, the same values in the same order; `cell_samples` left empty."""
    pairs = db.execute("SELECT DISTINCT run_id, channel FROM cell_samples").fetchall()
    for run_id, channel in pairs:
        rows = db.execute("SELECT run_id, channel, t_s, voltage_V, current_A, cycle, step_count,"
                          " step_id, step_type FROM cell_samples WHERE run_id=? AND channel=?"
                          " ORDER BY t_s, rowid", (run_id, channel)).fetchall()
        db.executemany(f"INSERT INTO cell_blocks ({', '.join(BLOCK_COLUMNS)}) VALUES"
                       f" ({','.join('?' * len(BLOCK_COLUMNS))})", list(rows_to_blocks(rows)))
    db.execute("DELETE FROM cell_samples")


def chunks_to_blocks(chunks) -> Iterator[tuple]:
    """Rows of `cell_blocks` for the store's buffered samples (`store_cells.PendingCells`'
    chunks: lists of rows, and `ColumnRows` of one channel and keys)."""
    lists = []
    for chunk in chunks:
        if isinstance(chunk, list):
            lists.append(chunk)
            continue
        if lists:
            yield from rows_to_blocks(chain.from_iterable(lists))
            lists = []
        (run_id, channel), (t, v, i), keys = chunk.head, chunk.columns, chunk.tail
        yield from block_rows(run_id, channel, t, v, i, keys)
    if lists:
        yield from rows_to_blocks(chain.from_iterable(lists))
