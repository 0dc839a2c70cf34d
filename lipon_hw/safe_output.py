"""Where an export may write, and how: never over the store, never half a file.

`check_outputs` refuses, before anything is written, an output path that is (or resolves
to, through symlinks or a hard link) a file of the run database or its data directory,
one that exists and is not a regular file (a device node, a FIFO, a directory where a file
is meant), and one that exists at all unless `force`. `atomic_file` then writes under a
temporary name in the target's own directory and renames it over the target, so a failed
export leaves the old file (or nothing) under the name, never half a file.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from lipon_hw.errors import InputError, OutputError

STORE_SUFFIXES = ("", "-wal", "-shm", "-journal")


Protected = list[tuple[Path, str]]


def protected_paths(data_dir: Path, db_path: Path) -> Protected:
    """The data directory and every file SQLite keeps for its database, with their names."""
    return [(data_dir, "the data directory"),
            *((Path(f"{db_path}{suffix}"), f"the database file {db_path.name}{suffix}")
              for suffix in STORE_SUFFIXES)]


def check_not_store(path: Path, protected: Protected) -> None:
    """Refuse a path that is, or resolves to (symlink, hard link), a file of the store."""
    real, ident = _real(path), _identity(path)
    for store_path, label in protected:
        if real == _real(store_path) or (ident is not None and ident == _identity(store_path)):
            raise InputError(f"--out {path} is {label} of the store; an export never writes "
                             "over the store, choose another path")


def check_outputs(paths: Iterable[Path], protected: Protected, force: bool) -> None:
    """Raise InputError (one sentence) for the first path an export must not write."""
    for path in paths:
        check_not_store(path, protected)
        try:
            st = os.stat(path)  # through symlinks: what would be written is the target
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise InputError(f"--out {path} cannot be examined ({exc.strerror})") from None
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"--out {path} exists and is {_kind(st.st_mode)}, not a regular "
                             "file; choose another path")
        if not force:
            raise InputError(f"--out {path} exists; pass --force to replace it")


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """A temporary path next to `path`; renamed over `path` (its real target, if `path` is
    a symlink) when the block ends without an error, removed otherwise. An OSError while
    writing (disk full, permissions) becomes one OutputError sentence."""
    target = Path(os.path.realpath(path))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                        suffix=".partial")
        os.fchmod(fd, _mode_for(target))
        os.close(fd)
    except OSError as exc:
        raise OutputError(f"{path} cannot be written ({exc.strerror})") from None
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    except OSError as exc:
        raise OutputError(f"{path} could not be written ({exc.strerror or exc}); nothing "
                          "was left under that name") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _mode_for(target: Path) -> int:
    """The replaced file's permissions, or what a plain open() would give a new file
    (mkstemp makes it private to the owner)."""
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        umask = os.umask(0o022)
        os.umask(umask)
        return 0o666 & ~umask


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"
