"""An AE Bus RF generator (Cesar class) on the simulated sputter tool.

Speaks the handshake of the real unit: a packet is answered ACK + reply packet,
a corrupt one NAK; the host's NAK has the last reply sent again. Set commands
are refused with CSR 1 unless the unit is in host control (command 14), as a
Cesar under front-panel control does. Readings come from the tool with a little
seeded noise and are carried as whole watts and volts, like the real protocol.
A partial packet is dropped after an inter-byte gap, as the unit does on the wire.

The host watchdog (command 39, readback 139; Paramount MF manual 57020114-00E Table
4-10, see `lipon_hw.drivers.ae_bus` for what is taken from where and what is assumed):
off at power-on; armed, every valid packet for this unit (or a broadcast) restarts it,
and when none has come for its time while RF is on, RF goes off at that instant of
virtual time (the tool's `set_rf_deadline`, so the plasma stops exactly then, whoever
looks later) and the trip is latched in status byte 3, bit 3 until the next RF on.
A packet with a bad checksum, a lone ACK or NAK, or bytes while the unit is silent
(`link_down`) do not restart it. Values are kept in 10 ms steps, truncated; 1–9 ms is
10 ms, as the manual says.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass

from lipon_hw.drivers.ae_bus import (
    ACK,
    CONTROL_FRONT_PANEL,
    CONTROL_HOST,
    CONTROL_USER_PORT,
    NAK,
    REGULATION_CODES,
    STATUS_WATCHDOG_TRIPPED,
    WATCHDOG_OFF,
    WATCHDOG_ON,
    Command,
    decode_packet,
    encode_packet,
    frame_length,
    u16,
)
from lipon_hw.errors import FrameError, InputError
from lipon_hw.sim.emulator import Emulator, Session

#: `decode_packet` of a host's packet, kept per packet (a host sends the same few again and
#: again); a damaged one raises FrameError every time
_host_packet = functools.lru_cache(maxsize=256)(
    lambda packet: decode_packet(packet, "the host"))
#: `encode_packet` of a reply, kept per (unit, command, data): readings are whole watts and
#: volts, so a unit sends the same few replies again and again
_reply_packet = functools.lru_cache(maxsize=1024)(encode_packet)

CSR_OK, CSR_WRONG_MODE, CSR_OUT_OF_RANGE, CSR_BAD_COUNT, CSR_NOT_IMPLEMENTED = 0, 1, 4, 9, 99
REGULATION_NAMES = {code: name for name, code in REGULATION_CODES.items()}


@dataclass
class AEBusSession(Session):
    """One host's link state: the reply awaiting its ACK or NAK, and when its last byte
    came (monotonic seconds), for the inter-byte gap."""

    pending: bytes | None = None
    last_rx: float = -math.inf


class AEBusEmulator(Emulator):
    """Cesar-class RF generator. Settings: `unit` (address, default 1),
    `rated_power_W` (largest setpoint accepted, default 600), `noise_pct` and
    `noise_W` (1-σ reading noise, default 0.2 % + 0.1 W), `inter_byte_timeout_s`
    (a gap that drops a partial packet; default 0.02 s, the Apex default). `watchdog_ms`
    is the armed host watchdog (0: off), kept in its checkpoints."""

    model = "CESAR_1312"
    firmware = "V1.07.0"  # assumption: 7 ASCII characters, as command 130 carries
    #: assumption: set-point tolerance of status bit "out of tolerance"
    tolerance_pct, tolerance_W = 2.0, 2.0
    session_class = AEBusSession

    def __init__(self, name: str, tool, unit: int = 1, rated_power_W: float = 600.0,
                 noise_pct: float = 0.2, noise_W: float = 0.1,
                 inter_byte_timeout_s: float = 0.02):
        super().__init__(name)
        if not 1 <= unit <= 31:
            raise InputError(f"{name}: AE Bus unit address {unit} is outside 1–31")
        self.tool = tool
        self.unit = unit
        self.rated_power_W = rated_power_W
        self.noise_pct = noise_pct
        self.noise_W = noise_W
        self.inter_byte_timeout_s = inter_byte_timeout_s
        self.control_mode = CONTROL_FRONT_PANEL
        self.watchdog_ms = 0  # volatile: off at power-on
        self._setters = {
            Command.RF_OFF: (0, self._rf_off),
            Command.RF_ON: (0, self._rf_on),
            Command.SET_REGULATION: (1, self._set_regulation),
            Command.SET_SETPOINT: (2, self._set_setpoint),
            Command.SET_CONTROL_MODE: (1, self._set_control_mode),
            Command.SET_HOST_WATCHDOG: (3, self._set_watchdog),
        }
        kind, size = self.model.split("_")
        self._queries = {
            Command.SUPPLY_TYPE: lambda: kind.encode(),
            Command.SUPPLY_SIZE: lambda: f"_{size}".encode(),
            Command.FIRMWARE: lambda: self.firmware.encode(),
            Command.REGULATION_MODE: lambda: bytes([self._regulation_code()]),
            Command.CONTROL_MODE: lambda: bytes([self.control_mode]),
            Command.PROCESS_STATUS: self._process_status,
            Command.SETPOINT: self._setpoint,
            Command.FORWARD_POWER: lambda: self._reading("forward_W"),
            Command.REFLECTED_POWER: lambda: self._reading("reflected_W"),
            Command.LOAD_POWER: lambda: self._reading("load_W"),
            Command.EXTERNAL_FEEDBACK: lambda: self._reading("dc_bias_V"),
            Command.HOST_WATCHDOG: lambda: u16(self.watchdog_ms),
        }
        #: data bytes a query may carry (the manual's "send 1 data byte, 0" for 139)
        self._query_data = {Command.HOST_WATCHDOG: (b"", b"\x00")}

    # --- wire -----------------------------------------------------------------
    def handle(self, data: bytes, session: Session | None = None) -> bytes:
        session = session if session is not None else self._own_session
        now = time.monotonic()
        if now - session.last_rx > self.inter_byte_timeout_s:
            session.buffer.clear()
        session.last_rx = now
        return super().handle(data, session)

    def _process(self, buffer: bytes) -> tuple[int, bytes]:
        session = self.session
        if session.pending is not None and buffer[:1] in (ACK, NAK):
            reply = session.pending if buffer[:1] == NAK else b""
            session.pending = reply or None
            return 1, reply
        length = frame_length(buffer)
        if length is None or len(buffer) < length:
            return 0, b""
        session.pending = None
        try:
            address, command, data = _host_packet(buffer[:length])
        except FrameError:
            return length, NAK
        if address not in (0, self.unit):
            return length, b""
        with self.world_lock:
            self._heard()
            reply = _reply_packet(self.unit, command, self._execute(command, data))
        if address == 0:  # broadcast: every unit acts, none answers
            return length, b""
        session.pending = reply
        return length, ACK + reply

    def _execute(self, command: int, data: bytes) -> bytes:
        if self.faults.error_code is not None:  # a unit with active faults refuses all
            return bytes([self.faults.error_code])
        if command in self._setters:
            size, action = self._setters[command]
            if len(data) != size:
                return bytes([CSR_BAD_COUNT])
            if command != Command.SET_CONTROL_MODE and self.control_mode != CONTROL_HOST:
                return bytes([CSR_WRONG_MODE])
            return bytes([action(int.from_bytes(data, "little"))])
        if command in self._queries:
            if data not in self._query_data.get(command, (b"",)):
                return bytes([CSR_BAD_COUNT])
            return self._queries[command]()
        return bytes([CSR_NOT_IMPLEMENTED])

    has_checksum = True

    def corrupt_checksum(self, reply: bytes) -> bytes:
        """The reply packet's XOR byte (its last) wrong; the ACK before it intact."""
        if len(reply) < 3:  # a bare ACK or NAK carries no checksum
            return reply
        return reply[:-1] + bytes([reply[-1] ^ 0xFF])

    # --- host watchdog ------------------------------------------------------------
    def _heard(self) -> None:
        """A valid packet for this unit: an armed watchdog starts its time again."""
        if self.watchdog_ms:
            self.tool.set_rf_deadline(self.tool.world.now + self.watchdog_ms / 1000)

    def _set_watchdog(self, value: int) -> int:
        enable, ms = value & 0xFF, value >> 8
        if enable not in (WATCHDOG_ON, WATCHDOG_OFF):
            return CSR_OUT_OF_RANGE
        self.watchdog_ms = max(ms // 10 * 10, 10) if enable == WATCHDOG_ON and ms else 0
        if self.watchdog_ms:
            self._heard()  # this packet is a successful communication too
        else:
            self.tool.set_rf_deadline(None)
        return CSR_OK

    def snapshot(self) -> dict:
        return {"watchdog_ms": self.watchdog_ms}

    def restore(self, state: dict) -> None:
        self.watchdog_ms = state.get("watchdog_ms", 0)

    # --- set commands: each returns its CSR -------------------------------------
    def _rf_off(self, _value: int) -> int:
        self.tool.set_rf_output(False)
        return CSR_OK

    def _rf_on(self, _value: int) -> int:
        self.tool.set_rf_output(True)
        return CSR_OK

    def _set_regulation(self, code: int) -> int:
        if code not in REGULATION_NAMES:
            return CSR_OUT_OF_RANGE
        self.tool.set_rf_regulation(REGULATION_NAMES[code])
        return CSR_OK

    def _set_setpoint(self, watts: int) -> int:
        if watts > self.rated_power_W:
            return CSR_OUT_OF_RANGE
        self.tool.set_rf_setpoint_W(watts)
        return CSR_OK

    def _set_control_mode(self, mode: int) -> int:
        if mode not in (CONTROL_HOST, CONTROL_USER_PORT, CONTROL_FRONT_PANEL):
            return CSR_OUT_OF_RANGE
        if mode != CONTROL_HOST:  # handing control away switches RF off
            self.tool.set_rf_output(False)
        self.control_mode = mode
        return CSR_OK

    # --- queries ----------------------------------------------------------------
    def _regulation_code(self) -> int:
        return REGULATION_CODES[self.tool.rf_readings()["regulation"]]

    def _setpoint(self) -> bytes:
        r = self.tool.rf_readings()
        return u16(round(r["setpoint_W"])) + bytes([REGULATION_CODES[r["regulation"]]])

    def _process_status(self) -> bytes:
        r = self.tool.rf_readings()
        regulated = r["forward_W"] if r["regulation"] == "forward" else r["load_W"]
        tolerance = max(self.tolerance_W, r["setpoint_W"] * self.tolerance_pct / 100)
        out_of_tolerance = r["rf_on"] and abs(regulated - r["setpoint_W"]) > tolerance
        byte, index = STATUS_WATCHDOG_TRIPPED
        status = [r["rf_on"] << 5 | out_of_tolerance << 7, 0, 0, 0]
        status[byte] |= r["watchdog_tripped"] << index
        return bytes(status)

    def _reading(self, key: str) -> bytes:
        """A reading as the unit reports it: noisy, whole units, magnitude, 16 bits."""
        true = abs(self.tool.rf_reading(key))
        sigma = true * self.noise_pct / 100 + self.noise_W
        noisy = true + sigma * self.tool.world.rng.standard_normal() if sigma else true
        return u16(min(max(round(noisy), 0), 0xFFFF))
