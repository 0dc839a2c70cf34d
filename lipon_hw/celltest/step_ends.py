"""How a cell-test step ends: the outcome a channel acts on, the end conditions the host
judges from the samples (capacity passed, dV/dt, what the instrument's own end means) and
when it expects the end, for polling; a safety trip; what is left of a step a pause cut
short."""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, replace
from functools import reduce

import numpy as np

from lipon_hw.celltest import protocol as pr
from lipon_hw.column_rows import listed
from lipon_hw.errors import LiponError

MIN_POLL_S = 1.0


class ChannelTrip(LiponError):
    """A safety limit of one channel was crossed (`rule`: the interlock rule that tripped,
    or "safety" for the protocol's limits)."""

    def __init__(self, message: str, rule: str | None = "safety"):
        super().__init__(message)
        self.rule = rule


def alarm_stop(channel, exc: LiponError) -> None:
    """The error alarm of a channel stopped by a trip (a rule, a safety limit, the
    instrument) or a failure, stored as it stops; its cell is disconnected next (a cell
    that cannot be is an alarm of its own). None for a trip an alarm already told (a
    potentiostat-wide abort: one alarm for all its channels)."""
    if getattr(exc, "alarmed", False):
        return
    channel.store.add_alarm(channel.run_id, channel.env.now, "error",
                            f"channel {channel.number}", f"{exc}: the channel is stopped",
                            getattr(exc, "rule", None), "abort")


@dataclass
class StepOutcome:
    end: str  # the `until` key that ended the step, or "done"
    message: str = ""


