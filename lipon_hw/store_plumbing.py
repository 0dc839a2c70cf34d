"""The store's write plumbing: a transaction, signals held while a write lands, what a
busy database and a finite row are. Used by `store` and the table modules beside it."""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import sqlite3
import threading

from lipon_hw.errors import StoreBusy
from lipon_hw.store_open import GuardedConnection

log = logging.getLogger(__name__)


def tell(taps: list, event: str, *args) -> None:
    """Tell each of a store's taps (`Store.taps`, such as the live view's
    `engine.publish.Publisher`) of what the store was just given: `readings(run_id, t_s,
    values)` as given, `cell_samples(run_id, channel, rows)` and `spectrum(run_id,
    channel, rows)` as buffered, `cycle(run_id, channel, cycle, stats)` as stored,
    `screen_cells(run_id, cells)` (a screening touchdown's `ScreenCell`s) as buffered,
    `alarm(alarm)`, `step(run_id, idx, status, t_s[, kind, params])`, `status(run_id,
    status, message, summary)`. A tap that fails is logged and never reaches the engine."""
    for tap in taps:
        try:
            getattr(tap, event)(*args)
        except Exception:  # noqa: BLE001 - a listener never changes the run
            log.warning("a store tap failed on %s", event, exc_info=True)


def finite(*values) -> bool:
    """All finite numbers. One sum tests a whole row (NaN and ±inf propagate); only a sum
    that overflows is looked at value by value."""
    try:
        return math.isfinite(sum(values)) or all(math.isfinite(v) for v in values)
    except TypeError:
        return False


@contextlib.contextmanager
def signals_held():
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


def is_busy(exc: BaseException) -> bool:
    """The database is locked by another connection (SQLITE_BUSY / SQLITE_LOCKED)."""
    if isinstance(exc, StoreBusy):
        return True
    text = str(exc).lower()
    return isinstance(exc, sqlite3.Error) and ("locked" in text or "busy" in text)


class Transaction:
    """BEGIN IMMEDIATE (SQLite; BEGIN on PostgreSQL) … COMMIT, or ROLLBACK when the block
    raises."""

    def __init__(self, db: GuardedConnection):
        self._db = db

    def __enter__(self):
        self._db.execute(self._db.begin_sql)
        return self._db

    def __exit__(self, exc_type, exc, tb):
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
        return False
