"""Techniques run on a Keithley 2450 timed by the host: a `SmuRun` sets the source for
its technique, takes one reading per poll, checks the technique's limits on it (a current
source at its voltage limit counts as reaching v_max), moves a CCCV to its voltage phase
and a sweep to its next level, and returns the reading if the record rule
(techniques.RecordGate) lets it out; a reading at a limit always goes out."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from lipon_hw.errors import InstrumentError, LiponError
from lipon_hw.readings import Sample
from lipon_hw.techniques import (
    CyclicSweep,
    LinearSweep,
    RecordGate,
    end_limits,
    kind_of,
    recording_of,
    sweep_legs,
)

if TYPE_CHECKING:
    from lipon_hw.drivers.keithley2450 import Keithley2450


def sweep_levels(tq: LinearSweep | CyclicSweep) -> list[float]:
    """The staircase of a sweep, leg by leg (techniques.sweep_legs), in steps of at most
    `step_V`, each leg's ends included once."""
    levels: list[float] = []
    for begin, end in sweep_legs(tq):
        steps = max(1, math.ceil(abs(end - begin) / tq.step_V - 1e-9))
        levels += [begin + (end - begin) * k / steps for k in range(1 if levels else 0, steps + 1)]
    return levels


class SmuRun:
    """One technique on the 2450, timed by the host: poll every `poll_interval_s`.

    Each `poll()` takes one reading; `finished` and `end_reason` ('v_max', 'v_min',
    'i_min', 'window', 'done', 'aborted', 'error') as for any `PotentiostatRun`. A refusal
    by the instrument ends the run with 'error' (kept in `error`); a lost link is raised.
    A technique's safety window is judged on every reading, recorded or not, as a
    MethodSCRIPT script judges it on every measurement: the reading past it goes out and
    ends the run, the output off.
    """

    channel = 1

    def __init__(self, smu: Keithley2450, technique):
        self.technique = technique
        self.finished = False
        self.error: InstrumentError | None = None
        self.last: Sample | None = None
        self._smu = smu
        self._reason: str | None = None
        self._gate = RecordGate(recording_of(technique))
        self._phase_t0 = 0.0
        self._levels: list[float] = []
        tq, self._control = technique, kind_of(technique).control
        self._limits = end_limits(tq)
        if self._control == "sweep":
            self._levels = sweep_levels(tq)
            self.poll_interval_s = tq.step_V / tq.rate_V_s
        else:
            self.poll_interval_s = tq.interval_s
        if self._control == "open":
            self._sourcing = "CURR"
            smu._source_current(0.0, None)
        elif self._control == "current":
            self._sourcing = "CURR"
            smu._source_current(tq.current_A, tq.v_max_V if tq.current_A > 0 else None)
        elif self._control == "current, then voltage":
            self._sourcing = "CURR"
            smu._source_current(tq.current_A, tq.voltage_V if tq.current_A > 0 else None)
        else:
            self._sourcing = "VOLT"
            level = self._levels[0] if self._levels else tq.voltage_V
            smu._source_voltage(level, None)
        self._phase = "cc" if self._control == "current, then voltage" else "main"
        self._step = 0
        first, _ = smu._output_and_first_reading(self._sourcing)
        self.last = first

    @property
    def end_reason(self) -> str | None:
        return self._reason if self.finished else None

    def poll(self) -> list[Sample]:
        """Take one reading; return it if the technique records it, else nothing."""
        if self.finished:
            return []
        try:
            sample, tripped = self._smu._reading(self._sourcing)
        except InstrumentError as exc:
            self.error = exc
            self._end("error")
            return []
        self.last = sample
        try:
            ending, at_limit = self._judge(sample, tripped)
        except InstrumentError as exc:  # refused the next setting: the reading still counts
            self.error = exc
            ending, at_limit = "error", True
        send = self._recorded(sample, force=at_limit)
        if ending is not None:
            self._end(ending)
        return [sample] if send else []

    # --- the technique's rules ---------------------------------------------------------
    def _judge(self, s: Sample, tripped: bool) -> tuple[str | None, bool]:
        """(the end reason this reading gives or None, whether it reached a limit, so that
        it goes out whatever the recording rule); moves a CCCV to its voltage phase and a
        sweep to its next level."""
        tq, control, volts = self.technique, self._control, s.E_V
        window = getattr(tq, "window", None)
        if window is not None and window.past(s.E_V, s.I_A) is not None:
            return "window", True  # every reading judged, recorded or not (Window)
        over = s.t_s - self._phase_t0 >= getattr(tq, "duration_s", math.inf) * (1 - 1e-12)
        if control == "current" and tripped and tq.current_A > 0:
            return "v_max", True  # at the hardware limit: v_max_V or the station ceiling
        if control == "current, then voltage" and self._phase == "cc":
            charging = tq.current_A > 0
            reached = (volts >= tq.voltage_V or tripped) if charging else volts <= tq.voltage_V
            if reached or over:
                self._smu._source_voltage(tq.voltage_V, abs(tq.current_A) or None)
                self._sourcing, self._phase, self._phase_t0 = "VOLT", "cv", s.t_s
            return None, reached
        if control == "sweep":
            self._step += 1
            if self._step == len(self._levels):
                return "done", False
            self._smu._set_level(self._levels[self._step])
            return None, False
        reason = self._limits.reached(s)
        if reason is not None:
            return reason, True
        return ("done" if over else None), False

    def _recorded(self, s: Sample, force: bool) -> bool:
        """A reading at a limit always goes out (and leaves the rule's thresholds where
        they are, as the script's limit block does); any other goes out if the technique's
        record rule (techniques.RecordGate) says so."""
        return force or self._gate.offer(s.t_s, s.E_V, s.I_A)

    def _end(self, reason: str, switch_off: bool = True) -> None:
        self.finished, self._reason = True, reason
        if switch_off:
            try:
                self._smu.output(False)
            except LiponError:
                if reason != "error":
                    raise
