"""SQC-310 emulator: the controller's run state and its rate loop, closed on the evaporator.

A layer (``U2``, or ``U0``: the emulated process has one layer, layer 1, whose film is its
D 5 field) runs the manual's phases (PN 074-550-P1B §5.3.22 numbers them): Ramp 1 / Soak 1 /
Ramp 2 / Soak 2 at the film's A3 powers and times; then, if the film has a shutter delay
(A4 1), rate control with the shutter closed until the rate has stayed within the capture band
(A4 2, % of setpoint) for the shutter-delay time; then Deposit with the shutter open and the
thickness zeroed, until the layer's final thickness (D 2; 0 = none), where the shutter closes
at the 0.1 s step nearest the crossing and the output goes to the film's idle power over its
idle ramp (Idle Ramp, then Stop Layer). ``U3`` stops the layer and ``U1`` the process (output
0, shutter closed); a crystal failure stops the layer in Crystal Fail. Manual power
(``S1 p``) holds an output between layers.

The loop runs every sub-step of the tool (0.1 s), attached with `attach_controller` when the
first layer starts, and is active only while a layer is measuring. It measures the crystal's
rate through the shared sensor measurement (with its seeded noise), filters it with the
manual's Filter Alpha (RATE_FILTER_ALPHA), and runs a PID on the relative rate error (see
`lipon_hw.drivers.inficon_sqc310`): derivative on the measurement, integral clamped to 0..max
power (anti-windup), bumpless entry from the soak power. Output % drives the supply current
as output/100 × the full scale the emulator was wired with.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lipon_hw.drivers.inficon_sqc310 import (
    CAPTURE,
    CRYSTAL_FAIL,
    D_TERM,
    DEPOSIT,
    I_TERM,
    IDLE_POWER,
    IDLE_RAMP,
    IDLE_RAMP_PHASE,
    LAYER_FILM,
    LAYER_FINAL,
    LAYER_MAX_POWER,
    LAYER_RATE,
    MANUAL_POWER,
    P_TERM,
    RAMP1,
    RAMP1_POWER,
    RAMP1_TIME,
    RAMP2,
    RAMP2_POWER,
    RAMP2_TIME,
    SHUTTER_DELAY,
    SHUTTER_DELAY_PHASE,
    SOAK1,
    SOAK1_TIME,
    SOAK2,
    SOAK2_TIME,
    STOP_LAYER,
    STOPPED,
    Param,
)
from lipon_hw.sim.emulators.inficon_framing import WrongMode
from lipon_hw.sim.emulators.inficon_sensor import CrystalSensor, FilmConstants
from lipon_hw.sim.emulators.inficon_sqc310_memory import ParameterMemory

RATE_FILTER_ALPHA = 0.1  # Filter Alpha (front-panel setting): weight of the newest reading
LAYER_RUNNING = {RAMP1, SOAK1, RAMP2, SOAK2, SHUTTER_DELAY_PHASE, DEPOSIT, IDLE_RAMP_PHASE}
MEASURING = LAYER_RUNNING | {MANUAL_POWER}


@dataclass
class Loop:
    """The run state and the control loop's memory."""

    phase: int = STOPPED
    layer: int = 1
    film: int = 1  # film of the running (or last) layer: its material converts mass to Å
    phase_t0: float = 0.0
    process_t0: float = 0.0
    output_pct: float = 0.0
    ramp_from_pct: float = 0.0
    manual_pct: float | None = None
    integral_pct: float = 0.0
    rate_A_s: float = 0.0  # filtered
    last_rate_A_s: float = 0.0
    capture_t0: float | None = None


def _clamp(value: float, low: float, high: float) -> float:
    return min(high, max(low, value))


def _ramp(start: float, end: float, elapsed: float, duration: float) -> float:
    return end if duration <= 0 else start + (end - start) * min(1.0, elapsed / duration)


