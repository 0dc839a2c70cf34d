"""Per-cycle capacity, energy, coulombic efficiency and retention, computed as samples stream.

`CycleAccumulator` takes samples (t_s, voltage_V, current_A, cycle) in time order, batch by
batch, and keeps only the running cycle, so its memory does not grow with the number of
cycles. It hands back a finished `CycleStats` whenever the cycle number changes and on
`finish()`.

Attribution: the interval between two samples belongs to the cycle of the sample that
opens it. The cycle ends at the first sample of the next cycle (its `t_end_s`), and the
next cycle's counters start at zero there — as the Battery Data Format's cycle capacity
columns reset on the row where the cycle count changes.

Positive current charges (charge_Ah, discharge_Ah follow the current's sign, as the
Battery Data Format's columns do). Coulombic efficiency is what a cycle took out over what
it put in: discharge/charge for a cell that stores charge with a positive current, and
charge/discharge for one that stores it with a negative current (`stores_with=-1`: Li
plated on the working electrode of a Li/Cu cell, then stripped); None when nothing went
in. This is the one definition: the store keeps it, and the summary, the exports and the
plots read it from there. Retention is discharge / discharge of the reference cycle, the
first cycle with any discharge (None until there is one).

With `step` and `lead_s` columns, an interval that opens a new step counts only the new
step's first sample over its lead (`integrate.interval_integrals`): the cell was at open
circuit between the two techniques. Such an interval belongs to the new step's cycle.

`state()` is a JSON-able dict; `CycleAccumulator.from_state(d)` continues exactly where the
saved accumulator stood (same floats, so a resumed run reproduces an unbroken one).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields

import numpy as np

from lipon_hw.analysis.integrate import (
    as_columns,
    check_time_order,
    interval_integrals,
    interval_sums,
    step_leads,
)
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
        # its fields are numbers: a plain dict of them is what asdict's deep copy makes,
        # at a fifth of its cost (a cycle's stats are stored as each cycle closes)
        return {f: getattr(self, f) for f in _STATS_FIELDS}


_STATS_FIELDS = tuple(f.name for f in fields(CycleStats))


class CycleAccumulator:
    """Streaming per-cycle integrator; see the module docstring."""

    STATE_VERSION = 2

    def __init__(self, stores_with: int = 1) -> None:
        if stores_with not in (1, -1):
            raise InputError(f"stores_with must be 1 or -1 (the sign of the current that "
                             f"stores charge), not {stores_with!r}")
        self.stores_with = stores_with
        self._cycle: int | None = None  # the running cycle
        self._step: int | None = None  # the step count of the last sample (None: unknown)
        self._sums = [0.0, 0.0, 0.0, 0.0]  # charge_As, discharge_As, charge_Ws, discharge_Ws
        self._last: tuple[float, float, float] | None = None  # (t, V, I) of the last sample
        self._reference_discharge_Ah: float | None = None

    # --- feeding ---------------------------------------------------------------------------
    def feed(self, t_s, voltage_V, current_A, cycle, step=None, lead_s=None, step_id=None
             ) -> list[CycleStats]:
        """Add a batch of samples (arrays or sequences of equal length, or scalars);
        return the cycles this batch finished (usually none or one). step (the step count)
        and lead_s (one number, a value per sample, or step id → seconds with `step_id`)
        mark where the cell was at open circuit between steps (`integrate.step_leads`)."""
        t, v, i, c = as_columns("cycle samples", t_s, voltage_V, current_A, cycle)
        if len(t) == 0:
            return []
        steps = ids = None
        if step is not None and lead_s is not None:
            (steps,) = as_columns("cycle samples", step)
            ids = None if step_id is None else np.asarray(step_id)
        return self._feed(t, v, i, c, steps, _leads(lead_s) if steps is not None else None,
                          ids)

    def _feed(self, t, v, i, c, steps, leads, ids) -> list[CycleStats]:
        """`feed` once its columns are 1-D float arrays of one length ≥ 1, all finite."""
        if np.any(c != np.round(c)) or np.any(c < 0):
            raise InputError("cycle samples: the cycle number must be a whole number ≥ 0")
        check_time_order("cycle samples", None if self._last is None else self._last[0], t)
        cyc = c.astype(np.int64)
        if self._last is not None:  # the interval from the previous batch's last sample
            t = np.concatenate(([self._last[0]], t))
            v = np.concatenate(([self._last[1]], v))
            i = np.concatenate(([self._last[2]], i))
            cyc = np.concatenate(([self._cycle], cyc))
            if steps is not None:
                # a previous step not known (a version 1 state): no join there; the
                # previous sample's own lead is never looked up (only a step's first is)
                steps = np.concatenate(([steps[0] if self._step is None else self._step],
                                        steps))
                ids = None if ids is None else np.concatenate((ids[:1], ids))
                if isinstance(leads, np.ndarray):
                    leads = np.concatenate(([0.0], leads))
        elif self._cycle is None:
            self._cycle = int(cyc[0])
        joins = None if steps is None else step_leads(steps, leads, ids)
        parts = interval_integrals(t, v, i, joins)
        # interval k runs from sample k to k+1 and belongs to sample k's cycle — unless it
        # opens a new step (the cell was off in between): then to the new step's cycle
        opens = np.zeros(len(t) - 1, bool) if joins is None else ~np.isnan(joins)
        finished: list[CycleStats] = []
        changes = np.flatnonzero(cyc[1:] != cyc[:-1]) + 1  # sample indices opening a cycle
        start = 0
        for j in list(changes) + [len(t)]:
            end = j - 1 if j < len(t) and opens[j - 1] else j
            if end > start:  # intervals start..end-1 belong to the running cycle
                for k in range(4):
                    self._sums[k] += float(parts[k][start:end].sum())
            if j < len(t):
                finished.append(self._close(float(t[j])))
                self._cycle = int(cyc[j])
            start = end
        self._last = (float(t[-1]), float(v[-1]), float(i[-1]))
        self._step = None if steps is None else int(steps[-1])
        return finished

    def feed_rows(self, rows: Iterable[tuple], lead_s=None) -> list[CycleStats]:
        """Add samples given as (t_s, voltage_V, current_A, cycle[, step_count, step_id,
        …]) tuples; lead_s: a number, or a mapping step_id → that step's lead."""
        rows = list(rows)
        if not rows:
            return []
        cols = list(zip(*rows, strict=True))
        with_steps = lead_s is not None and len(cols) >= 6
        try:  # the columns in one array (a stream's batches are many and short)
            block = np.array(cols[:5] if with_steps else cols[:4], dtype=float)
        except (TypeError, ValueError):
            block = None
        if block is None or block.ndim != 2 or not np.isfinite(block).all():
            # not plain finite numbers: feed says what is wrong, as for any batch
            if not with_steps:
                return self.feed(*cols[:4])
            return self.feed(*cols[:4], step=cols[4], lead_s=lead_s, step_id=cols[5])
        if not with_steps:
            return self._feed(*block, None, None, None)
        return self._feed(*block[:4], block[4], _leads(lead_s), np.asarray(cols[5]))

    def feed_columns(self, t_s, voltage_V, current_A, cycle: int, step: int, step_id,
                     lead_s=None) -> list[CycleStats]:
        """As `feed_rows` for samples of one cycle, step count and step id, given as
        columns (sequences of floats) and those three numbers: no row tuples to take
        apart, the same figures."""
        if len(t_s) == 0:
            return []
        block = np.array((t_s, voltage_V, current_A), dtype=float)
        # one sum tests every value (NaN and ±inf propagate; an overflow looks again)
        if block.ndim != 2 or not math.isfinite(block.sum()) and not np.isfinite(block).all():
            n = len(t_s)  # feed_rows says what is wrong
            return self.feed_rows(zip(t_s, voltage_V, current_A, [cycle] * n, [step] * n,
                                      [step_id] * n, strict=True), lead_s)
        if _plain_int(cycle) and cycle >= 0 and _plain_int(step) and _plain_int(step_id) and \
                (lead_s is None or isinstance(lead_s, Mapping) or _plain_number(lead_s)):
            return self._feed_step(block, cycle, step, step_id, lead_s)
        n = block.shape[1]
        cycles = np.full(n, float(cycle))
        if lead_s is None:
            return self._feed(*block, cycles, None, None, None)
        return self._feed(*block, cycles, np.full(n, float(step)), _leads(lead_s),
                          np.full(n, step_id))

    def _feed_step(self, block, cycle: int, step: int, step_id: int, lead_s
                   ) -> list[CycleStats]:
        """`_feed` for finite columns of one cycle, step count and step id (`feed_columns`:
        a (3, n) array of times, voltages and currents): the same intervals, sums and
        closes (`interval_sums`), found without a column per sample of those three numbers
        — a new step or cycle can open only at the block's first sample. The previous
        batch's last sample is put before the block, and the intervals' lengths are taken
        once (for the time order and the sums): a step's feed is a few array operations."""
        lead, new_cycle = None, False
        if self._last is not None:  # the interval from the previous batch's last sample
            block = np.concatenate((np.reshape(self._last, (3, 1)), block), axis=1)
            new_cycle = self._cycle != cycle
            if lead_s is not None and self._step is not None and self._step != step:
                lead = _lead_of(lead_s, step_id)
                if math.isnan(lead):
                    lead = None
        elif self._cycle is None:
            self._cycle = cycle
        t, v, i = block
        dt = np.diff(t)  # the previous batch's last sample is in the block
        check_time_order("cycle samples", None, t, dt)
        finished: list[CycleStats] = []
        if new_cycle:  # the block's first sample opens a cycle (see `_feed`)
            opens_at = float(t[1])
            if lead is None:  # the interval to it belongs to the cycle it closes
                self._add(interval_sums(t[:2], v[:2], i[:2], dt=dt[:1]))
                t, v, i, dt = t[1:], v[1:], i[1:], dt[1:]
            finished.append(self._close(opens_at))
            self._cycle = cycle
        self._add(interval_sums(t, v, i, lead, dt))
        self._last = (float(t[-1]), float(v[-1]), float(i[-1]))
        self._step = None if lead_s is None else step
        return finished

    def _add(self, sums: list[float]) -> None:
        for k in range(4):
            self._sums[k] += sums[k]

    def finish(self) -> list[CycleStats]:
        """Close the running cycle (if it saw any sample) and return it."""
        if self._last is None or self._cycle is None:
            return []
        stats = self._close(self._last[0])
        self._cycle, self._last, self._step = None, None, None
        return [stats]

    def _close(self, t_end: float) -> CycleStats:
        ch_As, dis_As, ch_Ws, dis_Ws = self._sums
        ch_Ah, dis_Ah = ch_As / AS_PER_AH, dis_As / AS_PER_AH
        if self._reference_discharge_Ah is None and dis_Ah > 0:
            self._reference_discharge_Ah = dis_Ah
        ref = self._reference_discharge_Ah
        put_in, taken_out = (ch_Ah, dis_Ah) if self.stores_with > 0 else (dis_Ah, ch_Ah)
        stats = CycleStats(
            cycle=int(self._cycle), charge_Ah=ch_Ah, discharge_Ah=dis_Ah,
            charge_Wh=ch_Ws / AS_PER_AH, discharge_Wh=dis_Ws / AS_PER_AH,
            coulombic_efficiency=taken_out / put_in if put_in > 0 else None,
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
                "step": self._step, "stores_with": self.stores_with,
                "reference_discharge_Ah": self._reference_discharge_Ah}

    @classmethod
    def from_state(cls, state: dict) -> CycleAccumulator:
        try:
            version = state.get("version")
            if version not in (1, cls.STATE_VERSION):  # 1: before steps and stores_with
                raise InputError(f"cycle accumulator state has version {version!r},"
                                 f" expected {cls.STATE_VERSION}")
            acc = cls(int(state.get("stores_with", 1)))
            step = state.get("step")
            acc._step = None if step is None else int(step)
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


def _plain_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _plain_number(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _lead_of(lead_s, step_id: int) -> float:
    """A step's lead as `step_leads` looks it up: from a mapping by step id, or the one
    number."""
    if not isinstance(lead_s, Mapping):
        return float(lead_s)
    try:
        return lead_s[step_id]
    except KeyError as exc:
        raise InputError(f"step id {exc.args[0]!r} has no measurement interval") from None


def _leads(lead_s):
    """A step lead as `step_leads` takes it: a mapping or one number as given, else one
    value per sample as a float array."""
    if isinstance(lead_s, Mapping) or np.ndim(lead_s) == 0:
        return lead_s
    return np.asarray(lead_s, dtype=float)


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
