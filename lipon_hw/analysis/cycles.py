"""Per-cycle capacity, energy, coulombic efficiency and retention, computed as samples stream.

`CycleAccumulator` takes samples (t_s, voltage_V, current_A, cycle) in time order, batch by
batch, and keeps only the running cycle, so its memory does not grow with the number of
cycles. It hands back a finished `CycleStats` whenever the cycle number changes and on
`finish()`.

Attribution: the interval between two samples belongs to the cycle of the sample that
opens it. The cycle ends at the first sample of the next cycle (its `t_end_s`), and the
next cycle's counters start at zero there — as the Battery Data Format's cycle capacity
columns reset on the row where the cycle count changes.

Coulombic efficiency is discharge/charge of the same cycle (None without charge). Retention
is discharge / discharge of the reference cycle, the first cycle with any discharge (None
until there is one). Positive current charges.

`state()` is a JSON-able dict; `CycleAccumulator.from_state(d)` continues exactly where the
saved accumulator stood (same floats, so a resumed run reproduces an unbroken one).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np

from lipon_hw.analysis.integrate import as_columns, check_time_order, interval_integrals
from lipon_hw.errors import InputError

AS_PER_AH = 3600.0


@dataclass(frozen=True)
class CycleStats:
    """One finished cycle (capacities in Ah, energies in Wh)."""

    cycle: int
    charge_Ah: float
    discharge_Ah: float
    charge_Wh: float
    discharge_Wh: float
    coulombic_efficiency: float | None
    retention: float | None
    t_end_s: float

    def to_dict(self) -> dict:
        return asdict(self)


class CycleAccumulator:
    """Streaming per-cycle integrator; see the module docstring."""

    STATE_VERSION = 1

    def __init__(self) -> None:
        self._cycle: int | None = None  # the running cycle
        self._sums = [0.0, 0.0, 0.0, 0.0]  # charge_As, discharge_As, charge_Ws, discharge_Ws
        self._last: tuple[float, float, float] | None = None  # (t, V, I) of the last sample
        self._reference_discharge_Ah: float | None = None

    # --- feeding ---------------------------------------------------------------------------
    def feed(self, t_s, voltage_V, current_A, cycle) -> list[CycleStats]:
        """Add a batch of samples (arrays or sequences of equal length, or scalars);
        return the cycles this batch finished (usually none or one)."""
        t, v, i, c = as_columns("cycle samples", t_s, voltage_V, current_A, cycle)
        if len(t) == 0:
            return []
        if np.any(c != np.round(c)) or np.any(c < 0):
            raise InputError("cycle samples: the cycle number must be a whole number ≥ 0")
        check_time_order("cycle samples", None if self._last is None else self._last[0], t)
        cyc = c.astype(np.int64)
        if self._last is not None:  # the interval from the previous batch's last sample
            t = np.concatenate(([self._last[0]], t))
            v = np.concatenate(([self._last[1]], v))
            i = np.concatenate(([self._last[2]], i))
            cyc = np.concatenate(([self._cycle], cyc))
        elif self._cycle is None:
            self._cycle = int(cyc[0])
        parts = interval_integrals(t, v, i)
        finished: list[CycleStats] = []
        owner = cyc[:-1]  # interval k runs from sample k to k+1, owned by sample k's cycle
        changes = np.flatnonzero(cyc[1:] != cyc[:-1]) + 1  # sample indices opening a cycle
        start = 0
        for j in list(changes) + [len(t)]:
            seg = slice(start, j)  # intervals start..j-1 belong to cycle owner[start]
            if j - start > 0 and len(owner):
                for k in range(4):
                    self._sums[k] += float(np.sum(parts[k][seg]))
            if j < len(t):
                finished.append(self._close(float(t[j])))
                self._cycle = int(cyc[j])
            start = j
        self._last = (float(t[-1]), float(v[-1]), float(i[-1]))
        return finished

    def feed_rows(self, rows: Iterable[tuple]) -> list[CycleStats]:
        """Add samples given as (t_s, voltage_V, current_A, cycle) tuples."""
        rows = list(rows)
        if not rows:
            return []
        cols = list(zip(*rows, strict=True))
        return self.feed(*cols[:4])

    def finish(self) -> list[CycleStats]:
        """Close the running cycle (if it saw any sample) and return it."""
        if self._last is None or self._cycle is None:
            return []
        stats = self._close(self._last[0])
        self._cycle, self._last = None, None
        return [stats]

    def _close(self, t_end: float) -> CycleStats:
        ch_As, dis_As, ch_Ws, dis_Ws = self._sums
        ch_Ah, dis_Ah = ch_As / AS_PER_AH, dis_As / AS_PER_AH
        if self._reference_discharge_Ah is None and dis_Ah > 0:
            self._reference_discharge_Ah = dis_Ah
        ref = self._reference_discharge_Ah
        stats = CycleStats(
            cycle=int(self._cycle), charge_Ah=ch_Ah, discharge_Ah=dis_Ah,
            charge_Wh=ch_Ws / AS_PER_AH, discharge_Wh=dis_Ws / AS_PER_AH,
            coulombic_efficiency=dis_Ah / ch_Ah if ch_Ah > 0 else None,
            retention=dis_Ah / ref if ref else None, t_end_s=t_end)
        self._sums = [0.0, 0.0, 0.0, 0.0]
        return stats

    # --- resume ----------------------------------------------------------------------------
    @property
    def reference_discharge_Ah(self) -> float | None:
        return self._reference_discharge_Ah

    def state(self) -> dict:
        """Everything needed to continue: JSON-able, a few numbers."""
        return {"version": self.STATE_VERSION, "cycle": self._cycle, "sums": list(self._sums),
                "last": None if self._last is None else list(self._last),
                "reference_discharge_Ah": self._reference_discharge_Ah}

    @classmethod
    def from_state(cls, state: dict) -> CycleAccumulator:
        try:
            if state.get("version") != cls.STATE_VERSION:
                raise InputError(f"cycle accumulator state has version {state.get('version')!r},"
                                 f" expected {cls.STATE_VERSION}")
            acc = cls()
            acc._cycle = None if state["cycle"] is None else int(state["cycle"])
            acc._sums = [float(x) for x in state["sums"]]
            last = state["last"]
            acc._last = None if last is None else (float(last[0]), float(last[1]),
                                                   float(last[2]))
            ref = state["reference_discharge_Ah"]
            acc._reference_discharge_Ah = None if ref is None else float(ref)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise InputError(f"cycle accumulator state is not valid ({e})") from None
        if len(acc._sums) != 4:
            raise InputError("cycle accumulator state is not valid (sums needs four numbers)")
        return acc


# --- summaries ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class CycleSummary:
    """Figures over many cycles. mean_coulombic_efficiency is over cycles ≥ from_cycle with
    a charge; retention is the last cycle's discharge against the reference cycle's."""

    cycles: int
    first_cycle: int | None
    last_cycle: int | None
    mean_coulombic_efficiency: float | None
    last_discharge_Ah: float | None
    reference_discharge_Ah: float | None
    retention: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(stats: Iterable[CycleStats], from_cycle: int | None = None) -> CycleSummary:
    """Summary of a stream of CycleStats in one pass (constant memory).

    from_cycle: only cycles with that number or later enter the mean CE (e.g. skip a
    formation cycle); all cycles count for the capacities."""
    n, first, last = 0, None, None
    ce_sum, ce_n = 0.0, 0
    ref, last_dis = None, None
    for s in stats:
        n += 1
        first = s.cycle if first is None else first
        last = s.cycle
        if s.coulombic_efficiency is not None and math.isfinite(s.coulombic_efficiency) and \
                (from_cycle is None or s.cycle >= from_cycle):
            ce_sum += s.coulombic_efficiency
            ce_n += 1
        if ref is None and s.discharge_Ah > 0:
            ref = s.discharge_Ah
        last_dis = s.discharge_Ah
    return CycleSummary(
        cycles=n, first_cycle=first, last_cycle=last,
        mean_coulombic_efficiency=ce_sum / ce_n if ce_n else None,
        last_discharge_Ah=last_dis, reference_discharge_Ah=ref,
        retention=last_dis / ref if ref and last_dis is not None else None)
