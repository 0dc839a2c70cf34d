"""Where a data directory's run database is: its own SQLite file (the default, nothing to
set up), or a PostgreSQL database shared by many testers and tools.

Chosen by `--store` on a command (`postgresql://…`, or `sqlite` for the file), else by
the environment's LIPON_HW_STORE, which a fab sets once in each tester's service: the
shared database is the site's, not a run's. Not in the station file: the store must be
known before any station is read (`resume` reads the station from the store; `runs`,
`export` and `report` take none), and a station file is copied between sites and kept
under version control, where a database address has no place.

The data directory stays the run's home on this machine (claims, the live view's
sequence numbers, plots, exports), so it remembers its store: the first writer to open
a PostgreSQL store for it writes the address to `store.url` there, and every later
command on that directory — the cell test's worker processes, the guard, `resume`,
`lipon-hw serve` — opens the same database without being told. A directory then cannot
be pointed at another store by mistake: a different `--store` is refused in one
sentence, and so is a PostgreSQL store for a directory that holds an SQLite one.

A password never goes into the address (it would be written to `store.url` and shown in
messages): libpq's own means give it (PGPASSWORD, ~/.pgpass, a service file).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from lipon_hw.errors import InputError, StoreUnusable

#: the environment variable naming the store when --store does not
STORE_ENV = "LIPON_HW_STORE"
#: the SQLite file of a data directory
DB_NAME = "lipon.db"
#: the file in a data directory naming its PostgreSQL store
RECORD_NAME = "store.url"
SCHEMES = ("postgresql", "postgres")


@dataclass(frozen=True)
class Location:
    """`kind` is "sqlite" (`target`: the file) or "postgresql" (`target`: the address)."""
    kind: str
    target: str

    @property
    def shown(self) -> str:
        """How messages name the store: the file, or the address as given (no password)."""
        return self.target

    @property
    def is_postgresql(self) -> bool:
        return self.kind == "postgresql"


def parse(value: str, data_dir: Path | str) -> Location:
    """`--store`'s value: a PostgreSQL address, or `sqlite` (the data directory's file)."""
    text = value.strip()
    if text.lower() == "sqlite":
        return Location("sqlite", str(Path(data_dir) / DB_NAME))
    parts = urlsplit(text)
    if parts.scheme not in SCHEMES:
        raise InputError(f"--store {value!r} is neither a postgresql://… address nor "
                         "'sqlite' (the data directory's own file, the default)")
    if parts.password is not None:
        raise InputError("--store: the address holds a password, which would be written to "
                         f"the data directory's {RECORD_NAME} and shown in messages; give it "
                         "through PGPASSWORD or ~/.pgpass instead")
    return Location("postgresql", text)


def resolve(data_dir: Path | str, store: str | None = None) -> Location:
    """The store of `data_dir`: its record, else `store` (or LIPON_HW_STORE), else its SQLite
    file. A `store` that contradicts what the directory holds is refused (InputError)."""
    data_dir = Path(data_dir)
    asked = store if store is not None else os.environ.get(STORE_ENV) or None
    wanted = parse(asked, data_dir) if asked is not None else None
    recorded = recorded_location(data_dir)
    if recorded is not None:
        if wanted is not None and wanted != recorded:
            raise InputError(f"{data_dir} keeps its runs in {recorded.shown} (its "
                             f"{RECORD_NAME}), not in {wanted.shown}; pass --data of another "
                             f"directory for that store")
        return recorded
    if wanted is not None and wanted.is_postgresql:
        if (data_dir / DB_NAME).exists():
            raise InputError(f"{data_dir} keeps its runs in its SQLite file {DB_NAME}, not in "
                             f"{wanted.shown}; pass --data of another directory for the shared "
                             f"store (or --store sqlite)")
        return wanted
    return Location("sqlite", str(data_dir / DB_NAME))


def recorded_location(data_dir: Path) -> Location | None:
    """The PostgreSQL store `data_dir` remembers, if any."""
    path = data_dir / RECORD_NAME
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise StoreUnusable(f"{path} cannot be read ({exc}); it names the data directory's "
                            "store") from None
    try:
        found = parse(text, data_dir)
    except InputError:
        found = None
    if found is None or not found.is_postgresql:
        raise StoreUnusable(f"{path} does not hold a postgresql://… address; it names the "
                            "data directory's store")
    return found


def remember(data_dir: Path, location: Location) -> None:
    """Write the directory's record of its PostgreSQL store (atomically), once."""
    path = data_dir / RECORD_NAME
    if path.exists():
        return
    part = path.with_name(f".{RECORD_NAME}.{os.getpid()}")
    part.write_text(location.target + "\n", encoding="utf-8")
    os.replace(part, path)


def has_store(data_dir: Path | str, store: str | None = None) -> bool:
    """Whether a reader may look for runs there: its SQLite file exists, or its store is
    PostgreSQL (remembered, or asked for)."""
    location = resolve(data_dir, store)
    return location.is_postgresql or Path(location.target).exists()
