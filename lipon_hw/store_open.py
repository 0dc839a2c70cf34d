"""Opening the run database safely: check it before anything is written, read it read-only.

A writer (`run`, `resume`, an operator request) opens the store only after the file has
been examined through a read-only connection: an SQLite header, no tables of another
program, a schema version it knows with that version's layout (an older one, or an
unversioned store of layout 1, is then migrated: `store_migrations`), and a passing
`PRAGMA quick_check`. Until then nothing is created, no table, no WAL switch. A reader
(`runs`, `sample`, `export`, `report`) never writes, not even to migrate an older layout:
it opens with `mode=ro`, and where SQLite cannot open a WAL
database read-only (a read-only directory holding no `-shm`), with `immutable=1`, which is
sound there because nobody can be writing into a directory nobody may write.

Every sqlite3 or OS error met on the way is turned into one `StoreError` sentence naming
the file (`store_error`). `open_reader` and `open_writer` give the store its connection on
either back end: this file's checks for SQLite, `store_pg_schema`'s for PostgreSQL.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import resource
import shutil
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from lipon_hw import store_migrations
from lipon_hw.errors import StoreBusy, StoreError, StoreFull, StoreUnusable

#: `PRAGMA user_version` of the layout this lipon-hw writes: the last step of
#: `store_migrations.MIGRATIONS`
SCHEMA_VERSION = store_migrations.LATEST
#: `PRAGMA application_id`: "LiPN", marks the file as a lipon-hw store
APPLICATION_ID = 0x4C69504E
SQLITE_HEADER = b"SQLite format 3\x00"
SMALLEST_DATABASE_BYTES = 512  # one page of the smallest page size
READER_TIMEOUT_S = 2.0  # a reader answers or says the store is busy; it does not wait 30 s

# primary result codes (sqlite3.h)
_BUSY, _LOCKED, _READONLY, _IOERR, _CORRUPT, _FULL, _CANTOPEN, _NOTADB = 5, 6, 8, 10, 11, 13, \
    14, 26


def store_error(exc: BaseException, path: Path) -> StoreError:
    """One sentence for an sqlite3 or OS error met on the store at `path`."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            return StoreFull(f"{path} could not be written: {_space_reason(path, exc.errno)}")
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return StoreUnusable(f"{path} is read-only for this user ({exc.strerror})")
        return StoreError(f"{path} could not be used: {exc.strerror or exc}")
    code = _primary_code(exc)
    what = _one_line(str(exc))
    if code == _FULL:
        return StoreFull(f"{path} could not be written: {_space_reason(path, errno.ENOSPC)}")
    if code == _IOERR:
        reason = _space_reason(path, None)
        return (StoreFull(f"{path} could not be written: {reason}") if reason
                else StoreError(f"{path} could not be written or read ({what})"))
    if code in (_BUSY, _LOCKED):
        return StoreBusy(f"{path} is locked by another process; try again when it is done")
    if code in (_CORRUPT, _NOTADB):
        return StoreUnusable(f"{path} is damaged ({what}); restore it from a backup")
    if code in (_READONLY, _CANTOPEN):
        return StoreUnusable(f"{path} cannot be written ({what}); check the permissions of "
                             "the file and its directory")
    if isinstance(exc, (sqlite3.DataError, sqlite3.IntegrityError)) or "decode" in what:
        return StoreUnusable(f"{path} holds a malformed value ({what})")
    return StoreError(f"{path} could not be used ({what})")


@contextlib.contextmanager
def converted(path: Path) -> Iterator[None]:
    """sqlite3 and OS errors inside become `store_error` sentences; a text column whose
    bytes are not UTF-8 (a damaged page that SQLite itself finds sound) is a damaged store."""
    try:
        yield
    except (sqlite3.Error, OSError) as exc:
        raise store_error(exc, path) from exc
    except UnicodeDecodeError as exc:
        raise StoreUnusable(f"{path} holds a damaged record (text that is not UTF-8: "
                            f"{exc.reason} at byte {exc.start})") from None


