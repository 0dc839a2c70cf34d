"""The record points of a measurement loop under a constant control, found in bulk.

A potentiostat measures every `interval` and a loop body decides what to send: a limit
(E ≥ v_max, E ≤ v_min) sends the sample and ends the loop; otherwise the Δt/ΔV rule sends
it when t ≥ t_last + dt or E ≥ E_last + dV or E ≤ E_last − dV, in the script's own float
arithmetic. `RecordLoop` reads the cell on the measurement grid a stretch at a time
(`readings_on_grid`: the same numbers as reading it sample by sample) and applies those
tests over plain lists, so a sample costs a few comparisons instead of an interpreted
body. The MethodSCRIPT emulator runs the driver's loops with it; `record_constant_current`
is the same thing without an instrument.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass

import numpy as np

from lipon_hw.errors import InputError

FIRST_STRETCH, STRETCH = 512, 4096  # measurements read from the cell at once
FEW = 12  # up to this many, the measurements are read one by one
INF = math.inf


@dataclass(frozen=True)
class Recorded:
    """The samples a loop sent: t_s is the loop's timer (from its start), and why it ended:
    'v_max', 'v_min' or 'done' (its run time ran out)."""

    t_s: np.ndarray
    E_V: np.ndarray
    I_A: np.ndarray
    end_reason: str


class RecordLoop:
    """A measurement loop of n samples at t0 + k·interval (k = 1 … n) on a cell under a
    constant control, with limits and a Δt/ΔV rule (None: no such rule; every_point sends
    every sample). `timer0` is when the loop's timer started; tn, eh, el are the rule's
    thresholds when the loop starts (the driver's scripts start them at 0, so that the
    first sample is always sent). `run_to(k)` measures up to sample k."""

    def __init__(self, cell, t0: float, interval: float, n: int, timer0: float,
                 limits: list[tuple[str, float, str]], dt: float | None, dV: float | None,
                 tn: float = 0.0, eh: float = 0.0, el: float = 0.0, every_point: bool = False):
        self.cell, self.t0, self.interval, self.n, self.timer0 = cell, t0, interval, n, timer0
        self.limits = limits  # (">=" | "<=", level, reason), tested in this order
        self.dt, self.dV = dt, dV
        self.tn = -INF if every_point else tn if dt is not None else INF
        self.eh, self.el = (eh, el) if dV is not None else (INF, -INF)
        # a NaN limit never fires (E >= NaN is false)
        self.v_hi = min([x for op, x, _ in limits if op == ">=" and x == x], default=INF)
        self.v_lo = max([x for op, x, _ in limits if op == "<=" and x == x], default=-INF)
        self.nan_thresholds = any(x is not None and x != x
                                  for x in (self.tn, self.eh, self.el, dt, dV))
        self.k = 0  # the last sample measured
        self.last: tuple[float, float, float] | None = None  # its (timer, E, I)
        self.end: str | None = None

    def run_to(self, k_stop: int) -> list[tuple[float, float, float, str | None]]:
        """Measure samples k+1 … min(k_stop, n), stopping at a limit; return the samples
        sent, (timer, E, I, the limit that ended the loop or None). The cell is left at
        the last sample measured."""
        k_stop = min(k_stop, self.n)
        sent: list[tuple[float, float, float, str | None]] = []
        cell, t0, interval = self.cell, self.t0, self.interval
        stretch = FIRST_STRETCH  # growing: a limit may well come within the first
        while self.k < k_stop and self.end is None:
            k1 = self.k + 1
            if k_stop - self.k <= FEW:  # a short poll: arrays would cost more than they save
                timer, volts, amps = [], [], []
                for k in range(k1, k_stop + 1):  # read up to a limit, not past it
                    t = t0 + k * interval
                    timer.append(t - self.timer0)
                    volts.append(cell.voltage_V(t))
                    amps.append(cell.current_A(t))
                    if volts[-1] >= self.v_hi or volts[-1] <= self.v_lo:
                        break
                m, plain = len(volts), True
            else:
                volts, amps = cell.readings_on_grid(t0, interval, k1,
                                                    min(k_stop, k1 + stretch - 1))
                stretch = min(2 * stretch, STRETCH)
                m = len(volts)
                timer = ((t0 + np.arange(k1, k1 + m, dtype=float) * interval)
                         - self.timer0).tolist()
                plain = self.nan_thresholds or bool(np.isnan(volts).any())
                volts, amps = volts.tolist(), amps.tolist()
            j = self._scan(timer, volts, amps, m, plain, sent)
            self.k = k1 + j
            self.last = (timer[j], volts[j], amps[j])
        if self.last is not None:
            cell.voltage_V(t0 + self.k * interval)  # move the cell on to the last sample
        if self.end is None and self.k >= self.n:
            self.end = "done"
        return sent

    def _scan(self, timer, volts, amps, m, plain, sent) -> int:
        """Apply the body's tests from the first reading on; the index of the last one used."""
        tn, eh, el, dt, dV = self.tn, self.eh, self.el, self.dt, self.dV
        v_hi, v_lo = self.v_hi, self.v_lo
        j = 0
        while j < m:
            hi = eh if eh < v_hi else v_hi  # a NaN threshold never fires: keep the limit
            lo = el if el > v_lo else v_lo
            k = bisect_left(timer, tn, j, m)  # the timer only grows
            if plain:  # NaN somewhere: the script's own tests, which NaN never passes
                for x in range(j, k):
                    if volts[x] >= hi or volts[x] <= lo:
                        k = x
                        break
            else:  # does E leave (lo, hi) before the timer rule fires?
                for x in range(j, k):
                    if not lo < volts[x] < hi:
                        k = x
                        break
            if k >= m:
                break
            t, e, i = timer[k], volts[k], amps[k]
            for op, level, reason in self.limits:
                if (e >= level) if op == ">=" else (e <= level):
                    sent.append((t, e, i, reason))
                    self.end = reason
                    self.tn, self.eh, self.el = tn, eh, el
                    return k
            sent.append((t, e, i, None))
            if dt is not None:
                tn = t + dt
            if dV is not None:
                eh, el = e + dV, e - dV
            j = k + 1
        self.tn, self.eh, self.el = tn, eh, el
        return m - 1


