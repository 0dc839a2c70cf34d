"""The record points of a measurement loop under a constant control, found in bulk.

A potentiostat measures every `interval` and a loop body decides what to send: a limit
(E ≥ v_max, E ≤ v_min, −i_min < I < i_min, or I out of a safety window's band) sends
the sample and ends the loop;
otherwise the Δt/ΔV/ΔI rule sends it when t ≥ t_last + dt or E ≥ E_last + dV or
E ≤ E_last − dV or I ≥ I_last + dI or I ≤ I_last − dI, in the script's own float
arithmetic: the rule and its thresholds are a `RecordGate` (lipon_hw/techniques.py),
here searched for over a stretch of readings instead of asked reading by reading.
`RecordLoop` reads the cell on the measurement grid a stretch at a time
(`readings_on_grid`: the same numbers as reading it sample by sample) and applies those
tests over plain lists, so a sample costs a few comparisons instead of an interpreted
body. The MethodSCRIPT emulator runs the driver's loops with it; `record_constant_current`
is the same thing without an instrument.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from dataclasses import dataclass

import numpy as np

from lipon_hw.errors import InputError
from lipon_hw.techniques import RecordGate, Recording

FIRST_STRETCH, STRETCH = 256, 4096  # measurements read from the cell at once
INF = math.inf


@dataclass(frozen=True)
class Recorded:
    """The samples a loop sent: t_s is the loop's timer (from its start), and why it ended:
    'v_max', 'v_min' or 'done' (its run time ran out). end_t_s is the timer at the last
    measurement, where the cell waits: the last sample sent unless the run time ran
    out between two samples."""

    t_s: np.ndarray
    E_V: np.ndarray
    I_A: np.ndarray
    end_reason: str
    end_t_s: float


class RecordLoop:
    """A measurement loop of n samples at t0 + k·interval (k = 1 … n) on a cell under a
    constant control, with limits and a Δt/ΔV/ΔI rule (None: no such rule; every_point
    sends every sample). Limits are (">=" | "<=", level, reason) on E, or ("in", (lo, hi),
    reason) on I (lo < I < hi: a current cutoff) or ("out", (lo, hi), reason) on I (I ≤ lo
    or I ≥ hi: a safety window's current), tested in their order. `timer0` is when
    the loop's timer started; tn, eh, el, ih, il are the rule's thresholds when the loop
    starts (the driver's scripts start them at 0, so that the first sample is always
    sent). `run_to(k)` measures up to sample k."""

    def __init__(self, cell, t0: float, interval: float, n: int, timer0: float,
                 limits: list[tuple[str, object, str]], dt: float | None, dV: float | None,
                 tn: float = 0.0, eh: float = 0.0, el: float = 0.0, every_point: bool = False,
                 dI: float | None = None, ih: float = 0.0, il: float = 0.0):
        self.cell, self.t0, self.interval, self.n, self.timer0 = cell, t0, interval, n, timer0
        self.limits = limits  # tested in this order
        self.dt, self.dV, self.dI = dt, dV, dI
        rule = Recording() if every_point else Recording(dt, dV, dI)
        self.gate = RecordGate(rule, tn, eh, el, ih, il)  # the rule and its thresholds
        if rule.every_point and not every_point:  # no rule: only a limit sends
            self.gate.next_t = INF
        # a NaN limit never fires (E >= NaN is false)
        self.v_hi = min([x for op, x, _ in limits if op == ">=" and x == x], default=INF)
        self.v_lo = max([x for op, x, _ in limits if op == "<=" and x == x], default=-INF)
        self.i_bands = [x for op, x, _ in limits if op == "in"]
        self.i_outs = [x for op, x, _ in limits if op == "out"]
        self.follows_current = dI is not None or bool(self.i_bands) or bool(self.i_outs)
        self.nan_thresholds = any(x is not None and x != x for x in (
            *self.thresholds, dt, dV, dI,
            *(x for band in (*self.i_bands, *self.i_outs) for x in band)))
        self._ahead: tuple | None = None  # readings taken ahead (see _read_ahead)
        self._stretch = FIRST_STRETCH
        self.k = 0  # the last sample measured
        self.last: tuple[float, float, float] | None = None  # its (timer, E, I)
        self.end: str | None = None

    @property
    def thresholds(self) -> tuple[float, float, float, float, float]:
        """The rule's thresholds now: next t, E high, E low, I high, I low (the script's
        tn, eh, el, ih, il)."""
        g = self.gate
        return g.next_t, g.e_high, g.e_low, g.i_high, g.i_low

    def run_to(self, k_stop: int) -> list[tuple[float, float, float, str | None]]:
        """Measure samples k+1 … min(k_stop, n), stopping at a limit; return the samples
        sent, (timer, E, I, the limit that ended the loop or None). The cell is left at
        the last sample measured once the loop has ended. Readings are taken a stretch
        ahead and kept, so that frequent short polls cost little; a cell whose
        trajectory has changed since (its epoch) is read again."""
        k_stop = min(k_stop, self.n)
        sent: list[tuple[float, float, float, str | None]] = []
        while self.k < k_stop and self.end is None:
            ahead = self._ahead
            if ahead is None or ahead[4] != self.cell.trajectory_epoch or \
                    not ahead[0] <= self.k + 1 < ahead[0] + len(ahead[1]):
                ahead = self._read_ahead()
            first = ahead[0]
            timer, volts, amps = ahead[1], ahead[2], ahead[3]
            j = self._scan(timer, volts, amps, self.k + 1 - first,
                           min(k_stop - first + 1, len(volts)), ahead[5], ahead[6], sent)
            self.k = first + j
            self.last = (timer[j], volts[j], amps[j])
        if self.end is None and self.k >= self.n:
            self.end = "done"
        if self.end is not None and self.last is not None:
            # the cell waits at the last sample; while the loop runs it may lag behind it
            # (reading it later is the same), which saves a step per poll
            self.cell.voltage_V(self.t0 + self.k * self.interval)
        return sent

    def next_sample(self) -> int:
        """The first sample after k that the rules may send (or a limit end), as far as
        the readings taken ahead tell: none before it can, so a caller may sleep until
        then. k + 1 when nothing has been read ahead."""
        ahead = self._ahead
        if ahead is None or ahead[4] != self.cell.trajectory_epoch or \
                not ahead[0] <= self.k + 1 < ahead[0] + len(ahead[1]):
            return self.k + 1
        j, m = self.k + 1 - ahead[0], len(ahead[1])
        return ahead[0] + self._first_firing(ahead[1], ahead[2], ahead[3], j, m, ahead[5],
                                             ahead[6], *self.thresholds)

    def _first_firing(self, timer, volts, amps, j, m, plain, runs, tn, eh, el, ih, il) -> int:
        """The first reading from j on at which a limit or the rule fires (m if none)."""
        hi = eh if eh < self.v_hi else self.v_hi  # a NaN threshold never fires
        lo = el if el > self.v_lo else self.v_lo
        k = bisect_left(timer, tn, j, m)  # the timer only grows
        if plain:
            return self._plain_first(volts, amps, j, k, lo, hi, ih, il)
        k = _leaves(volts, runs[0], j, k, lo, hi)
        return self._current_first(amps, runs[1], j, k, ih, il) if self.follows_current else k

    def _plain_first(self, volts, amps, j, k, lo, hi, ih, il) -> int:
        """_first_firing read by read, with the script's own tests (NaN passes none)."""
        current, bands, outs = self.dI is not None, self.i_bands, self.i_outs
        for x in range(j, k):
            v = volts[x]
            if v >= hi or v <= lo:
                return x
            if current or bands or outs:
                i = amps[x]
                if current and (i >= ih or i <= il):
                    return x
                for band_lo, band_hi in bands:
                    if band_lo < i < band_hi:
                        return x
                for out_lo, out_hi in outs:
                    if i <= out_lo or i >= out_hi:
                        return x
        return k

    def _current_first(self, amps, runs, j, k, ih, il) -> int:
        """The first reading in [j, k) where I leaves (il, ih) or enters a cutoff band or
        leaves a window's."""
        if self.dI is not None:
            k = _leaves(amps, runs, j, k, il, ih)
        for band_lo, band_hi in self.i_bands:
            k = _enters(amps, runs, j, k, band_lo, band_hi)
        for out_lo, out_hi in self.i_outs:
            k = _leaves(amps, runs, j, k, out_lo, out_hi)
        return k

    def _read_ahead(self) -> tuple:
        """The readings from sample k+1 on, a stretch ahead (growing while the loop runs),
        as (first sample, timers, volts, amps, cell epoch, has NaN, runs). Without NaN,
        runs = (runs of volts, runs of amps or None), each (ends of the rising runs, ends
        of the falling runs, the values negated): a run of readings that never falls (or
        never rises) is searched by bisection."""
        k1, t0, interval = self.k + 1, self.t0, self.interval
        volts, amps = self.cell.readings_on_grid(t0, interval, k1,
                                                 min(self.n, k1 + self._stretch - 1))
        self._stretch = min(2 * self._stretch, STRETCH)
        m = len(volts)
        timer = ((t0 + np.arange(k1, k1 + m, dtype=float) * interval) - self.timer0).tolist()
        plain = self.nan_thresholds or bool(np.isnan(volts).any()) or (
            self.follows_current and bool(np.isnan(amps).any()))
        runs = None
        if not plain:
            runs = (_runs(volts), _runs(amps) if self.follows_current else None)
        self._ahead = (k1, timer, volts.tolist(), amps.tolist(), self.cell.trajectory_epoch,
                       plain, runs)
        return self._ahead

    def _scan(self, timer, volts, amps, j: int, m: int, plain: bool, runs, sent) -> int:
        """Apply the body's tests to readings j … m−1; the index of the last one used."""
        if not plain and not self.follows_current:
            return self._scan_volts(timer, volts, amps, j, m, runs[0], sent)
        gate = self.gate  # the rule: whether a reading goes out, and its thresholds after
        tn, eh, el, ih, il = self.thresholds
        v_hi, v_lo, follows_current = self.v_hi, self.v_lo, self.follows_current
        v_runs, i_runs = runs if runs is not None else (None, None)
        while j < m:  # the first reading the gate lets out (or a limit), searched for
            hi = eh if eh < v_hi else v_hi
            lo = el if el > v_lo else v_lo
            k = bisect_left(timer, tn, j, m)
            if plain:
                k = self._plain_first(volts, amps, j, k, lo, hi, ih, il)
            else:
                k = _leaves(volts, v_runs, j, k, lo, hi)
                if follows_current:
                    k = self._current_first(amps, i_runs, j, k, ih, il)
            if k >= m:
                break
            t, e, i = timer[k], volts[k], amps[k]
            for op, level, reason in self.limits:
                if (e >= level) if op == ">=" else (e <= level) if op == "<=" else \
                        level[0] < i < level[1] if op == "in" else \
                        (i <= level[0] or i >= level[1]):
                    sent.append((t, e, i, reason))
                    self.end = reason
                    return k
            sent.append((t, e, i, None))
            gate.sent(t, e, i)
            tn, eh, el, ih, il = gate.next_t, gate.e_high, gate.e_low, gate.i_high, gate.i_low
            j = k + 1
        return m - 1

    def _scan_volts(self, timer, volts, amps, j: int, m: int, v_runs, sent) -> int:
        """_scan where only E and the timer matter (limits on E alone, no ΔI rule) and no
        reading is NaN: the gate's thresholds kept in locals and moved as `sent` moves
        them (t + dt_s, E ± dV), the limits tested against their nearest levels first."""
        gate = self.gate
        tn, eh, el = gate.next_t, gate.e_high, gate.e_low
        dt, dV = gate.dt_s, gate.dV
        v_hi, v_lo = self.v_hi, self.v_lo
        try:
            while j < m:
                k = bisect_left(timer, tn, j, m)
                k = _leaves(volts, v_runs, j, k, el if el > v_lo else v_lo,
                            eh if eh < v_hi else v_hi)
                if k >= m:
                    break
                t, e = timer[k], volts[k]
                if e >= v_hi or e <= v_lo:  # a limit fires: the first in their order
                    i = amps[k]
                    for op, level, reason in self.limits:
                        if (e >= level) if op == ">=" else (e <= level):
                            sent.append((t, e, i, reason))
                            self.end = reason
                            return k
                sent.append((t, e, amps[k], None))
                if dt is not None:
                    tn = t + dt
                if dV is not None:
                    eh, el = e + dV, e - dV
                j = k + 1
            return m - 1
        finally:
            gate.next_t, gate.e_high, gate.e_low = tn, eh, el


