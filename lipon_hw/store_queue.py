"""The run queue in the store: sequences submitted to `lipon-hw serve`, waiting in lanes.

A mixin of `store.Store`, kept in a module of its own. An entry holds the sequence's
whole text (as validated when it was submitted), the options of its run (seed, speed),
who submitted it and when, and its state: `queued` → `running` → `done` | `failed`, or
`cancelled` (queued and taken out, or running and aborted). Every state change and every
move stores who made it (`changed_by`, `changed_at`).

Lanes: an entry stands in one or more lanes (`lane`: the names joined by `,`), one per
tool or potentiostat its run needs (`RunKind.lanes`). Within a lane the entries go by
`position` (a number: a move puts an entry between its new neighbours), and an entry
starts only when it heads every lane it stands in and none of them has one running
(`startable`): a recipe on two tools waits for both.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

from lipon_hw.errors import InputError

SQL = """
CREATE TABLE queue (
    id INTEGER PRIMARY KEY,
    lane TEXT NOT NULL,
    position REAL NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    sequence_name TEXT NOT NULL,
    sequence_text TEXT NOT NULL,
    options TEXT NOT NULL,
    submitted_by TEXT NOT NULL,
    submitted_at REAL NOT NULL,
    state TEXT NOT NULL,
    run_id INTEGER,
    message TEXT NOT NULL DEFAULT '',
    changed_by TEXT,
    changed_at REAL
);
CREATE INDEX queue_by_state ON queue(state, position)"""

STATES = ("queued", "running", "done", "failed", "cancelled")
#: the states an entry does not leave
ENDED = ("done", "failed", "cancelled")
_COLUMNS = ("id, lane, position, name, kind, sequence_name, sequence_text, options,"
            " submitted_by, submitted_at, state, run_id, message, changed_by, changed_at")


@dataclass(frozen=True)
class QueueEntry:
    id: int
    lanes: tuple[str, ...]
    position: float
    name: str
    kind: str
    sequence_name: str
    sequence_text: str
    options: dict
    submitted_by: str
    submitted_at: float
    state: str
    run_id: int | None
    message: str
    changed_by: str | None
    changed_at: float | None

    def to_dict(self, text: bool = False) -> dict:
        out = asdict(self)
        out["lanes"] = list(self.lanes)
        if not text:
            del out["sequence_text"]
        return out


def _entry(row) -> QueueEntry:
    return QueueEntry(row[0], tuple(row[1].split(",")), *row[2:7], json.loads(row[7]),
                      *row[8:])


class QueueRecords:
    """The `queue` table (store layout 8); a reader of an older layout sees it empty."""

    def queue_add(self, lanes: list[str] | tuple[str, ...], name: str, kind: str,
                  sequence_name: str, sequence_text: str, options: dict, by: str) -> int:
        """A new entry at the end of its lanes, committed at once; its id."""
        if not lanes or any("," in lane or not lane for lane in lanes):
            raise ValueError(f"bad lanes {lanes!r}")
        with self._transaction():
            self._db.serialize("the run queue")
            last = self._db.execute("SELECT COALESCE(MAX(position), 0) FROM queue"
                                    ).fetchone()[0]
            now = time.time()
            return self._db.insert_id(
                f"INSERT INTO queue ({_COLUMNS.split(', ', 1)[1]}) VALUES (?,?,?,?,?,?,?,?,?,"
                "'queued',NULL,'',?,?)", (",".join(lanes), float(int(last) + 1), name, kind,
                                          sequence_name, sequence_text, json.dumps(options),
                                          by, now, by, now))

    def queue_entries(self, states: tuple[str, ...] = STATES) -> list[QueueEntry]:
        """The entries in `states`, by position."""
        if self.layout < 8:
            return []
        marks = ",".join("?" * len(states))
        return [_entry(r) for r in self._db.execute(
            f"SELECT {_COLUMNS} FROM queue WHERE state IN ({marks}) ORDER BY position, id",
            states)]

    def queue_entry(self, entry_id: int) -> QueueEntry:
        row = None if self.layout < 8 else self._db.execute(
            f"SELECT {_COLUMNS} FROM queue WHERE id=?", (entry_id,)).fetchone()
        if row is None:
            raise InputError(f"queue entry {entry_id} is not in {self.where}")
        return _entry(row)

    def queue_lane(self, lane: str) -> list[QueueEntry]:
        """The lane's entries not ended (running first, then queued), by position."""
        return [e for e in self.queue_entries(("running", "queued")) if lane in e.lanes]

    def queue_move(self, entry_id: int, position: int, by: str) -> QueueEntry:
        """Put a queued entry at `position` (1: first) among the queued entries of its
        first lane; InputError when it is not queued. Returns it as moved."""
        with self._transaction():
            self._db.serialize("the run queue")
            entry = self.queue_entry(entry_id)
            if entry.state != "queued":
                raise InputError(f"queue entry {entry_id} is {entry.state}; only a queued "
                                 "entry moves")
            others = [e for e in self.queue_lane(entry.lanes[0])
                      if e.state == "queued" and e.id != entry_id]
            at = min(max(position, 1), len(others) + 1)
            if not others:
                new = entry.position
            elif at == 1:
                new = others[0].position - 1.0
            elif at > len(others):
                new = others[-1].position + 1.0
            else:
                new = (others[at - 2].position + others[at - 1].position) / 2
            self._db.execute("UPDATE queue SET position=?, changed_by=?, changed_at=?"
                             " WHERE id=?", (new, by, time.time(), entry_id))
        return self.queue_entry(entry_id)

    def queue_set(self, entry_id: int, state: str, by: str, message: str | None = None,
                  run_id: int | None = None, only_from: tuple[str, ...] = STATES) -> bool:
        """Set an entry's state (and message, run id) if it is in `only_from`; committed
        at once. False when it was not (someone else changed it first)."""
        if state not in STATES:
            raise ValueError(f"no queue state {state!r}")
        marks = ",".join("?" * len(only_from))
        with self._transaction():
            changed = self._db.execute(
                f"UPDATE queue SET state=?, message=COALESCE(?, message),"
                f" run_id=COALESCE(?, run_id), changed_by=?, changed_at=?"
                f" WHERE id=? AND state IN ({marks})",
                (state, message, run_id, by, time.time(), entry_id, *only_from)).rowcount
        return changed == 1

    def queue_note(self, entry_id: int, run_id: int | None = None,
                   message: str | None = None) -> None:
        """Record what the runner learnt (the run's id, a message), the state unchanged."""
        with self._transaction():
            self._db.execute("UPDATE queue SET run_id=COALESCE(?, run_id),"
                             " message=COALESCE(?, message) WHERE id=?",
                             (run_id, message, entry_id))

    def startable(self) -> list[QueueEntry]:
        """The queued entries that head every lane they stand in, with nothing running in
        any of them: what may start now."""
        lanes: dict[str, list[QueueEntry]] = {}
        for entry in self.queue_entries(("running", "queued")):
            for lane in entry.lanes:
                lanes.setdefault(lane, []).append(entry)
        heads = {lane: (sorted(es, key=lambda e: e.state != "running")[0])
                 for lane, es in lanes.items()}
        out = []
        for entry in self.queue_entries(("queued",)):
            if all(heads[lane].id == entry.id for lane in entry.lanes):
                out.append(entry)
        return out

    def queue_run_id(self, sequence_path: str) -> int | None:
        """The newest run made from the sequence file at `sequence_path` (the runner's copy
        of an entry's text), if any yet."""
        row = self._db.execute("SELECT MAX(id) FROM runs WHERE sequence_path=?",
                               (sequence_path,)).fetchone()
        return None if row is None else row[0]
