"""The operator's standing wish for a running run, whatever its kind: read from the
store's pending requests (`lipon-hw pause|continue|abort`, the web view's buttons), which
every process of the run sees."""

from __future__ import annotations

import math
import time


class ReadPace:
    """When a run reads the store's requests again: at most once every `every_s` of wall
    time (a run in virtual time asks far more often than a person can ask anything; on
    PostgreSQL each read is a round trip), but at least once every `every_run_s` of run
    time when the caller gives its clock, and at once after a request made through this
    store's connection (`OperatorRequests.made`)."""

    def __init__(self, requests, every_s: float = 1.0, every_run_s: float = math.inf):
        self.requests, self.every_s, self.every_run_s = requests, every_s, every_run_s
        self._read = (-math.inf, -math.inf, -1)  # wall, run time, requests made

    def due(self, run_t: float = -math.inf) -> bool:
        wall, made = time.monotonic(), self.requests.made
        read_wall, read_t, read_made = self._read
        if made == read_made and wall - read_wall < self.every_s and \
                run_t - read_t < self.every_run_s:
            return False
        self._read = (wall, run_t, made)
        return True


class OperatorWish:
    """"abort" once asked, else the last of "pause" and "continue", else None. Read from
    the store at the first call, then as `ReadPace` allows (once a wall second)."""

    def __init__(self, store, run_id: int, every_s: float = 1.0):
        self.store, self.run_id = store, run_id
        self._pace = ReadPace(store.requests, every_s)
        self._wish: str | None = None

    def __call__(self) -> str | None:
        if self._pace.due():
            pending = self.store.requests.pending(self.run_id)
            toggles = [a for a in pending if a in ("pause", "continue")]
            self._wish = "abort" if "abort" in pending else toggles[-1] if toggles else None
        return self._wish
