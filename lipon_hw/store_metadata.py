"""What a lab needs to know later about where and with what a run ran (`run_metadata`).

Written once, when the run's row is made (`at_start`): the lipon-hw version, the station's
name and whether its lab is simulated, SHA-256 digests of the sequence and station files
as read, the host, the user, Python and the operating system. The run's kind, seed, sample
and start time are columns of `runs` already. For runs made before store layout 2, the
migration fills what their rows still tell (`inferred`): the station's name, the digests,
and the version (layout 1 was only ever written by lipon-hw 0.1.0); host, user, Python and
platform are unknown there and stay empty, and `recorded` says the row was inferred.
"""

from __future__ import annotations

import getpass
import hashlib
import platform
import socket

import yaml

from lipon_hw import __version__
from lipon_hw.store_schema import AT_START, RunMetadata

#: `recorded` of a row the migration to layout 2 derived from an older run's own row
INFERRED = "inferred by the migration to store layout 2"
#: the only lipon-hw that wrote store layouts 0 and 1
LAYOUT_1_VERSION = "0.1.0"

COLUMNS = ("run_id", "lipon_hw_version", "station_name", "simulated", "sequence_sha256",
           "station_sha256", "host_name", "user_name", "python_version", "platform",
           "recorded")


def at_start(run_id: int, sequence_text: str, station_text: str) -> RunMetadata:
    name, simulated = _station(station_text)
    return RunMetadata(run_id, __version__, name, simulated, sha256(sequence_text),
                       sha256(station_text), _host(), _user(), platform.python_version(),
                       platform.platform(), AT_START)


def inferred(run_id: int, sequence_text: str, station_text: str) -> RunMetadata:
    """What an older run's row tells: no host, user, Python or platform."""
    name, simulated = _station(station_text)
    return RunMetadata(run_id, LAYOUT_1_VERSION, name, simulated, sha256(sequence_text),
                       sha256(station_text), None, None, None, None, INFERRED)


def insert(db, meta: RunMetadata) -> None:
    db.execute(f"INSERT INTO run_metadata ({', '.join(COLUMNS)}) VALUES"
               f" ({','.join('?' * len(COLUMNS))})",
               (meta.run_id, meta.lipon_hw_version, meta.station_name,
                None if meta.simulated is None else int(meta.simulated),
                meta.sequence_sha256, meta.station_sha256, meta.host_name, meta.user_name,
                meta.python_version, meta.platform, meta.recorded))


def select(db, run_id: int) -> RunMetadata | None:
    row = db.execute(f"SELECT {', '.join(COLUMNS)} FROM run_metadata WHERE run_id=?",
                     (run_id,)).fetchone()
    if row is None:
        return None
    values = list(row)
    values[3] = None if values[3] is None else bool(values[3])
    return RunMetadata(*values)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _station(text: str) -> tuple[str | None, bool | None]:
    """The station file's `name`, and whether it has a simulated lab (`sim:`); unknown for
    a text that is not a station (tests make runs with none)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return None, None
    if not isinstance(doc, dict):
        return None, None
    name = doc.get("name")
    return (name if isinstance(name, str) else None), doc.get("sim") is not None


def _host() -> str | None:
    try:
        return socket.gethostname() or None
    except OSError:
        return None


def _user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name, no passwd entry (a bare container)
        return None
