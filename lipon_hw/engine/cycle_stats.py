"""A channel's cycle bookkeeping while it runs: the analysis' streaming accumulator and
the retention of the last closed cycle (for termination). Memory does not grow with the
number of cycles; the closed cycles go to the store, and summaries are made from there.
"""

from __future__ import annotations

from lipon_hw.analysis.cycles import CycleAccumulator, CycleStats


class CycleCounter:
    def __init__(self, acc: CycleAccumulator | None = None, retention: float | None = None):
        self.acc = acc or CycleAccumulator()
        self.retention = retention

    @classmethod
    def from_state(cls, state: dict) -> CycleCounter:
        return cls(CycleAccumulator.from_state(state["acc"]), state.get("retention"))

    def state(self) -> dict:
        return {"acc": self.acc.state(), "retention": self.retention}

    def add(self, rows: list[tuple]) -> list[CycleStats]:
        """Rows of (t_s, voltage_V, current_A, cycle, ...); returns the cycles closed."""
        return self._note(self.acc.feed_rows(r[:4] for r in rows))

    def finish(self) -> list[CycleStats]:
        return self._note(self.acc.finish())

    def _note(self, closed: list[CycleStats]) -> list[CycleStats]:
        for s in closed:
            if s.discharge_Ah > 0:
                self.retention = s.retention
        return closed
