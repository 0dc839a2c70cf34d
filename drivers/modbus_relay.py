"""A Modbus RTU digital-output (relay) module: coils switch the shutter, the valves and,
on the evaporator, the boat (source) contactors.

The codec and the master side are in `modbus_rtu`; this module adds the coil
functions: 05 writes one coil (the reply echoes the request), 01 reads coils
(`unit 01 count data… CRC`, the first coil in the least significant bit).

The module is on RS-485 at 9600 baud, 8 data bits, even parity, 1 stop bit:
even parity is the default the serial-line spec requires every device to have
(modules shipped as 8N1 are set with `?parity=N` on the address).

Link recovery (`Link.exchange`'s retry rule). Idempotent: function 05 writes a coil ON
(FF00) or OFF (0000), an absolute state, never a toggle (the Modbus spec has no toggle in
function 05), so a shutter, a valve or a boat contactor is set, not flipped, and a resend
after a lost echo sets the same state again; function 01 reads. No read-back needed.
"""

from __future__ import annotations

from lipon_hw.drivers.modbus_rtu import (
    READ_COILS,
    WRITE_SINGLE_COIL,
    ModbusRtuDevice,
    read_request,
    with_crc,
)
from lipon_hw.errors import InputError, InstrumentError
from lipon_hw.links import Link

COIL_ON = 0xFF00
COIL_OFF = 0x0000


# --- codec (shared with the emulator) -------------------------------------------------
def write_coil_request(unit: int, coil: int, on: bool) -> bytes:
    value = COIL_ON if on else COIL_OFF
    return with_crc(bytes([unit, WRITE_SINGLE_COIL]) + coil.to_bytes(2, "big")
                    + value.to_bytes(2, "big"))


def read_coils_request(unit: int, first: int, count: int) -> bytes:
    return read_request(unit, READ_COILS, first, count)


def read_coils_reply(unit: int, states: list[bool]) -> bytes:
    data = bytearray((len(states) + 7) // 8)
    for i, on in enumerate(states):
        if on:
            data[i // 8] |= 1 << (i % 8)
    return with_crc(bytes([unit, READ_COILS, len(data)]) + data)


def coil_state(reply: bytes, index: int = 0) -> bool:
    """Bit `index` of a read-coils reply (LSB of the first data byte is the first coil)."""
    return bool(reply[3 + index // 8] >> (index % 8) & 1)


# --- drivers --------------------------------------------------------------------------
class _CoilModule(ModbusRtuDevice):
    """Coil access for one unit on a Modbus RTU line."""

    SERIAL_DEFAULTS = {"baudrate": 9600, "bytesize": 8, "parity": "E", "stopbits": 1}

    def _write_coil(self, coil: int, on: bool) -> None:
        self._transact(write_coil_request(self.unit, coil, on))

    def _read_coil(self, coil: int) -> bool:
        return coil_state(self._transact(read_coils_request(self.unit, coil, 1)))

    def _read_coils(self, first: int, count: int) -> list[bool]:
        reply = self._transact(read_coils_request(self.unit, first, count))
        return [coil_state(reply, i) for i in range(count)]

    def _describe(self, wiring: str) -> str:
        """Plain coil modules have no identity query; reading a coil proves the unit answers."""
        self._read_coil(0)
        return f"Modbus RTU relay module, unit {self.unit} ({wiring})"


class ModbusRelayShutter(_CoilModule):
    """A substrate shutter driven by one coil: on = open."""

    def __init__(self, name: str, link: Link, unit: int = 1, coil: int = 0):
        super().__init__(name, link, unit)
        self.coil = int(coil)

    def bus_claims(self) -> list[str]:
        return [f"coil {self.coil} of unit {self.unit}"]

    def open(self) -> None:
        self._write_coil(self.coil, True)

    def close(self) -> None:
        self._write_coil(self.coil, False)

    def is_open(self) -> bool:
        return self._read_coil(self.coil)

    def identify(self) -> str:
        return self._describe(f"coil {self.coil} = shutter")

    def make_safe(self) -> None:
        """Shutter closed: nothing reaches the substrate."""
        self.close()


class ModbusRelayValves(_CoilModule):
    """Pumping and vent valves on two coils; never both open (break before make)."""

    def __init__(self, name: str, link: Link, unit: int = 1, pump_coil: int = 1,
                 vent_coil: int = 2):
        super().__init__(name, link, unit)
        self.pump_coil = int(pump_coil)
        self.vent_coil = int(vent_coil)

    def bus_claims(self) -> list[str]:
        return [f"coil {coil} of unit {self.unit}" for coil in (self.pump_coil, self.vent_coil)]

    def pump(self) -> None:
        self._write_coil(self.vent_coil, False)
        self._write_coil(self.pump_coil, True)

    def vent(self) -> None:
        self._write_coil(self.pump_coil, False)
        self._write_coil(self.vent_coil, True)

    def isolate(self) -> None:
        self._write_coil(self.pump_coil, False)
        self._write_coil(self.vent_coil, False)

    def identify(self) -> str:
        return self._describe(f"coil {self.pump_coil} = pumping, coil {self.vent_coil} = vent")

    def make_safe(self) -> None:
        """Leave the valves as they are.

        Under vacuum the safe state is to keep pumping: isolating would let leaks
        and outgassing (mostly water) build up over a fresh, moisture-sensitive
        LiPON film, and venting would expose a hot target and the film to air.
        RF off and flow off already end the process. A chamber that is venting or
        isolated got there by an operator's decision, which a fault must not reverse.
        """


class ModbusRelaySourceSelector(_CoilModule):
    """Boat contactors on consecutive coils: coil `first_coil + n - 1` routes the source
    supply to boat n. At most one is ever on (break before make), because two boats in
    parallel would share the current unpredictably.

    Contactors must not switch the boat current: change boats with the supply off.
    The driver cannot see the supply, so that order is the recipe's (and the safe
    state's) business.
    """

    def __init__(self, name: str, link: Link, unit: int = 1, first_coil: int = 3,
                 boats: int = 3):
        super().__init__(name, link, unit)
        self.first_coil = int(first_coil)
        self.boats = int(boats)
        if self.boats < 1:
            raise InputError(f"{name}: boats must be at least 1, not {boats}")

    def bus_claims(self) -> list[str]:
        return [f"coil {self.first_coil + n} of unit {self.unit}" for n in range(self.boats)]

    def select_source(self, number: int) -> None:
        """Route the supply to boat `number` (1-based): every boat coil off, then its own on."""
        if not 1 <= number <= self.boats:
            raise InputError(f"{self.name}: boat {number} does not exist (1..{self.boats})")
        self._all_off()
        self._write_coil(self.first_coil + number - 1, True)

    def selected_source(self) -> int | None:
        """The boat whose coil is on; None when none is."""
        on = [i + 1 for i, state in enumerate(self._read_coils(self.first_coil, self.boats))
              if state]
        if len(on) > 1:
            raise InstrumentError(f"{self.name} has boats {on} switched on at once "
                                  f"(coils {self.first_coil}..{self.first_coil + self.boats - 1})")
        return on[0] if on else None

    def identify(self) -> str:
        last = self.first_coil + self.boats - 1
        return self._describe(f"coils {self.first_coil}..{last} = boats 1..{self.boats}")

    def make_safe(self) -> None:
        """Every boat coil off: no boat can heat even if the supply came back on.

        The engine makes the source supply safe before the rest (its SAFE_ORDER),
        so the contactors open without current; under 100 A they would burn.
        """
        self._all_off()

    def _all_off(self) -> None:
        for coil in range(self.first_coil, self.first_coil + self.boats):
            self._write_coil(coil, False)
