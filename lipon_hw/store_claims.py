"""Claims that a shared PostgreSQL store holds for every machine: advisory locks.

A data directory's lock files (`engine.ownership`) are seen only on its own machine. Runs
and samples live in the store, and a PostgreSQL store is shared by many testers and
tools, each with a data directory of its own: two machines must not drive one run (a
resume of a run that another machine still drives) or coat one sample. For those claims
(`Resource.store_wide`) the engine also takes a session-level advisory lock in the
store's database, on a connection of its own kept for as long as it holds them. The
server drops such a lock when its connection ends, however the process ended (kill -9
included: the kernel closes its socket), so, as with a flock, the lock itself is the
truth about liveness. The connection's `application_name` says who holds it, for the
refusal's sentence.

An SQLite store lives in its data directory, whose lock files already cover it: nothing
here is used for one.
"""

from __future__ import annotations

import contextlib
import os
import socket

from lipon_hw.errors import ClaimLost, StoreError
from lipon_hw.store_pg import lock_key, psycopg_module, store_error

#: PostgreSQL keeps 63 bytes of an application_name
_NAME_BYTES = 63


def claim_key(schema: str, key: str) -> int:
    """The advisory-lock key of a claim in the store of `schema` (advisory locks are the
    database's: two stores in two schemas of one database must not share claims), apart
    from the store's own transaction locks."""
    return lock_key(f"claim {schema} {key}")


def _schema(con, where: str) -> str:
    """The schema the address chose for the store (its search_path)."""
    try:
        return con.execute("SELECT current_schema()").fetchone()[0] or ""
    except Exception as exc:  # noqa: BLE001
        raise store_error(exc, where) from exc


def _connect(url: str, name: str):
    """An autocommit connection to the store's server, named `name` there."""
    try:
        return psycopg_module().connect(url, autocommit=True, connect_timeout=10,
                                  application_name=name)
    except Exception as exc:  # noqa: BLE001 - every failure becomes one sentence
        raise store_error(exc, url) from exc


def holder_name(holder: str) -> str:
    """Who holds the claims, as the server shows it to other machines."""
    text = f"{holder} (pid {os.getpid()} on {socket.gethostname()})"
    return text.encode()[:_NAME_BYTES].decode(errors="ignore")


class StoreLocks:
    """Advisory locks one process holds in a PostgreSQL store, on its own connection."""

    def __init__(self, url: str, holder: str):
        self.where = url
        self._holder = holder
        self._con = self._connect()
        self._schema = _schema(self._con, url)
        self._held: dict[str, bool] = {}  # key → shared

    def _connect(self):
        return _connect(self.where, holder_name(self._holder))

    def keep(self) -> None:
        """Still holding every claim: its session alive, or (the server dropped it: a
        restart, a cut network) each claim taken again on a new connection. ClaimLost if
        another session took one meanwhile. A server still away is the store's to judge
        (its writes wait, with their patience): tried again at the next call."""
        try:
            self._con.execute("SELECT 1")
            return
        except Exception:  # noqa: BLE001 - the session is gone, whatever the words
            self.close_connection()
        try:
            self._con = self._connect()
        except StoreError:
            return
        held, self._held = self._held, {}
        try:
            lost = [key for key, shared in held.items() if not self.try_take(key, shared)]
        except StoreError:  # the new connection failed too: every claim again next time
            self._held = held
            self.close_connection()
            return
        if lost:
            holder = self.holder(lost[0]) or "another engine"
            raise ClaimLost(f"{lost[0]} was claimed by this engine in the store {self.where} "
                            f"until the server dropped the claim's connection; {holder} "
                            "holds it now, so this engine stops")

    def try_take(self, key: str, shared: bool) -> bool:
        """Take `key` without waiting; False if another session holds it (exclusively,
        or at all when `shared` is False)."""
        if key in self._held:
            return True
        function = "pg_try_advisory_lock_shared" if shared else "pg_try_advisory_lock"
        got = self._query(f"SELECT {function}(%s)", (claim_key(self._schema, key),))[0][0]
        if got:
            self._held[key] = shared
        return bool(got)

    def release(self, key: str) -> None:
        shared = self._held.pop(key, None)
        if shared is None:
            return
        function = "pg_advisory_unlock_shared" if shared else "pg_advisory_unlock"
        with contextlib.suppress(StoreError):  # closing the connection lets go as well
            self._query(f"SELECT {function}(%s)", (claim_key(self._schema, key),))

    def label(self, holder: str) -> None:
        """Say who holds the locks from now on."""
        self._holder = holder
        with contextlib.suppress(StoreError):  # the name only informs
            self._query("SELECT set_config('application_name', %s, false)",
                        (holder_name(holder),))

    def holder(self, key: str) -> str | None:
        return holder_in(self._con, key, self.where, own=True)

    def close(self) -> None:
        self._held.clear()
        self.close_connection()

    def close_connection(self) -> None:
        with contextlib.suppress(Exception):
            self._con.close()

    def _query(self, sql: str, args: tuple) -> list[tuple]:
        try:
            return self._con.execute(sql, args).fetchall()
        except Exception as exc:  # noqa: BLE001
            raise store_error(exc, self.where) from exc


def held_in_store(url: str, key: str) -> str | None:
    """Who holds `key` in the store at `url` now, or None if no session does."""
    con = _connect(url, "lipon-hw probe")
    try:
        return holder_in(con, key, url, own=False)
    finally:
        con.close()


def holder_in(con, key: str, where: str, own: bool) -> str | None:
    """The holder of `key` as its session names itself ("run 3 (pid 1234 on host)"), or
    None; `own`: sessions other than `con`'s only. A holder whose name this role may not
    see (another role's session, without pg_read_all_stats) is "a session of another
    role"."""
    k = claim_key(_schema(con, where), key)
    try:
        rows = con.execute(
            "SELECT a.application_name FROM pg_locks l"
            " LEFT JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
            " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND l.classid = %s::bigint::oid AND l.objid = %s::bigint::oid"
            " AND (NOT %s OR l.pid <> pg_backend_pid())",
            ((k >> 32) & 0xFFFFFFFF, k & 0xFFFFFFFF, own)).fetchall()
    except Exception as exc:  # noqa: BLE001
        raise store_error(exc, where) from exc
    if not rows:
        return None
    return rows[0][0] or "a session of another role"
