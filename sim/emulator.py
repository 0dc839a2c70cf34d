"""The common shape of every wire emulator.

An emulator is a byte-stream state machine: `handle(bytes)` takes what the host
sent (possibly half a frame, possibly three) and returns what the instrument
sends back. The same object serves an in-process `sim://` link and a TCP socket
of `lipon-hw sim serve`, so drivers and third-party clients meet the same bytes.

Subclasses implement `_process(buffer) -> (consumed, reply)`: look at the bytes
buffered so far, consume one complete frame (or garbage) and return the reply,
or consume nothing when a frame is still incomplete.

Faults are switched on by tests or the station file (`faults:`) and applied
here, identically for every instrument: a dropped link answers nothing, a
garbled reply has one byte flipped.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Faults:
    """Wire faults an emulator injects. Counters count down one per reply."""

    link_down: bool = False
    garble_replies: int = 0
    drop_replies: int = 0


class Emulator:
    """Base class: buffering, fault injection, connection resets."""

    #: what `identify()` of the real instrument would report, for logs and `sim serve`
    model = "emulator"

    def __init__(self, name: str):
        self.name = name
        self.faults = Faults()
        self._buffer = bytearray()

    def handle(self, data: bytes) -> bytes:
        if self.faults.link_down:
            return b""
        self._buffer += data
        out = bytearray()
        while self._buffer:
            consumed, reply = self._process(bytes(self._buffer))
            if consumed == 0:
                break
            del self._buffer[:consumed]
            out += reply
        return self._apply_faults(bytes(out))

    def reset_connection(self) -> None:
        """A new connection (or a re-opened port): forget half-received frames."""
        self._buffer.clear()

    def _apply_faults(self, reply: bytes) -> bytes:
        if not reply:
            return reply
        if self.faults.drop_replies > 0:
            self.faults.drop_replies -= 1
            return b""
        if self.faults.garble_replies > 0:
            self.faults.garble_replies -= 1
            mid = len(reply) // 2
            return reply[:mid] + bytes([reply[mid] ^ 0x5A]) + reply[mid + 1:]
        return reply

    def _process(self, buffer: bytes) -> tuple[int, bytes]:
        raise NotImplementedError
