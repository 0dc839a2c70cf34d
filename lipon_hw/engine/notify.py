"""The station's notification hooks (`station_notify.NotifySpec`), called with a JSON
document of each event: an alarm of severity warning and above, and the run's end
(event `abort` for an aborted run, else `end`).

The hooks are called from a thread of their own, one event after the other, so a slow or
dead hook never holds up the engine, its interlocks or its safe state: the engine only
puts the event on a queue. The lifecycle sends the end once the run is safe and stored,
then waits for the hooks a bounded time (`Notifier.close`) — long enough for the end to
be heard, never longer. A hook that fails (a command that exits non-zero or outlives its
timeout, a URL that does not answer 2xx in time) is a warning in the run's log, not an
alarm, and never changes how the run ends.

The command gets the document on stdin (its output is kept from the terminal; its
stderr's last line goes to the log when it fails); the webhook gets it as the body of an
HTTP POST (`Content-Type: application/json`), through urllib.

An alarm that repeats (the same source, rule and message: an `alarm` interlock that stays
true is stored at every sample) is sent once per REPEAT_S of run clock, and at most
MAX_QUEUED events wait: the hooks hear of a flood, they are not flooded.
"""

from __future__ import annotations

import json
import logging
import queue
import subprocess
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone

from lipon_hw.alarm_view import as_json
from lipon_hw.station_notify import NotifySpec
from lipon_hw.store_schema import SEVERITIES, Alarm

log = logging.getLogger(__name__)

#: the least severity a hook hears of
HEARD_FROM = SEVERITIES.index("warning")
#: run-clock seconds within which a repeated alarm is not sent again
REPEAT_S = 600.0
#: events waiting for the hooks, at most; more are counted and said in the log
MAX_QUEUED = 200
#: beyond the hooks' own timeouts, what closing waits for processes to start and die
CLOSE_SLACK_S = 2.0
_STOP = object()


class Notifier:
    """The hooks of one run. Without a spec, every call does nothing."""

    def __init__(self, spec: NotifySpec | None, run_id: int, run_name: str = "",
                 station_name: str = ""):
        self.spec, self.run_id = spec, run_id
        self.base = {"run_id": run_id, "run": run_name, "station": station_name}
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._sent_at: dict[tuple, float] = {}
        self._dropped = 0
        self._give_up = threading.Event()

    @property
    def active(self) -> bool:
        return self.spec is not None and (self.spec.command or self.spec.url) is not None

    def alarm(self, alarm: Alarm) -> None:
        if not self.active or alarm.level < HEARD_FROM:
            return
        key = (alarm.source, alarm.rule, alarm.message)
        last = self._sent_at.get(key)
        if last is not None and 0 <= alarm.t_s - last < REPEAT_S:
            return
        self._sent_at[key] = alarm.t_s
        self._post({"event": "alarm", "alarm": alarm.to_dict()})

    def end(self, status: str, message: str, alarms: list[Alarm]) -> None:
        """The run ended (its hardware safe and its status stored)."""
        if self.active:
            summary = as_json(alarms)
            summary.pop("list")
            self._post({"event": "abort" if status == "aborted" else "end",
                        "status": status, "message": message, "alarms": summary})

    def close(self, wait_s: float | None = None) -> None:
        """Wait at most `wait_s` for the events sent so far (default: long enough for the
        event under way and one more, the end, to time out on every hook); what is still
        waiting then is given up, and said in the log."""
        if self._thread is None:
            return
        if wait_s is None:
            per_event = self.spec.timeout_s * (bool(self.spec.command) + bool(self.spec.url))
            wait_s = 2 * per_event + CLOSE_SLACK_S
        self._queue.put(_STOP)
        try:
            self._thread.join(wait_s)
        except KeyboardInterrupt:  # the run is over and stored: Ctrl-C only stops the wait
            wait_s = 0.0
        if self._thread.is_alive():
            self._give_up.set()
            left = self._queue.qsize() - 1
            log.warning("run %d: the notification hooks were still busy %.0f s after the "
                        "run ended; %d event(s) not sent", self.run_id, wait_s, max(left, 0),
                        extra={"run_id": self.run_id})
        if self._dropped:
            log.warning("run %d: %d event(s) were not sent to the notification hooks "
                        "(more than %d waiting)", self.run_id, self._dropped, MAX_QUEUED,
                        extra={"run_id": self.run_id})
        self._thread = None

    # --- the hooks' thread ----------------------------------------------------------
    def _post(self, event: dict) -> None:
        if self._queue.qsize() >= MAX_QUEUED:
            self._dropped += 1
            return
        document = {**self.base, **event,
                    "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        self._queue.put(json.dumps(document).encode())
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, daemon=True,
                                            name=f"lipon-hw notify run {self.run_id}")
            self._thread.start()

    def _serve(self) -> None:
        while not self._give_up.is_set():
            body = self._queue.get()
            if body is _STOP:
                return
            if self.spec.command:
                self._call(self._run_command, body)
            if self.spec.url and not self._give_up.is_set():
                self._call(self._post_url, body)

    def _call(self, hook, body: bytes) -> None:
        started = time.monotonic()
        try:
            problem = hook(body)
        except Exception as exc:  # noqa: BLE001 - a hook never stops the others
            problem = f"{type(exc).__name__}: {exc}"
        if problem:
            log.warning("run %d: notification hook failed after %.1f s: %s", self.run_id,
                        time.monotonic() - started, problem, extra={"run_id": self.run_id})

    def _run_command(self, body: bytes) -> str | None:
        argv = self.spec.argv
        try:
            done = subprocess.run(argv, input=body, capture_output=True,
                                  timeout=self.spec.timeout_s, check=False)
        except subprocess.TimeoutExpired:
            return f"command {argv[0]!r} took longer than {self.spec.timeout_s:g} s (killed)"
        except OSError as exc:
            return f"command {argv[0]!r} could not be run ({exc.strerror or exc})"
        if done.returncode != 0:
            said = done.stderr.decode(errors="replace").strip().splitlines()
            return (f"command {argv[0]!r} exited with code {done.returncode}"
                    + (f": {said[-1][:200]}" if said else ""))
        return None

    def _post_url(self, body: bytes) -> str | None:
        request = urllib.request.Request(self.spec.url, data=body, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": "lipon-hw"})
        try:
            with urllib.request.urlopen(request, timeout=self.spec.timeout_s) as answer:
                answer.read(65536)
                status = answer.status
        except urllib.error.HTTPError as exc:
            return f"webhook answered HTTP {exc.code} {exc.reason}"
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            return f"webhook could not be reached ({reason})"
        if not 200 <= status < 300:
            return f"webhook answered HTTP {status}"
        return None
