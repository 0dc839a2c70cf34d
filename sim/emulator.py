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

Wire faults are switched on by tests or by the lab's fault schedule
(`lipon_hw.sim.fault_catalogue`) and applied here, identically for every instrument:
an unplugged port refuses to open and to carry bytes, a silent instrument (`link_down`)
reads and never answers, a garbled reply has one byte flipped, and a reply with a bad
checksum has its protocol's checksum wrong (`corrupt_checksum`, per protocol). Each
protocol's own error reply (`faults.error_code`) is answered by its emulator. Before it
acts on bytes an emulator calls `faults.tick()`, the schedule's way to fire what is due.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from lipon_hw.errors import LinkError

#: the world lock of an emulator nobody else shares state with (in-process links)
NO_LOCK = contextlib.nullcontext()
#: what `_process` consumes to drop everything buffered (an input buffer overrun)
DISCARD_ALL = sys.maxsize


@dataclass
class Faults:
    """Wire faults an emulator injects. Counters count down one per reply; the switches
    hold while set (the fault schedule sets and clears them)."""

    link_down: bool = False  # silent: the instrument reads and never answers
    garble_replies: int = 0
    drop_replies: int = 0
    unplugged: bool = False  # the port itself is gone: opening and writing fail
    garble_all: bool = False  # every reply has one byte flipped
    bad_checksum: bool = False  # every reply's checksum (CRC) is wrong
    error_code: int | None = None  # every command answered with the protocol's error
    #: called before bytes are handled: the lab's fault schedule fires what is due
    tick: Callable[[], None] | None = None


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
        """A re-opened port: forget half-received frames (the instrument's state stays).
        LinkError while the port is unplugged (the OS has no such device)."""
        self.check_plugged()
        self.close_session(self._own_session)
        self._own_session = self.open_session()

    def close_session(self, session: Session) -> None:
        """The connection of `session` has ended."""
        session.closed = True

    def check_plugged(self) -> None:
        """Fire what the fault schedule has due, then LinkError if the port is gone."""
        if self.faults.tick is not None:
            self.faults.tick()
        if self.faults.unplugged:
            raise LinkError(f"sim://{self.name} is unplugged (the port refuses)")

    def handle(self, data: bytes, session: Session | None = None) -> bytes:
        self.session = session = session if session is not None else self._own_session
        faults = self.faults
        if faults.tick is not None:  # `check_plugged`, inline: it runs for every write
            faults.tick()
        if faults.unplugged:
            raise LinkError(f"sim://{self.name} is unplugged (the port refuses)")
        if faults.link_down:
            return b""
        buffer = session.buffer
        if buffer:  # a frame begun earlier: carry on from it
            buffer += data
            pending = bytes(buffer)
        else:  # the usual case: whole frames, worked on without copying them in and out
            pending = data if type(data) is bytes else bytes(data)
        size, window_size = len(pending), self.frame_window
        replies = []
        start = 0
        try:
            while start < size:
                window = pending if start == 0 and size <= window_size else \
                    pending[start:start + window_size]
                consumed, reply = self._process(window)
                if reply:
                    replies.append(reply)
                if consumed <= 0:
                    if len(window) < window_size:
                        break  # a frame still incomplete
                    consumed = len(window)  # a subclass that never gives up: line noise
                start += consumed
        finally:  # (an exception leaves what was not consumed buffered, as before)
            if start < size:
                buffer[:] = pending[start:] if start else pending
            elif buffer:
                buffer.clear()
        if not replies:
            return b""
        reply = replies[0] if len(replies) == 1 and type(replies[0]) is bytes else \
            b"".join(replies)
        if faults.drop_replies or faults.garble_replies or faults.garble_all or \
                faults.bad_checksum:  # (`_apply_faults`, called only when it has work)
            return self._apply_faults(reply)
        return reply

    def line_silent(self, session: Session | None = None) -> None:
        """The line has fallen silent (`sim serve`: no byte for a poll interval). A
        protocol whose frames end at a silence (Modbus RTU) drops a partial frame here;
        the rest ignore it."""

    def _apply_faults(self, reply: bytes) -> bytes:
        faults = self.faults
        if not reply:
            return reply
        if faults.drop_replies > 0:
            faults.drop_replies -= 1
            return b""
        if faults.bad_checksum:
            reply = self.corrupt_checksum(reply)
        if faults.garble_replies > 0 or faults.garble_all:
            faults.garble_replies = max(0, faults.garble_replies - 1)
            mid = len(reply) // 2
            return reply[:mid] + bytes([reply[mid] ^ 0x5A]) + reply[mid + 1:]
        return reply

    #: whether replies carry a checksum or CRC that `corrupt_checksum` can make wrong
    has_checksum = False

    def corrupt_checksum(self, reply: bytes) -> bytes:
        """The reply with its checksum wrong and everything else intact (protocols with
        a checksum override this and set `has_checksum`)."""
        return reply

    def _process(self, buffer: bytes) -> tuple[int, bytes]:
        raise NotImplementedError
