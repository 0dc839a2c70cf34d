"""MKS 937B gauge controller on the wire, reading the sputter chamber's pressure.

Channel 1 is a Pirani/cold-cathode combination (1e-9..1000 Torr) whose gas
calibration is off by a factor drawn once per controller (within ±15 %, as a
cold cathode on an uncorrected gas is), with 1 % reading noise. Channel 3 is a
0.1 Torr full-scale capacitance manometer: ±0.25 % of reading, `LO` below
1e-5 Torr, clipped at full scale. Other channels hold no sensor and read
`MISCONN`; a channel switched off with `CP<n>!OFF` reads `OFF` (these words are
assumptions, see the driver). Unknown commands get NAK 160, bad values NAK 169.
Frames for other addresses are ignored, as on an RS-485 bus.
"""

from __future__ import annotations

from lipon_hw.drivers.mks937b import (
    BROADCAST_ADDRESS,
    TERMINATOR,
    decode_request,
    encode_reply,
    format_pressure,
)
from lipon_hw.sim.emulator import DISCARD_ALL, Emulator

#: how many of the controller's unit one Torr is
UNITS = {"TORR": 1.0, "MBAR": 1.333224, "PASCAL": 133.3224, "MICRON": 1000.0}
CHANNELS = range(1, 7)
MAX_FRAME = 64  # no valid message is longer; longer garbage is dropped


class MKS937BEmulator(Emulator):
    model = "MKS 937B"

    def __init__(self, name: str, tool, address: int = 253, serial: str = "1103937001"):
        super().__init__(name)
        self.tool = tool
        self.address = int(address)
        self.serial = serial
        self.calibration = 1 + tool.world.rng.uniform(-0.15, 0.15)
        self.unit = "TORR"
        self.power = dict.fromkeys(CHANNELS, True)

    # --- instrument memory (for checkpoints) ----------------------------------------
    def snapshot(self) -> dict:
        return {"unit": self.unit, "power": {str(ch): on for ch, on in self.power.items()}}

    def restore(self, state: dict) -> None:
        self.unit = state["unit"]
        self.power = {int(ch): on for ch, on in state["power"].items()}

    # --- wire -------------------------------------------------------------------------
    def _process(self, buffer: bytes) -> tuple[int, bytes]:
        start = buffer.find(b"@")
        if start != 0:
            return (len(buffer) if start < 0 else start), b""
        end = buffer.find(TERMINATOR)
        if end < 0:
            return (DISCARD_ALL if len(buffer) > MAX_FRAME else 0), b""
        size = end + len(TERMINATOR)
        try:
            request = decode_request(buffer[:size])
        except ValueError:
            return size, self._nak_if_addressed(buffer[:size])
        if request.address not in (self.address, BROADCAST_ADDRESS):
            return size, b""
        with self.world_lock:
            body, ok = self._answer(request.command, request.value)
        return size, encode_reply(self.address, body, ack=ok)

    def _nak_if_addressed(self, frame: bytes) -> bytes:
        """A well-addressed frame the controller cannot parse is an unrecognized message."""
        if frame[1:4] in (f"{self.address:03d}".encode(), f"{BROADCAST_ADDRESS}".encode()):
            return encode_reply(self.address, "160", ack=False)
        return b""

    def _answer(self, command: str, value: str | None) -> tuple[str, bool]:
        if self.faults.error_code is not None:  # every message refused with that NAK
            return f"{self.faults.error_code}", False
        if command == "U":
            return self._unit_command(value)
        if command == "MD" and value is None:
            return "937B", True
        if command == "SN" and value is None:
            return self.serial, True
        channel = _channel_of(command)
        if command.startswith("PR") and channel and value is None:
            return self._reading(channel), True
        if command.startswith("CP") and channel:
            return self._power_command(channel, value)
        return "160", False

    def _unit_command(self, value: str | None) -> tuple[str, bool]:
        if value is None:
            return self.unit, True
        if value.upper() not in UNITS:
            return "169", False
        self.unit = value.upper()
        return self.unit, True

    def _power_command(self, channel: int, value: str | None) -> tuple[str, bool]:
        if value is not None:
            if value.upper() not in ("ON", "OFF"):
                return "169", False
            self.power[channel] = value.upper() == "ON"
        return ("ON" if self.power[channel] else "OFF"), True

    # --- sensors ------------------------------------------------------------------------
    def _reading(self, channel: int) -> str:
        if channel not in (1, 3):
            return "MISCONN"
        if not self.power[channel]:
            return "OFF"
        true_torr = self.tool.pressure_torr()
        if channel == 1:
            return self._combination_gauge(true_torr)
        return self._capacitance_manometer(true_torr)

    def _combination_gauge(self, true_torr: float) -> str:
        rng = self.tool.world.rng
        torr = true_torr * self.calibration * (1 + rng.normal(0, 0.01))
        if torr < 1e-9:
            return "LO"
        if torr > 1000.0:
            return "ATM"
        return self._in_unit(torr)

    def _capacitance_manometer(self, true_torr: float) -> str:
        if true_torr < 1e-5:
            return "LO"
        torr = true_torr * (1 + self.tool.world.rng.uniform(-0.0025, 0.0025))
        return self._in_unit(min(torr, 0.1))

    def _in_unit(self, torr: float) -> str:
        return format_pressure(torr * UNITS[self.unit])


def _channel_of(command: str) -> int | None:
    digits = command[2:]
    if digits.isdigit() and int(digits) in CHANNELS:
        return int(digits)
    return None
