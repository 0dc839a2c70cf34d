"""How a Modbus RTU server finds the host's requests in a byte stream, in linear time.

A real server ends a frame at 3.5 characters of silence and drops it when its CRC
is wrong. A burst on a byte stream (a TCP terminal server) has no silences inside
it, so the server here takes a request's length from its function code, checks the
CRC and, when it is wrong, drops one byte and looks again, so a request that
follows junk in the same burst is still found (unless the junk looks like the start
of a request of no known length, below). Each look costs at most one frame's CRC
(`MAX_ADU` bytes), never a rescan of everything buffered, so junk costs time in
proportion to its length.

A request whose length the function does not give (anything but 01–06, 0F and 10)
runs to the end of what has arrived, as at a silence, but no further than the
largest RTU frame. Only one addressed to this unit or broadcast has its CRC checked,
since no other could be answered; one whose CRC is wrong is dropped whole, as a
real server drops a bad frame (with any request that came in the same burst, which
the master sends again after its timeout), so no byte is looked at under more than
two such CRCs and a stream of junk costs about one table step per byte. The line falling
silent (`line_silent`) ends a partial frame, as t3.5 does on the wire, so junk that
looks like the start of a long request cannot hold the next request back.
"""

from __future__ import annotations

from lipon_hw.drivers.modbus_rtu import (
    BROADCAST_UNIT,
    WRITE_MULTIPLE_COILS,
    WRITE_MULTIPLE_REGISTERS,
    request_size,
)
from lipon_hw.sim.emulator import Emulator, Session

#: "MODBUS over Serial Line" v1.02 §2.5.1: the largest RTU frame (ADU)
MAX_ADU = 256
KNOWN_LENGTH = frozenset(range(0x01, 0x07)) | {WRITE_MULTIPLE_COILS, WRITE_MULTIPLE_REGISTERS}


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    """CRC-16/MODBUS a byte at a time (the driver's codec goes a bit at a time, which
    is plenty for its own requests; a server resyncing through junk checks a CRC at
    every byte, where eight times fewer steps matter)."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _TABLE[(crc ^ byte) & 0xFF]
    return crc


def next_request(buffer: bytes, unit: int) -> tuple[int, bytes | None]:
    """(bytes consumed, request frame or None) for unit `unit` reading a byte stream.

    Nothing is consumed while a frame may still be incomplete; otherwise at least
    one byte is, so a caller looping on it always moves on.
    """
    if len(buffer) < 2:
        return 0, None
    if buffer[1] in KNOWN_LENGTH:
        size = request_size(buffer)
        if size is None:
            return 0, None
        if size > MAX_ADU:
            return 1, None
    elif buffer[0] not in (unit, BROADCAST_UNIT):
        return 1, None
    else:
        size = min(len(buffer), MAX_ADU)
        if size < 4:  # unit, function, CRC: the shortest frame
            return 0, None
        frame = buffer[:size]
        return (size, frame) if _crc_matches(frame) else (size, None)
    if len(buffer) < size:
        return 0, None
    frame = buffer[:size]
    return (size, frame) if _crc_matches(frame) else (1, None)


def _crc_matches(frame: bytes) -> bool:
    return crc16(frame[:-2]) == int.from_bytes(frame[-2:], "little")


class ModbusRtuServer(Emulator):
    """An emulator of a Modbus RTU server (slave) at unit `self.unit`."""

    frame_window = 2 * MAX_ADU
    has_checksum = True

    def corrupt_checksum(self, reply: bytes) -> bytes:
        """The reply's CRC-16 (its last two bytes) wrong."""
        return reply[:-1] + bytes([reply[-1] ^ 0xFF]) if len(reply) >= 4 else reply

    def _next_request(self, buffer: bytes) -> tuple[int, bytes | None]:
        return next_request(buffer, self.unit)

    def line_silent(self, session: Session | None = None) -> None:
        (session if session is not None else self._own_session).buffer.clear()
