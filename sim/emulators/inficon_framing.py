"""How an INFICON instrument (SQM-160, SQC-310) finds the host's packets in its input.

A `!` always starts a packet (the length and CRC offsets keep it out of a packet's
inside), so bytes before a `!`, and a packet interrupted by a new `!`, are dropped.
"""

from __future__ import annotations

from lipon_hw.drivers.inficon_sqm160 import COMMAND_OFFSET, decode_packet, packet_size
from lipon_hw.errors import FrameError

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
