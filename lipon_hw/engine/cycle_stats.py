"""A channel's cycle bookkeeping: the analysis' streaming accumulator plus the running
figures the summary needs, so memory does not grow with the number of cycles.

The mean coulombic efficiency leaves out the first cycle (formation: the first charge
of a fresh cell also builds its interfaces, so its CE says nothing about ageing).
"""

from __future__ import annotations

from lipon_hw.analysis.cycles import CycleAccumulator, CycleStats


class CycleCounter:
    def __init__(self, acc: CycleAccumulator | None = None, figures: dict | None = None):
        self.acc = acc or CycleAccumulator()
        self.figures = figures or {"last_discharge_Ah": None, "retention": None, "ce_sum": 0.0,
                                   "ce_count": 0, "first_cycle": None}

    @classmethod
    def from_state(cls, state: dict) -> CycleCounter:
        return cls(CycleAccumulator.from_state(state["acc"]), state["figures"])

    def state(self) -> dict:
        return {"acc": self.acc.state(), "figures": dict(self.figures)}

    def add(self, rows: list[tuple]) -> list[CycleStats]:
        """Rows of (t_s, voltage_V, current_A, cycle, ...); returns the cycles closed."""
        return self._note(self.acc.feed_rows(r[:4] for r in rows))

    def finish(self) -> list[CycleStats]:
        return self._note(self.acc.finish())

    def _note(self, closed: list[CycleStats]) -> list[CycleStats]:
        f = self.figures
        for s in closed:
            if f["first_cycle"] is None:
                f["first_cycle"] = s.cycle
            if s.discharge_Ah > 0:
                f["last_discharge_Ah"], f["retention"] = s.discharge_Ah, s.retention
            if s.coulombic_efficiency is not None and s.discharge_Ah > 0 \
                    and s.cycle != f["first_cycle"]:
                f["ce_sum"] += s.coulombic_efficiency
                f["ce_count"] += 1
        return closed

    @property
    def retention(self) -> float | None:
        return self.figures["retention"]

    @property
    def last_discharge_Ah(self) -> float | None:
        return self.figures["last_discharge_Ah"]

    @property
    def mean_ce(self) -> float | None:
        f = self.figures
        return f["ce_sum"] / f["ce_count"] if f["ce_count"] else None
