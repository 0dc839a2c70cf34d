"""A Modbus RTU relay module on the wire, wired to a tool.

Coils are relay outputs. The wired ones act on the tool as well: `shutter`,
`pumping` and `vent` on either tool, `boat1`..`boat3` on the evaporator (a coil
switched on routes the source supply to that boat); the rest are plain memory.
The module implements read coils (01), write single coil (05) and write multiple
coils (15, what pymodbus' `write_coils` and most SCADA clients send; the coils are
switched in coil order); any other function gets exception 01, a coil beyond the
module exception 02, a bad value, count or byte count exception 03 (MODBUS
Application Protocol v1.1b3 §6.1, 6.5, 6.11). Frames with a bad CRC or for another
unit get no reply; broadcasts (unit 0) act silently.

With every boat coil off no boat is on the supply, so nothing heats even if the
supply itself cannot be reached (the safe state's second line of defence). Two boat
coils on at once (only a third-party client can do that) leave the last one switched
on selected.
"""

from __future__ import annotations

from lipon_hw.drivers.modbus_relay import COIL_OFF, COIL_ON, read_coils_reply
from lipon_hw.drivers.modbus_rtu import (
    BROADCAST_UNIT,
    READ_COILS,
    WRITE_MULTIPLE_COILS,
    WRITE_SINGLE_COIL,
    exception_reply,
    with_crc,
)
from lipon_hw.errors import InputError
from lipon_hw.sim.emulators.modbus_framing import ModbusRtuServer

DEFAULT_WIRING = {0: "shutter", 1: "pumping", 2: "vent"}
BOATS = (1, 2, 3)
MAX_READ_COILS = 2000  # application protocol limit for function 01
MAX_WRITE_COILS = 0x07B0  # application protocol limit for function 15


def _tool_actions(tool) -> dict:
    """Coil roles the tool can be wired to, each a `callback(on)`."""
    actions = {"shutter": tool.set_shutter, "pumping": tool.set_pumping, "vent": tool.set_vent}
    if hasattr(tool, "select_boat"):
        actions.update({f"boat{n}": _boat_contactor(tool, n) for n in BOATS})
    return actions


def _boat_contactor(tool, number: int):
    """Closing the contactor routes the supply to the boat; opening the routed boat's
    contactor leaves no boat on the supply."""

    def switch(on: bool) -> None:
        if on:
            tool.select_boat(number)
        elif tool.selected_boat() == number:
            tool.select_boat(0)

    return switch


class ModbusRelayEmulator(ModbusRtuServer):
    model = "Modbus RTU 8-channel relay module"

    def __init__(self, name: str, tool, unit: int = 1, coils: dict | None = None,
                 n_coils: int = 8):
        super().__init__(name)
        self.tool = tool
        self.unit = int(unit)
        actions = _tool_actions(tool)
        wiring = {int(c): role for c, role in (coils or DEFAULT_WIRING).items()}
        unknown = sorted(set(wiring.values()) - set(actions))
        if unknown or any(not 0 <= c < n_coils for c in wiring):
            raise InputError(f"{name}: coils {wiring} must map coil 0..{n_coils - 1} to "
                             f"{', '.join(actions)}")
        self._actions = {coil: actions[role] for coil, role in wiring.items()}
        self._boat_coils = {coil: int(role[4:]) for coil, role in wiring.items()
                            if role.startswith("boat")}
        self.coils = [False] * int(n_coils)

    @property
    def routed_boats(self) -> list[int]:
        """The boats whose coils are on: the supply reaches these (none: no boat at all)."""
        return sorted(boat for coil, boat in self._boat_coils.items() if self.coils[coil])

    # --- instrument memory (for checkpoints) ----------------------------------------
    def snapshot(self) -> dict:
        return {"coils": list(self.coils)}

    def restore(self, state: dict) -> None:
        self.coils = list(state["coils"])

    # --- wire -------------------------------------------------------------------------
    def _process(self, buffer: bytes) -> tuple[int, bytes]:
        consumed, frame = self._next_request(buffer)
        if frame is None or frame[0] not in (self.unit, BROADCAST_UNIT):
            return consumed, b""
        with self.world_lock:
            code = self.faults.error_code
            reply = self._answer(frame) if code is None else \
                exception_reply(self.unit, frame[1], code)
        return consumed, (b"" if frame[0] == BROADCAST_UNIT else reply)

    def _answer(self, frame: bytes) -> bytes:
        function = frame[1]
        if function == WRITE_SINGLE_COIL:
            return self._write_coil(frame)
        if function == READ_COILS:
            return self._read_coils(frame)
        if function == WRITE_MULTIPLE_COILS:
            return self._write_coils(frame)
        return exception_reply(self.unit, function, 0x01)

    def _write_coil(self, frame: bytes) -> bytes:
        coil = int.from_bytes(frame[2:4], "big")
        value = int.from_bytes(frame[4:6], "big")
        if coil >= len(self.coils):
            return exception_reply(self.unit, WRITE_SINGLE_COIL, 0x02)
        if value not in (COIL_ON, COIL_OFF):
            return exception_reply(self.unit, WRITE_SINGLE_COIL, 0x03)
        self._switch(coil, value == COIL_ON)
        return frame

    def _write_coils(self, frame: bytes) -> bytes:
        first = int.from_bytes(frame[2:4], "big")
        count = int.from_bytes(frame[4:6], "big")
        packed = frame[7:-2]
        if not 1 <= count <= MAX_WRITE_COILS or frame[6] != (count + 7) // 8 or \
                len(packed) != frame[6]:
            return exception_reply(self.unit, WRITE_MULTIPLE_COILS, 0x03)
        if first + count > len(self.coils):
            return exception_reply(self.unit, WRITE_MULTIPLE_COILS, 0x02)
        for i in range(count):
            self._switch(first + i, bool(packed[i // 8] >> (i % 8) & 1))
        return with_crc(frame[:6])

    def _switch(self, coil: int, on: bool) -> None:
        self.coils[coil] = on
        if coil in self._actions:
            self._actions[coil](on)

    def _read_coils(self, frame: bytes) -> bytes:
        first = int.from_bytes(frame[2:4], "big")
        count = int.from_bytes(frame[4:6], "big")
        if not 1 <= count <= MAX_READ_COILS:
            return exception_reply(self.unit, READ_COILS, 0x03)
        if first + count > len(self.coils):
            return exception_reply(self.unit, READ_COILS, 0x02)
        return read_coils_reply(self.unit, self.coils[first:first + count])