def _one_line(text: str) -> str:
    return " ".join(text.split()).rstrip(".")


def _primary_code(exc: BaseException) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return code & 0xFF
    text = str(exc).lower()
    for needle, value in (("locked", _BUSY), ("disk is full", _FULL), ("disk i/o", _IOERR),
                          ("malformed", _CORRUPT), ("not a database", _NOTADB),
                          ("readonly", _READONLY), ("unable to open", _CANTOPEN)):
        if needle in text:
            return value
    return None


def _space_reason(path: Path, err: int | None) -> str | None:
    """Why a write failed for want of space, if it did: the disk, or this process's limit
    on file size (`ulimit -f`). None if neither explains it."""
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY:
        sizes = [_size(Path(f"{path}{suffix}")) for suffix in ("", "-wal", "-journal")]
        if err == errno.EFBIG or max(sizes) + 65536 >= limit:
            return f"the file-size limit of this process ({limit} bytes, ulimit -f) is reached"
    with contextlib.suppress(OSError):
        if shutil.disk_usage(path.parent).free < 1 << 20 or err in (errno.ENOSPC, errno.EDQUOT):
            return "the disk is full"
    return "the disk is full" if err is not None else None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


# --- connections -----------------------------------------------------------------------
def _uri(path: Path, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{path.resolve().as_uri()}?{query}"


def connect_read_only(path: Path) -> sqlite3.Connection:
    """A connection that cannot write, to an existing database."""
    with converted(path):
        con = sqlite3.connect(_uri(path, mode="ro"), uri=True, isolation_level=None,
                              check_same_thread=False, timeout=READER_TIMEOUT_S)
        try:
            con.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return con
        except sqlite3.OperationalError as exc:
            con.close()
            if _primary_code(exc) not in (_READONLY, _CANTOPEN):
                raise
        # a WAL database in a directory where its -shm cannot be made: nobody writes here,
        # so the file is read as it stands, unless a WAL holds what it does not yet
        if _size(Path(f"{path}-wal")) > 0:
            raise StoreUnusable(f"{path}-wal holds writes not yet in {path.name}, which "
                                "cannot be read without its -shm in a read-only directory; "
                                "open the store once where it can be written")
        con = sqlite3.connect(_uri(path, mode="ro", immutable="1"), uri=True,
                              isolation_level=None, check_same_thread=False,
                              timeout=READER_TIMEOUT_S)
        con.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return con


def connect_writer(path: Path) -> sqlite3.Connection:
    """The run's read-write connection (created if missing). Several processes write a
    cell test (one per group of channels): a writer waits for the lock."""
    with converted(path):
        return sqlite3.connect(_uri(path, mode="rwc"), uri=True, isolation_level=None,
                               check_same_thread=False, timeout=30.0)


class GuardedConnection:
    """An sqlite3 connection whose errors (also while rows are fetched) are StoreErrors;
    the SQLite side of the back-end seam `store_pg.PgConnection` describes."""

    kind = "sqlite"
    begin_sql = "BEGIN IMMEDIATE"
    json_values = "SELECT value FROM json_each(?)"
    like_any_case = "LIKE"
    #: what a read in a write transaction adds to hold its rows until the commit: nothing
    #: (BEGIN IMMEDIATE already keeps every other writer out)
    row_share = ""

    def __init__(self, con: sqlite3.Connection, path: Path):
        self._con = con
        self._path = path
        self.where = str(path)

    def execute(self, sql: str, args=()) -> GuardedCursor:
        with converted(self._path):
            return GuardedCursor(self._con.execute(sql, args), self._path)

    def executemany(self, sql: str, rows) -> GuardedCursor:
        with converted(self._path):
            return GuardedCursor(self._con.executemany(sql, rows), self._path)

    def executescript(self, sql: str) -> None:
        with converted(self._path):
            self._con.executescript(sql)

    def insert_rows(self, table: str, columns: tuple[str, ...], rows) -> None:
        """Rows into a table (the bulk tables' writes: executemany)."""
        with converted(self._path):
            self._con.executemany(_insert_sql(table, columns), rows)

    def insert_id(self, sql: str, args) -> int:
        """An INSERT's new `id` (its rowid)."""
        return int(self.execute(sql, args).lastrowid)

    def stream(self, sql: str, args=()) -> Iterator[tuple]:
        """A query's rows as SQLite steps through them."""
        yield from self.execute(sql, args)

    def wait_for_locks(self, seconds: float) -> None:
        self.execute(f"PRAGMA busy_timeout = {max(int(seconds * 1000), 0)}")

    def durable(self, on: bool) -> None:
        """`synchronous=FULL`: the WAL synced at each commit; NORMAL: at checkpoints."""
        self.execute("PRAGMA synchronous=FULL" if on else "PRAGMA synchronous=NORMAL")

    def serialize(self, what: str) -> None:
        """Nothing to do: a write transaction (BEGIN IMMEDIATE) holds the one write lock."""

    def close(self) -> None:
        with converted(self._path):
            self._con.close()


@functools.lru_cache(maxsize=64)
def _insert_sql(table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({','.join('?' * len(columns))})"


class GuardedCursor:
    def __init__(self, cur: sqlite3.Cursor, path: Path):
        self._cur = cur
        self._path = path

    @property
    def lastrowid(self):
        return self._cur.lastrowid

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount

    def fetchone(self):
        with converted(self._path):
            return self._cur.fetchone()

    def fetchall(self) -> list:
        with converted(self._path):
            return self._cur.fetchall()

    def __iter__(self):
        with converted(self._path):
            yield from self._cur


# --- what is in the file ------------------------------------------------------------------
class Found(NamedTuple):
    """What `examine` found: "missing", "empty" (no tables yet), "older" (a layout this
    version migrates; 0 is an unversioned store of layout 1) or "current"; and its layout."""
    state: str
    version: int


def examine(path: Path, *, thorough: bool) -> Found:
    """What `path` holds, reading it only. Anything but a sound lipon-hw database of a
    layout this version knows (`store_migrations.expected_layout`) raises StoreUnusable
    naming the file and what is wrong. `thorough` adds `PRAGMA quick_check` (a full read
    of the file: about 0.3 s per 100 MB), which a writer needs."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return Found("missing", 0)
    except OSError as exc:
        raise store_error(exc, path) from exc
    if not stat.S_ISREG(st.st_mode):
        raise StoreUnusable(f"{path} is not a regular file")
    if st.st_size == 0:
        return Found("empty", 0)
    if st.st_size < SMALLEST_DATABASE_BYTES:
        _check_header(path)
    try:
        con = connect_read_only(path)
    except StoreUnusable as exc:
        if _primary_code(exc.__cause__) == _NOTADB:
            raise StoreUnusable(f"{path} is not an SQLite database, or its header is damaged "
                                "(SQLite: file is not a database)") from None
        raise
    try:
        with converted(path):
            return _check_contents(con, path, thorough)
    finally:
        con.close()


def _check_header(path: Path) -> None:
    """A file smaller than one SQLite page, read as bytes. Only such a file is read so:
    closing any descriptor of a file drops every POSIX lock this process holds on it,
    so reading a live database's header beside a connection of this process would
    drop that connection's locks, and another process could then check-point and
    remove the WAL under it, or switch its journal mode (test_store_trouble). No
    connection holds a file this small; a larger one is left to SQLite to judge."""
    try:
        with open(path, "rb") as fh:
            header = fh.read(100)
    except OSError as exc:
        raise store_error(exc, path) from exc
    if header[:16] != SQLITE_HEADER[:len(header[:16])]:
        raise StoreUnusable(f"{path} is not an SQLite database (it does not start with the "
                            "SQLite header)")
    raise StoreUnusable(f"{path} is truncated ({len(header)} bytes, shorter than the "
                        "smallest SQLite database)")


def _check_contents(con: sqlite3.Connection, path: Path, thorough: bool) -> Found:
    version = con.execute("PRAGMA user_version").fetchone()[0]
    app_id = con.execute("PRAGMA application_id").fetchone()[0]
    if app_id not in (0, APPLICATION_ID):
        raise StoreUnusable(f"{path} is the database of another program (application id "
                            f"{app_id:#x}), not a lipon-hw store")
    if version > SCHEMA_VERSION:
        raise StoreUnusable(f"{path} was written by a newer lipon-hw (store version {version}; "
                            f"this one knows up to {SCHEMA_VERSION}): upgrade lipon-hw")
    found = store_migrations.layout_of(con)
    expected = store_migrations.expected_layout(max(version, 1))
    foreign = sorted(set(found) - set(expected))
    if foreign:
        raise StoreUnusable(f"{path} is an SQLite database of something else (table "
                            f"{foreign[0]!r} is not a lipon-hw table)")
    for table, columns in found.items():
        if columns != expected[table]:
            raise StoreUnusable(f"{path} has a table {table!r} of another layout than this "
                                "lipon-hw's (columns differ)")
    if thorough:
        problems = con.execute("PRAGMA quick_check(1)").fetchone()
        if problems is None or problems[0] != "ok":
            first = _one_line((problems[0] if problems else "no answer").replace(
                "*** in database main ***", ""))
            raise StoreUnusable(f"{path} fails its integrity check ({first}); restore it "
                                "from a backup")
    if not found:
        return Found("empty", version)
    return Found("current" if version == SCHEMA_VERSION else "older", version)


def require_writable(data_dir: Path, path: Path) -> None:
    """A writer needs the directory (for the WAL and its index) and the file."""
    for target in (data_dir, path):
        if target.exists() and not os.access(target, os.W_OK):
            raise StoreUnusable(f"{target} is read-only for this user: a run cannot be "
                                "written there (pass --data DIR of a writable directory)")


# --- a store's connection, either back end ------------------------------------------------
def open_reader(data_dir: Path, location) -> tuple:
    """A connection that never writes (`store_location.Location`), and the layout of the
    store it reads, as it stands."""
    if location.is_postgresql:
        from lipon_hw import store_pg_schema

        return store_pg_schema.open_reader(location)
    path = Path(location.target)
    found = examine(path, thorough=False)
    if found.state in ("missing", "empty"):
        raise StoreUnusable(f"{data_dir} holds no lipon-hw data (no runs in {path}); pass "
                            "--data DIR of an earlier run")
    return GuardedConnection(connect_read_only(path), path), max(found.version, 1)


def open_writer(data_dir: Path, location):
    """The run's connection, once the store was examined; made or migrated to the latest
    layout in one transaction if it must be. A PostgreSQL store is remembered by the
    directory (`store_location.remember`)."""
    if data_dir.exists() and not data_dir.is_dir():
        raise StoreUnusable(f"{data_dir} is not a directory")
    path = Path(location.target)
    found = None if location.is_postgresql else examine(path, thorough=True)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreUnusable(f"{data_dir} cannot be created ({exc.strerror})") from exc
    if location.is_postgresql:
        return _open_pg_writer(data_dir, location)
    require_writable(data_dir, path)
    db = GuardedConnection(connect_writer(path), path)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        if found.state != "current":  # made, or migrated, in one transaction
            store_migrations.migrate(db, APPLICATION_ID)
    except BaseException:
        db.close()
        raise
    return db


def _open_pg_writer(data_dir: Path, location):
    from lipon_hw import store_location, store_pg_schema

    db = store_pg_schema.open_writer(location)
    try:
        store_location.remember(data_dir, location)
    except OSError as exc:
        db.close()
        raise store_error(exc, data_dir / store_location.RECORD_NAME) from exc
    return db
