"""TDK-Lambda Genesys (GEN) programmable DC supply, legacy "GEN" serial language.

Wire format (Genesys 750W/1500W manual §7.5–7.7; protocols.md §3.1): ASCII lines
ended by CR (the supply ignores LF). On the RS-485 multidrop bus a supply answers
only once it has been selected with `ADR n` (n = 0..30). A set command answers
`OK`, a query answers its value, and a refusal is a code: E01..E07 (programming
errors, manual Table 7-1) or C01..C05 (command errors, Table 7-2).

The optional checksum is `$` and two hex digits, the low byte of the sum of the
characters before it (manual examples `STT?$3A`, `STAT?$7B`). A command that
carries one is answered with one.

Selection: the driver sends `ADR n` at the start of every exchange, instead of
tracking which supply is selected. Supplies on one bus share a Link with other
drivers, and a port can be re-opened or a supply power-cycled in between. Sent
every time, the ADR never leaves the wrong supply listening. It costs one short
round trip per exchange.

Link recovery (`Link.exchange`'s retry rule). Idempotent: `ADR n`, `RMT REM`, `OUT ON|OFF`,
`PC`, `PV` set absolute states (manual §7.7: each sets a value, answered `OK`), and the
rest are queries. Not used: `RST`, `SAV`/`RCL`, which would need a read-back.
"""

from __future__ import annotations

import re

from lipon_hw.errors import FrameError, InputError, InstrumentError
from lipon_hw.links import Link

TERMINATOR = b"\r"
ADDRESSES = range(31)

#: the manual's refusal codes, as the reason a user reads
ERROR_CODES = {
    "E01": "the voltage program is above the acceptable range (105 % of the rating, "
           "or 95 % of the OVP setting)",
    "E02": "the voltage program is below the under-voltage limit (UVL)",
    "E04": "the OVP level is below the acceptable range (the voltage setting plus 5 % "
           "of the rating)",
    "E06": "the under-voltage limit is above the programmed output voltage",
    "E07": "the output cannot be turned on during a fault shut-down",
    "C01": "illegal command or query",
    "C02": "missing parameter",
    "C03": "illegal parameter",
    "C04": "checksum error",
    "C05": "setting out of range",
}

_NUMBER = r"\d+(?:\.\d*)?|\.\d+"
NUMBER = re.compile(_NUMBER)
OK = re.compile("OK")
ON_OFF = re.compile("ON|OFF")
MODE = re.compile("CV|CC|OFF")
DVC = re.compile(rf"(?:{_NUMBER})(?:,(?:{_NUMBER})){{5}}")
IDN = re.compile(r"LAMBDA, ?GEN[\w.]+-[\w.]+")
TEXT = re.compile(r"[\x20-\x7e]{1,40}")
_ERROR = re.compile(r"[EC]\d\d")
_MESSAGE = re.compile(r"([\x20-\x7e]*?)(?:\$([0-9A-Fa-f]{2}))?")


class ChecksumError(ValueError):
    """A message's `$hh` does not match its characters."""


# --- codec (shared with the emulator) -------------------------------------------------
def checksum(text: str) -> str:
    """Two upper-case hex digits: the low byte of the sum of the characters."""
    return f"{sum(text.encode('ascii')) & 0xFF:02X}"


def encode_message(text: str, with_checksum: bool = False) -> bytes:
    """A command or a reply on the wire: `text[$hh]CR`."""
    suffix = f"${checksum(text)}" if with_checksum else ""
    return f"{text}{suffix}\r".encode("ascii")


def decode_message(frame: bytes) -> tuple[str, bool]:
    """`text[$hh]CR` → (text, whether it carried a checksum).

    ValueError for a missing CR or non-printable bytes; ChecksumError for a wrong `$hh`.
    """
    if not frame.endswith(TERMINATOR):
        raise ValueError("the message does not end with CR")
    match = _MESSAGE.fullmatch(frame[:-1].decode("latin-1"))
    if not match:
        raise ValueError("the message holds bytes that are not printable ASCII")
    text, given = match[1], match[2]
    if given is not None and given.upper() != checksum(text):
        raise ChecksumError(f"checksum ${given} does not match ${checksum(text)}")
    return text, given is not None


def format_reading(value: float, rating: float, digits: int = 5) -> str:
    """A reading as the supply prints it: `digits` significant digits, as many before
    the point as the rating has (manual: a 60 V supply sends `01.150`, a 200 A supply
    `000.50`; front-panel OVP/UVL settings have 4 digits, e.g. `7.500`)."""
    whole = len(str(int(rating)))
    decimals = digits - whole
    return f"{value:0{whole + 1 + decimals}.{decimals}f}"


