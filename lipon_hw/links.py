"""Bytes to and from one instrument, whatever the wire.

A `Link` is what a driver talks to: write bytes, read an exact count or up to a
terminator, all under a timeout. Behind it a `Port` does the moving: an in-process
emulator (`sim://NAME`), pyserial (`serial:///dev/ttyUSB0?baudrate=19200`,
`socket://host:port`, any pyserial URL) or pyvisa (`ASRL…`, `TCPIP…`, `GPIB…`,
`USB…`; `lipon_hw.ports`). Instruments on one physical port share one Link, hence one lock.

`Link.exchange(fn)` is the one way a driver runs a transaction: it takes the port
lock, retries a failed exchange after flushing the input, and keeps the link's
health (ok / retrying / lost) for interlocks to read. A lost link is re-opened
on a later exchange, no sooner than a bounded exponential back-off allows (or at once
after `reopen_now()`, which a safe state asks for: it does not wait out a back-off);
this holds for every port kind (a closed socket, an unplugged adapter, a VISA session
gone: the port is opened afresh). The back-off runs on the link's clock: the run's own,
so a simulated lab's port comes back after the same virtual delay on every machine, and
a caller that rides out an outage waits on that clock between its tries.

The retry rule. A transaction that is idempotent (a query, an absolute setpoint,
a coil set ON or OFF) is simply sent again after a failure. One that is not (a
script upload, a layer start, a thickness zero: sent twice it acts twice) is
passed with `verify=`: after a failure that may have come after the instrument
took the command (a lost or garbled reply), the link does NOT send it again; it
runs the driver's read-back `verify(link)` first, and resends only if that says
the command did not take. Retries stay bounded either way: `retries + 1` attempts
in all, then LinkLost, which says when a command may have taken effect unseen.
"""

from __future__ import annotations

import contextlib
import enum
import threading
import time
from collections.abc import Callable, Mapping
from typing import TypeVar

from lipon_hw.errors import (
    FrameError,
    LinkError,
    LinkLost,
    LinkTimeout,
    LiponError,
)
from lipon_hw.ports import Endpoint, Port, canonical_address, make_port

T = TypeVar("T")

class Health(enum.Enum):
    OK = "ok"
    RETRYING = "retrying"
    LOST = "lost"




