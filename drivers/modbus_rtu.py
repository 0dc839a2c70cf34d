"""Modbus RTU on a serial line: the codec and the master side every Modbus driver shares.

Framing follows "MODBUS over Serial Line" v1.02 and the application protocol
v1.1b3: `unit, function, data…, CRC-16` with the CRC low byte first
(polynomial 0xA001 reflected, initial value 0xFFFF). There is no terminator: the
reply length follows from the function (01–04 answer `unit function count data…
CRC`; 05 and 06 echo the 8-byte request; 0F and 10 answer 8 bytes; an exception
is `unit function|0x80 code CRC`). A request with a bad CRC gets no reply at all,
so the master times out and retries.
"""

from __future__ import annotations

from lipon_hw.errors import FrameError, InputError, InstrumentError
from lipon_hw.links import Link

READ_COILS = 0x01
READ_DISCRETE_INPUTS = 0x02
READ_HOLDING_REGISTERS = 0x03
READ_INPUT_REGISTERS = 0x04
WRITE_SINGLE_COIL = 0x05
WRITE_SINGLE_REGISTER = 0x06
WRITE_MULTIPLE_COILS = 0x0F
WRITE_MULTIPLE_REGISTERS = 0x10
READ_FUNCTIONS = (READ_COILS, READ_DISCRETE_INPUTS, READ_HOLDING_REGISTERS, READ_INPUT_REGISTERS)
ECHO_FUNCTIONS = (WRITE_SINGLE_COIL, WRITE_SINGLE_REGISTER)
EXCEPTION_FLAG = 0x80
BROADCAST_UNIT = 0
MAX_READ_REGISTERS = 125  # application protocol limit for functions 03 and 04

EXCEPTIONS = {
    0x01: "illegal function",
    0x02: "illegal data address",
    0x03: "illegal data value",
    0x04: "server device failure",
    0x05: "acknowledge",
    0x06: "server device busy",
    0x08: "memory parity error",
    0x0A: "gateway path unavailable",
    0x0B: "gateway target device failed to respond",
}


# --- codec (shared with the emulators) ------------------------------------------------
def crc16(data: bytes) -> int:
    """CRC-16/MODBUS; crc16(b"123456789") == 0x4B37."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def with_crc(body: bytes) -> bytes:
    return body + crc16(body).to_bytes(2, "little")


def crc_ok(frame: bytes) -> bool:
    return len(frame) >= 4 and crc16(frame[:-2]) == int.from_bytes(frame[-2:], "little")


def read_request(unit: int, function: int, first: int, count: int) -> bytes:
    """Functions 01–04 share one request shape: first address, then count."""
    return with_crc(bytes([unit, function]) + first.to_bytes(2, "big") + count.to_bytes(2, "big"))


def registers_reply(unit: int, function: int, values: list[int]) -> bytes:
    """A 03/04 reply; values are 16-bit words (negative ones as two's complement)."""
    data = b"".join((v & 0xFFFF).to_bytes(2, "big") for v in values)
    return with_crc(bytes([unit, function, len(data)]) + data)


def register_values(reply: bytes) -> list[int]:
    """The unsigned 16-bit words of a 03/04 reply."""
    data = reply[3:3 + reply[2]]
    return [int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)]


def signed16(word: int) -> int:
    return word - 0x10000 if word & 0x8000 else word


def exception_reply(unit: int, function: int, code: int) -> bytes:
    return with_crc(bytes([unit, function | EXCEPTION_FLAG, code]))


def request_size(buffer: bytes) -> int | None:
    """Length of the request starting `buffer`, None until enough bytes say it.

    Functions 01–06 have 8-byte requests; 0F and 10 carry a byte count at offset 6.
    For any other function the frame ends where the line falls silent, which on a
    byte stream is the end of what has arrived.
    """
    if len(buffer) < 2:
        return None
    function = buffer[1]
    if 0x01 <= function <= 0x06:
        return 8
    if function in (WRITE_MULTIPLE_COILS, WRITE_MULTIPLE_REGISTERS):
        return 9 + buffer[6] if len(buffer) >= 7 else None
    return len(buffer)


def next_request(buffer: bytes) -> tuple[int, bytes | None]:
    """(bytes consumed, request frame or None) for a server reading a byte stream.

    A real server finds frame boundaries by 3.5 characters of silence; a byte
    stream has none, so after a bad CRC one byte is dropped and the rest looked at
    again. Nothing is consumed while a frame is incomplete.
    """
    size = request_size(buffer)
    if size is None or len(buffer) < size:
        return 0, None
    if not crc_ok(buffer[:size]):
        return 1, None
    return size, buffer[:size]


# --- master side ----------------------------------------------------------------------
class ModbusRtuDevice:
    """One unit on a Modbus RTU line; drivers of units on one line share its Link."""

    #: Modbus RTU is multidrop: units 1-247 share one RS-485 line
    BUS = "modbus-rtu"

    def bus_claims(self) -> list[str]:
        """What on the bus this instrument drives; two instruments may share a port only
        if their claims do not overlap (one unit's coils may serve several roles)."""
        return [f"unit {self.unit}"]

    def __init__(self, name: str, link: Link, unit: int):
        if not 1 <= int(unit) <= 247:
            raise InputError(f"{name}: Modbus unit {unit} is outside 1..247")
        self.name = name
        self.link = link
        self.unit = int(unit)

    def _read_registers(self, function: int, first: int, count: int) -> list[int]:
        return register_values(self._transact(read_request(self.unit, function, first, count)))

    def _transact(self, request: bytes) -> bytes:
        reply = self.link.exchange(lambda link: self._exchange(link, request))
        if reply[1] & EXCEPTION_FLAG:
            code = reply[2]
            raise InstrumentError(f"{self.name} refused {request.hex(' ')} with Modbus exception "
                                  f"{code:02X} ({EXCEPTIONS.get(code, 'unlisted code')})")
        return reply

    def _exchange(self, link: Link, request: bytes) -> bytes:
        link.write(request)
        head = link.read_exact(2)
        if head[1] & EXCEPTION_FLAG:
            reply = head + link.read_exact(3)
        elif head[1] in READ_FUNCTIONS:
            count = link.read_exact(1)
            reply = head + count + link.read_exact(count[0] + 2)
        else:
            reply = head + link.read_exact(6)
        if not crc_ok(reply):
            raise FrameError(f"{self.name} answered {request.hex(' ')} with {reply.hex(' ')}, "
                             "whose CRC is wrong")
        if reply[0] != self.unit or reply[1] & 0x7F != request[1]:
            raise FrameError(f"{self.name} answered {request.hex(' ')} with {reply.hex(' ')}, "
                             "from another unit or function")
        if request[1] in ECHO_FUNCTIONS and not reply[1] & EXCEPTION_FLAG and reply != request:
            raise FrameError(f"{self.name} answered {request.hex(' ')} with {reply.hex(' ')} "
                             "instead of echoing it")
        return reply