def _runs(values: np.ndarray) -> tuple[list[int], list[int], list[float]]:
    """(ends of the runs that never fall, ends of the runs that never rise, −values): a
    run ends where the next reading goes the other way, or at the last reading."""
    steps, last = np.diff(values), len(values) - 1
    return (np.flatnonzero(steps < 0).tolist() + [last],
            np.flatnonzero(steps > 0).tolist() + [last], (-values).tolist())


def _leaves(values, runs, x: int, k: int, lo: float, hi: float) -> int:
    """The first reading in [x, k) outside (lo, hi), else k (no NaN about): along a run
    that never falls only hi can be reached after its first reading, and bisection finds
    where; likewise lo along a run that never rises."""
    rising_ends, falling_ends, negated = runs
    while x < k:
        if not lo < values[x] < hi:
            return x
        end = rising_ends[bisect_left(rising_ends, x)]  # values[x … end] never fall
        if end > x:
            end = min(end + 1, k)
            y = bisect_left(values, hi, x + 1, end)
        else:  # values[x+1] < values[x]: a run that never rises
            end = min(falling_ends[bisect_left(falling_ends, x)] + 1, k)
            y = bisect_left(negated, -lo, x + 1, end)
        if y < end:
            return y
        x = end
    return k


def _enters(values, runs, x: int, k: int, lo: float, hi: float) -> int:
    """The first reading in [x, k) inside (lo, hi), else k (no NaN about): along a run
    that never falls, the first reading above lo is the only candidate (those after it
    are no lower), found by bisection; likewise below hi along a run that never rises."""
    rising_ends, falling_ends, negated = runs
    while x < k:
        v = values[x]
        if lo < v < hi:
            return x
        end = rising_ends[bisect_left(rising_ends, x)]  # values[x … end] never fall
        if end > x:
            end = min(end + 1, k)
            y = bisect_right(values, lo, x + 1, end) if v <= lo else end
        else:  # a run that never rises
            end = min(falling_ends[bisect_left(falling_ends, x)] + 1, k)
            y = bisect_right(negated, -hi, x + 1, end) if v >= hi else end
        if y < end and lo < values[y] < hi:
            return y
        x = end
    return k


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
    t, e, i = (np.array([x[k] for x in sent], dtype=float) for k in range(3))
    return Recorded(t, e, i, loop.end or "done", loop.last[0])