@dataclass
class RateLoop:
    """Run state, phases and PID of output 1, reading the crystal on sensor input
    `sensor_number` and driving the tool's supply; `source_shutter(open)` moves the source's
    shutter relay."""

    tool: Any
    memory: ParameterMemory
    sensor: CrystalSensor
    sensor_number: int
    max_current_A: float
    source_shutter: Callable[[bool], None]
    loop: Loop = field(default_factory=Loop)
    _attached: bool = field(default=False, init=False)
    layers_started: int = field(default=0, init=False)  # tests count repeated starts

    # --- what the instrument reports -------------------------------------------------------
    def now(self) -> float:
        return self.tool.world.now

    def measuring(self) -> bool:
        return self.loop.phase in MEASURING

    def layer_running(self) -> bool:
        return self.loop.phase in LAYER_RUNNING

    def film_constants(self) -> FilmConstants:
        """What the running (or last) layer's film converts with."""
        return self.memory.constants(self.loop.film, self.sensor_number)

    def rate_A_s(self) -> float:
        """The filtered measurement while measuring; between layers the true rate."""
        if self.measuring():
            return self.loop.rate_A_s
        crystal = self.sensor.live()
        return self.sensor.rate_A_s(self.film_constants(), crystal) if crystal else 0.0

    def thickness_A(self) -> float:
        return self.sensor.thickness_A(self.film_constants())

    def deviation_pct(self) -> float:
        setpoint = self._layer_value(LAYER_RATE)
        if setpoint <= 0:
            return 100.0
        return 100 * (setpoint - self.rate_A_s()) / setpoint

    def phase_time_s(self) -> float:
        return 0.0 if self.loop.phase == STOPPED else self.now() - self.loop.phase_t0

    def process_time_s(self) -> int:
        return 0 if self.loop.phase == STOPPED else int(self.now() - self.loop.process_t0)

    def _film_value(self, param: Param) -> float:
        return self.memory.value(param, self.loop.film)

    def _layer_value(self, param: Param) -> float:
        return self.memory.value(param, self.loop.layer)

    # --- the control loop (runs inside the tool's step) -------------------------------------
    def attach(self) -> None:
        if not self._attached:
            self.tool.attach_controller(self._control, active=self.measuring)
            self._attached = True

    def _control(self, t: float, dt: float) -> None:
        if self.loop.phase not in MEASURING:
            return
        crystal = self.tool.crystal()
        if crystal["failed"]:
            self.stop(CRYSTAL_FAIL, t)
            return
        self._measure(crystal)
        while self._phase_step(t, dt, crystal):
            pass
        self._drive()

    def _measure(self, crystal: dict) -> None:
        loop = self.loop
        reading = self.sensor.measured_rate_A_s(self.film_constants(), crystal)
        loop.last_rate_A_s = loop.rate_A_s
        loop.rate_A_s += RATE_FILTER_ALPHA * (reading - loop.rate_A_s)

    def _phase_step(self, t: float, dt: float, crystal: dict) -> bool:
        """Run the current phase for this step; True if it ended and the next one must run."""
        loop = self.loop
        elapsed = t - loop.phase_t0
        if loop.phase in (RAMP1, RAMP2):
            power, duration = ((RAMP1_POWER, RAMP1_TIME) if loop.phase == RAMP1
                               else (RAMP2_POWER, RAMP2_TIME))
            target, time_s = self._film_value(power), self._film_value(duration)
            loop.output_pct = _ramp(loop.ramp_from_pct, target, elapsed, time_s)
            return self._next_after(time_s, elapsed, SOAK1 if loop.phase == RAMP1 else SOAK2)
        if loop.phase in (SOAK1, SOAK2):
            return self._soak(elapsed)
        if loop.phase == SHUTTER_DELAY_PHASE:
            self._pid(dt)
            self._check_capture(t)
            return False
        if loop.phase == DEPOSIT:
            self._pid(dt)
            return self._check_final(t, dt, crystal)
        if loop.phase == IDLE_RAMP_PHASE:
            time_s = self._film_value(IDLE_RAMP)
            loop.output_pct = _ramp(loop.ramp_from_pct, self._film_value(IDLE_POWER), elapsed,
                                    time_s)
            if elapsed >= time_s:
                self._enter(STOP_LAYER, loop.phase_t0 + time_s)
            return False
        if loop.phase == MANUAL_POWER:
            loop.output_pct = loop.manual_pct or 0.0
        return False

    def _next_after(self, duration: float, elapsed: float, phase: int) -> bool:
        if elapsed < duration:
            return False
        self.loop.ramp_from_pct = self.loop.output_pct
        self._enter(phase, self.loop.phase_t0 + duration)
        return True

    def _soak(self, elapsed: float) -> bool:
        loop = self.loop
        soak1 = loop.phase == SOAK1
        loop.output_pct = self._film_value(RAMP1_POWER if soak1 else RAMP2_POWER)
        duration = self._film_value(SOAK1_TIME if soak1 else SOAK2_TIME)
        if soak1:
            return self._next_after(duration, elapsed, RAMP2)
        if elapsed < duration:
            return False
        start = loop.phase_t0 + duration
        self._start_control()
        if self._film_value(SHUTTER_DELAY) > 0:
            self._enter(SHUTTER_DELAY_PHASE, start)
        else:
            self._open_shutter(start)
        return True

    def _start_control(self) -> None:
        """Bumpless entry: the integral takes over the power the soak left."""
        loop = self.loop
        kp = self._film_value(P_TERM)
        loop.integral_pct = _clamp(loop.output_pct - kp * self._error(), 0.0, self._max_power())
        loop.capture_t0 = None

    def _error(self) -> float:
        setpoint = self._layer_value(LAYER_RATE)
        return (setpoint - self.loop.rate_A_s) / setpoint

    def _max_power(self) -> float:
        return self._layer_value(LAYER_MAX_POWER)

    def _pid(self, dt: float) -> None:
        loop = self.loop
        kp, ti, td = (self._film_value(p) for p in (P_TERM, I_TERM, D_TERM))
        error, max_power = self._error(), self._max_power()
        if ti > 0:
            loop.integral_pct = _clamp(loop.integral_pct + kp * error * dt / ti, 0.0, max_power)
        slope = (loop.rate_A_s - loop.last_rate_A_s) / dt if dt > 0 else 0.0
        derivative = -kp * td * slope / self._layer_value(LAYER_RATE)
        loop.output_pct = _clamp(loop.integral_pct + kp * error + derivative, 0.0, max_power)

    def _check_capture(self, t: float) -> None:
        loop = self.loop
        if abs(self._error()) * 100 > self._film_value(CAPTURE):
            loop.capture_t0 = None
        elif loop.capture_t0 is None:
            loop.capture_t0 = t
        elif t - loop.capture_t0 >= self._film_value(SHUTTER_DELAY):
            self._open_shutter(t)

    def _open_shutter(self, t: float) -> None:
        self.sensor.zero()
        self.source_shutter(True)
        self._enter(DEPOSIT, t)

    def _check_final(self, t: float, dt: float, crystal: dict) -> bool:
        """End the deposit at the step boundary nearest the final-thickness crossing."""
        final_A = self._layer_value(LAYER_FINAL) * 1000
        if final_A <= 0:
            return False
        remaining_A = final_A - self.sensor.thickness_from(self.film_constants(), crystal)
        if remaining_A > 0.5 * max(self.loop.rate_A_s, 0.0) * dt:
            return False
        self._end_deposit(t)
        return True

    def _end_deposit(self, t: float) -> None:
        self.source_shutter(False)
        self.loop.ramp_from_pct = self.loop.output_pct
        self._enter(IDLE_RAMP_PHASE, t)

    def _enter(self, phase: int, t0: float) -> None:
        self.loop.phase = phase
        self.loop.phase_t0 = t0

    def _drive(self) -> None:
        self.tool.set_supply_current_A(self.loop.output_pct / 100 * self.max_current_A)

    # --- run state commands -----------------------------------------------------------------
    def start_layer(self) -> None:
        loop = self.loop
        if loop.phase in LAYER_RUNNING:
            raise WrongMode("a layer is running")
        if self.memory.layer(loop.layer)[LAYER_RATE.number] <= 0:
            raise WrongMode("the layer has no rate setpoint")
        if self.sensor.live() is None:
            raise WrongMode("the crystal has failed")
        now = self.now()
        loop.film = int(self.memory.layer(loop.layer)[LAYER_FILM.number])
        loop.rate_A_s = loop.last_rate_A_s = self.rate_A_s()
        loop.manual_pct, loop.process_t0 = None, now
        loop.ramp_from_pct = loop.output_pct
        self.layers_started += 1
        self._enter(RAMP1, now)
        self.attach()
        self.tool.set_supply_output(True)
        self._drive()

    def stop(self, phase: int, t: float) -> None:
        self.loop.output_pct, self.loop.manual_pct = 0.0, None
        self.source_shutter(False)
        self._enter(phase, t)
        self._drive()

    def stop_process(self) -> None:
        self.stop(STOPPED, self.now())

    def stop_layer(self) -> None:
        if self.loop.phase in LAYER_RUNNING:
            self.stop(STOP_LAYER, self.now())

    def force_final(self) -> None:
        if self.loop.phase != DEPOSIT:
            raise WrongMode("not depositing")
        self._end_deposit(self.now())

    def zero_time(self) -> None:
        self.loop.process_t0 = self.now()

    def manual(self, power_pct: float) -> None:
        if self.loop.phase in LAYER_RUNNING:
            raise WrongMode("a layer is running")
        self.loop.manual_pct = self.loop.output_pct = power_pct
        if self.loop.phase != MANUAL_POWER:
            self.loop.rate_A_s = self.loop.last_rate_A_s = self.rate_A_s()
            self._enter(MANUAL_POWER, self.now())
        self.attach()
        self.tool.set_supply_output(True)
        self._drive()

    def end_manual(self) -> None:
        if self.loop.phase == MANUAL_POWER:
            self.stop(STOPPED, self.now())