def record_constant_current(cell, t0_s: float, current_A: float, v_min_V: float | None,
                            v_max_V: float | None, interval_s: float, dt_s: float | None,
                            dV: float | None, max_s: float) -> Recorded:
    """Apply current_A to the cell at t0_s and return the samples a potentiostat sending
    on a Δt/ΔV rule would record, measuring every interval_s for at most max_s and
    stopping at the first sample past v_max_V or v_min_V (which is sent). The first
    sample is always sent; with neither dt_s nor dV every sample is. The cell is left at
    the last sample measured."""
    for label, value in (("interval_s", interval_s), ("max_s", max_s)):
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise InputError(f"record_constant_current: {label} must be a positive number of "
                             f"seconds, not {value!r}")
    n = int(max_s / interval_s + 1e-9)
    if n < 1:
        raise InputError(f"record_constant_current: max_s {max_s} is shorter than one "
                         f"interval_s {interval_s}")
    limits = [(op, level, reason) for op, level, reason in
              ((">=", v_max_V, "v_max"), ("<=", v_min_V, "v_min")) if level is not None]
    cell.set_control(t0_s, "current", current_A)
    loop = RecordLoop(cell, t0_s, interval_s, n, t0_s, limits, dt_s, dV,
                      every_point=dt_s is None and dV is None)
    sent = loop.run_to(n)
    t, e, i = (np.array([s[k] for s in sent], dtype=float) for k in range(3))
    return Recorded(t, e, i, loop.end or "done")
