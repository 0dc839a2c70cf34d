"""A Modbus RTU thermocouple input module: the substrate temperature of the evaporator.

Modelled on the ICP DAS M-7018 (8 thermocouple channels) in Modbus RTU mode
(coil 00257 = 1) with the engineering data format (coil 00269 = 1). From the
manual's Modbus table: channel n is input register 3000(n+1), read with function
04 (the same values are holding registers 4000(n+1), function 03), and the
module name is holding register 40483. Thermocouple channels in the engineering
format read in 0.1 °C as a signed 16-bit word; an open (burnt-out) thermocouple
or a reading under range reads 0x8000 and one over range 0x7FFF, codes no real
temperature takes. These scalings and codes, and the name word 0x7018, are as
this driver assumes them: check them against the module's manual before use.

Factory serial settings are 9600 baud, 8 data bits, no parity, 1 stop bit. On a
bus shared with the even-parity relay module, set the module to even parity
(register 40486, bits 7:6 = 10) and open the bus with the relay's settings.

Link recovery (`Link.exchange`'s retry rule): it only reads registers (functions 03 and
04), so every exchange is idempotent and is simply resent.
"""

from __future__ import annotations

from lipon_hw.drivers.modbus_rtu import (
    READ_HOLDING_REGISTERS,
    READ_INPUT_REGISTERS,
    ModbusRtuDevice,
    read_request,
    register_values,
    signed16,
)
from lipon_hw.errors import InputError, InstrumentError
from lipon_hw.links import Link

CHANNELS = 8
NAME_REGISTER = 482  # 40483, module name (low word)
OPEN_CODE = 0x8000  # open thermocouple, or under range
OVER_RANGE_CODE = 0x7FFF
TENTHS = 10

FAULT_CODES = {OPEN_CODE: "open (thermocouple broken or unplugged) or under range",
               OVER_RANGE_CODE: "over range"}


# --- codec (shared with the emulator) -------------------------------------------------
def temperature_word(celsius: float) -> int:
    """The register word of a temperature, in 0.1 °C, two's complement."""
    return round(celsius * TENTHS) & 0xFFFF


def temperature_from_word(word: int) -> float:
    return signed16(word) / TENTHS


# --- driver ---------------------------------------------------------------------------
class ModbusThermometer(ModbusRtuDevice):
    """One thermocouple channel of the module; channels of one module share its Link."""

    SERIAL_DEFAULTS = {"baudrate": 9600, "bytesize": 8, "parity": "N", "stopbits": 1}
    #: no source power above this substrate temperature; LiPON crystallises above 325 °C
    LIMITS = {"lipon_max_C": (0.0, 325.0)}

    def bus_claims(self) -> list[str]:
        return [f"input {self.channel} of unit {self.unit}"]

    def __init__(self, name: str, link: Link, unit: int = 2, channel: int = 0):
        super().__init__(name, link, unit)
        self.channel = int(channel)
        if self.channel < 0:
            raise InputError(f"{name}: channel {channel} is negative (channels start at 0)")

    def temperature_C(self) -> float:
        request = read_request(self.unit, READ_INPUT_REGISTERS, self.channel, 1)
        word = register_values(self._transact(request))[0]
        if word in FAULT_CODES:
            raise InstrumentError(f"{self.name} answered {request.hex(' ')} with {word:04X}: "
                                  f"channel {self.channel} is {FAULT_CODES[word]}")
        return temperature_from_word(word)

    def identify(self) -> str:
        name = self._read_registers(READ_HOLDING_REGISTERS, NAME_REGISTER, 1)[0]
        return f"ICP DAS M-{name:04X} thermocouple input, unit {self.unit}, channel {self.channel}"

    def make_safe(self) -> None:
        """Nothing to do: a thermometer only reads."""
