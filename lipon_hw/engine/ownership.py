"""Who drives what: advisory OS locks that die with their process.

Everything a run drives — the run itself, each instrument port, each potentiostat
channel, the sample it deposits on — has a lock file in `<data>/locks/`. An engine
holds an exclusive `flock` on each for as long as it runs. The kernel drops a flock
when the last descriptor of it closes, which a dying process does however it dies
(kill -9 included), so the lock itself is the truth about liveness: no heartbeat to
go stale, no pid that a later process may have reused. A `running` run whose lock is
free was killed and may be resumed; one whose lock is held has a live engine, and a
second engine is refused with a sentence.

The holder writes its pid and what it is ("run 3") into the file, only so the
refusal can say who holds it; the lock, not the text, decides.

Locks are taken without blocking (a busy one is retried for a moment, so a probe by
`lipon-hw pause` is not mistaken for an engine) and released on every exit; the
descriptors are plain ints, closed only by `release` or by the process ending, never
by the garbage collector.

A claim on something the store holds for every machine (`Resource.store_wide`: a run,
its workers, a sample) is also taken in a PostgreSQL store, as an advisory lock that dies
with its connection (`store_claims`): testers and tools sharing one database each have
their own data directory, and must still not drive one run or coat one sample twice.

Limits: advisory (only lipon-hw honours them); the lock files are scoped to one data
directory (two data directories driving one instrument do not see each other's port
locks); `flock` on a network file system is only as good as that file system's locking.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path

from lipon_hw import store_location
from lipon_hw.errors import InputError, LiponError

LOCKS_DIR = "locks"
#: how long a busy lock is retried before it counts as held (a probe holds it for µs)
GRACE_S = 0.25
_RETRY_S = 0.02


@dataclasses.dataclass(frozen=True)
class Resource:
    """One lockable thing. `key` is its identity; `busy` the refusal, with `{holder}`
    standing for who holds it ("run 2 (pid 1234)")."""

    key: str
    busy: str
    shared: bool = False
    #: also claimed in a PostgreSQL store, for every machine that shares it
    store_wide: bool = False


class Busy(InputError):
    """A resource is held by a live process; one sentence says which and by whom."""


def lock_path(data_dir: Path | str, key: str) -> Path:
    """The lock file of `key`: readable, and unique even where two keys read alike
    once made safe for a file name."""
    slug = re.sub(r"[^A-Za-z0-9.-]+", "_", key).strip("_")[:60]
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return Path(data_dir) / LOCKS_DIR / f"{slug}-{digest}.lock"


class Ownership:
    """The locks one engine holds. A context manager: every lock released on exit."""

    def __init__(self, data_dir: Path | str, holder: str = "a run starting"):
        self.data_dir = Path(data_dir)
        self.holder = holder
        self._fds: dict[str, int] = {}
        self._store_locks = None  # store_claims.StoreLocks, made at the first store-wide take

    def take(self, resources: Iterable[Resource], grace_s: float = GRACE_S) -> None:
        """Lock every resource, or none of them (those taken here are let go again) and
        raise `Busy` naming the first that another live process holds."""
        taken = []
        try:
            for res in resources:
                if res.key in self._fds:
                    continue
                self._fds[res.key] = _lock(self.data_dir, res, grace_s)
                taken.append(res.key)
                self._write_holder(res.key)
                if res.store_wide:
                    self._take_in_store(res, grace_s)
        except BaseException:
            for key in taken:
                os.close(self._fds.pop(key))
                if self._store_locks is not None:
                    self._store_locks.release(key)
            raise

    def _take_in_store(self, res: Resource, wait_s: float) -> None:
        locks = self._store_locks
        if locks is None:
            url = _postgresql_store(self.data_dir)
            if url is None:
                return
            from lipon_hw.store_claims import StoreLocks
            locks = self._store_locks = StoreLocks(url, self.holder)
        deadline = time.monotonic() + wait_s
        while not locks.try_take(res.key, res.shared):
            if time.monotonic() >= deadline:
                raise Busy(res.busy.format(holder=locks.holder(res.key)
                                           or "a process of another machine"))
            time.sleep(_RETRY_S)

    def label(self, holder: str) -> None:
        """Say who holds the locks from now on (a run's id is known once its row exists)."""
        self.holder = holder
        for key in self._fds:
            self._write_holder(key)
        if self._store_locks is not None:
            self._store_locks.label(holder)

    def holds(self, key: str) -> bool:
        return key in self._fds

    def keep(self) -> None:
        """Check that the store-wide claims are still held (`StoreLocks.keep`): called by
        the engine's store after its writes, at most once a wall second."""
        if self._store_locks is not None:
            self._store_locks.keep()

    def release(self) -> None:
        while self._fds:
            _key, fd = self._fds.popitem()
            os.close(fd)
        if self._store_locks is not None:
            self._store_locks.close()
            self._store_locks = None

    def __enter__(self) -> Ownership:
        return self

    def __exit__(self, *exc) -> bool:
        self.release()
        return False

    def _write_holder(self, key: str) -> None:
        fd = self._fds[key]
        text = json.dumps({"pid": os.getpid(), "holder": self.holder}).encode()
        with contextlib.suppress(OSError):  # the text only informs; the lock is taken
            os.ftruncate(fd, 0)
            os.pwrite(fd, text, 0)


def held_by(data_dir: Path | str, resource: Resource) -> str | None:
    """Who holds `resource` now ("run 2 (pid 1234)"), or None if no live process does:
    on this machine, else (a store-wide claim) on any machine sharing its PostgreSQL
    store."""
    holder = _held_here(data_dir, resource.key)
    if holder is None and resource.store_wide:
        url = _postgresql_store(data_dir)
        if url is not None:
            from lipon_hw.store_claims import held_in_store
            holder = held_in_store(url, resource.key)
    return holder


def _postgresql_store(data_dir: Path | str) -> str | None:
    """The address of the data directory's store if it is a PostgreSQL one: the one it
    remembers. The first Store opened on a directory records its PostgreSQL store, and
    every claim is taken after the engine opened its store (not from --store or the
    environment, which name a store only for a directory that has none yet)."""
    location = store_location.recorded_location(Path(data_dir))
    return location.target if location is not None else None


def _held_here(data_dir: Path | str, key: str) -> str | None:
    """A probe of the lock file: it takes the lock for an instant (exclusive, so shared
    holders are seen too) and never creates a file."""
    path = lock_path(data_dir, key)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LiponError(f"cannot read the lock file {path} ({exc.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder(fd)
    finally:
        os.close(fd)  # closing drops the probe's lock, if it got one
    return None


def wait_until_free(data_dir: Path | str, resource: Resource, timeout_s: float) -> None:
    """Block until nobody holds `resource` (taken and let go again at once), or raise
    `Busy` after `timeout_s`. For processes that are known to be ending."""
    with Ownership(data_dir, "a process waiting for it") as owned:
        owned.take([resource], grace_s=timeout_s)


#: the claims of `hold_shared_until_exit`, never let go: they end with the process
_HELD_UNTIL_EXIT: list[Ownership] = []


def hold_shared_until_exit(data_dir: Path | str, resource: Resource, holder: str
                           ) -> Ownership:
    """Take a shared lock this process keeps until it ends (its descriptor, and its
    store connection, are never closed): for worker processes, whose lock must outlive
    every write they make. Returns its Ownership, whose `keep` the worker's store calls
    after its writes."""
    owned = Ownership(data_dir, holder)
    owned.take([dataclasses.replace(resource, shared=True)])
    _HELD_UNTIL_EXIT.append(owned)
    return owned


def _lock(data_dir: Path, res: Resource, wait_s: float) -> int:
    path = lock_path(data_dir, res.key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o664)
    except OSError as exc:
        raise LiponError(f"cannot create the lock file {path} ({exc.strerror}); "
                         "the data directory must be writable to run") from None
    mode = (fcntl.LOCK_SH if res.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, mode)
            return fd
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                os.close(fd)
                raise LiponError(f"cannot lock {path} ({exc.strerror})") from None
        if time.monotonic() >= deadline:
            holder = _holder(fd)
            os.close(fd)
            raise Busy(res.busy.format(holder=holder))
        time.sleep(_RETRY_S)


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"{info['holder']} (pid {int(info['pid'])})"
    except (OSError, ValueError, KeyError, TypeError):
        return "a live process (pid unknown)"
