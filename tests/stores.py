"""Looking at a run database from outside the process that writes it, as an operator, a
`lipon-hw resume` or a test waiting for a moment would: read-only, and what is
committed only."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path


def committed(db: Path, sql: str, *args, while_made: bool = False) -> list[tuple]:
    """The rows `sql` reads from the committed store. while_made: the store may not be
    made yet (no file, or its tables not yet there): that reads as no rows."""
    if while_made and not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
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
