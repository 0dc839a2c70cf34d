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

Limits: advisory (only lipon-hw honours them); scoped to one data directory (two
data directories on one line do not see each other's locks); `flock` on a network
file system is only as good as that file system's locking.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from lipon_hw.errors import InputError, LiponError

LOCKS_DIR = "locks"
#: how long a busy lock is retried before it counts as held (a probe holds it for µs)
GRACE_S = 0.25
_RETRY_S = 0.02


@dataclass(frozen=True)
class Resource:
    """One lockable thing. `key` is its identity; `busy` the refusal, with `{holder}`
    standing for who holds it ("run 2 (pid 1234)")."""

    key: str
    busy: str
    shared: bool = False


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
        except BaseException:
            for key in taken:
                os.close(self._fds.pop(key))
            raise

    def label(self, holder: str) -> None:
        """Say who holds the locks from now on (a run's id is known once its row exists)."""
        self.holder = holder
        for key in self._fds:
            self._write_holder(key)

    def holds(self, key: str) -> bool:
        return key in self._fds

    def release(self) -> None:
        while self._fds:
            _key, fd = self._fds.popitem()
            os.close(fd)

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


def held_by(data_dir: Path | str, key: str) -> str | None:
    """Who holds `key` now ("run 2 (pid 1234)"), or None if no live process does.
    A probe: it takes the lock for an instant (exclusive, so shared holders are seen
    too) and never creates a file."""
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
    fd = _lock(data_dir, resource, timeout_s)
    os.close(fd)


def hold_shared_until_exit(data_dir: Path | str, resource: Resource, holder: str) -> None:
    """Take a shared lock this process keeps until it ends (its descriptor is never
    closed): for worker processes, whose lock must outlive every write they make."""
    fd = _lock(data_dir, Resource(resource.key, resource.busy, shared=True), GRACE_S)
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "holder": holder}).encode(), 0)


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
