"""The PostgreSQL back end of the store: a connection that takes the store's SQL as the
SQLite back end does (`?` placeholders), writes the bulk tables with COPY, and turns
every error into one `StoreError` sentence naming the store.

The seam between the back ends is this connection's methods (`store_open`'s
`GuardedConnection` has the same): `execute`, `executemany`, `insert_rows` (COPY here,
executemany there), `insert_id` (RETURNING here, lastrowid there), `stream` (a server-side
cursor here), `begin_sql`, `wait_for_locks`, `durable`, `serialize`, `json_values`,
`like_any_case` and `row_share`.
The queries themselves are written once, in the SQL both databases speak.

Commits are safe from a killed client as soon as they return (the server holds them);
`synchronous_commit` is off between checkpoints, as SQLite's `synchronous=NORMAL`: a crash
of the server itself may take the last fraction of a second of readings, never a synced
checkpoint. A connection the server dropped (a restart, a network cut) is made again at
the next transaction; until then writes are refused as busy (`StoreUnreachable`), so a run
goes on buffering as it does while another process holds an SQLite store locked.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import re
from collections.abc import Iterator

from lipon_hw.errors import (
    StoreBusy,
    StoreError,
    StoreFull,
    StoreUnreachable,
    StoreUnusable,
)
from lipon_hw.extras import needs

#: the COPY types of the bulk tables' columns (binary COPY needs them exact)
COPY_TYPES = {"readings": ("int8", "float8", "int8", "float8"),
              "cell_samples": ("int8", "int8", "float8", "float8", "float8", "int8", "int8",
                               "int8", "text"),
              "cell_blocks": ("int8", "int8", "float8", "float8", "int8", "int8", "int8",
                              "int8", "text", "bytea", "bytea", "bytea"),
              "spectra": ("int8", "int8", "float8", "int8", "int8", "float8", "float8",
                          "float8")}
#: how long a writer waits for another connection's lock, as SQLite's busy timeout
LOCK_WAIT_S = 30.0
_cursor_names = itertools.count(1)
#: statements sent again on a new connection when the old one turns out dropped: they
#: change nothing, or start a transaction
_SAFE_AGAIN = ("BEGIN", "SET ", "SELECT ")


def psycopg_module():
    """psycopg, or the sentence naming the extra that brings it (`MissingExtra`)."""
    with needs("postgres", "a postgresql:// store"):
        import psycopg
    return psycopg


@functools.lru_cache(maxsize=2048)
def placeholders(sql: str) -> str:
    """The store's SQL with psycopg's placeholders: `?` becomes `%s` and `%` is doubled,
    outside quoted literals (where `%` is doubled too, as psycopg reads the whole text)."""
    out = []
    for i, part in enumerate(re.split(r"('(?:[^']|'')*')", sql)):
        part = part.replace("%", "%%")
        out.append(part if i % 2 else part.replace("?", "%s"))
    return "".join(out)


def lock_key(what: str) -> int:
    """A signed 64-bit advisory-lock key for a name (the same in every process)."""
    return int.from_bytes(hashlib.blake2b(what.encode(), digest_size=8).digest(), "big",
                          signed=True)


def store_error(exc: BaseException, where: str) -> StoreError:
    """One sentence for a psycopg or OS error met on the store at `where`."""
    if isinstance(exc, StoreError):
        return exc
    psycopg = psycopg_module()
    state = getattr(exc, "sqlstate", None) or ""
    what = " ".join(str(exc).split()).rstrip(".") or type(exc).__name__
    if state in ("55P03", "40P01", "40001", "57014", "55006", "53300"):
        return StoreBusy(f"{where} is locked by another connection; try again when it is "
                         f"done ({what})")
    if state.startswith("28"):
        return StoreUnusable(f"{where} refused this user ({what}); check the address's user "
                             "and PGPASSWORD or ~/.pgpass")
    if state == "3D000":
        return StoreUnusable(f"{where} names a database the server does not have ({what}); "
                             "create it (createdb) or correct --store")
    if state in ("25006", "42501", "3F000"):
        return StoreUnusable(f"{where} cannot be written by this user ({what}); ask for "
                             "write access to the store's schema")
    if state == "53100":
        return StoreFull(f"{where} could not be written: the database server's disk is full")
    if state.startswith(("22", "23")):
        return StoreUnusable(f"{where} refused a malformed value ({what})")
    if state.startswith("XX"):
        return StoreUnusable(f"{where} is damaged ({what}); restore it from a backup")
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError | OSError) and \
            (not state or state.startswith(("08", "57P"))):
        return StoreUnreachable(f"the store {where} cannot be reached ({what})")
    return StoreError(f"{where} could not be used ({what})")


class PgConnection:
    """One autocommit psycopg connection to the store at `url` (`where`: its name in
    messages); `read_only`: every transaction read-only, as an SQLite reader's `mode=ro`."""

    kind = "postgresql"
    begin_sql = "BEGIN"
    json_values = "SELECT json_array_elements_text(?::json)"
    like_any_case = "ILIKE"
    #: a row read in a write transaction is held until the commit: an UPDATE of it from
    #: another session waits for the commit, or is seen by the read (`Store._check_fences`)
    row_share = " FOR SHARE"

    def __init__(self, url: str, where: str, read_only: bool = False):
        self._url = url
        self.where = where
        self._read_only = read_only
        self._in_transaction = False
        self._durable = False
        #: how long the next transaction waits for a lock (`wait_for_locks`)
        self._lock_wait_ms = int(LOCK_WAIT_S * 1000)
        self._con = self._connect()

    def _connect(self):
        psycopg = psycopg_module()
        try:
            con = psycopg.connect(self._url, autocommit=True, application_name="lipon-hw",
                                  connect_timeout=10)
        except Exception as exc:  # noqa: BLE001 - every failure becomes one sentence
            raise store_error(exc, self.where) from exc
        try:
            con.adapters.register_dumper(str, _text_dumper(psycopg))
            settings = ["SET synchronous_commit = on" if self._durable
                        else "SET synchronous_commit = off",
                        f"SET lock_timeout = '{int(LOCK_WAIT_S * 1000)}ms'"]
            if self._read_only:
                settings.append("SET default_transaction_read_only = on")
            for sql in settings:
                con.execute(sql)
        except Exception as exc:  # noqa: BLE001
            with contextlib.suppress(Exception):
                con.close()
            raise store_error(exc, self.where) from exc
        return con

    @contextlib.contextmanager
    def _converted(self) -> Iterator[None]:
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - psycopg's and the OS's, as one sentence
            if isinstance(exc, StoreError):
                raise
            raise store_error(exc, self.where) from exc

    def _ready(self, sql: str) -> None:
        """A connection the server dropped is made again, between transactions only."""
        if self._con.closed or self._con.broken:
            if self._in_transaction and sql not in ("ROLLBACK", self.begin_sql):
                raise StoreUnreachable(f"the store {self.where} cannot be reached (the "
                                       "connection was lost during a write)")
            with contextlib.suppress(Exception):
                self._con.close()
            self._con = self._connect()

    def execute(self, sql: str, args=()):
        if sql == "ROLLBACK" and (self._con.closed or self._con.broken):
            self._in_transaction = False  # nothing to roll back on a lost connection
            return None
        self._ready(sql)
        if sql == self.begin_sql:  # the transaction's lock wait, in the same round trip
            text, args = f"BEGIN; SET LOCAL lock_timeout = '{self._lock_wait_ms}ms'", None
        else:
            text = placeholders(sql)
        try:
            with self._converted():
                cur = self._con.execute(text, args)
        except StoreUnreachable:
            if self._in_transaction or not sql.startswith(_SAFE_AGAIN):
                raise  # a write whose fate is unknown is never sent twice
            self._ready(sql)  # dropped since its last use (a restart): made again, once
            with self._converted():
                cur = self._con.execute(text, args)
        if sql == self.begin_sql:
            self._in_transaction = True
        elif sql in ("COMMIT", "ROLLBACK"):
            self._in_transaction = False
        return cur

    def executemany(self, sql: str, rows) -> None:
        self._ready(sql)
        with self._converted(), self._con.cursor() as cur:
            cur.executemany(placeholders(sql), rows)

    def executescript(self, sql: str) -> None:
        from lipon_hw.store_migrations import statements

        for statement in statements(sql):
            self.execute(statement)

    def insert_rows(self, table: str, columns: tuple[str, ...], rows) -> None:
        """Rows into a table by COPY (binary, typed, for the bulk tables)."""
        if not rows:
            return
        types = COPY_TYPES.get(table)
        binary = " (FORMAT BINARY)" if types is not None else ""
        self._ready("COPY")
        with self._converted(), self._con.cursor() as cur, cur.copy(
                f"COPY {table} ({', '.join(columns)}) FROM STDIN{binary}") as copy:
            if types is not None:
                copy.set_types(list(types))
            for row in rows:
                copy.write_row(row)

    def insert_id(self, sql: str, args) -> int:
        """An INSERT's new `id`."""
        return int(self.execute(f"{sql} RETURNING id", args).fetchone()[0])

    def stream(self, sql: str, args=()) -> Iterator[tuple]:
        """A query's rows fetched in pieces from a server-side cursor (a run's millions of
        samples never all in this process at once); other queries may run meanwhile."""
        self._ready(sql)
        with self._converted():
            cur = self._con.cursor(name=f"lipon_{next(_cursor_names)}", withhold=True)
            cur.execute(placeholders(sql), args)
        try:
            while True:
                with self._converted():
                    rows = cur.fetchmany(20_000)
                if not rows:
                    return
                yield from rows
        finally:
            with contextlib.suppress(Exception):
                cur.close()

    def wait_for_locks(self, seconds: float) -> None:
        """How long the transactions begun from now on wait for another one's lock."""
        self._lock_wait_ms = max(int(seconds * 1000), 1)

    def durable(self, on: bool) -> None:
        """Commits synced on the server before they return (on), or not (off)."""
        self._durable = on
        self.execute("SET synchronous_commit = on" if on else "SET synchronous_commit = off")

    def serialize(self, what: str) -> None:
        """Inside a transaction: wait for, and hold until its end, the lock named `what`, so
        read-then-write steps (the next checkpoint's number) never interleave; SQLite's
        one write lock does this for every transaction."""
        self.execute("SELECT pg_advisory_xact_lock(?)", (lock_key(what),))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._con.close()


def _text_dumper(psycopg):
    """Text with NUL characters (an instrument's garbage in a message) stored with U+FFFD
    in their place: PostgreSQL's text cannot hold NUL, SQLite's can."""
    from psycopg.types.string import StrDumperUnknown

    class Dumper(StrDumperUnknown):
        def dump(self, obj):
            return super().dump(obj.replace("\x00", "\ufffd") if "\x00" in obj else obj)

    return Dumper
