"""What the operator hears of one run, wired by the lifecycle around the kind's own work:
the notes and each alarm as it is stored — on the console (through the `Watch`), in the
run's log file (`runlog`) and, from warnings up, through the station's notification hooks
(`notify`) — and, once the run is safe and stored, how it ended. While `lipon-hw serve`
runs, the run's events are published to it for browsers (`publish`, a tap on the store).

Alarms reach it without the engine knowing who listens: the store announces each alarm
it is given (`Store.on_alarm`), whichever part of the engine raised it. A cell test's
worker processes store their alarms through connections of their own; the run's process
reads those back (`AlarmRelay`, one query at most every RELAY_EVERY_S of wall time, in the
loop that already watches the workers), so they too are printed, logged and sent while
the run goes on, and the last ones once the workers have ended.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import replace

from lipon_hw import alarm_view
from lipon_hw.engine import publish
from lipon_hw.engine.notify import Notifier
from lipon_hw.engine.runlog import RunLog
from lipon_hw.errors import LiponError
from lipon_hw.store_schema import Alarm

log = logging.getLogger(__name__)

#: the run log's level of an alarm of each severity
_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "hold": logging.WARNING,
           "error": logging.ERROR}
RELAY_EVERY_S = 0.5
#: an error's exit code → how its run ended (as the console says it)
_STATUS_OF_EXIT = {3: "aborted", 130: "interrupted"}


class RunTrouble:
    """Opened once the run exists (`open`), ended once it is over (`end`): between the
    two, `watch` is the caller's watch with every note also logged, and every alarm the
    store is given goes to `alarm`."""

    def __init__(self, watch, store):
        self.outer = watch
        self.store = store
        self.watch = replace(watch, note=self.note)
        self.run_id: int | None = None
        self._log: RunLog | None = None
        self._notifier: Notifier | None = None
        self._publishing: publish.Follower | None = None

    def open(self, run_id: int, station, run_name: str, resumed: bool) -> None:
        self.run_id = run_id
        try:
            self._log = RunLog(self.store.data_dir, run_id)
        except OSError as exc:  # the run goes on without its log file; the operator is told
            self.outer.say(f"warning: the log file of run {run_id} cannot be written "
                           f"({exc.strerror or exc})")
        self._notifier = Notifier(station.spec.notify, run_id, run_name, station.spec.name)
        self.store.on_alarm = self.alarm
        self._publishing = publish.follow(self.store, run_id)  # while `lipon-hw serve` runs
        how = "resumed" if resumed else "started"
        log.info("run %d %s: %s on %s", run_id, how, run_name, station.spec.name)

    def note(self, message: str) -> None:
        log.info("%s", message)
        self.outer.say(message)

    def alarm(self, alarm: Alarm) -> None:
        text = alarm_view.line(alarm)
        log.log(_LEVELS.get(alarm.severity, logging.WARNING), "alarm: %s", text)
        if self.outer.alarm is not None:
            self.outer.alarm(alarm)
        else:
            self.outer.say(f"alarm: {text}")
        if self._notifier is not None:
            self._notifier.alarm(alarm)

    def end(self, status: str, message: str, alarms: list[Alarm],
            safe_state: str | None = None) -> None:
        """The run is over, its hardware safe: log it, tell the hooks, close the log. Safe
        to call when the run never opened, or twice."""
        if self.run_id is None:
            return
        self.store.on_alarm = None
        if self._publishing is not None:
            self._publishing.close()
            self._publishing = None
        if safe_state:
            log.info("%s", safe_state)
        log.info("run %d ended %s: %s; %s", self.run_id, status, message,
                 alarm_view.summary_line(self.run_id, alarms))
        if self._notifier is not None:
            self._notifier.end(status, message, alarms)
            self._notifier.close()
            self._notifier = None
        if self._log is not None:
            self._log.close()
            self._log = None
        self.run_id = None

    def end_after_failure(self, exc: BaseException) -> list[Alarm]:
        """`end` for a run whose kind raised: its status as stored, else the error's; the
        run's alarms as far as the store still answers."""
        if self.run_id is None:
            return []
        status = _STATUS_OF_EXIT.get(getattr(exc, "exit_code", None), "failed")
        if isinstance(exc, KeyboardInterrupt):
            status = "interrupted"
        message = str(exc) or type(exc).__name__
        alarms: list[Alarm] = []
        with contextlib.suppress(LiponError):
            run = self.store.run(self.run_id)
            if run.status != "running":  # else its end could not be stored: the error says
                status, message = run.status, run.message or message
        with contextlib.suppress(LiponError):
            alarms = self.store.alarms(self.run_id)  # read before the store is closed
        safe = getattr(exc, "safe_state", None)
        self.end(status, message, alarms, safe.sentence() if safe is not None else None)
        return alarms


class AlarmRelay:
    """The alarms other processes store for a run (a cell test's workers), announced
    through the store's listener: `poll()` reads them at most every `every_s` of wall time
    (`force`: now), in one query."""

    def __init__(self, store, run_id: int, every_s: float = RELAY_EVERY_S):
        self.store, self.run_id, self.every_s = store, run_id, every_s
        self.cursor = store.alarm_cursor()
        self._read_at = time.monotonic()

    def poll(self, force: bool = False) -> None:
        if self.store.on_alarm is None:
            return
        if not force and time.monotonic() - self._read_at < self.every_s:
            return
        self._read_at = time.monotonic()
        with contextlib.suppress(LiponError):  # never the run's problem
            self.cursor = self.store.relay_alarms(self.run_id, self.cursor)
