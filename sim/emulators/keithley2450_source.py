"""The Keithley 2450's source acting on its cell, as a mixin of the emulator: the
programme the output regulates to (level and limit of the source function, or the
output-off state), the regime it is in (sourcing, or clamped at its limit), and the
switches between them, found from the cell's crossings instead of by ticking (see the
emulator's module docstring)."""

from __future__ import annotations

import math

from lipon_hw.sim.emulators.keithley2450_buffer import DEFAULT_BUFFERS, ReadingBuffer
from lipon_hw.sim.emulators.keithley2450_settings import CURRENT_RANGES_A, range_for

MAX_SWITCHES = 16  # regime changes handled per command, so a chattering cell cannot hang it
LEVEL_BOUNDS = {"CURR": (-1.05, 1.05, 0.0), "VOLT": (-210.0, 210.0, 0.0)}  # min, max, default
LIMIT_BOUNDS = {"CURR": (0.02, 210.0, 21.0), "VOLT": (1e-9, 1.05, 105e-6)}


def current_range_A(current_A: float) -> float:
    """The smallest 2450 current range that holds `current_A` (5 % over-range)."""
    return range_for(current_A, CURRENT_RANGES_A)


class SourceRegulation:
    """The source's programme and regime on `self.cell`, in the time `self._now`."""

    def _reset(self, off_mode: str) -> None:
        self.function, self.sense = "VOLT", "CURR"
        self.level = {f: LEVEL_BOUNDS[f][2] for f in LEVEL_BOUNDS}
        self.limit = {f: LIMIT_BOUNDS[f][2] for f in LIMIT_BOUNDS}
        self.off_mode = {"CURR": off_mode, "VOLT": off_mode}
        self.output_on = False
        self.buffers = {name: ReadingBuffer() for name in DEFAULT_BUFFERS}
        self._reset_settings()
        self._apply()

    def _programme(self) -> tuple[str, float, float] | None:
        """(function, level, limit) the output regulates the cell to now; None with the
        relay open or the other terminals selected (the cell is on the front ones)."""
        if self.settings["ROUT:TERM"] != "FRON":
            return None
        if self.output_on:
            function = self.function
            level, limit = self.level[function], self.limit[function]
            protection = self._protection_V()  # overvoltage protection clamps the output
            if protection is not None and function == "CURR":
                limit = min(limit, protection)
            elif protection is not None:
                level = max(-protection, min(protection, level))
            return function, level, limit
        mode = self.off_mode[self.function]
        if mode == "HIMP":
            return None
        if mode == "GUAR":
            return "CURR", 0.0, math.inf
        fraction = 0.1 if mode == "NORM" else 1.0
        return "VOLT", 0.0, fraction * self._present_current_range_A()

    def _present_current_range_A(self) -> float:
        """The source current range, or when sourcing voltage the range of its limit."""
        if self.function == "CURR":
            return self._range_in_use("SOUR", "CURR")
        return current_range_A(self.limit["VOLT"])

    def _apply(self) -> None:
        """Start regulating the present programme at the present time."""
        t, programme = self._now, self._programme()
        if programme is None:
            self._hold(t, "open", 0.0, "open")
            return
        function, level, limit = programme
        if function == "CURR":
            self.cell.set_control(t, "current", level)
            volts = self.cell.voltage_V(t)
            if abs(volts) > limit:
                self._hold(t, "voltage", math.copysign(limit, volts), "limit")
            else:
                self._hold(t, "current", level, "source")
        else:
            self.cell.set_control(t, "voltage", level)
            amps = self.cell.current_A(t)
            if abs(amps) > limit:
                self._hold(t, "current", math.copysign(limit, amps), "limit")
            else:
                self._hold(t, "voltage", level, "source")

    def _hold(self, t: float, mode: str, value: float, regime: str) -> None:
        self.cell.set_control(t, mode, value)
        self.regime, self._held = regime, (mode, value)
        self._switch_at = self._next_switch(t)

    def _next_switch(self, t: float) -> float | None:
        """When the cell will leave the present regime by itself, as far as it can tell."""
        programme = self._programme()
        if programme is None:
            return None
        function, level, limit = programme
        if function == "CURR" and self.regime == "source" and math.isfinite(limit):
            return self.cell.next_crossing(t, -limit, limit, None)
        if function == "VOLT" and self.regime == "limit":
            rising = self._held[1] > 0
            return self.cell.next_crossing(t, None if rising else level,
                                           level if rising else None, None)
        return None

    def _advance(self, now: float) -> None:
        """Take every regime change up to `now`, then check what crossings cannot predict."""
        for _ in range(MAX_SWITCHES):
            if self._switch_at is None or self._switch_at > now:
                break
            self._cross(self._switch_at)
        self._now = max(now, self._now)
        self._recheck()

    def _cross(self, t: float) -> None:
        function, level, limit = self._programme()
        if function == "CURR":  # a current source reached its voltage limit: clamp
            self._hold(t, "voltage", math.copysign(limit, self.cell.voltage_V(t)), "limit")
        else:  # a current-limited voltage source reached its level
            self._hold(t, "voltage", level, "source")

    def _recheck(self) -> None:
        programme = self._programme()
        if programme is None:
            return
        function, level, limit = programme
        amps = self.cell.current_A(self._now)
        if function == "VOLT" and self.regime == "source" and abs(amps) > limit:
            self._hold(self._now, "current", math.copysign(limit, amps), "limit")
        elif (function == "CURR" and self.regime == "limit" and amps * level > 0
              and abs(amps) > abs(level)):
            self._hold(self._now, "current", level, "source")

