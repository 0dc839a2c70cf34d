"""MKS 937B multi-sensor vacuum gauge controller, RS-232/485 ASCII protocol.

Wire format (937B operation manual, §9.2): a query is `@<aaa><CMD>?;FF`, a set is
`@<aaa><CMD>!<value>;FF`; the controller answers `@<aaa>ACK<value>;FF` or
`@<aaa>NAK<code>;FF`. The literal `;FF` ends every message; 254 is the broadcast
address, 253 the factory default. Manual example: `@003PR1?;FF` → `@003ACK7.602E+2;FF`
(pymeasure's tests use `1.10e-9`; the driver reads either, the emulator writes the
manual's four digits).

A pressure reply is a number in the controller's unit (`U`), or a word for a
sensor that cannot give one. The manual pages listing those words were not
available, so this driver treats them by shape (PyExpLabSys handles `LO…`,
`OFF`, `WAIT` the same way): a reply starting with `LO` is under-range and reads
as the gauge's lower limit; `ATM` reads as 760 Torr; any other all-capital word
(`OFF`, `MISCONN`, `WAIT`, `PROT_OFF`, …) is a refusal.

Link recovery (`Link.exchange`'s retry rule). Idempotent: the queries (`PR`, `MD`, `SN`,
`U`) and the one set it sends, `U!TORR` (an absolute unit). Not used: set points and
degas, which would need a read-back before any resend.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

from lipon_hw.errors import FrameError, InputError, InstrumentError
from lipon_hw.links import Link

TERMINATOR = b";FF"
BROADCAST_ADDRESS = 254
ATMOSPHERE_TORR = 760.0

#: NAK codes a driver may meet (946 manual, table 9-15; the 937B speaks the same protocol)
NAK_CODES = {
    150: "wrong gauge",
    151: "no gauge",
    152: "not an ion gauge",
    160: "unrecognized message",
    161: "set commands locked",
    163: "invalid channel",
    169: "invalid argument",
    172: "value out of range",
    175: "command/query byte invalid",
}

_NUMBER = re.compile(r"[+-]?\d+(\.\d*)?([eE][+-]?\d+)?")
#: what each reply body may look like; anything else is a garbled frame, and retried
PRESSURE_BODY = re.compile(_NUMBER.pattern + r"|LO\S*|[A-Z][A-Z_]*")
WORD_BODY = re.compile(r"[A-Z][A-Z_]*")
MODEL_BODY = re.compile(r"\d{3}[A-Z]?")
SERIAL_BODY = re.compile(r"\d+")
_REPLY = re.compile(r"@(\d{3})(ACK|NAK)([\x20-\x7e]*);FF")
_REQUEST = re.compile(r"@(\d{3})([A-Z]+\d*)([?!])([\x20-\x3a\x3c-\x7e]*);FF")


@dataclass(frozen=True)
class Reply:
    address: int
    ack: bool
    body: str


@dataclass(frozen=True)
class Request:
    address: int
    command: str
    value: str | None  # None for a query


# --- codec (shared with the emulator) -------------------------------------------------
@functools.lru_cache(maxsize=256)  # a host asks the same few queries again and again
def encode_query(address: int, command: str) -> bytes:
    return f"@{address:03d}{command}?;FF".encode("ascii")


def encode_set(address: int, command: str, value: str) -> bytes:
    return f"@{address:03d}{command}!{value};FF".encode("ascii")


def encode_reply(address: int, body: str, ack: bool = True) -> bytes:
    return f"@{address:03d}{'ACK' if ack else 'NAK'}{body};FF".encode("ascii")


def decode_reply(frame: bytes) -> Reply:
    """`@aaaACKbody;FF` → Reply; ValueError for anything else."""
    match = _REPLY.fullmatch(frame.decode("ascii", errors="replace"))
    if not match:
        raise ValueError("expected @<aaa>ACK…;FF or @<aaa>NAK…;FF")
    if match[2] == "NAK" and not match[3].isdigit():
        raise ValueError("a NAK carries a numeric code")
    return Reply(int(match[1]), match[2] == "ACK", match[3])


def decode_request(frame: bytes) -> Request:
    """`@aaaCMD?;FF` or `@aaaCMD!value;FF` → Request; ValueError for anything else."""
    match = _REQUEST.fullmatch(frame.decode("ascii", errors="replace"))
    if not match:
        raise ValueError("not a 937B query or set command")
    value = match[4] if match[3] == "!" else None
    if match[3] == "?" and match[4]:
        raise ValueError("a query carries no value")
    return Request(int(match[1]), match[2], value)


def format_pressure(value: float) -> str:
    """As the manual's example `7.602E+2`: four significant digits, exponent unpadded."""
    exponent = math.floor(math.log10(value))
    mantissa = round(value / 10**exponent, 3)
    if mantissa >= 10:
        mantissa, exponent = mantissa / 10, exponent + 1
    return f"{mantissa:.3f}E{exponent:+d}"


