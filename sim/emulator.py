"""The common shape of every wire emulator.

An emulator is a byte-stream state machine: `handle(bytes)` takes what the host
sent (possibly half a frame, possibly three) and returns what the instrument
sends back. The same object serves an in-process `sim://` link and a TCP socket
of `lipon-hw sim serve`, so drivers and third-party clients meet the same bytes.

Subclasses implement `_process(window) -> (consumed, reply)`: look at the bytes
buffered so far, consume one complete frame (or garbage) and return the reply,
or consume nothing when a frame is still incomplete. The window is at most
`frame_window` bytes, more than any frame the instrument takes, so one call costs
a bounded time and a buffer of garbage is worked through in linear time; an
emulator must consume something when handed a full window (`DISCARD_ALL` drops
everything buffered, as an input buffer overrun does).

What one host has sent but the instrument has not yet acted on is framing state
and lives in a `Session` (one per connection): half a frame, a script being
uploaded, a reply awaiting the host's ACK. Everything else (outputs, setpoints, a
running measurement) is the instrument's and persists whoever connects. `handle`
without a session uses the emulator's own (an in-process link has one host);
`reset_connection()` replaces it. A caller giving sessions from several threads
must serialise `handle` per emulator (`sim serve` holds a lock per port).

`world_lock` guards what emulators share (the World): an emulator takes it only
around the bounded part of a frame that reads or changes that state, never while
looking for frames in its input, so garbage on one port never stalls another.

Faults are switched on by tests or the station file (`faults:`) and applied
here, identically for every instrument: a dropped link answers nothing, a
garbled reply has one byte flipped.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field

#: the world lock of an emulator nobody else shares state with (in-process links)
NO_LOCK = contextlib.nullcontext()
#: what `_process` consumes to drop everything buffered (an input buffer overrun)
DISCARD_ALL = sys.maxsize


@dataclass
class Faults:
    """Wire faults an emulator injects. Counters count down one per reply."""

    link_down: bool = False
    garble_replies: int = 0
    drop_replies: int = 0


@dataclass
class Session:
    """The framing state of one connection: bytes not yet consumed as a frame.
    Emulators that keep more between frames subclass it (`session_class`)."""

    buffer: bytearray = field(default_factory=bytearray)
    closed: bool = False  # its connection has ended


class Emulator:
    """Base class: buffering, fault injection, sessions."""

    #: what `identify()` of the real instrument would report, for logs and `sim serve`
    model = "emulator"
    #: bytes `_process` sees at once: more than the longest frame the instrument takes
    frame_window = 1024
    session_class = Session

    def __init__(self, name: str):
        self.name = name
        self.faults = Faults()
        self.world_lock = NO_LOCK
        self._own_session = self.open_session()
        self.session = self._own_session  # the session `handle` is working for

    def open_session(self) -> Session:
        """Fresh framing state for a new connection (a new serial session)."""
        return self.session_class()

    def reset_connection(self) -> None:
        """A re-opened port: forget half-received frames (the instrument's state stays)."""
        self.close_session(self._own_session)
        self._own_session = self.open_session()

    def close_session(self, session: Session) -> None:
        """The connection of `session` has ended."""
        session.closed = True

    def handle(self, data: bytes, session: Session | None = None) -> bytes:
        self.session = session = session if session is not None else self._own_session
        if self.faults.link_down:
            return b""
        buffer = session.buffer
        buffer += data
        out = bytearray()
        start = 0
        while start < len(buffer):
            with memoryview(buffer) as view:
                window = view[start:start + self.frame_window].tobytes()
            consumed, reply = self._process(window)
            out += reply
            if consumed <= 0:
                if len(window) < self.frame_window:
                    break  # a frame still incomplete
                consumed = len(window)  # a subclass that never gives up: line noise
            start += consumed
        del buffer[:min(start, len(buffer))]
        return self._apply_faults(bytes(out))

    def line_silent(self, session: Session | None = None) -> None:
        """The line has fallen silent (`sim serve`: no byte for a poll interval). A
        protocol whose frames end at a silence (Modbus RTU) drops a partial frame here;
        the rest ignore it."""

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
