"""The instrument side of the INFICON packet (SQM-160, SQC-310): finding the host's packets in
the input and answering each command with a status packet.

A `!` always starts a packet (the length and CRC offsets keep it out of a packet's
inside), so bytes before a `!`, and a packet interrupted by a new `!`, are dropped.
`InficonEmulator` is what both emulators share: it dispatches a command to the handler of its
one- or two-letter code and turns the handler's answer into status 'A' and data, its
ValueError into 'D' (a problem with the data), WrongMode into the instrument's wrong-mode
status, and an unknown code into 'C' (codec: `lipon_hw.drivers.inficon_packet`).
"""

from __future__ import annotations

from collections.abc import Callable

from lipon_hw.drivers.inficon_packet import (
    COMMAND_OFFSET,
    STATUS_BAD_DATA,
    STATUS_INVALID_COMMAND,
    STATUS_OK,
    decode_packet,
    encode_reply,
    packet_size,
)
from lipon_hw.errors import FrameError
from lipon_hw.sim.emulator import Emulator

#: `next_host_packet` found a whole packet whose CRC is wrong
BAD_CRC = object()


def next_host_packet(buffer: bytes) -> tuple[int, bytes | object | None]:
    """(bytes consumed, body) for the first packet in `buffer`: body is the packet's
    payload, BAD_CRC for a corrupt packet, or None when nothing complete is there yet
    (consumed > 0 then means garbage was skipped)."""
    start = buffer.find(b"!")
    if start != 0:
        return (len(buffer) if start < 0 else start), None
    if len(buffer) < 2:
        return 0, None
    if buffer[1] < COMMAND_OFFSET:
        return 1, None
    size = packet_size(buffer, COMMAND_OFFSET)
    restart = buffer.find(b"!", 1, size)
    if restart > 0:
        return restart, None
    if len(buffer) < size:
        return 0, None
    try:
        return size, decode_packet(buffer[:size], COMMAND_OFFSET, "the host",
                                   accept_null_crc=True)
    except FrameError:
        return size, BAD_CRC


class WrongMode(Exception):
    """The command is valid but not now (the SQC-310's status 'E')."""


class InficonEmulator(Emulator):
    """An INFICON instrument's packet loop; subclasses fill `handlers` and declare statuses."""

    #: the reply to a packet whose CRC is wrong; b"" drops it unanswered
    bad_crc_reply = b""
    #: the status a handler's WrongMode is answered with
    wrong_mode_status = STATUS_BAD_DATA
    has_checksum = True

    def corrupt_checksum(self, reply: bytes) -> bytes:
        """The reply's 14-bit CRC wrong: its last byte moved to another value the offset
        encoding allows (never '!', which would restart the packet)."""
        if len(reply) < 4:
            return reply
        last = reply[-1]
        return reply[:-1] + bytes([COMMAND_OFFSET + (last - COMMAND_OFFSET + 1) % 128])

    def __init__(self, name: str):
        super().__init__(name)
        #: command code (1 or 2 letters) -> handler(rest of the command) -> reply data
        self.handlers: dict[str, Callable[[str], str]] = {}

    def _process(self, buffer: bytes) -> tuple[int, bytes]:
        consumed, body = next_host_packet(buffer)
        if body is None:
            return consumed, b""
        if body is BAD_CRC:
            return consumed, self.bad_crc_reply
        with self.world_lock:
            return consumed, self._execute(body.decode("ascii", "replace"))

    def _execute(self, command: str) -> bytes:
        key = command[:2] if command[:2] in self.handlers else command[:1]
        handler = self.handlers.get(key)
        if handler is None:
            return encode_reply(STATUS_INVALID_COMMAND)
        self._before_command()
        try:
            return encode_reply(STATUS_OK, handler(command[len(key):]))
        except ValueError:
            return encode_reply(STATUS_BAD_DATA)
        except WrongMode:
            return encode_reply(self.wrong_mode_status)

    def _before_command(self) -> None:
        """Called before a known command runs (the SQC-310 brings the World up to date)."""
