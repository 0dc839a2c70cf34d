"""The Ports behind a `Link` (`lipon_hw.links`): what moves bytes for each kind of address —
an in-process emulator (`sim://NAME`), pyserial (`serial:///dev/ttyUSB0?baud=19200`,
`socket://host:port`, any pyserial URL) or pyvisa (`ASRL…`, `TCPIP…`, `GPIB…`, `USB…`) —
and how an address is read (`make_port`, `canonical_address`). A port knows nothing of
retries or health: the Link does that, the same for every port."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import Protocol
from urllib.parse import parse_qsl, urlsplit

from lipon_hw.errors import InputError, LinkError
from lipon_hw.interrupts import hold, release

VISA_PREFIXES = ("ASRL", "TCPIP", "GPIB", "USB", "VXI", "PXI")


class Port(Protocol):
    """A raw byte pipe. `read` returns at most n bytes, fewer if the timeout ran out. A
    port may also have `read_available()` (in process: a reply is there whole at once) or
    `read_waiting(timeout_s)` (all that has arrived, in one read), which a Link uses to
    read in bulk."""

    def open(self) -> None: ...

    def close(self) -> None: ...

    def write(self, data: bytes) -> None: ...

    def read(self, n: int, timeout_s: float) -> bytes: ...

    def reset_input(self) -> None: ...


class Endpoint(Protocol):
    """The instrument side of an in-process link (an emulator)."""

    def handle(self, data: bytes) -> bytes: ...

    def reset_connection(self) -> None: ...


class SimPort:
    """In-process emulator: each write is answered at once, in virtual time.

    A read that finds too few bytes is a timeout, which costs no virtual time.
    """

    def __init__(self, endpoint: Endpoint):
        self._endpoint = endpoint
        self._rx = b""  # what the instrument sent and the host has not read (immutable:
        # a reply is usually read whole, so it is handed over without a copy)

    def open(self) -> None:
        self._endpoint.reset_connection()
        self._rx = b""

    def close(self) -> None:
        self._rx = b""

    def write(self, data: bytes) -> None:
        """The instrument answers whole: a Ctrl-C or SIGTERM meanwhile waits until its
        reply is in (`interrupts`), as a real instrument would not be cut off mid-step."""
        hold()
        try:
            reply = self._endpoint.handle(data if type(data) is bytes else bytes(data))
            if reply:
                if type(reply) is not bytes:
                    reply = bytes(reply)
                self._rx = self._rx + reply if self._rx else reply
        finally:
            release()

    def read(self, n: int, timeout_s: float) -> bytes:
        chunk, self._rx = self._rx[:n], self._rx[n:]
        return chunk

    def read_available(self) -> bytes:
        """Everything received so far: an in-process reply is complete at once, so a
        Link may take it in one call instead of byte by byte."""
        chunk, self._rx = self._rx, b""
        return chunk

    def reset_input(self) -> None:
        self._rx = b""


class SerialPort:
    """pyserial: serial devices and every pyserial URL (socket://, rfc2217://, loop://)."""

    def __init__(self, url: str, settings: Mapping[str, object]):
        self._url = url
        self._settings = dict(settings)
        self._serial = None

    def open(self) -> None:
        import serial  # imported here so that a sim-only run never needs the stack

        self.close()
        try:
            self._serial = serial.serial_for_url(self._url, **self._settings)
        except (serial.SerialException, ValueError, OSError) as exc:
            raise LinkError(f"cannot open {self._url}: {exc}") from None
        sock = getattr(self._serial, "_socket", None)
        if sock is not None:  # socket://: small request/ACK frames must not wait for Nagle
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        if self._serial is not None:
            self._serial.close()
            self._serial = None

    def write(self, data: bytes) -> None:
        try:
            self._serial.write(data)
            self._serial.flush()
        except Exception as exc:  # pyserial raises several types for a dead port
            raise LinkError(f"write to {self._url} failed: {exc}") from None

    def read(self, n: int, timeout_s: float) -> bytes:
        try:
            self._set_timeout(timeout_s)
            return self._serial.read(n)
        except Exception as exc:
            raise LinkError(f"read from {self._url} failed: {exc}") from None

    def read_waiting(self, timeout_s: float) -> bytes:
        """Every byte that has arrived, once one has (waited for up to timeout_s): one
        read, not one per byte (b"" if none came)."""
        try:
            self._set_timeout(timeout_s)
            first = self._serial.read(1)
            if not first:
                return first
            self._set_timeout(0)  # what else is there now, without waiting
            return first + self._serial.read(65536)
        except Exception as exc:
            raise LinkError(f"read from {self._url} failed: {exc}") from None

    def _set_timeout(self, timeout_s: float) -> None:
        """Only a change is set: on a serial device pyserial re-applies the port's whole
        configuration (termios) at each setting."""
        if self._serial.timeout != timeout_s:
            self._serial.timeout = timeout_s

    def reset_input(self) -> None:
        if self._serial is not None:
            self._serial.reset_input_buffer()


class VisaPort:
    """pyvisa with the pure-Python backend; raw bytes, no terminators.

    A TCPIP SOCKET session (an instrument's raw LAN port, SCPI's 5025) reads a long reply in
    bulk: after the first BYTEWISE bytes of a reply, what has arrived in one call
    (`read_waiting`), which waits BULK_WAIT_MS for the line to pause; a short reply is read
    a byte at a time, as that wait would cost it more than its bytes (a gauge's query over a
    served emulator: 0.46 ms byte by byte, 1.3 ms in bulk; GRBL's `$$`, 500 bytes: 12 ms
    byte by byte, 5 ms in bulk). Other sessions are read a byte at a time: on message-based
    ones (USBTMC, GPIB, VXI-11) a longer read waits for the message's END and on serial ones
    for its count, and a read that times out loses what it had read (pyvisa raises), so
    their replies cannot be taken "as far as they have come". Unverified on hardware: a LAN
    instrument's socket."""

    #: the wait (ms, pyvisa's least) for more bytes once the first has come, on a socket
    BULK_WAIT_MS = 1
    #: the bytes of each reply (counted from a write) read one at a time before the rest
    #: is read in bulk, on a socket
    BYTEWISE = 64

    def __init__(self, resource: str, settings: Mapping[str, object]):
        self._resource = resource
        self._settings = dict(settings)
        self._inst = None
        self._socket = resource.strip().upper().endswith("::SOCKET")
        self._since_write = 0  # bytes read since the last write

    def open(self) -> None:
        import pyvisa

        self.close()
        try:
            rm = pyvisa.ResourceManager("@py")
            self._inst = rm.open_resource(self._resource, **self._settings)
        except Exception as exc:
            raise LinkError(f"cannot open {self._resource}: {exc}") from None
        self._inst.read_termination = None
        self._inst.write_termination = None
        if self._socket:  # a read ends when the line pauses, with what came (not an error)
            from pyvisa.constants import VI_FALSE, ResourceAttribute

            self._inst.set_visa_attribute(ResourceAttribute.suppress_end_enabled, VI_FALSE)

    def close(self) -> None:
        if self._inst is not None:
            try:
                self._inst.close()
            finally:
                self._inst = None

    def write(self, data: bytes) -> None:
        self._since_write = 0
        try:
            self._inst.write_raw(data)
        except Exception as exc:
            raise LinkError(f"write to {self._resource} failed: {exc}") from None

    def read(self, n: int, timeout_s: float) -> bytes:
        import pyvisa

        self._inst.timeout = max(1, int(timeout_s * 1000))
        try:
            return self._inst.read_bytes(n, break_on_termchar=False)
        except pyvisa.errors.VisaIOError:
            return b""
        except Exception as exc:
            raise LinkError(f"read from {self._resource} failed: {exc}") from None

    def read_waiting(self, timeout_s: float) -> bytes:
        """Every byte that has arrived, once one has (waited for up to timeout_s): on a
        socket past a reply's first BYTEWISE bytes, the rest in one read that returns once
        the line pauses for BULK_WAIT_MS (with END suppression off, set at `open`,
        pyvisa-py gives what it has, without an error, when nothing more comes);
        otherwise the one byte (see the class)."""
        first = self.read(1, timeout_s)
        self._since_write += len(first)
        if not first or not self._socket or self._since_write <= self.BYTEWISE:
            return first
        import pyvisa

        self._inst.timeout = self.BULK_WAIT_MS
        try:
            more, _status = self._inst.visalib.read(self._inst.session, 1 << 16)
        except pyvisa.errors.VisaIOError:  # nothing more within the wait
            return first
        except Exception as exc:
            raise LinkError(f"read from {self._resource} failed: {exc}") from None
        self._since_write += len(more)
        return first + bytes(more)

    def reset_input(self) -> None:
        """Drop what has arrived with reads that end at once: a bounded number of them.
        Not `clear()`: that is a device clear on GPIB and USB, and pyvisa-py's loops
        forever on a TCPIP socket whose peer has closed it."""
        if self._inst is None:
            return
        self._inst.timeout = 1
        for _ in range(16):
            try:
                if not self._inst.read_bytes(4096, break_on_termchar=False):
                    return
            except Exception:  # noqa: BLE001 - a timeout (nothing left) or a dead session
                return


def make_port(address: str, serial_defaults: Mapping[str, object],
              sim_endpoints: Mapping[str, Endpoint]) -> Port:
    """The Port an address names: sim:// (an in-process emulator of `sim_endpoints`), a
    VISA resource string, serial:// with its options, or any pyserial URL."""
    if address.startswith("sim://"):
        name = address[len("sim://"):]
        if name not in sim_endpoints:
            known = ", ".join(sorted(sim_endpoints)) or "none"
            raise InputError(f"address {address} names no simulated instrument "
                             f"(known: {known})")
        return SimPort(sim_endpoints[name])
    if address.upper().startswith(VISA_PREFIXES):
        return VisaPort(address, {})
    if address.startswith("serial://"):
        parts = urlsplit(address)
        settings = dict(serial_defaults)
        settings.update(_serial_settings(dict(parse_qsl(parts.query))))
        return SerialPort(parts.path or parts.netloc, settings)
    if "://" in address:
        return SerialPort(address, {k: v for k, v in serial_defaults.items()
                                    if k == "timeout"})
    raise InputError(f"address {address!r} is neither sim://, a pyserial URL nor a "
                     "VISA resource string")


def canonical_address(address: str) -> str:
    return address.strip().lower() if address.upper().startswith(VISA_PREFIXES) else address.strip()


def _serial_settings(query: Mapping[str, str]) -> dict[str, object]:
    aliases = {"baud": "baudrate", "baudrate": "baudrate", "parity": "parity",
               "bytesize": "bytesize", "stopbits": "stopbits", "xonxoff": "xonxoff"}
    settings: dict[str, object] = {}
    for key, value in query.items():
        if key not in aliases:
            raise InputError(f"serial option {key!r} is unknown (use baud, parity, bytesize, "
                             "stopbits, xonxoff)")
        name = aliases[key]
        if name == "parity":
            settings[name] = value.upper()[:1]
        elif name == "xonxoff":
            settings[name] = value.lower() in ("1", "true", "yes", "on")
        elif name == "stopbits":
            settings[name] = float(value) if "." in value else int(value)
        else:
            settings[name] = int(value)
    return settings
