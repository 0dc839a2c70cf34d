"""A run's alarms in the store: written as they happen, read back as `Alarm` records, and
announced to whoever listens (`Store.on_alarm`) the moment they are made.

A mixin of `store.Store`, kept in a module of its own for size only: an alarm is written
through the store's buffered writes, in order with the readings before it.

Announcing: `on_alarm(alarm)` is called for every alarm this store is given, before it is
written (a store that refuses writes for a while still lets the operator hear of it), and,
through `relay_alarms`, for alarms other processes stored for the run (a cell test's
worker processes, each with its own connection). A listener that fails is logged and
never reaches the engine: what the operator hears never changes how a run ends.

Layout 5 added `rule` and `reaction`; a store of an older layout, read without migrating
it, answers None for both.
"""

from __future__ import annotations

import logging

from lipon_hw.store_plumbing import finite, tell
from lipon_hw.store_schema import Alarm

log = logging.getLogger(__name__)

#: the first layout whose alarms have `rule` and `reaction`
RULES_LAYOUT = 5

_INSERT = ("INSERT INTO alarms (run_id, t_s, severity, source, message, rule, reaction)"
           " VALUES (?,?,?,?,?,?,?)")


class AlarmRecords:
    def add_alarm(self, run_id: int, t_s: float, severity: str, source: str, message: str,
                  rule: str | None = None, reaction: str | None = None) -> None:
        """An alarm, announced at once and written as soon as the store takes it."""
        alarm = Alarm(run_id, t_s if finite(t_s) else 0.0, severity, source, message, rule,
                      reaction)
        self._announce(alarm)
        self._write_soon(lambda db: _insert(db, alarm))

    def _add_alarm_now(self, alarm: Alarm) -> None:
        """An alarm written on the connection as it stands (inside a write under way)."""
        self._announce(alarm)
        _insert(self._db, alarm)

    def alarms(self, run_id: int, since_s: float | None = None) -> list[Alarm]:
        """The run's alarms in time order (from `since_s` of the run clock on)."""
        self.try_flush()
        sql = f"SELECT {self._alarm_columns()} FROM alarms WHERE run_id=?"
        args: list = [run_id]
        if since_s is not None:
            sql += " AND t_s >= ?"
            args.append(since_s)
        rows = self._db.execute(sql + " ORDER BY t_s, rowid", args).fetchall()
        return [Alarm(run_id, *r) for r in rows]

    # --- alarms other processes store ---------------------------------------------
    def alarm_cursor(self) -> int:
        """Where `relay_alarms` starts: after every alarm stored until now."""
        self.try_flush()
        return self._db.execute("SELECT COALESCE(MAX(rowid), 0) FROM alarms").fetchone()[0]

    def relay_alarms(self, run_id: int, cursor: int) -> int:
        """Announce the run's alarms stored after `cursor` by other processes (those this
        store announced itself are not announced again); returns the new cursor. One
        query, whatever the number of alarms."""
        rows = self._db.execute(f"SELECT rowid, {self._alarm_columns()} FROM alarms"
                                " WHERE rowid > ? AND run_id=? ORDER BY rowid",
                                (cursor, run_id)).fetchall()
        for row in rows:
            alarm = Alarm(run_id, *row[1:])
            if _key(alarm) not in self._announced:
                self._announce(alarm)
        return max([cursor] + [row[0] for row in rows])

    # --- plumbing ------------------------------------------------------------------
    def _alarm_columns(self) -> str:
        return "t_s, severity, source, message" + (
            ", rule, reaction" if self.layout >= RULES_LAYOUT else "")

    def _announce(self, alarm: Alarm) -> None:
        self._announced.add(_key(alarm))
        if self.taps:
            tell(self.taps, "alarm", alarm)
        listener = self.on_alarm
        if listener is None:
            return
        try:
            listener(alarm)
        except Exception:  # noqa: BLE001 - hearing of an alarm never changes the run
            log.warning("an alarm listener failed on %r", alarm, exc_info=True)


def _insert(db, alarm: Alarm) -> None:
    # a run's alarms take their rowids in the order they are committed, as `relay_alarms`
    # reads them (several processes write a cell test's; SQLite's write lock orders them)
    db.serialize(f"alarms of run {alarm.run_id}")
    db.execute(_INSERT, (alarm.run_id, alarm.t_s, alarm.severity, alarm.source,
                         alarm.message, alarm.rule, alarm.reaction))


def _key(alarm: Alarm) -> tuple:
    return (alarm.run_id, alarm.t_s, alarm.severity, alarm.source, alarm.message)