class HostEnds:
    """The step's end conditions the host judges, and the time it expects the end."""

    def __init__(self, step: pr.PlannedStep, plan: pr.ChannelPlan, t0: float,
                 before: dict | None = None):
        p = step.params
        before = before or {"elapsed_s": 0.0, "q_Ah": 0.0}
        self.until = p.until
        self.t0 = t0
        self.elapsed_before = before["elapsed_s"]  # of this step, before an operator pause
        self.duration = None if p.until.duration_s is None else \
            max(p.until.duration_s - self.elapsed_before, MIN_POLL_S)
        self.capacity = p.until.capacity_Ah
        self.dvdt = p.until.dVdt_mV_h * 1e-3 / 3600 if p.until.dVdt_mV_h else None
        self.v_end = p.until.voltage_V
        self._q = before["q_Ah"]
        #: columns (times, currents, from the sample before them) whose charge `q` has not
        #: summed yet: a step without a capacity end needs it only if it is cut short
        self._owed: list[tuple[np.ndarray, np.ndarray]] = []
        self.last: tuple | None = None  # (t, V, I) of the last sample
        self.slope = 0.0  # dV/dt between the last two samples

    def take(self, rows: list[tuple], columns: tuple | None = None) -> StepOutcome | None:
        """The samples (rows, and their times, voltages and currents as columns if the
        caller has them) against the ends judged here; the step's outcome if one is
        reached. Without a capacity or dV/dt end, none is, and the columns of more than a
        few samples give the charge (summed when asked: `q`) and the slope with the same
        arithmetic as the rows, in the same order."""
        if columns is not None and len(columns[0]) > 8 and self.capacity is None and \
                self.dvdt is None:
            self._take_columns(*columns)
            return None
        q = self.q
        for t, v, i, *_ in (rows if columns is None else
                            zip(*map(listed, columns), strict=True)):
            if self.last is not None:
                t1, v1, i1 = self.last
                dt = t - t1
                q += 0.5 * (i + i1) * dt / 3600
                if dt > 0:
                    self.slope = (v - v1) / dt
                    if self.dvdt is not None and abs(self.slope) < self.dvdt and t - self.t0 > dt:
                        self.last = (t, v, i)
                        self._q = q
                        return StepOutcome("dVdt_mV_h")
            self.last = (t, v, i)
            if self.capacity is not None and abs(q) >= self.capacity:
                self._q = q
                key = "capacity_uAh" if self.until.capacity_uAh is not None else "capacity_mAh"
                return StepOutcome(key)
        self._q = q
        return None

    @property
    def q(self) -> float:
        """The charge the step has passed so far (Ah), the trapezoids summed in time order
        (the columns owed summed as the rows would be)."""
        for times, currents in self._owed:
            times, currents = listed(times), listed(currents)
            self._q = reduce(operator.add, [0.5 * (i + i1) * (t - t1) / 3600 for t, i, t1, i1
                                            in zip(times[1:], currents[1:], times, currents,
                                                   strict=False)], self._q)
        self._owed.clear()
        return self._q

    @q.setter
    def q(self, value: float) -> None:
        self._owed.clear()
        self._q = value

    def _take_columns(self, times: np.ndarray, volts: np.ndarray, currents: np.ndarray
                      ) -> None:
        if self.last is not None:
            times, volts, currents = (np.concatenate(([self.last[k]], c)) for k, c in
                                      enumerate((times, volts, currents)))
        self._owed.append((times, currents))
        for k in range(len(times) - 1, 0, -1):  # the slope of the last pair apart in time
            dt = float(times[k] - times[k - 1])
            if dt > 0:
                self.slope = float(volts[k] - volts[k - 1]) / dt
                break
        self.last = (float(times[-1]), float(volts[-1]), float(currents[-1]))

    def done(self, now: float) -> dict:
        """What the step has done so far (time and charge), for it to continue later."""
        end = self.last[0] if self.last else now
        return {"elapsed_s": self.elapsed_before + max(end - self.t0, 0.0), "q_Ah": self.q}

    def time_left(self, now: float) -> float:
        """How long until the nearest end, as far as the samples tell (for polling)."""
        left = min(self.voltage_time_left(now), self.duration_left(now))
        if self.last is not None and self.capacity is not None and self.last[2]:
            left = min(left, (self.capacity - abs(self.q)) * 3600 / abs(self.last[2]))
        return left

    def duration_left(self, now: float) -> float:
        """How long until the step's own run time ends and the instrument has had a moment
        to say so (inf without one)."""
        if self.duration is None:
            return math.inf
        return self.t0 + self.duration - now + MIN_POLL_S

    def voltage_time_left(self, now: float) -> float:
        """How long until the voltage reaches its end at the slope of the last two samples
        (inf if it is not heading there)."""
        if self.last is None or self.v_end is None or not self.slope:
            return math.inf
        t, v, _ = self.last
        to_end = (self.v_end - v) / self.slope
        return to_end - (now - t) if to_end > 0 else math.inf

    def instrument_end(self, reason: str | None, channel) -> StepOutcome:
        if reason in ("v_max", "v_min"):
            return StepOutcome("voltage_V")
        if reason == "i_min":
            return StepOutcome("current_A" if self.until.current_A is not None else "rate_C")
        if reason == "window":  # its last sample at the limit (past it trips the host)
            said = "" if self.last is None else (f": {self.last[1]:.3f} V, "
                                                 f"{self.last[2]:.3g} A at t = "
                                                 f"{self.last[0]:.0f} s")
            raise ChannelTrip(f"channel {channel.number}: the instrument stopped the step at "
                              f"its safety window{said}")
        if reason == "done":
            times = [k for k in ("time_s", "time_min", "time_h") if getattr(self.until, k)]
            return StepOutcome(times[0] if times else "done")
        raise ChannelTrip(f"channel {channel.number}: the instrument ended the step with "
                          f"{reason}", rule=None)


#: what a sample past each limit of the safety window is said as
_BREACHES = {"min_V": "{v:.3f} V is below min_V {limit:g} V",
             "max_V": "{v:.3f} V is above max_V {limit:g} V",
             "max_current_A": "|{i:.3g}| A is above max_current_A {limit:g} A"}


def check_safety(number: int, rows: list[tuple], limits: pr.Safety) -> None:
    """A sample outside the step's safety limits trips the channel (`Window.past`, the
    rule the instrument's script and the 2450's readings are judged by too)."""
    window = limits.window()
    for t, v, i, *_ in rows:
        which = window.past(v, i)
        if which is not None:
            said = _BREACHES[which].format(v=v, i=i, limit=getattr(window, which))
            raise ChannelTrip(f"channel {number}: {said} at t = {t:.0f} s")


def rest_of(technique, elapsed_s: float):
    """The technique with the time a paused step already ran taken off its run time."""
    if elapsed_s <= 0 or not hasattr(technique, "duration_s"):
        return technique
    return replace(technique, duration_s=max(technique.duration_s - elapsed_s, MIN_POLL_S))
