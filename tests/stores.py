"""Looking at a run database from outside the process that writes it, as an operator, a
`lipon-hw resume` or a test waiting for a moment would: read-only, and what is
committed only."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

from lipon_hw.store_cell_blocks import rows_table
from lipon_hw.store_location import STORE_ENV
from lipon_hw.store_pg import placeholders


def committed(db: Path, sql: str, *args, while_made: bool = False) -> list[tuple]:
    """The rows `sql` reads from the committed store. while_made: the store may not be
    made yet (no file, or its tables not yet there): that reads as no rows. When the test
    runs on PostgreSQL (`backend`: LIPON_HW_STORE names it), the rows are read there. A
    query of `cell_samples` reads the samples as rows (`store_cell_blocks.rows_table`)."""
    url = os.environ.get(STORE_ENV)
    if url:
        return _committed_pg(url, sql, args, while_made)
    if while_made and not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        if "cell_samples" in sql:
            rows_table(con, con.execute("PRAGMA user_version").fetchone()[0])
        return con.execute(sql, args).fetchall()
    except sqlite3.OperationalError:
        if while_made:
            return []
        raise
    finally:
        con.close()


def digest(path: Path) -> str:
    """The file's bytes, as a SHA-256: unchanged means not written."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _committed_pg(url: str, sql: str, args: tuple, while_made: bool) -> list[tuple]:
    import psycopg

    try:
        with psycopg.connect(url, autocommit=True) as con:
            if "cell_samples" in sql:
                rows_table(con, con.execute("SELECT version FROM schema_version"
                                            ).fetchone()[0])
            return con.execute(placeholders(sql), args).fetchall()
    except psycopg.errors.UndefinedTable:
        if while_made:
            return []
        raise


def samples_db(db: Path) -> sqlite3.Connection:
    """A connection to a run's SQLite store whose `cell_samples` holds every sample as a
    row (`store_cell_blocks.rows_table`), for a test's query in SQL."""
    con = sqlite3.connect(db, timeout=10)
    rows_table(con, con.execute("PRAGMA user_version").fetchone()[0])
    return con
