"""INFICON SQC-310 emulator: the controller's packets, and its rate loop closed on the evaporator.

Wiring (constructor settings): the tool's crystal is on sensor input `sensor`; output 1 drives
the evaporator's source supply by analog programming, so output % sets the supply current
to output/100 × `max_current_A` (default: the supply's full scale) — the sim models the
supply as the controller's slave, its output enabled when a layer starts; relay
`shutter_relay` is wired to the substrate shutter and is source 1's shutter relay (HB1 3).
Sensors 2-4 have no crystal and outputs 2-4 drive nothing (K1 reports them as -1).

A layer (``U2``, or ``U0``: the emulated process has one layer, layer 1, whose film is its
D 5 field) runs the manual's phases: Ramp 1 / Soak 1 / Ramp 2 / Soak 2 at the film's A3
powers and times; then, if the film has a shutter delay (A4 1), rate control with the shutter
closed until the rate has stayed within the capture band (A4 2, % of setpoint) for the
shutter-delay time; then Deposit with the shutter open and the thickness zeroed, until the
layer's final thickness (D 2; 0 = none), where the shutter closes at the 0.1 s step nearest
the crossing and the output goes to the film's idle power over its idle ramp (Idle Ramp, then
Stop Layer). ``U3`` stops the layer and ``U1`` the process (output 0, shutter closed); a
crystal failure stops the layer in Crystal Fail.

The loop runs every sub-step of the tool (0.1 s), attached with `attach_controller` when the
first layer starts, and is active only while a layer is measuring. It measures the crystal's
rate with the film's material density and toolings plus seeded noise of RATE_NOISE_A_S,
filters it with the manual's Filter Alpha (RATE_FILTER_ALPHA), and runs a PID on the
relative rate error (see `lipon_hw.drivers.inficon_sqc310`): derivative on the measurement,
integral clamped to 0..max power (anti-windup), bumpless entry from the soak power. Readings
between layers are computed on demand, without noise. Thickness follows the Z-match equation
between the frequency at the last zero and now, relative to the crystal's fundamental, with
the material's density and Z-ratio, times film and crystal tooling.

Instrument memory (films, materials, layers, system, sensor/source parameters, relays) and
the loop (phase, PID integral, filter, zero frequency) are on this object and in
`snapshot()` / `restore()`. Assumptions: a packet with a bad CRC is answered with status 'F';
GE on a relay a source controls is refused ('D'); manual power (``S1 p``) is only accepted
between layers ('E' otherwise); run-state codes other than 0-3, 5, 32, 33 are refused ('D').
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from lipon_hw.drivers.inficon_sqc310 import (
    CAPTURE,
    CHANNELS,
    CRYSTAL_FAIL,
    CRYSTAL_TOOLING,
    D_TERM,
    DEPOSIT,
    FILM_FIELDS,
    FILM_MATERIAL,
    FILM_TOOLING,
    FILMS,
    I_TERM,
    IDLE_POWER,
    IDLE_RAMP,
    IDLE_RAMP_PHASE,
    LAYER_FIELDS,
    LAYER_FILM,
    LAYER_FINAL,
    LAYER_MAX_POWER,
    LAYER_RATE,
    LAYERS,
    MANUAL_POWER,
    MATERIAL_DENSITY,
    MATERIAL_NAME,
    MATERIAL_Z,
    MATERIALS,
    P_TERM,
    RAMP1,
    RAMP1_POWER,
    RAMP1_TIME,
    RAMP2,
    RAMP2_POWER,
    RAMP2_TIME,
    RELAYS,
    SENSOR_FIELDS,
    SHUTTER_DELAY,
    SHUTTER_DELAY_PHASE,
    SOAK1,
    SOAK1_TIME,
    SOAK2,
    SOAK2_TIME,
    SOURCE_SHUTTER_RELAY,
    STATUS_BAD_CRC,
    STATUS_WRONG_MODE,
    STOP_LAYER,
    STOPPED,
    SYSTEM_FIELDS,
    Param,
)
from lipon_hw.drivers.inficon_sqm160 import (
    STATUS_OK,
    encode_reply,
)
from lipon_hw.errors import InputError
from lipon_hw.sim.emulator import Emulator
from lipon_hw.sim.emulators.inficon_framing import BAD_CRC, next_host_packet
from lipon_hw.sim.physics import zmatch_thickness_A

FIRMWARE = "SQC-310 Ver 6.01"  # the manual's example answer to '@'
RATE_NOISE_A_S = 0.05  # assumption: scatter of one rate measurement
RATE_FILTER_ALPHA = 0.1  # Filter Alpha (front-panel setting): weight of the newest reading
OUTPUT = 1  # the output wired to the evaporator supply
STATUS_INVALID_COMMAND = b"C"
STATUS_BAD_DATA = b"D"
#: B fields: 1 period, 2 system tooling, 3/4/12/13 crystal tooling 1-4 (%), 5 simulate,
#: 6/7 min/max frequency (kHz, assumption), 8-11 scale 1-4
SYSTEM_DEFAULTS = {1: 25, 2: 100, 3: 100, 4: 100, 5: 0, 6: 5000, 7: 6000, 8: 100, 9: 100,
                   10: 100, 11: 100, 12: 100, 13: 100}
CRYSTAL_TOOLING_FIELDS = {1: 3, 2: 4, 3: 12, 4: 13}  # sensor -> B field
LAYER_RUNNING = {RAMP1, SOAK1, RAMP2, SOAK2, SHUTTER_DELAY_PHASE, DEPOSIT, IDLE_RAMP_PHASE}
MEASURING = LAYER_RUNNING | {MANUAL_POWER}
GET_INDEXED = re.compile(r"(\d+)\?((?: \d+)+) ?")
SET_INDEXED = re.compile(r"(\d+) (.+)")
NAME_FIELDS = {("A1", 1), ("F", MATERIAL_NAME)}


class WrongMode(Exception):
    """The command is valid but not now (status 'E')."""


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
    zero_Hz: float | None = None
    held_A: float = 0.0



def _clamp(value: float, low: float, high: float) -> float:
    return min(high, max(low, value))


def _ramp(start: float, end: float, elapsed: float, duration: float) -> float:
    return end if duration <= 0 else start + (end - start) * min(1.0, elapsed / duration)


class SQC310Emulator(Emulator):
    model = "INFICON SQC-310"

    def __init__(self, name: str, tool, sensor: int = 1, shutter_relay: int = 1,
                 max_current_A: float | None = None):
        super().__init__(name)
        if not 1 <= sensor <= CHANNELS or not 1 <= shutter_relay <= RELAYS:
            raise InputError(f"{name}: sensor must be 1 to {CHANNELS} and shutter_relay 1 to "
                             f"{RELAYS} (got sensor={sensor}, shutter_relay={shutter_relay})")
        self.tool = tool
        self.sensor = sensor
        self.shutter_relay = shutter_relay
        self.max_current_A = float(max_current_A or tool.p.supply_max_A)
        self._attached = False
        self._handlers = {
            "@": lambda arg: FIRMWARE, "J": lambda arg: str(CHANNELS),
            "A": self._cmd_film, "B": self._cmd_system, "D": self._cmd_layer,
            "F": self._cmd_material, "HA": self._cmd_sensor, "HB": self._cmd_source,
            "GC": self._cmd_relay_state, "GE": self._cmd_remote_relay,
            "K": self._cmd_readings, "L": self._cmd_rate, "M": self._cmd_output_rate,
            "N": self._cmd_thickness, "O": self._cmd_output_thickness,
            "P": self._cmd_frequency, "PA": self._cmd_sensor_info, "Q": self._cmd_deviation,
            "S": self._cmd_power, "U": self._cmd_run, "V": self._cmd_run_state,
        }
        self.films: dict[int, dict[str, dict[int, int | str]]] = {}
        self.materials: dict[int, dict[int, int | str]] = {}
        self.layers: dict[int, dict[int, int]] = {}
        self.system = dict(SYSTEM_DEFAULTS)
        self.sensors: dict[int, dict[int, int]] = {s: {} for s in range(1, CHANNELS + 1)}
        self.sources = {o: dict.fromkeys(SENSOR_FIELDS, 0) for o in range(1, CHANNELS + 1)}
        self.sources[OUTPUT][SOURCE_SHUTTER_RELAY.number] = shutter_relay
        self.relays = {n: False for n in range(1, RELAYS + 1)}
        self.locked: set[int] = set()
        self.unwired_pct = {o: 0.0 for o in range(1, CHANNELS + 1) if o != OUTPUT}
        self.loop = Loop()

    # --- instrument memory -----------------------------------------------------------
    def snapshot(self) -> dict:
        return {"films": self.films, "materials": self.materials, "layers": self.layers,
                "system": self.system, "sensors": self.sensors, "sources": self.sources,
                "relays": self.relays, "locked": sorted(self.locked),
                "unwired_pct": self.unwired_pct, "loop": asdict(self.loop)}

    def restore(self, state: dict) -> None:
        """Accepts a snapshot as it comes back from JSON (string keys)."""
        self.films = {int(f): {g: _int_keys(v) for g, v in groups.items()}
                      for f, groups in state["films"].items()}
        self.materials = {int(m): _int_keys(v) for m, v in state["materials"].items()}
        self.layers = {int(n): _int_keys(v) for n, v in state["layers"].items()}
        self.system = _int_keys(state["system"])
        self.sensors = {int(s): _int_keys(v) for s, v in state["sensors"].items()}
        self.sources = {int(o): _int_keys(v) for o, v in state["sources"].items()}
        self.relays = _int_keys(state["relays"])
        self.locked = set(state["locked"])
        self.unwired_pct = _int_keys(state["unwired_pct"])
        self.loop = Loop(**state["loop"])
        if self.loop.phase in MEASURING:
            self._attach()

    def film(self, number: int) -> dict[str, dict[int, int | str]]:
        if number not in self.films:
            self.films[number] = default_film(number)
        return self.films[number]

    def material(self, number: int) -> dict[int, int | str]:
        if number not in self.materials:
            self.materials[number] = {MATERIAL_NAME: f"MATERIAL{number}",
                                      MATERIAL_DENSITY.number: 100, MATERIAL_Z.number: 1000}
        return self.materials[number]

    def layer(self, number: int) -> dict[int, int]:
        if number not in self.layers:
            self.layers[number] = default_layer()
        return self.layers[number]

    def _value(self, param: Param, index: int) -> float:
        """A numeric parameter of the running film (A*) or layer (D), in display units."""
        table = self.layer(index) if param.command == "D" else self.film(index)[param.command]
        return param.from_wire(table[param.number])

    def _film_value(self, param: Param) -> float:
        return self._value(param, self.loop.film)

    def _layer_value(self, param: Param) -> float:
        return self._value(param, self.loop.layer)

    # --- framing -----------------------------------------------------------------------
    def _process(self, buffer: bytes) -> tuple[int, bytes]:
        consumed, body = next_host_packet(buffer)
        if body is None:
            return consumed, b""
        if body is BAD_CRC:
            return consumed, encode_reply(STATUS_BAD_CRC)
        with self.world_lock:
            return consumed, self._execute(body)

    def _execute(self, body: bytes) -> bytes:
        command = body.decode("ascii", "replace")
        key = command[:2] if command[:2] in self._handlers else command[:1]
        handler = self._handlers.get(key)
        if handler is None:
            return encode_reply(STATUS_INVALID_COMMAND)
        self.tool.world.sync()
        try:
            return encode_reply(STATUS_OK, handler(command[len(key):]))
        except ValueError:
            return encode_reply(STATUS_BAD_DATA)
        except WrongMode:
            return encode_reply(STATUS_WRONG_MODE)

    # --- physics: readings ---------------------------------------------------------------
    def _now(self) -> float:
        return self.tool.world.now

    def _crystal(self, sensor: int) -> dict | None:
        """The tool's crystal if it is on `sensor` and oscillating."""
        if sensor != self.sensor:
            return None
        crystal = self.tool.crystal()
        return None if crystal["failed"] else crystal

    def _tooling(self) -> float:
        film = self.film(self.loop.film)["A2"][FILM_TOOLING.number]
        return film / 100 * self.system[CRYSTAL_TOOLING_FIELDS[self.sensor]] / 100

    def _density_z(self) -> tuple[float, float]:
        number = int(self.film(self.loop.film)["A2"][FILM_MATERIAL.number])
        material = self.material(number)
        return (MATERIAL_DENSITY.from_wire(material[MATERIAL_DENSITY.number]),
                MATERIAL_Z.from_wire(material[MATERIAL_Z.number]))

    def _true_rate_A_s(self, crystal: dict) -> float:
        density, _ = self._density_z()
        return crystal["mass_rate_g_cm2_s"] / density * 1e8 * self._tooling()

    def _rate_A_s(self, sensor: int) -> float:
        if sensor == self.sensor and self.loop.phase in MEASURING:
            return self.loop.rate_A_s
        crystal = self._crystal(sensor)
        return self._true_rate_A_s(crystal) if crystal else 0.0

    def _thickness_A(self, sensor: int) -> float:
        if sensor != self.sensor:
            return 0.0
        crystal = self._crystal(sensor)
        return self._thickness_from(crystal) if crystal else self.loop.held_A

    def _thickness_from(self, crystal: dict) -> float:
        """Thickness since the zero; kept, so that a failed crystal holds its last value."""
        loop = self.loop
        if loop.zero_Hz is None:
            loop.zero_Hz = crystal["frequency_Hz"]
        density, z = self._density_z()
        f_q = crystal["fundamental_Hz"]
        grown = (zmatch_thickness_A(f_q, crystal["frequency_Hz"], density, z)
                 - zmatch_thickness_A(f_q, loop.zero_Hz, density, z))
        loop.held_A = grown * self._tooling()
        return loop.held_A

    def _frequency_Hz(self, sensor: int) -> float:
        crystal = self._crystal(sensor)
        return crystal["frequency_Hz"] if crystal else 0.0

    def _life_pct(self, frequency_Hz: float) -> float:
        low, high = self.system[6] * 1e3, self.system[7] * 1e3
        if frequency_Hz <= 0 or high <= low:
            return 0.0
        return _clamp(100 * (frequency_Hz - low) / (high - low), 0.0, 100.0)

    def _deviation_pct(self) -> float:
        setpoint = self._layer_value(LAYER_RATE)
        if setpoint <= 0:
            return 100.0
        return 100 * (setpoint - self._rate_A_s(self.sensor)) / setpoint

    def _phase_time_s(self) -> float:
        return 0.0 if self.loop.phase == STOPPED else self._now() - self.loop.phase_t0

    # --- the control loop (runs inside the tool's step) -------------------------------------
    def _attach(self) -> None:
        if not self._attached:
            self.tool.attach_controller(self._control,
                                        active=lambda: self.loop.phase in MEASURING)
            self._attached = True

    def _control(self, t: float, dt: float) -> None:
        if self.loop.phase not in MEASURING:
            return
        crystal = self.tool.crystal()
        if crystal["failed"]:
            self._stop(CRYSTAL_FAIL, t)
            return
        self._measure(crystal)
        while self._phase_step(t, dt, crystal):
            pass
        self._drive()

    def _measure(self, crystal: dict) -> None:
        loop = self.loop
        reading = self._true_rate_A_s(crystal) + self.tool.world.rng.normal(0, RATE_NOISE_A_S)
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
        crystal = self.tool.crystal()
        self.loop.zero_Hz = crystal["frequency_Hz"]
        self.loop.held_A = 0.0
        self._source_shutter(True)
        self._enter(DEPOSIT, t)

    def _check_final(self, t: float, dt: float, crystal: dict) -> bool:
        """End the deposit at the step boundary nearest the final-thickness crossing."""
        final_A = self._layer_value(LAYER_FINAL) * 1000
        if final_A <= 0:
            return False
        remaining_A = final_A - self._thickness_from(crystal)
        if remaining_A > 0.5 * max(self.loop.rate_A_s, 0.0) * dt:
            return False
        self._end_deposit(t)
        return True

    def _end_deposit(self, t: float) -> None:
        self._source_shutter(False)
        self.loop.ramp_from_pct = self.loop.output_pct
        self._enter(IDLE_RAMP_PHASE, t)

    def _enter(self, phase: int, t0: float) -> None:
        self.loop.phase = phase
        self.loop.phase_t0 = t0

    def _drive(self) -> None:
        self.tool.set_supply_current_A(self.loop.output_pct / 100 * self.max_current_A)

    def _source_shutter(self, on: bool) -> None:
        relay = self.sources[OUTPUT].get(SOURCE_SHUTTER_RELAY.number, 0)
        if relay and relay not in self.locked:
            self._set_relay(relay, on)

    def _set_relay(self, relay: int, on: bool) -> None:
        self.relays[relay] = on
        if relay == self.shutter_relay:
            self.tool.set_shutter(on)

    # --- run state --------------------------------------------------------------------------
    def _start_layer(self) -> None:
        loop = self.loop
        if loop.phase in LAYER_RUNNING:
            raise WrongMode("a layer is running")
        if self.layer(loop.layer)[LAYER_RATE.number] <= 0:
            raise WrongMode("the layer has no rate setpoint")
        if self._crystal(self.sensor) is None:
            raise WrongMode("the crystal has failed")
        now = self._now()
        loop.film = int(self.layer(loop.layer)[LAYER_FILM.number])
        loop.rate_A_s = loop.last_rate_A_s = self._rate_A_s(self.sensor)
        loop.manual_pct, loop.process_t0 = None, now
        loop.ramp_from_pct = loop.output_pct
        self._enter(RAMP1, now)
        self._attach()
        self.tool.set_supply_output(True)
        self._drive()

    def _stop(self, phase: int, t: float) -> None:
        self.loop.output_pct, self.loop.manual_pct = 0.0, None
        self._source_shutter(False)
        self._enter(phase, t)
        self._drive()

    def _force_final(self) -> None:
        if self.loop.phase != DEPOSIT:
            raise WrongMode("not depositing")
        self._end_deposit(self._now())

    def _zero(self) -> None:
        crystal = self._crystal(self.sensor)
        self.loop.zero_Hz = crystal["frequency_Hz"] if crystal else None
        self.loop.held_A = 0.0

    # --- commands: parameter groups -----------------------------------------------------------
    def _cmd_film(self, arg: str) -> str:
        group = "A" + arg[:1]
        if group not in FILM_FIELDS or arg[1:2] != " ":
            raise ValueError(f"{arg!r} is not a film command")
        return self._fields(group, arg[2:], FILMS, lambda f: self.film(f)[group],
                            FILM_FIELDS[group])

    def _cmd_layer(self, arg: str) -> str:
        return self._fields("D", arg, LAYERS, self.layer, LAYER_FIELDS)

    def _cmd_sensor(self, arg: str) -> str:
        return self._fields("HA", arg, CHANNELS, self._sensor_table, SENSOR_FIELDS)

    def _cmd_source(self, arg: str) -> str:
        return self._fields("HB", arg, CHANNELS, lambda o: self.sources[o], SENSOR_FIELDS)

    def _cmd_system(self, arg: str) -> str:
        return self._fields("B", "0" + arg, 0, lambda _: self.system, SYSTEM_FIELDS)

    def _cmd_material(self, arg: str) -> str:
        """One field at a time; a get answers the bare value."""
        match = GET_INDEXED.fullmatch(arg)
        if match:
            number = _index(match.group(1), MATERIALS)
            (field,) = _numbers(match.group(2), range(1, 4))
            return str(self.material(number)[field])
        number, values = self._parse_set("F", arg, MATERIALS, range(1, 4))
        if len(values) != 1:
            raise ValueError("F sets one field at a time")
        self.material(number).update(values)
        return ""

    def _sensor_table(self, sensor: int) -> _SensorTable:
        return _SensorTable(self.sensors[sensor], self.system, CRYSTAL_TOOLING_FIELDS[sensor])

    def _fields(self, command: str, arg: str, count: int, table, fields: range) -> str:
        """Get (`{n}? 1 2`) or set (`{n} 1,50 2,5`) fields of the table numbered n."""
        match = GET_INDEXED.fullmatch(arg)
        if match:
            values = table(_index(match.group(1), count))
            return "".join(f"{f},{values[f]} " for f in _numbers(match.group(2), fields))
        number, values = self._parse_set(command, arg, count, fields)
        target = table(number)
        for field, value in values.items():
            target[field] = value
        return ""

    def _parse_set(self, command: str, arg: str, count: int,
                   fields: range) -> tuple[int, dict[int, int | str]]:
        match = SET_INDEXED.fullmatch(arg)
        if not match:
            raise ValueError(f"{arg!r} is not a parameter setting")
        number = _index(match.group(1), count)
        if (command, 1) in NAME_FIELDS and match.group(2).startswith("1,"):
            return number, {1: _name(match.group(2)[2:])}
        values = {}
        for item in match.group(2).split():
            field, _, value = item.partition(",")
            if not field.isdigit() or int(field) not in fields:
                raise ValueError(f"{item!r} is not a field of {command}")
            values[int(field)] = _count(value)
        for field, value in values.items():
            _check_field(command, field, value)
        return number, values

    # --- commands: relays -----------------------------------------------------------------------
    def _cmd_relay_state(self, arg: str) -> str:
        match = GET_INDEXED.fullmatch(arg)
        if not match:
            raise ValueError(f"{arg!r} is not a relay state request")
        relay = _index(match.group(1), RELAYS)
        states = {1: int(self.relays[relay]), 2: 0}
        return "".join(f"{f},{states[f]} " for f in _numbers(match.group(2), range(1, 3)))

    def _cmd_remote_relay(self, arg: str) -> str:
        match = re.fullmatch(r"(\d+) ([123])", arg)
        if not match:
            raise ValueError(f"{arg!r} is not a relay and 1, 2 or 3")
        relay, action = _index(match.group(1), RELAYS), int(match.group(2))
        if relay in (s.get(SOURCE_SHUTTER_RELAY.number) for s in self.sources.values()):
            raise ValueError(f"relay {relay} is controlled by a source")
        if action == 3:
            self.locked.discard(relay)
            self._set_relay(relay, False)
        else:
            self.locked.add(relay)
            self._set_relay(relay, action == 1)
        return ""

    # --- commands: readings -------------------------------------------------------------------
    def _sensor_arg(self, arg: str) -> int:
        return _index(arg, CHANNELS)

    def _cmd_rate(self, arg: str) -> str:
        return f"{self._rate_A_s(self._sensor_arg(arg)):5.2f}"

    def _cmd_thickness(self, arg: str) -> str:
        return f"{self._thickness_A(self._sensor_arg(arg)) / 1000:6.3f}"

    def _cmd_frequency(self, arg: str) -> str:
        return f"{self._frequency_Hz(self._sensor_arg(arg)):.2f}"

    def _cmd_sensor_info(self, arg: str) -> str:
        sensor = self._sensor_arg(arg)
        frequency = self._frequency_Hz(sensor)
        active = int(sensor == self.sensor and self.loop.phase in LAYER_RUNNING)
        return f"{active} {frequency:.2f} {self._life_pct(frequency):.2f}"

    def _output_sensor(self, arg: str) -> int | None:
        """The sensor feeding an output (only output 1 has one)."""
        return self.sensor if _index(arg, CHANNELS) == OUTPUT else None

    def _cmd_output_rate(self, arg: str) -> str:
        sensor = self._output_sensor(arg)
        return f"{self._rate_A_s(sensor) if sensor else 0.0:5.2f}"

    def _cmd_output_thickness(self, arg: str) -> str:
        sensor = self._output_sensor(arg)
        return f"{(self._thickness_A(sensor) if sensor else 0.0) / 1000:6.3f}"

    def _cmd_deviation(self, arg: str) -> str:
        sensor = self._output_sensor(arg)
        return f"{self._deviation_pct() if sensor else 100.0:.2f} "

    def _cmd_readings(self, arg: str) -> str:
        """K1: time, then rate dev thickness power per output; K2: rate thickness frequency
        per sensor. An output that drives nothing reads -1."""
        fields = [f"{self._phase_time_s():.2f}"]
        if arg == "1":
            fields.append(f"{self._rate_A_s(self.sensor):.2f} {self._deviation_pct():.2f} "
                          f"{self._thickness_A(self.sensor) / 1000:.3f} "
                          f"{self.loop.output_pct:.2f}")
            fields += ["-1 -1 -1 -1"] * (CHANNELS - 1)
        elif arg == "2":
            fields += [f"{self._rate_A_s(s):.2f} {self._thickness_A(s) / 1000:.3f} "
                       f"{self._frequency_Hz(s):.2f}" for s in range(1, CHANNELS + 1)]
        else:
            raise ValueError(f"K{arg} is not 1 or 2")
        return " ".join(fields)

    # --- commands: output and run state ----------------------------------------------------------
    def _cmd_power(self, arg: str) -> str:
        """`S? o` reads an output's power; `S{o} p` sets manual power (0.1 %); `S0` ends it.

        Outputs other than 1 drive nothing here; their manual power is only remembered."""
        if arg.startswith("? "):
            output = _index(arg[2:], CHANNELS)
            power = self.loop.output_pct if output == OUTPUT else self.unwired_pct[output]
            return f"{power:.2f} "
        if arg == "0":
            self.unwired_pct = dict.fromkeys(self.unwired_pct, 0.0)
            if self.loop.phase == MANUAL_POWER:
                self._stop(STOPPED, self._now())
            return ""
        match = re.fullmatch(r"(\d+) (\d+)", arg)
        if not match or int(match.group(2)) > 1000:
            raise ValueError(f"{arg!r} is not an output and a power of 0 to 1000 (0.1 %)")
        output, power = _index(match.group(1), CHANNELS), int(match.group(2)) / 10
        if output == OUTPUT:
            self._manual(power)
        else:
            self.unwired_pct[output] = power
        return ""

    def _manual(self, power_pct: float) -> None:
        if self.loop.phase in LAYER_RUNNING:
            raise WrongMode("a layer is running")
        self.loop.manual_pct = self.loop.output_pct = power_pct
        if self.loop.phase != MANUAL_POWER:
            self.loop.rate_A_s = self.loop.last_rate_A_s = self._rate_A_s(self.sensor)
            self._enter(MANUAL_POWER, self._now())
        self._attach()
        self.tool.set_supply_output(True)
        self._drive()

    def _cmd_run(self, arg: str) -> str:
        actions = {"0": self._start_layer, "1": lambda: self._stop(STOPPED, self._now()),
                   "2": self._start_layer, "3": self._stop_layer, "5": self._force_final,
                   "32": self._zero, "33": self._zero_time}
        if arg not in actions:
            raise ValueError(f"run state {arg!r} is not emulated")
        actions[arg]()
        return ""

    def _stop_layer(self) -> None:
        if self.loop.phase in LAYER_RUNNING:
            self._stop(STOP_LAYER, self._now())

    def _zero_time(self) -> None:
        self.loop.process_t0 = self._now()

    def _cmd_run_state(self, arg: str) -> str:
        """Phase, process elapsed s, process, layer, control (1 automatic, 0 manual)."""
        if arg not in ("", "?"):
            raise ValueError(f"V{arg} takes no parameter")
        loop = self.loop
        elapsed = 0 if loop.phase == STOPPED else int(self._now() - loop.process_t0)
        return f"{loop.phase} {elapsed} 1 {loop.layer} {int(loop.manual_pct is None)}"


