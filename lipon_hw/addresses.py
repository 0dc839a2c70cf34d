"""Instrument addresses: what a station may write, checked before any port is opened.

An address is one of

    sim://NAME                       an emulator of the simulated lab
    serial://DEVICE?baud=…&parity=…  a serial port (DEVICE: /dev/ttyUSB0, COM3)
    socket://HOST:PORT               raw TCP (a terminal server, `lipon-hw sim serve`)
    rfc2217://HOST:PORT              a serial port behind an RFC 2217 server
    ASRL… / TCPIP… / GPIB… / USB…    a VISA resource string

and may hold one channel range `{a-b}` (see `expand_address`). `check_address` turns
one expanded address into the identity of its physical port, so that two instruments
on one port are seen whatever the spelling (`serial:///dev/ttyUSB0` and
`serial:///dev/ttyUSB0?baud=9600` are one port).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from lipon_hw.errors import InputError
from lipon_hw.ports import VISA_PREFIXES

#: the baud rates of the standard series (POSIX termios and the common USB bridges)
BAUD_RATES = (300, 600, 1200, 2400, 4800, 9600, 14400, 19200, 38400, 57600, 115200,
              230400, 460800, 921600)
PARITIES = {"N": "N", "E": "E", "O": "O", "M": "M", "S": "S", "NONE": "N", "EVEN": "E",
            "ODD": "O", "MARK": "M", "SPACE": "S"}
SERIAL_OPTIONS = ("baud", "baudrate", "parity", "bytesize", "stopbits", "xonxoff")
_SIM_NAME = re.compile(r"[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*")
_HOST = re.compile(r"[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\]")


@dataclass(frozen=True)
class Port:
    """The physical port an address reaches: `key` is the same for every spelling."""

    kind: str  # sim, serial, tcp, visa
    key: tuple
    options: dict = field(default_factory=dict, compare=False, hash=False)


def check_address(address: str) -> Port:
    """The port of one expanded address, or InputError saying what is wrong with it."""
    if not address.strip():
        raise InputError("is empty; give sim://NAME, serial://DEVICE, socket://HOST:PORT or "
                         "a VISA resource string")
    if address != address.strip() or any(c.isspace() for c in address):
        raise InputError(f"{address!r} holds spaces")
    if address.upper().startswith(VISA_PREFIXES) and "://" not in address:
        return _visa(address)
    scheme, sep, rest = address.partition("://")
    if not sep:
        raise InputError(f"{address!r} has no scheme; give sim://NAME, serial://DEVICE, "
                         "socket://HOST:PORT, rfc2217://HOST:PORT or a VISA resource string")
    if scheme == "sim":
        if not _SIM_NAME.fullmatch(rest):
            raise InputError(f"{address!r}: a simulated instrument is sim://NAME (letters, "
                             "digits, _ . - and /)")
        return Port("sim", ("sim", rest))
    if scheme == "serial":
        return _serial(address)
    if scheme in ("socket", "rfc2217"):
        return _tcp(address, scheme)
    raise InputError(f"{address!r}: the scheme {scheme}:// is not one of sim://, serial://, "
                     "socket://, rfc2217:// (or a VISA resource string)")


def _serial(address: str) -> Port:
    parts = urlsplit(address)
    device = parts.path or parts.netloc
    if not device or parts.fragment or (parts.netloc and parts.path):
        raise InputError(f"{address!r}: a serial port is serial:///dev/ttyUSB0 or "
                         "serial://COM3, with options after ?")
    options: dict[str, object] = {}
    for item in filter(None, parts.query.split("&")):
        key, eq, value = item.partition("=")
        if not eq or not value:
            raise InputError(f"{address!r}: serial option {item!r} needs a value (key=value)")
        if key not in SERIAL_OPTIONS:
            raise InputError(f"{address!r}: serial option {key!r} is unknown (use "
                             f"{', '.join(SERIAL_OPTIONS)})")
        name = "baud" if key == "baudrate" else key
        if name in options:
            raise InputError(f"{address!r}: serial option {name!r} is given twice")
        options[name] = _serial_option(address, name, value)
    return Port("serial", ("serial", device), options)


def _serial_option(address: str, name: str, value: str) -> object:
    if name == "baud":
        if not value.isdigit() or int(value) not in BAUD_RATES:
            raise InputError(f"{address!r}: baud {value} is not a standard rate "
                             f"({', '.join(map(str, BAUD_RATES))})")
        return int(value)
    if name == "parity":
        if value.upper() not in PARITIES:
            raise InputError(f"{address!r}: parity {value!r} is not N, E, O, M or S")
        return PARITIES[value.upper()]
    if name == "bytesize":
        if value not in ("5", "6", "7", "8"):
            raise InputError(f"{address!r}: bytesize {value} is not 5, 6, 7 or 8")
        return int(value)
    if name == "stopbits":
        if value not in ("1", "1.5", "2"):
            raise InputError(f"{address!r}: stopbits {value} is not 1, 1.5 or 2")
        return float(value) if value == "1.5" else int(value)
    if value.lower() not in ("0", "1", "true", "false", "on", "off", "yes", "no"):
        raise InputError(f"{address!r}: xonxoff {value!r} is not on or off")
    return value.lower() in ("1", "true", "on", "yes")


def _tcp(address: str, scheme: str) -> Port:
    rest = address.partition("://")[2]
    host, colon, port = rest.rpartition(":")
    if not colon or not host:
        raise InputError(f"{address!r}: a network port is {scheme}://HOST:PORT")
    if not _HOST.fullmatch(host):
        raise InputError(f"{address!r}: {host!r} is not a host name or address")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise InputError(f"{address!r}: the TCP port {port!r} is not a number from 1 to 65535")
    return Port("tcp", ("tcp", host.lower(), int(port)))


def _visa(address: str) -> Port:
    from pyvisa import rname  # pyvisa's own grammar of resource names

    try:
        parsed = rname.parse_resource_name(address)
    except Exception as exc:  # noqa: BLE001 - pyvisa raises several kinds for a bad name
        reason = str(exc).split(". ")[0]
        raise InputError(f"{address!r} is not a VISA resource string ({reason})") from None
    return Port("visa", ("visa", str(parsed).lower()))