class Link:
    """One physical port as drivers see it: framing-agnostic reads, a lock, health.

    A port with `read_available()` (the in-process one) or `read_waiting()` (pyserial's:
    every port kind but VISA) is read in bulk into a buffer the reads take from; what a
    driver sees (bytes, timeouts, frame errors) is the same as reading it byte by byte.
    """

    #: counts every change of any link's health in this process: whoever watches
    #: thousands of links (a potentiostat bank's watch) looks at each only when it moved
    health_changes = 0

    def __init__(
        self,
        address: str,
        port: Port,
        timeout_s: float = 1.0,
        retries: int = 2,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.address = address
        self.timeout_s = timeout_s
        self.retries = retries
        self.health = Health.OK
        self.last_error = ""
        self.answered = False  # an exchange has succeeded since the link was made
        self.lock = threading.RLock()
        self._port = port
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._next_backoff_s = backoff_s
        self._reopen_at = 0.0
        self._clock = clock
        self._open = False
        self._rx = bytearray()  # bytes taken in bulk (or given back) and not yet read
        self._read_available = getattr(port, "read_available", None)
        self._read_waiting = getattr(port, "read_waiting", None)

    # -- byte access, for drivers inside exchange() ---------------------------------
    def write(self, data: bytes) -> None:
        self._port.write(data)

    def read_exact(self, n: int) -> bytes:
        rx = self._rx
        if self._read_available is None and not rx:
            data = self._port.read(n, self.timeout_s)
        else:
            if len(rx) < n:
                rx += self._read_available() if self._read_available is not None else \
                    self._port.read(n - len(rx), self.timeout_s)
            if len(rx) <= n:  # all of it (a frame's last read, or too few: a timeout)
                data = bytes(rx)
                rx.clear()
            else:
                data = bytes(rx[:n])
                del rx[:n]
        if len(data) < n:
            raise LinkTimeout(
                f"{self.address} sent {len(data)} of {n} expected bytes before timing out"
                + (f" ({data!r})" if data else "")
            )
        return data

    def read_until(self, terminator: bytes, max_bytes: int = 4096) -> bytes:
        """Bytes up to and including `terminator`."""
        if self._read_available is not None or self._read_waiting is not None or self._rx:
            return self._read_until_buffered(terminator, max_bytes)
        buf = bytearray()
        while not buf.endswith(terminator):
            byte = self._port.read(1, self.timeout_s)
            if not byte:
                raise LinkTimeout(
                    f"{self.address} did not finish its reply with {terminator!r}"
                    + (f" (got {bytes(buf)!r})" if buf else " (no reply)")
                )
            buf += byte
            if len(buf) > max_bytes:
                raise FrameError(f"{self.address} sent more than {max_bytes} bytes without "
                                 f"{terminator!r}")
        return bytes(buf)

    def read_lines(self, terminator: bytes, max_bytes: int = 4096) -> list[bytes]:
        """Every frame up to `terminator` that has arrived, each as read_until gives it:
        the first is waited for as read_until waits (its timeout and frame errors); the
        others are those complete in the bulk buffer (a port read byte by byte gives
        one). Give back what was read too far with `unread`."""
        frames = [self.read_until(terminator, max_bytes)]
        rx, start, step = self._rx, 0, len(terminator)
        while True:
            end = rx.find(terminator, start)
            if end < 0 or end + step - start > max_bytes:
                break  # incomplete or too long: left for read_until to judge
            frames.append(bytes(rx[start:end + step]))
            start = end + step
        del rx[:start]
        return frames

    def read_block(self, terminator: bytes, max_bytes: int = 4096) -> bytes:
        """The frames read_lines gives, as one bytes object (for a terminator that cannot
        overlap itself): the first waited for as read_until waits, then those complete in
        the bulk buffer up to the first longer than max_bytes, found a window of
        max_bytes at a time rather than frame by frame."""
        first = self.read_until(terminator, max_bytes)
        rx, start = self._rx, 0
        while (end := rx.rfind(terminator, start, start + max_bytes)) >= 0:
            start = end + len(terminator)
        if not start:
            return first
        data = first + rx[:start]
        del rx[:start]
        return bytes(data)

    def read_arrived(self, terminator: bytes, first_s: float, gap_s: float,
                     max_bytes: int = 4096) -> bytes:
        """The complete frames an instrument sending on its own has sent so far, as one
        bytes object (b"" if none): the first bytes waited for up to `first_s` (a reply
        on its way), then more read until the line has been quiet for `gap_s`, for at
        most the link's timeout in all (an instrument that never pauses). A frame still
        arriving when the line goes quiet is kept for the next read, not lost; one longer
        than max_bytes without `terminator` is a FrameError, as read_until's."""
        rx = self._rx
        deadline = time.monotonic() + self.timeout_s
        wait_s = first_s
        while True:
            more = self._more(wait_s)
            rx += more
            if not more or self._read_available is not None or time.monotonic() > deadline:
                break  # in process, everything there is came at once
            wait_s = gap_s
        start = 0
        while (end := rx.rfind(terminator, start, start + max_bytes)) >= 0:
            start = end + len(terminator)
        if not start and len(rx) > max_bytes:
            del rx[:max_bytes + 1]
            raise FrameError(f"{self.address} sent more than {max_bytes} bytes without "
                             f"{terminator!r}")
        data = bytes(rx[:start])
        del rx[:start]
        return data

    def _more(self, timeout_s: float) -> bytes:
        """The next bytes: all an in-process port has, all a port that reads in bulk has
        once one has come (waited for up to timeout_s), else one byte; b"" if none came."""
        if self._read_available is not None:
            return self._read_available()
        if self._read_waiting is not None:
            return self._read_waiting(timeout_s)
        return self._port.read(1, timeout_s)

    def unread(self, data: bytes) -> None:
        """Put bytes back in front of those still to be read (a driver that read past the
        end of what it wanted)."""
        self._rx[:0] = data

    def _read_until_buffered(self, terminator: bytes, max_bytes: int) -> bytes:
        """read_until from the buffer: a frame error consumes max_bytes + 1 bytes and a
        timeout everything that came, as the byte-by-byte reads do."""
        rx = self._rx
        while True:
            end = rx.find(terminator)
            if end >= 0:
                end += len(terminator)
                if end <= max_bytes:
                    line = bytes(rx[:end])
                    del rx[:end]
                    return line
            if end >= 0 or len(rx) > max_bytes:
                del rx[:max_bytes + 1]
                raise FrameError(f"{self.address} sent more than {max_bytes} bytes without "
                                 f"{terminator!r}")
            more = self._more(self.timeout_s)
            if not more:
                got = bytes(rx)
                rx.clear()
                raise LinkTimeout(
                    f"{self.address} did not finish its reply with {terminator!r}"
                    + (f" (got {got!r})" if got else " (no reply)")
                )
            rx += more

    # -- transactions ------------------------------------------------------------
    def exchange(self, transaction: Callable[[Link], T],
                 verify: Callable[[Link], bool] | None = None) -> T | None:
        """Run `transaction(self)` under the port lock, with retries and health.

        Without `verify` the transaction is idempotent: a failed attempt (LinkError: a
        timeout, a damaged frame, a dead port) is flushed and sent again.

        With `verify` it is not: after a failed attempt the instrument may have acted on
        the command all the same, so the next attempt first runs `verify(self)`, the
        driver's read-back of the state (in the same lock; it must not change anything
        itself). True: the command took effect, and `exchange` returns None (the
        transaction's own reply is lost; a non-idempotent transaction should return
        nothing its caller needs). False: it did not take, and the transaction is sent
        again. A read-back that fails (LinkError) is tried again, never the command.
        At most `retries + 1` attempts in all (each a read-back when one is due, and the
        command if needed), then LinkLost.
        """
        with self.lock:
            if not self._open or self.health is Health.LOST:
                self._ensure_open()
            error: LinkError | None = None
            unsure = False  # a command went out and whether it took is not known
            for _attempt in range(self.retries + 1):
                try:
                    if not self._open:  # the port failed on the last attempt: open it anew
                        self._port.open()
                        self._open = True
                    if unsure:
                        if verify(self):
                            self._succeeded()
                            return None
                        unsure = False
                    result = transaction(self)
                except LinkError as exc:
                    error = exc
                    unsure = verify is not None
                    self._set_health(Health.RETRYING)
                    self.last_error = str(exc)
                    self._rx.clear()
                    if type(exc) is LinkError:  # the port itself failed (a closed socket,
                        self._close_port()  # an unplugged adapter): re-opened next attempt
                    else:
                        self._port.reset_input()
                    continue
                except BaseException as exc:
                    if not isinstance(exc, LiponError):
                        # cut short from outside (Ctrl-C, SIGTERM, a bug): what is on the
                        # wire is unknown (half a frame sent, a reply unread or not
                        # acknowledged), so the port is closed and the next exchange opens
                        # it anew; the instrument drops a half frame after its byte gap.
                        # (An InstrumentError is a refusal read whole: the wire is in step.)
                        self._rx.clear()
                        self._close_port()
                    raise
                if self.health is not Health.OK or not self.answered:
                    self._succeeded()  # (healthy and answered already: nothing changes)
                return result
            self._mark_lost()
            doubt = ("; its last command may or may not have taken effect (the read-back "
                     "did not answer)" if unsure else "")
            lost = LinkLost(f"{self.address} is lost after {self.retries + 1} attempts: "
                            f"{error}{doubt}")
            lost.maybe_took = unsure  # a caller trying again later must read back first
            raise lost

    def reopen_now(self) -> None:
        """Let the next exchange re-open a lost port at once, back-off or not: the safe
        state is worth one more try whenever it is wanted (its retries stay bounded by
        whoever asks: `lipon_hw.safe_retry`)."""
        with self.lock:
            self._reopen_at = min(self._reopen_at, self._clock())

    def _succeeded(self) -> None:
        self.answered = True
        self._set_health(Health.OK)
        self._next_backoff_s = self._backoff_s

    def _ensure_open(self) -> None:
        if self._open and self.health is not Health.LOST:
            return
        now = self._clock()
        if self.health is Health.LOST and now < self._reopen_at:
            raise LinkLost(f"{self.address} is lost ({self.last_error}); next re-open in "
                           f"{self._reopen_at - now:.1f} s")
        self._rx.clear()
        try:
            self._port.open()
        except LinkError as exc:
            self.last_error = str(exc)
            self._mark_lost()
            raise LinkLost(f"{self.address} could not be opened: {exc}") from None
        self._open = True
        if self.health is Health.LOST:
            self._set_health(Health.RETRYING)

    def _set_health(self, health: Health) -> None:
        if health is not self.health:
            self.health = health
            Link.health_changes += 1

    def _mark_lost(self) -> None:
        self._set_health(Health.LOST)
        self._reopen_at = self._clock() + self._next_backoff_s
        self._next_backoff_s = min(self._next_backoff_s * 2, self._max_backoff_s)

    def _close_port(self) -> None:
        with contextlib.suppress(Exception):  # a dead port may fail to close as well
            self._port.close()
        self._open = False

    def close(self) -> None:
        with self.lock:
            self._port.close()
            self._rx.clear()
            self._open = False


class LinkPool:
    """Opens links by address; one Link per physical port, shared by its instruments."""

    def __init__(self, sim_endpoints: Mapping[str, Endpoint] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self._sim = dict(sim_endpoints or {})
        self._links: dict[str, Link] = {}
        self._clock = clock

    def open(self, address: str, serial_defaults: Mapping[str, object] | None = None,
             timeout_s: float = 1.0) -> Link:
        key = canonical_address(address)
        if key not in self._links:
            port = make_port(address, serial_defaults or {}, self._sim)
            self._links[key] = Link(address, port, timeout_s=timeout_s, clock=self._clock)
        return self._links[key]

    def link(self, address: str) -> Link:
        """The link of `address`, opened (made) already by `open`."""
        return self._links[canonical_address(address)]

    def close(self) -> None:
        for link in self._links.values():
            link.close()


