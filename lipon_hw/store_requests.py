"""Operator requests to a running engine (pause, continue, abort), queued in the store.

`lipon-hw pause|continue|abort RUN` (or an operator of `lipon-hw serve`) adds a row to
`requests`, with who made it (`author`: the OS user, or the web user's name); the engine
driving the run takes the rows not yet taken and acts on them (a deposition at its next
sample a wall second or a minute of run time after it last looked). Every
worker process of a cell test sees a pending abort (`pending`) until the run's end marks
it taken.
"""

from __future__ import annotations

import getpass
import os
import time
from collections.abc import Callable


def os_user() -> str:
    """The name of the user this process runs as (its uid where no name is known)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER in the environment
        return f"uid {os.getuid()}"


class OperatorRequests:
    """The `requests` table of one store's connection. `write_soon` is the store's
    buffered write (committed at once when the lock comes, else with its next flush)."""

    def __init__(self, db, write_soon: Callable[[Callable[[object], None]], None]):
        self._db = db
        self._write_soon = write_soon
        self._taken: set[int] = set()
        #: requests made through this connection: a reader in the same process that
        #: paces its reads of the table reads it at once after one (`deposition.runner`)
        self.made = 0

    def make(self, run_id: int, action: str, author: str | None = None) -> None:
        """Committed at once; `author`: who asked (None: not said)."""
        self._db.execute("INSERT INTO requests (run_id, action, made_at, author)"
                         " VALUES (?,?,?,?)", (run_id, action, time.time(), author))
        self.made += 1

    def last_toggle(self, run_id: int) -> tuple[str, str | None] | None:
        """The operator's last pause or continue of the run (taken or not) and who asked:
        what the operator last wanted of it; None if neither was asked."""
        row = self._db.execute(
            "SELECT action, author FROM requests WHERE run_id=? AND action IN "
            "('pause', 'continue') ORDER BY rowid DESC LIMIT 1", (run_id,)).fetchone()
        return None if row is None else (row[0], row[1])

    def pending(self, run_id: int) -> list[str]:
        """Requests not yet acted on, left pending (every worker of a run sees them)."""
        return [r[0] for r in self._db.execute(
            "SELECT action FROM requests WHERE run_id=? AND taken=0 ORDER BY rowid", (run_id,))]

    def take(self, run_id: int) -> list[str]:
        """Requests not yet acted on, oldest first; taking them marks them taken (in memory
        at once, in the database at the next write it allows)."""
        rows = [r for r in self._db.execute(
            "SELECT rowid, action FROM requests WHERE run_id=? AND taken=0 ORDER BY rowid",
            (run_id,)).fetchall() if r[0] not in self._taken]
        if rows:
            ids = ",".join(str(r[0]) for r in rows)
            self._taken.update(r[0] for r in rows)
            self._write_soon(lambda db: db.execute(
                f"UPDATE requests SET taken=1 WHERE rowid IN ({ids})"))
        return [r[1] for r in rows]