# --- driver ---------------------------------------------------------------------------
class GenesysSupply:
    """A Genesys supply feeding an evaporation boat.

    Settings: `address` (multidrop address 0–30, default 6), `max_current_A` and
    `max_voltage_V` (the station's limits; setpoints above them are refused before
    anything is sent), `checksum` (append `$hh` to every command, default off).
    The supply is put in remote (`RMT REM`) by the first exchange, so that its
    setpoint queries answer what was programmed, not the front-panel preview.
    """

    SERIAL_DEFAULTS: dict = {"baudrate": 9600, "bytesize": 8, "parity": "N", "stopbits": 1}
    #: the Genesys family spans 6-600 V and up to 1000 A; the source may not be powered
    #: above `max_pressure_torr` (thermal evaporation needs high vacuum: 10 mTorr at most)
    LIMITS = {"max_current_A": (0.01, 1000.0), "rated_current_A": (0.01, 1000.0),
              "max_voltage_V": (0.01, 600.0), "max_pressure_torr": (1e-10, 1e-2)}
    #: up to 31 supplies on one RS-485 multidrop bus, selected by `ADR n`
    BUS = "genesys"

    def bus_claims(self) -> list[str]:
        return [f"supply address {self.address}"]

    def __init__(self, name: str, link: Link, address: int = 6,
                 max_current_A: float | None = None, max_voltage_V: float | None = None,
                 checksum: bool = False):
        if int(address) not in ADDRESSES:
            raise InputError(f"{name}: Genesys address {address} is outside 0–30")
        self.name = name
        self.link = link
        self.address = int(address)
        self.max_current_A = max_current_A
        self.max_voltage_V = max_voltage_V
        self.checksum = bool(checksum)
        self._remote = False

    # --- source supply ------------------------------------------------------------
    def set_output(self, on: bool) -> None:
        self._transact(f"OUT {'ON' if on else 'OFF'}", OK)

    def output_on(self) -> bool:
        return self._transact("OUT?", ON_OFF) == "ON"

    def set_current_A(self, current_A: float) -> None:
        self._check_limit(current_A, self.max_current_A, "A", "max_current_A")
        self._transact(f"PC {current_A:.2f}", OK)

    def current_setpoint_A(self) -> float:
        return float(self._transact("PC?", NUMBER))

    def set_voltage_limit_V(self, voltage_V: float) -> None:
        """The programmed voltage, which is the compliance limit of CC operation."""
        self._check_limit(voltage_V, self.max_voltage_V, "V", "max_voltage_V")
        self._transact(f"PV {voltage_V:.3f}", OK)

    def current_A(self) -> float:
        return float(self._transact("MC?", NUMBER))

    def voltage_V(self) -> float:
        return float(self._transact("MV?", NUMBER))

    def power_W(self) -> float:
        """MV × MC, both from one `DVC?` so that they are read at the same instant."""
        fields = self._transact("DVC?", DVC).split(",")
        return float(fields[0]) * float(fields[2])

    def mode(self) -> str:
        """'CC', 'CV', or 'OFF' when the output is off."""
        return self._transact("MODE?", MODE)

    def identify(self) -> str:
        model = " ".join(self._transact("IDN?", IDN).replace(",", " ").split())
        serial = self._transact("SN?", TEXT)
        firmware = self._transact("REV?", TEXT)
        return f"{model} serial {serial}, firmware {firmware}, address {self.address}"

    def make_safe(self) -> None:
        """Current to zero, then output off, which is tried even if the first step failed."""
        try:
            self._transact("PC 0", OK)
        finally:
            self._transact("OUT OFF", OK)

    # --- protocol -----------------------------------------------------------------
    def _check_limit(self, value: float, limit: float | None, unit: str, key: str) -> None:
        if limit is None:
            if not value >= 0:
                raise InstrumentError(f"{self.name} will not set {value} {unit}: a setpoint "
                                      "cannot be negative")
        elif not 0 <= value <= limit:
            raise InstrumentError(f"{self.name} will not set {value} {unit}: the station "
                                  f"limit is 0–{limit} {unit} ({key})")

    def _transact(self, text: str, shape: re.Pattern) -> str:
        return self.link.exchange(lambda link: self._exchange(link, text, shape))

    def _exchange(self, link: Link, text: str, shape: re.Pattern) -> str:
        """Select the supply, claim remote once, then send `text`."""
        self._say(link, f"ADR {self.address}", OK)
        if not self._remote:
            self._say(link, "RMT REM", OK)
            self._remote = True
        return self._say(link, text, shape)

    def _say(self, link: Link, text: str, shape: re.Pattern) -> str:
        request = encode_message(text, self.checksum)
        link.write(request)
        frame = link.read_until(TERMINATOR)
        try:
            reply, had_checksum = decode_message(frame)
        except ValueError as exc:
            raise FrameError(f"{self.name} answered {request!r} with {frame!r}, which is not "
                             f"a Genesys reply ({exc})") from None
        if had_checksum != self.checksum:
            raise FrameError(f"{self.name} answered {request!r} with {frame!r}, "
                             f"{'without' if self.checksum else 'with'} a checksum")
        if _ERROR.fullmatch(reply):
            meaning = ERROR_CODES.get(reply, "a code the manual does not list")
            raise InstrumentError(f"{self.name} refused {request!r} with {reply}: {meaning}")
        if not shape.fullmatch(reply):
            raise FrameError(f"{self.name} answered {request!r} with {frame!r}, which has "
                             "the wrong form")
        return reply