def default_film(number: int) -> dict[str, dict[int, int | str]]:
    """A film slot as the emulator powers up (values are assumptions; PID: manual example)."""
    film = {group: {n: 0 for n in fields} for group, fields in FILM_FIELDS.items()}
    film["A1"] = {1: f"FILM{number}"}
    film["A2"].update({1: 50, 2: 5, 4: number, 5: 1, 6: 100})
    film["A4"][CAPTURE.number] = 50
    return film


def default_layer() -> dict[int, int]:
    layer = {n: 0 for n in LAYER_FIELDS}
    layer.update({LAYER_FILM.number: 1, LAYER_MAX_POWER.number: 1000})
    return layer


class _SensorTable:
    """HA fields of one sensor; field 1 (crystal tooling) is the B field of that sensor."""

    def __init__(self, fields: dict[int, int], system: dict[int, int], tooling_field: int):
        self._fields, self._system, self._tooling_field = fields, system, tooling_field

    def __getitem__(self, field: int) -> int:
        if field == CRYSTAL_TOOLING.number:
            return self._system[self._tooling_field]
        return self._fields.get(field, 0)

    def __setitem__(self, field: int, value: int) -> None:
        if field == CRYSTAL_TOOLING.number:
            self._system[self._tooling_field] = value
        else:
            self._fields[field] = value


