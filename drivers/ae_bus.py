"""Advanced Energy AE Bus RF generators (Cesar class; Apex uses the same commands).

Wire format (AE manuals, e.g. Apex 5708009-C Table 4-6; protocols.md §2.1):

    HEADER CMD [LEN] DATA… CHK   HEADER = address << 3 | n, n = 0..6 data bytes,
                                 n = 7: LEN (the data length) follows CMD
                                 CHK = XOR of every byte before it
                                 multi-byte values are little-endian

A transaction is a handshake: host sends a packet; the unit answers ACK (or NAK
if the packet arrived corrupt) and then a packet with the same command; the host
answers ACK, or NAK to have that packet sent again. Set commands answer one
byte, the CSR (0 = accepted).

The codec is pure functions so the emulator speaks exactly the same bytes.

Link recovery (`Link.exchange`'s retry rule). Idempotent, resent as they are after a lost
or damaged reply: every command this driver sends. RF off (1) and on (2), regulation mode
(3), power setpoint (8), control mode (14) and the host watchdog (39) set absolute states
(Apex manual Table 4-6 and Paramount manual Table 4-10 list them as set commands with a
value or none), and the rest are queries. Read back before resending: none needed. Not
used: no command that steps or toggles.

Host watchdog (`HostWatchdog`). Taken from the Paramount MF 2 kW manual (57020114-00E,
Table 4-10): command 39 "set communications watchdog timer", 3 data bytes — byte 0
enable/disable, bytes 1–2 the time in ms (1–65535; 0 disables; volatile, 0 at power-on;
kept in 10 ms steps, truncated) — answered with a CSR: when no successful communication
arrives for that long, the unit turns its output off if it is on. Command 139 reports it
(1 data byte, 0; 2 bytes back, ms). Not to be confused with command 40/140, the host-port
time-out, which is the gap *between bytes* after which a partial packet is dropped.
Unverified here: that Cesar and Apex units (whose manual at hand, Apex 5708009-C, lists
40/140 but not 39/139) implement 39/139 (a unit that does not answers CSR 99, and a run
then goes on with an alarm saying so); the enable byte's values (1 on, 0 off, assumed);
and how a unit reports a trip: the manuals at hand say only that the output goes off,
which command 162 shows (byte 0 bit 5). This driver and the emulator assume a latched
flag in the 4th status byte of 162, bit 3 (unassigned in the Apex table), set by the trip
and cleared by the next RF on (`STATUS_WATCHDOG_TRIPPED`); on a real unit that bit may
stay 0, and only the output being off tells.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable

from lipon_hw.errors import FrameError, InputError, InstrumentError
from lipon_hw.interfaces import SupplyStatus
from lipon_hw.links import Link

ACK = b"\x06"
NAK = b"\x15"
LONG_PACKET = 7  # header length field meaning "a LEN byte follows the command"


class Command(enum.IntEnum):
    RF_OFF = 1
    RF_ON = 2
    SET_REGULATION = 3
    SET_SETPOINT = 8
    SET_CONTROL_MODE = 14
    SET_HOST_WATCHDOG = 39
    SUPPLY_TYPE = 128
    SUPPLY_SIZE = 129
    FIRMWARE = 130
    HOST_WATCHDOG = 139
    REGULATION_MODE = 154
    CONTROL_MODE = 155
    PROCESS_STATUS = 162
    SETPOINT = 164
    FORWARD_POWER = 165
    REFLECTED_POWER = 166
    LOAD_POWER = 167
    EXTERNAL_FEEDBACK = 168


REGULATION_CODES = {"forward": 6, "load": 7}
CONTROL_HOST, CONTROL_USER_PORT, CONTROL_FRONT_PANEL = 2, 4, 6

CSR_MEANINGS = {
    0: "OK",
    1: "wrong control mode",
    2: "RF is on",
    4: "data out of range",
    5: "user-port RF signal off",
    7: "active faults",
    9: "wrong data byte count",
    19: "recipe active",
    50: "frequency out of range",
    51: "duty cycle out of range",
    99: "not implemented",
}

# command 162, process status (Apex manual Table 4-6): byte, bit
STATUS_OUTPUT_ON = (0, 5)
STATUS_OUT_OF_TOLERANCE = (0, 7)
STATUS_OVERTEMPERATURE = (1, 3)
STATUS_INTERLOCK_OPEN = (1, 7)
#: assumption (not in the manuals at hand): a host-watchdog trip, latched until RF on
STATUS_WATCHDOG_TRIPPED = (3, 3)
#: command 39: the watchdog time in ms is a 16-bit value; 0 disables it
WATCHDOG_MAX_MS = 0xFFFF
WATCHDOG_ON, WATCHDOG_OFF = 1, 0


# --- codec ------------------------------------------------------------------------
def checksum(data: bytes) -> int:
    """XOR of all bytes; a whole valid packet therefore XORs to 0."""
    value = 0
    for byte in data:
        value ^= byte
    return value


#: `checksum` of a reply packet, kept per packet: a unit's replies repeat (whole watts)
_reply_checksum = functools.lru_cache(maxsize=1024)(checksum)


def encode_packet(address: int, command: int, data: bytes = b"") -> bytes:
    if len(data) < LONG_PACKET:
        body = bytes([address << 3 | len(data), command]) + data
    else:
        body = bytes([address << 3 | LONG_PACKET, command, len(data)]) + data
    return body + bytes([checksum(body)])


def request(address: int, command: int, data: bytes = b"") -> bytes:
    """`encode_packet` of a host's request, kept per (address, command, data): a host sends
    the same few again and again."""
    if type(data) is not bytes:
        return encode_packet(address, command, data)
    return _request(address, command, data)


_request = functools.lru_cache(maxsize=256)(encode_packet)


def frame_length(head: bytes) -> int | None:
    """Total packet length, or None while `head` is too short to tell."""
    if not head:
        return None
    n = head[0] & 0x07
    if n < LONG_PACKET:
        return 2 + n + 1
    return 3 + head[2] + 1 if len(head) >= 3 else None


def decode_packet(packet: bytes, source: str = "the unit") -> tuple[int, int, bytes]:
    """(address, command, data) of one whole packet; FrameError if it is not valid."""
    expected = frame_length(packet)
    if expected is None or len(packet) != expected:
        raise FrameError(f"{source} sent {packet!r}, whose length does not match its header")
    if checksum(packet):
        raise FrameError(f"{source} sent {packet!r}, whose XOR checksum does not add up")
    start = 3 if packet[0] & 0x07 == LONG_PACKET else 2
    return packet[0] >> 3, packet[1], packet[start:-1]


def read_packet(read_exact: Callable[[int], bytes]) -> bytes:
    """Read one packet, asking the wire only for bytes the header says are coming."""
    head = read_exact(2)
    if head[0] & 0x07 == LONG_PACKET:
        head += read_exact(1)
    return head + read_exact(frame_length(head) - len(head))


def u16(value: int) -> bytes:
    return int(value).to_bytes(2, "little")


def bit(data: bytes, position: tuple[int, int]) -> bool:
    byte, index = position
    return bool(data[byte] >> index & 1)


# --- driver -----------------------------------------------------------------------
class AEBusGenerator:
    """An AE Bus RF generator (Cesar, Apex) as a `SputterSupply`.

    Settings: `unit` (AE Bus address 1–31, default 1). Limits: `max_power_W` (the
    station's limit; setpoints above it are refused before anything is sent) and
    `host_watchdog_s` (default 10 s): how long the generator may hear nothing from the
    host before it switches RF off by itself; a run arms it and keeps talking at least
    every half of it (`lipon_hw.deposition.heartbeat`).
    Host control (command 14) is claimed before the first set command, so a
    driver that only reads never takes the generator away from its front panel.
    """

    SERIAL_DEFAULTS: dict = {"baudrate": 19200, "parity": "O", "bytesize": 8, "stopbits": 1}
    #: station limits this driver knows, with their physical range: setpoints are whole
    #: watts and the largest Cesar/Apex generators are rated 10 kW; the watchdog time is
    #: 16-bit ms on the wire (≤ 65.535 s), and below 1 s a host that waits one link
    #: timeout (1 s by default) on another instrument would trip it while alive
    LIMITS = {"max_power_W": (1.0, 10_000.0), "host_watchdog_s": (1.0, 65.0)}
    #: the watchdog time a station that names none gets
    DEFAULT_HOST_WATCHDOG_S = 10.0
    #: how often one transaction asks the unit to resend a corrupt reply
    REPLY_RESENDS = 2

    def __init__(self, name: str, link: Link, unit: int = 1, max_power_W: float = 600.0,
                 host_watchdog_s: float = DEFAULT_HOST_WATCHDOG_S):
        if not 1 <= unit <= 31:
            raise InputError(f"{name}: AE Bus unit address {unit} is outside 1–31")
        if not 0 < max_power_W <= 0xFFFF:
            raise InputError(f"{name}: max_power_W {max_power_W} is outside 0–65535 W")
        low, high = self.LIMITS["host_watchdog_s"]
        if not low <= host_watchdog_s <= high:
            raise InputError(f"{name}: host_watchdog_s {host_watchdog_s} is outside "
                             f"{low:g}–{high:g} s")
        self.name = name
        self.link = link
        self.unit = unit
        self.max_power_W = max_power_W
        self.watchdog_period_s = float(host_watchdog_s)
        #: called after every valid exchange (`HostWatchdog`); the heartbeat sets it
        self.on_exchange: Callable[[], None] | None = None
        self._host_control = False

    # --- SputterSupply --------------------------------------------------------
    def identify(self) -> str:
        kind = self._ascii(Command.SUPPLY_TYPE)
        size = self._ascii(Command.SUPPLY_SIZE)
        return f"{kind}{size} firmware {self._ascii(Command.FIRMWARE)}"

    def make_safe(self) -> None:
        self.set_output(False)
        self.set_power_setpoint_W(0)

    def set_output(self, on: bool) -> None:
        self._set(Command.RF_ON if on else Command.RF_OFF)

    def set_power_setpoint_W(self, power_W: float) -> None:
        if not 0 <= power_W <= self.max_power_W:
            raise InstrumentError(f"{self.name} will not set {power_W} W: the limit is "
                                  f"0–{self.max_power_W} W (max_power_W)")
        self._set(Command.SET_SETPOINT, u16(round(power_W)))

    def set_regulation_mode(self, mode: str) -> None:
        """'forward' regulates forward power, 'load' the power delivered to the plasma."""
        if mode not in REGULATION_CODES:
            raise InputError(f"{self.name}: regulation mode {mode!r} is not one of "
                             f"{', '.join(REGULATION_CODES)}")
        self._set(Command.SET_REGULATION, bytes([REGULATION_CODES[mode]]))

    def power_setpoint_W(self) -> float:
        return float(int.from_bytes(self._query(Command.SETPOINT, 3)[:2], "little"))

    def forward_power_W(self) -> float:
        return self._watts(Command.FORWARD_POWER)

    def reflected_power_W(self) -> float:
        return self._watts(Command.REFLECTED_POWER)

    def load_power_W(self) -> float:
        return self._watts(Command.LOAD_POWER)

    def dc_bias_V(self) -> float:
        """Target self-bias, negative. Sign convention: the external-feedback input
        (command 168) carries the bias magnitude in volts, unsigned, so the driver
        returns its negative, as the self-bias of an RF-driven target is."""
        return -self._watts(Command.EXTERNAL_FEEDBACK)

    def status(self) -> SupplyStatus:
        data = self._query(Command.PROCESS_STATUS, 4)
        on = bit(data, STATUS_OUTPUT_ON)
        return SupplyStatus(
            output_on=on,
            setpoint_reached=on and not bit(data, STATUS_OUT_OF_TOLERANCE),
            interlock_open=bit(data, STATUS_INTERLOCK_OPEN),
            fault=bit(data, STATUS_OVERTEMPERATURE) or bool(data[2] or data[3]),
            raw=int.from_bytes(data, "little"),
        )

    # --- HostWatchdog -----------------------------------------------------------
    def set_host_watchdog_s(self, timeout_s: float) -> None:
        """Arm the generator's host watchdog (command 39) for `timeout_s`, or disarm it
        with 0. The unit keeps it in 10 ms steps, truncated (a value under 10 ms is 10)."""
        ms = round(timeout_s * 1000)
        if not 0 <= ms <= WATCHDOG_MAX_MS:
            raise InputError(f"{self.name}: host watchdog {timeout_s} s is outside "
                             f"0–{WATCHDOG_MAX_MS / 1000:g} s")
        self._set(Command.SET_HOST_WATCHDOG,
                  bytes([WATCHDOG_ON if ms else WATCHDOG_OFF]) + u16(ms))

    def host_watchdog_s(self) -> float:
        """The armed watchdog time (command 139), 0 when disarmed."""
        return int.from_bytes(self._query(Command.HOST_WATCHDOG, 2, b"\x00"), "little") / 1000

    def host_watchdog_tripped(self) -> bool:
        """The watchdog switched RF off since the last RF on (one status query)."""
        return bit(self._query(Command.PROCESS_STATUS, 4), STATUS_WATCHDOG_TRIPPED)

    # --- transactions ---------------------------------------------------------
    def _watts(self, command: Command) -> float:
        return float(int.from_bytes(self._query(command, 2), "little"))

    def _ascii(self, command: Command) -> str:
        reply = self._transact(encode_packet(self.unit, command))
        return reply.decode("ascii", errors="replace").strip(" \x00")

    def _set(self, command: Command, data: bytes = b"") -> None:
        if not self._host_control:
            self._command(Command.SET_CONTROL_MODE, bytes([CONTROL_HOST]))
            self._host_control = True
        self._command(command, data)

    def _command(self, command: Command, data: bytes) -> None:
        packet = request(self.unit, command, data)
        reply = self._transact(packet)
        if len(reply) != 1:
            raise FrameError(f"{self.name} answered {packet!r} with {len(reply)} data bytes "
                             "instead of a 1-byte CSR")
        self._check_csr(packet, reply[0])

    def _query(self, command: Command, size: int, data: bytes = b"") -> bytes:
        packet = request(self.unit, command, data)
        reply = self._transact(packet)
        if len(reply) == 1 and size != 1:
            self._check_csr(packet, reply[0])
        if len(reply) != size:
            raise FrameError(f"{self.name} answered {packet!r} with {len(reply)} data bytes "
                             f"instead of {size}")
        return reply

    def _check_csr(self, packet: bytes, csr: int) -> None:
        if csr:
            meaning = CSR_MEANINGS.get(csr, "an undocumented code")
            raise InstrumentError(f"{self.name} refused {packet!r} with CSR {csr} ({meaning})")

    def _transact(self, packet: bytes) -> bytes:
        reply = self.link.exchange(lambda link: self._handshake(link, packet))
        if self.on_exchange is not None:  # the unit heard a valid packet: its watchdog too
            self.on_exchange()
        return reply

    def _handshake(self, link: Link, packet: bytes) -> bytes:
        """One AE Bus transaction: packet, ACK, reply packet, host ACK."""
        link.write(packet)
        answer = link.read_exact(1)
        if answer == NAK:
            raise FrameError(f"{self.name} answered {packet!r} with NAK (it received it corrupt)")
        if answer != ACK:
            raise FrameError(f"{self.name} answered {packet!r} with {answer!r} instead of ACK")
        reply = self._read_reply(link)  # whole, as its header says, and its checksum right
        address, command = reply[0] >> 3, reply[1]
        data = reply[3 if reply[0] & 0x07 == LONG_PACKET else 2:-1]
        if address != self.unit or command != packet[1]:
            raise FrameError(f"{self.name} answered {packet!r} with {reply!r}, which is "
                             f"from unit {address} for command {command}")
        link.write(ACK)
        return data

    def _read_reply(self, link: Link) -> bytes:
        """The reply packet; one with a bad checksum is NAKed so the unit sends it again, and
        is a FrameError once it has been resent REPLY_RESENDS times."""
        for _resend in range(self.REPLY_RESENDS):
            reply = read_packet(link.read_exact)
            if not _reply_checksum(reply):
                return reply
            link.write(NAK)
        reply = read_packet(link.read_exact)
        if checksum(reply):
            raise FrameError(f"{self.name} sent {reply!r}, whose XOR checksum does not add up")
        return reply