def parse_number(text: str) -> float | None:
    return float(text) if _NUMBER.fullmatch(text) else None


#: `decode_reply` and `parse_number` kept per frame and per text: a controller's replies
#: repeat (four significant digits of a pressure that changes slowly); a frame that is no
#: reply raises ValueError every time
_reply = functools.lru_cache(maxsize=1024)(decode_reply)
_number = functools.lru_cache(maxsize=1024)(parse_number)


# --- driver ---------------------------------------------------------------------------
class MKS937B:
    """One gauge channel of an MKS 937B; several channels share the controller's Link."""

    SERIAL_DEFAULTS = {"baudrate": 9600, "bytesize": 8, "parity": "N", "stopbits": 1}
    #: controllers share an RS-485 line by address; gauges share a controller by channel
    BUS = "mks937b"

    def bus_claims(self) -> list[str]:
        return [f"channel {self.channel} of controller {self.address}"]

    def __init__(self, name: str, link: Link, address: int = 253, channel: int = 1,
                 lower_limit_torr: float = 1.0e-9):
        if not 1 <= int(address) <= BROADCAST_ADDRESS:
            raise InputError(f"{name}: address {address} is outside 1..254")
        self.name = name
        self.link = link
        self.address = int(address)
        self.channel = int(channel)
        self.lower_limit_torr = float(lower_limit_torr)
        self._unit_is_torr = False

    # --- capability ---------------------------------------------------------------
    def pressure_torr(self) -> float:
        """The channel's pressure in Torr; under-range reads as `lower_limit_torr`."""
        self._ensure_torr()
        body = self._query(f"PR{self.channel}", PRESSURE_BODY)
        value = _number(body)
        if value is not None:
            return value
        if body.startswith("LO"):
            return self.lower_limit_torr
        if body == "ATM":
            return ATMOSPHERE_TORR
        raise InstrumentError(f"{self.name} channel {self.channel} gives no pressure: the "
                              f"controller answered {body!r} (sensor off, disconnected or "
                              "not ready)")

    def identify(self) -> str:
        model = self._query("MD", MODEL_BODY)
        serial = self._query("SN", SERIAL_BODY)
        return f"MKS {model} gauge controller, serial {serial}, channel {self.channel}"

    def make_safe(self) -> None:
        """A gauge drives nothing, so there is nothing to make safe."""

    # --- protocol -----------------------------------------------------------------
    def _ensure_torr(self) -> None:
        """Readings are in the controller's unit, which the front panel can change."""
        if self._unit_is_torr:
            return
        if self._query("U", WORD_BODY) != "TORR":
            unit = self._transact(encode_set(self.address, "U", "TORR"), WORD_BODY)
            if unit != "TORR":
                raise InstrumentError(f"{self.name} answered U!TORR with unit {unit!r}")
        self._unit_is_torr = True

    def _query(self, command: str, body: re.Pattern) -> str:
        return self._transact(encode_query(self.address, command), body)

    def _transact(self, request: bytes, body: re.Pattern) -> str:
        reply = self.link.exchange(lambda link: self._exchange(link, request, body))
        if not reply.ack:
            meaning = NAK_CODES.get(int(reply.body), "unlisted code")
            raise InstrumentError(f"{self.name} refused {request!r} with NAK{reply.body} "
                                  f"({meaning})")
        return reply.body

    def _exchange(self, link: Link, request: bytes, body: re.Pattern) -> Reply:
        link.write(request)
        frame = link.read_until(TERMINATOR)
        try:
            reply = _reply(frame)
        except ValueError as exc:
            raise FrameError(f"{self.name} answered {request!r} with {frame!r}, "
                             f"which is not a 937B reply ({exc})") from None
        if reply.address != self.address and self.address != BROADCAST_ADDRESS:
            raise FrameError(f"{self.name} answered {request!r} from address "
                             f"{reply.address:03d} instead of {self.address:03d}")
        if reply.ack and not body.fullmatch(reply.body):
            raise FrameError(f"{self.name} answered {request!r} with {frame!r}, whose value "
                             "has the wrong form")
        return reply