def _index(text: str, count: int) -> int:
    """A film/layer/sensor number in 1..count (0 stands for "none" where count is 0)."""
    if not text.isdigit() or not (int(text) == 0 if count == 0 else 1 <= int(text) <= count):
        raise ValueError(f"{text!r} is out of range")
    return int(text)


def _numbers(text: str, fields: range) -> list[int]:
    numbers = [int(n) for n in text.split()]
    if not numbers or any(n not in fields for n in numbers):
        raise ValueError(f"{text!r} names a field that does not exist")
    return numbers


def _count(text: str) -> int:
    """Numeric fields travel as integers (the displayed value times 10^decimals)."""
    if not re.fullmatch(r"-?\d+", text):
        raise ValueError(f"{text!r} is not an integer")
    return int(text)


def _name(text: str) -> str:
    name = text.strip()
    if not name or len(name) > 16 or not name.isprintable():
        raise ValueError(f"{text!r} is not a name")
    return name


#: (command, field) -> allowed raw values, where the physics needs a limit
FIELD_LIMITS = {("F", MATERIAL_DENSITY.number): range(1, 10000),
                ("F", MATERIAL_Z.number): range(1, 10000),
                ("A2", FILM_MATERIAL.number): range(1, MATERIALS + 1),
                ("A2", FILM_TOOLING.number): range(1, 1000),
                ("D", LAYER_FILM.number): range(1, FILMS + 1),
                ("D", LAYER_RATE.number): range(1, 100000),
                ("D", LAYER_MAX_POWER.number): range(0, 1001)}


def _check_field(command: str, field: int, value: int) -> None:
    allowed = FIELD_LIMITS.get((command, field))
    if allowed is not None and value not in allowed:
        raise ValueError(f"{command} field {field} cannot be {value}")


def _int_keys(table: dict) -> dict:
    return {int(k): v for k, v in table.items()}

