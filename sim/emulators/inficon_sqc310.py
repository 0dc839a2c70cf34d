"""INFICON SQC-310 emulator: the controller on the simulated evaporator, command by command.

Wiring (constructor settings): the tool's crystal is on sensor input `sensor`; output 1 drives
the evaporator's source supply by analog programming, so output % sets the supply current
to output/100 × `max_current_A` (default: the supply's full scale) — the sim models the
supply as the controller's slave, its output enabled when a layer starts; relay
`shutter_relay` is wired to the substrate shutter and is source 1's shutter relay (HB1 3).
Sensors 2-4 have no crystal and outputs 2-4 drive nothing (K1 reports them as -1).

This module is the instrument's face: the command table, the readings (L, M, N, O, P, PA, Q,
K1/K2 as the manual PN 074-550-P1C §4.3 prints them), relays, output power and run state. Its
parts: the parameter memory and its commands (`inficon_sqc310_memory`), the run state and
rate loop (`inficon_sqc310_loop`), the QCM measurement shared with the SQM-160
(`inficon_sensor`), and the packet loop (`inficon_framing`). Readings between layers are
computed on demand, without noise; during a layer the rate is the loop's filtered
measurement.

Instrument memory (films, materials, layers, system, sensor/source parameters, relays) and
the loop (phase, PID integral, filter, zero frequency) are on this object and in
`snapshot()` / `restore()`. Assumptions: a packet with a bad CRC is answered with status 'F';
GE on a relay a source controls is refused ('D'); manual power (``S1 p``) is only accepted
between layers ('E' otherwise); run-state codes other than 0-3, 5, 32, 33 are refused ('D').

Command summary (manual §4.3) and coverage: `@` version, `A1`-`A5` film, `B` system,
`D` layer, `F` material, `GC` relay state, `GD` relay override (while stopped; 'E'
during a layer), `GE` remote relay, `HA`/`HB` sensor/source parameters, `HC`/`HD`
sensor/source status flags (Get only), `J` channels, `K1`/`K2` readings, `L`/`M`/`N`/`O`
rates and thicknesses, `P`/`PA` frequency and crystal life, `Q` deviation, `S` output
power, `U` run state, `V` phase. Not emulated, though the unit knows them: `GA`/`GB`
(input and relay configuration), `HE`/`HF` (I/O maps) and the logic statements are
answered 'C' (invalid command); `K3` (K for the manufacturer's testing, its argument form
unclear) is K with an argument it does not take, 'D'. None is sent by the project's
driver or by PyExpLabSys' SQC-310 client.
"""

from __future__ import annotations

import re

from lipon_hw.drivers.inficon_packet import encode_reply
from lipon_hw.drivers.inficon_sqc310 import (
    CHANNELS,
    RELAYS,
    STATUS_BAD_CRC,
    STATUS_WRONG_MODE,
)
from lipon_hw.errors import InputError
from lipon_hw.sim.emulators.inficon_framing import InficonEmulator, WrongMode
from lipon_hw.sim.emulators.inficon_sensor import CrystalSensor
from lipon_hw.sim.emulators.inficon_sqc310_loop import Loop, RateLoop
from lipon_hw.sim.emulators.inficon_sqc310_memory import (
    GET_INDEXED,
    OUTPUT,
    ParameterMemory,
    int_keys,
    parse_fields,
    parse_index,
)
from lipon_hw.sim.state import state_dict

FIRMWARE = "SQC-310 Ver 6.01"  # the manual's example answer to '@'


