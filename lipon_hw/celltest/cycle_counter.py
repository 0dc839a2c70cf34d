"""A channel's cycle bookkeeping while it runs: the analysis' streaming accumulator and
the retention of the last closed cycle (for termination). Memory does not grow with the
number of cycles; the closed cycles go to the store, and summaries are made from there.

Retention is the discharge capacity relative to that of the reference cycle (the
protocol's `termination.reference_cycle`, or the first later cycle with a discharge), so
formation cycles at a slower rate need not count as capacity lost.
"""

from __future__ import annotations

from lipon_hw.analysis.cycles import CycleAccumulator, CycleStats


def reference_discharge_Ah(stats, reference_cycle: int) -> float | None:
    return next((s.discharge_Ah for s in stats
                 if s.cycle >= reference_cycle and s.discharge_Ah > 0), None)


class CycleCounter:
    """leads: step id → that step's measurement interval (the program's, `protocol.leads`),
    so that the open circuit between two steps counts no charge."""

    def __init__(self, acc: CycleAccumulator | None = None, reference_cycle: int = 1,
                 reference_Ah: float | None = None, retention: float | None = None,
                 leads: dict[int, float] | None = None):
        self.acc = acc or CycleAccumulator()
        self.reference_cycle = reference_cycle
        self.reference_Ah = reference_Ah
        self.retention = retention
        self.leads = leads

    @classmethod
    def from_state(cls, state: dict, leads: dict[int, float] | None = None) -> CycleCounter:
        return cls(CycleAccumulator.from_state(state["acc"]), state["reference_cycle"],
                   state["reference_Ah"], state["retention"], leads)

    def state(self) -> dict:
        return {"acc": self.acc.state(), "reference_cycle": self.reference_cycle,
                "reference_Ah": self.reference_Ah, "retention": self.retention}

    def add(self, rows: list[tuple]) -> list[CycleStats]:
        """Rows of (t_s, voltage_V, current_A, cycle, step_count, step_id, ...); returns the
        cycles closed."""
        return self._note(self.acc.feed_rows(rows, self.leads))

    def add_columns(self, t_s, voltage_V, current_A, cycle: int, step_count: int,
                    step_id: int) -> list[CycleStats]:
        """As `add`, for samples of one cycle, step count and step id given as columns."""
        return self._note(self.acc.feed_columns(t_s, voltage_V, current_A, cycle, step_count,
                                                step_id, self.leads))

    def finish(self) -> list[CycleStats]:
        return self._note(self.acc.finish())

    def _note(self, closed: list[CycleStats]) -> list[CycleStats]:
        if self.reference_Ah is None:
            self.reference_Ah = reference_discharge_Ah(closed, self.reference_cycle)
        for s in closed:
            if s.discharge_Ah > 0 and self.reference_Ah:
                self.retention = s.discharge_Ah / self.reference_Ah
        return closed
