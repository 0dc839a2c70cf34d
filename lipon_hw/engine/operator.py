"""The operator's standing wish for a running run, whatever its kind: read from the
store's pending requests (`lipon-hw pause|continue|abort`, the web view's buttons), which
every process of the run sees."""

from __future__ import annotations

import time


class OperatorWish:
    """"abort" once asked, else the last of "pause" and "continue", else None. Read from
    the store at the first call, then at most once a second of wall time (a run in virtual
    time asks far more often than a person can ask anything)."""

    def __init__(self, store, run_id: int, every_s: float = 1.0):
        self.store, self.run_id, self.every_s = store, run_id, every_s
        self._read_at: float | None = None
        self._wish: str | None = None

    def __call__(self) -> str | None:
        now = time.monotonic()
        if self._read_at is None or now - self._read_at >= self.every_s:
            self._read_at = now
            pending = self.store.requests.pending(self.run_id)
            toggles = [a for a in pending if a in ("pause", "continue")]
            self._wish = "abort" if "abort" in pending else toggles[-1] if toggles else None
        return self._wish