class SQC310Emulator(InficonEmulator):
    model = "INFICON SQC-310"
    bad_crc_reply = encode_reply(STATUS_BAD_CRC)
    wrong_mode_status = STATUS_WRONG_MODE

    def __init__(self, name: str, tool, sensor: int = 1, shutter_relay: int = 1,
                 max_current_A: float | None = None):
        super().__init__(name)
        if not 1 <= sensor <= CHANNELS or not 1 <= shutter_relay <= RELAYS:
            raise InputError(f"{name}: sensor must be 1 to {CHANNELS} and shutter_relay 1 to "
                             f"{RELAYS} (got sensor={sensor}, shutter_relay={shutter_relay})")
        self.tool = tool
        self.sensor = sensor
        self.shutter_relay = shutter_relay
        self.memory = ParameterMemory(shutter_relay)
        self.crystal_sensor = CrystalSensor(tool)
        self.rate_loop = RateLoop(tool, self.memory, self.crystal_sensor, sensor,
                                  float(max_current_A or tool.p.supply_max_A),
                                  self._source_shutter)
        self.relays = {n: False for n in range(1, RELAYS + 1)}
        self.locked: set[int] = set()
        self.unwired_pct = {o: 0.0 for o in range(1, CHANNELS + 1) if o != OUTPUT}
        memory = self.memory
        self.handlers = {
            "@": lambda arg: FIRMWARE, "J": lambda arg: str(CHANNELS),
            "A": memory.cmd_film, "B": memory.cmd_system, "D": memory.cmd_layer,
            "F": memory.cmd_material, "HA": memory.cmd_sensor, "HB": memory.cmd_source,
            "GC": self._cmd_relay_state, "GD": self._cmd_override_relay,
            "GE": self._cmd_remote_relay, "HC": self._cmd_sensor_status,
            "HD": self._cmd_source_status,
            "K": self._cmd_readings, "L": self._cmd_rate, "M": self._cmd_output_rate,
            "N": self._cmd_thickness, "O": self._cmd_output_thickness,
            "P": self._cmd_frequency, "PA": self._cmd_sensor_info, "Q": self._cmd_deviation,
            "S": self._cmd_power, "U": self._cmd_run, "V": self._cmd_run_state,
        }

    # --- instrument memory -----------------------------------------------------------
    def snapshot(self) -> dict:
        sensor = self.crystal_sensor
        loop = {**state_dict(self.rate_loop.loop), "zero_Hz": sensor.zero_Hz,
                "held_A": sensor.held_A}
        return {**self.memory.snapshot(), "relays": self.relays, "locked": sorted(self.locked),
                "unwired_pct": self.unwired_pct, "loop": loop}

    def restore(self, state: dict) -> None:
        """Accepts a snapshot as it comes back from JSON (string keys)."""
        self.memory.restore(state)
        self.relays = int_keys(state["relays"])
        self.locked = set(state["locked"])
        self.unwired_pct = int_keys(state["unwired_pct"])
        loop = dict(state["loop"])
        self.crystal_sensor.zero_Hz = loop.pop("zero_Hz")
        self.crystal_sensor.held_A = loop.pop("held_A")
        self.rate_loop.loop = Loop(**loop)
        if self.rate_loop.measuring():
            self.rate_loop.attach()

    def _before_command(self) -> None:
        self.tool.world.sync()

    # --- relays -------------------------------------------------------------------------------
    def _source_shutter(self, on: bool) -> None:
        relay = self.memory.shutter_relay(OUTPUT)
        if relay and relay not in self.locked:
            self._set_relay(relay, on)

    def _set_relay(self, relay: int, on: bool) -> None:
        self.relays[relay] = on
        if relay == self.shutter_relay:
            self.tool.set_shutter(on)

    def _cmd_relay_state(self, arg: str) -> str:
        match = GET_INDEXED.fullmatch(arg)
        if not match:
            raise ValueError(f"{arg!r} is not a relay state request")
        relay = parse_index(match.group(1), RELAYS)
        states = {1: int(self.relays[relay]), 2: 0}
        return "".join(f"{f},{states[f]} " for f in parse_fields(match.group(2), range(1, 3)))

    def _cmd_override_relay(self, arg: str) -> str:
        """GD{relay} 1|2: switch a relay on/off by hand, only while stopped (manual)."""
        match = re.fullmatch(r"(\d+) ([12])", arg)
        if not match:
            raise ValueError(f"{arg!r} is not a relay and 1 or 2")
        relay = parse_index(match.group(1), RELAYS)
        if self.rate_loop.layer_running():
            raise WrongMode
        self._set_relay(relay, match.group(2) == "1")
        return ""

    def _cmd_sensor_status(self, arg: str) -> str:
        """HC{sensor}? flags: 5 original crystal failed, 6 sensor in use; the dual/backup
        crystal, indexer and disable flags (1-4, 7-9) are 0: one crystal, always enabled."""
        sensor, fields = self._status_request(arg, range(1, 10))
        wired = sensor == self.sensor
        flags = {5: wired and self.crystal_sensor.live() is None,
                 6: wired and self.rate_loop.layer_running()}
        return "".join(f"{f},{int(flags.get(f, False))} " for f in fields)

    def _cmd_source_status(self, arg: str) -> str:
        """HD{source}? 1: the source is in use (output 1 during a layer)."""
        source, fields = self._status_request(arg, range(1, 2))
        in_use = source == OUTPUT and self.rate_loop.layer_running()
        return "".join(f"{f},{int(in_use)} " for f in fields)

    @staticmethod
    def _status_request(arg: str, fields: range) -> tuple[int, list[int]]:
        match = GET_INDEXED.fullmatch(arg)
        if not match:
            raise ValueError(f"{arg!r} is not a status request")
        return parse_index(match.group(1), CHANNELS), parse_fields(match.group(2), fields)

    def _cmd_remote_relay(self, arg: str) -> str:
        match = re.fullmatch(r"(\d+) ([123])", arg)
        if not match:
            raise ValueError(f"{arg!r} is not a relay and 1, 2 or 3")
        relay, action = parse_index(match.group(1), RELAYS), int(match.group(2))
        if relay in self.memory.source_relays():
            raise ValueError(f"relay {relay} is controlled by a source")
        if action == 3:
            self.locked.discard(relay)
            self._set_relay(relay, False)
        else:
            self.locked.add(relay)
            self._set_relay(relay, action == 1)
        return ""

    # --- readings -------------------------------------------------------------------------------
    def _rate_A_s(self, sensor: int) -> float:
        return self.rate_loop.rate_A_s() if sensor == self.sensor else 0.0

    def _thickness_A(self, sensor: int) -> float:
        return self.rate_loop.thickness_A() if sensor == self.sensor else 0.0

    def _frequency_Hz(self, sensor: int) -> float:
        return self.crystal_sensor.frequency_Hz() if sensor == self.sensor else 0.0

    def _sensor_arg(self, arg: str) -> int:
        return parse_index(arg, CHANNELS)

    def _cmd_rate(self, arg: str) -> str:
        return f"{self._rate_A_s(self._sensor_arg(arg)):5.2f}"

    def _cmd_thickness(self, arg: str) -> str:
        return f"{self._thickness_A(self._sensor_arg(arg)) / 1000:6.3f}"

    def _cmd_frequency(self, arg: str) -> str:
        return f"{self._frequency_Hz(self._sensor_arg(arg)):.2f}"

    def _cmd_sensor_info(self, arg: str) -> str:
        sensor = self._sensor_arg(arg)
        frequency = self._frequency_Hz(sensor)
        active = int(sensor == self.sensor and self.rate_loop.layer_running())
        life = self.crystal_sensor.life_pct(frequency, *self.memory.frequency_limits_Hz())
        return f"{active} {frequency:.2f} {life:.2f}"

    def _output_sensor(self, arg: str) -> int | None:
        """The sensor feeding an output (only output 1 has one)."""
        return self.sensor if parse_index(arg, CHANNELS) == OUTPUT else None

    def _cmd_output_rate(self, arg: str) -> str:
        sensor = self._output_sensor(arg)
        return f"{self._rate_A_s(sensor) if sensor else 0.0:5.2f}"

    def _cmd_output_thickness(self, arg: str) -> str:
        sensor = self._output_sensor(arg)
        return f"{(self._thickness_A(sensor) if sensor else 0.0) / 1000:6.3f}"

    def _cmd_deviation(self, arg: str) -> str:
        sensor = self._output_sensor(arg)
        return f"{self.rate_loop.deviation_pct() if sensor else 100.0:.2f} "

    def _cmd_readings(self, arg: str) -> str:
        """K1: time, then rate dev thickness power per output; K2: rate thickness frequency
        per sensor. An output that drives nothing reads -1."""
        fields = [f"{self.rate_loop.phase_time_s():.2f}"]
        if arg == "1":
            fields.append(f"{self._rate_A_s(self.sensor):.2f} "
                          f"{self.rate_loop.deviation_pct():.2f} "
                          f"{self._thickness_A(self.sensor) / 1000:.3f} "
                          f"{self.rate_loop.loop.output_pct:.2f}")
            fields += ["-1 -1 -1 -1"] * (CHANNELS - 1)
        elif arg == "2":
            fields += [f"{self._rate_A_s(s):.2f} {self._thickness_A(s) / 1000:.3f} "
                       f"{self._frequency_Hz(s):.2f}" for s in range(1, CHANNELS + 1)]
        else:
            raise ValueError(f"K{arg} is not 1 or 2")
        return " ".join(fields)

    # --- output and run state ---------------------------------------------------------------
    def _cmd_power(self, arg: str) -> str:
        """`S? o` reads an output's power; `S{o} p` sets manual power (0.1 %); `S0` ends it.

        Outputs other than 1 drive nothing here; their manual power is only remembered."""
        if arg.startswith("? "):
            output = parse_index(arg[2:], CHANNELS)
            power = (self.rate_loop.loop.output_pct if output == OUTPUT
                     else self.unwired_pct[output])
            return f"{power:.2f} "
        if arg == "0":
            self.unwired_pct = dict.fromkeys(self.unwired_pct, 0.0)
            self.rate_loop.end_manual()
            return ""
        match = re.fullmatch(r"(\d+) (\d+)", arg)
        if not match or int(match.group(2)) > 1000:
            raise ValueError(f"{arg!r} is not an output and a power of 0 to 1000 (0.1 %)")
        output, power = parse_index(match.group(1), CHANNELS), int(match.group(2)) / 10
        if output == OUTPUT:
            self.rate_loop.manual(power)
        else:
            self.unwired_pct[output] = power
        return ""

    def _cmd_run(self, arg: str) -> str:
        loop = self.rate_loop
        actions = {"0": loop.start_layer, "1": loop.stop_process, "2": loop.start_layer,
                   "3": loop.stop_layer, "5": loop.force_final,
                   "32": self.crystal_sensor.zero, "33": loop.zero_time}
        if arg not in actions:
            raise ValueError(f"run state {arg!r} is not emulated")
        actions[arg]()
        return ""

    def _cmd_run_state(self, arg: str) -> str:
        """Phase, process elapsed s, process, layer, control (1 automatic, 0 manual)."""
        if arg not in ("", "?"):
            raise ValueError(f"V{arg} takes no parameter")
        loop = self.rate_loop.loop
        return (f"{loop.phase} {self.rate_loop.process_time_s()} 1 {loop.layer} "
                f"{int(loop.manual_pct is None)}")
