"""A Modbus RTU thermocouple input module (ICP DAS M-7018 class) on the wire.

Channels are wired by name to a tool's temperatures (`substrate`: the
evaporator's substrate); each reading carries ±0.5 °C of seeded noise, about a
type K thermocouple's tolerance. A channel with nothing wired, or one listed in
`open_channels` (a broken thermocouple, switched on by tests), reads the
burn-out code 0x8000, as the module does.

Implemented: input registers 0..7 (function 04) and the same values as holding
registers 0..7 (function 03), plus the module name in holding register 482
(40483). Any other address gets exception 02, a count of 0 or over 125
exception 03, any other function exception 01; the module's configuration
registers are not emulated. Frames with a bad CRC or for another unit get no
reply; broadcasts get none either (reads have nothing to do).
"""

from __future__ import annotations

from lipon_hw.drivers.modbus_rtu import (
    MAX_READ_REGISTERS,
    READ_HOLDING_REGISTERS,
    READ_INPUT_REGISTERS,
    exception_reply,
    registers_reply,
)
from lipon_hw.drivers.modbus_thermometer import (
    CHANNELS,
    NAME_REGISTER,
    OPEN_CODE,
    temperature_word,
)
from lipon_hw.errors import InputError
from lipon_hw.sim.emulators.modbus_framing import ModbusRtuServer

SOURCES = {"substrate": "substrate_temperature_C"}
MODULE_NAME = 0x7018
NOISE_C = 0.5


class ModbusThermometerEmulator(ModbusRtuServer):
    model = "ICP DAS M-7018 thermocouple input module (Modbus RTU)"

    def __init__(self, name: str, tool, unit: int = 2, channels: dict | None = None):
        super().__init__(name)
        self.tool = tool
        self.unit = int(unit)
        wiring = {int(c): role for c, role in (channels or {0: "substrate"}).items()}
        usable = [role for role, accessor in SOURCES.items() if hasattr(tool, accessor)]
        if any(role not in usable for role in wiring.values()) or any(
                not 0 <= c < CHANNELS for c in wiring):
            raise InputError(f"{name}: channels {wiring} must map channel 0..{CHANNELS - 1} to "
                             f"{', '.join(usable) or 'nothing (this tool has no thermocouple)'}")
        self._sources = {c: getattr(tool, SOURCES[role]) for c, role in wiring.items()}
        self.open_channels: set[int] = set()

    # --- wire -------------------------------------------------------------------------
    def _process(self, buffer: bytes) -> tuple[int, bytes]:
        consumed, frame = self._next_request(buffer)
        if frame is None or frame[0] != self.unit:
            return consumed, b""
        with self.world_lock:
            code = self.faults.error_code
            if code is not None:  # the module's own exception reply
                return consumed, exception_reply(self.unit, frame[1], code)
            return consumed, self._answer(frame)

    def _answer(self, frame: bytes) -> bytes:
        function = frame[1]
        if function not in (READ_HOLDING_REGISTERS, READ_INPUT_REGISTERS):
            return exception_reply(self.unit, function, 0x01)
        first = int.from_bytes(frame[2:4], "big")
        count = int.from_bytes(frame[4:6], "big")
        if not 1 <= count <= MAX_READ_REGISTERS:
            return exception_reply(self.unit, function, 0x03)
        if function == READ_HOLDING_REGISTERS and (first, count) == (NAME_REGISTER, 1):
            return registers_reply(self.unit, function, [MODULE_NAME])
        if first + count > CHANNELS:
            return exception_reply(self.unit, function, 0x02)
        words = [self._channel_word(c) for c in range(first, first + count)]
        return registers_reply(self.unit, function, words)

    def _channel_word(self, channel: int) -> int:
        if channel in self.open_channels or channel not in self._sources:
            return OPEN_CODE
        noise = self.tool.world.rng.uniform(-NOISE_C, NOISE_C)
        return temperature_word(self._sources[channel]() + noise)
