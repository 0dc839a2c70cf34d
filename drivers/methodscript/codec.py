"""MethodSCRIPT on the wire: numbers in scripts and packages, data packages and their
variables, errors, markers and the firmware reply (MethodSCRIPT manual v1.8). Shared by
the driver and the emulator; the format is described in the package docstring."""

from __future__ import annotations

import functools
import math
import re
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass

TERMINATOR = b"\n"
OFFSET = 1 << 27
MAX_MANTISSA = OFFSET - 1
NAN_FIELD = "     nan"
LITERAL_MAX = 2**31 - 1  # a script number's integer part is a signed 32-bit value

SI_PREFIXES = {"a": 1e-18, "f": 1e-15, "p": 1e-12, "n": 1e-9, "u": 1e-6, "m": 1e-3, " ": 1.0,
               "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
_FINEST_FIRST = tuple(SI_PREFIXES)
_COARSEST_FIRST = tuple(reversed(_FINEST_FIRST))
_FINEST_LIMITS = [MAX_MANTISSA * SI_PREFIXES[p] for p in _FINEST_FIRST]  # largest |value|s

#: package variable types used here (manual, variable types appendix)
VAR_TYPES = {
    "ab": "WE vs RE potential (V)", "ba": "WE current (A)", "cc": "Z real (ohm)",
    "cd": "Z imaginary (ohm)", "da": "applied potential (V)", "db": "applied current (A)",
    "dc": "applied frequency (Hz)", "ea": "channel", "eb": "time (s)", "ja": "misc. generic 1",
}
POTENTIAL_TYPES = frozenset({"ab", "da"})
CURRENT_TYPES = frozenset({"ba", "db"})

#: the technique number of a measurement loop's `M` line
TECHNIQUE_IDS = {"lsv": 0x0000, "cv": 0x0005, "ca": 0x0007, "cp": 0x000A, "ocp": 0x000B,
                 "eis": 0x000D}

#: metadata status bits (`1X`)
STATUS_FLAGS = {0x1: "timing error", 0x2: "overload", 0x4: "underload", 0x8: "overload warning"}

#: EmStat4 current range codes (`2XX`)
CURRENT_RANGES_A = {0x03: 1e-9, 0x06: 10e-9, 0x09: 100e-9, 0x0C: 1e-6, 0x0F: 10e-6,
                    0x12: 100e-6, 0x15: 1e-3, 0x18: 10e-3, 0x1B: 100e-3}

#: error codes and their meaning (manual, error codes appendix), in our words
ERRORS = {
    0x0001: "an unspecified error", 0x0002: "a variable of the wrong type",
    0x0003: "an unknown command", 0x0006: "a command that is not allowed now",
    0x0007: "an invalid parameter value", 0x0008: "a command that is too long",
    0x000F: "an invalid potential", 0x0011: "an invalid frequency",
    0x0012: "an invalid amplitude", 0x0014: "an OCP measurement while the cell is on",
    0x0023: "a command that is not allowed in this pgstat mode",
    0x0032: "a heavy cell overload, so the measurement was stopped",
    0x4001: "an unknown script command", 0x4004: "an unexpected character",
    0x4008: "an option this command does not take", 0x400B: "nested measurement loops",
    0x400C: "a command that is not allowed here", 0x4012: "an unexpected script statement",
    0x4018: "an unexpected end of the script", 0x4026: "a variable declared twice",
    0x4027: "a command that needs the cell on", 0x4029: "a technique with no step",
    0x402B: "an invalid variable name", 0x4205: "a parameter out of range",
    0x420A: "too many parameters", 0x420B: "an undeclared variable",
}

_ERROR = re.compile(r"!([0-9A-Fa-f]{4})(?::\s*Line\s+(\d+)(?:,\s*Col\s+(\d+))?)?")
_LITERAL = re.compile(r"([+-]?\d+)([afpnumkMGTPE]?)|([+-]?\d+)i|0x([0-9A-Fa-f]+)i?")
_HEX = re.compile(r"[0-9A-Fa-f]+")
_FIRMWARE = re.compile(r"t([a-z0-9_]{6})(\d{2,4})#([A-Z][a-z]{2} [ \d]\d \d{4} \d\d:\d\d:\d\d)")
_MARKER = re.compile(r"[MC][0-9A-Fa-f]{4}|[*+L-]")

def format_literal(value: float) -> str:
    """A script number: an integer and the coarsest SI prefix that keeps it exact
    (0.0001 → `100u`, 1.5 → `1500m`), or the finest that fits int32 after rounding
    to 9 significant digits."""
    if isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{value!r} cannot be written in a script")
    if value == 0:
        return "0"
    rounded = float(f"{value:.9g}")
    for prefix in _COARSEST_FIRST:
        scaled = rounded / SI_PREFIXES[prefix]
        mantissa = round(scaled)
        if mantissa and abs(mantissa) <= LITERAL_MAX and abs(scaled - mantissa) <= 1e-9 * abs(
                mantissa):
            return f"{mantissa}{prefix.strip()}"
    for prefix in _FINEST_FIRST:
        mantissa = round(rounded / SI_PREFIXES[prefix])
        if abs(mantissa) <= LITERAL_MAX:
            return f"{mantissa}{prefix.strip()}"
    raise ValueError(f"{value!r} is too large for a script number")


@functools.lru_cache(maxsize=1024)
def parse_literal(text: str) -> tuple[float, bool]:
    """A script number → (value, is an integer). ValueError if it is not one. Kept for
    the texts met last (a script's literals are read at every run of it)."""
    match = _LITERAL.fullmatch(text)
    if not match:
        raise ValueError(f"{text!r} is not a MethodSCRIPT number")
    if match[1] is not None:
        return int(match[1]) * SI_PREFIXES[match[2] or " "], False
    if match[3] is not None:
        return int(match[3]), True
    return int(match[4], 16), True


def encode_value(value: float, integer: bool = False, prefix: str | None = None) -> str:
    """A package value, 8 characters: 7 hex digits of value + 2^27 and the prefix.

    Without `prefix`, the finest prefix whose mantissa fits, as the instrument does."""
    if integer:
        number = int(value)
        return NAN_FIELD if abs(number) > MAX_MANTISSA else f"{number + OFFSET:07X}i"
    if not math.isfinite(value):
        return NAN_FIELD
    if prefix is not None:
        candidates: Sequence[str] = (prefix,)
    else:  # skip the prefixes a thousand times too fine at once; the test below decides
        candidates = _FINEST_FIRST[max(bisect_left(_FINEST_LIMITS, abs(value)) - 1, 0):]
    for candidate in candidates:
        mantissa = round(value / SI_PREFIXES[candidate])
        if abs(mantissa) <= MAX_MANTISSA:
            return f"{mantissa + OFFSET:07X}{candidate}"
    return NAN_FIELD


def decode_value(field: str) -> float:
    """8 characters of a package → the value (an int for the `i` prefix, NaN for `nan`)."""
    if field == NAN_FIELD:
        return math.nan
    digits, prefix = field[:7], field[7:8]
    if len(field) != 8 or prefix not in SI_PREFIXES and prefix != "i":
        raise ValueError(f"{field!r} is not a package value")
    raw = int(digits, 16) - OFFSET  # ValueError for a non-hex digit
    return raw if prefix == "i" else raw * SI_PREFIXES[prefix]


@dataclass(frozen=True)
class Variable:
    """One variable of a data package."""

    type: str
    value: float
    status: int = 0
    current_range: int | None = None
    noise: int | None = None

    @property
    def status_text(self) -> str:
        return ", ".join(text for bit, text in STATUS_FLAGS.items() if self.status & bit) or "ok"


def encode_variable(var_type: str, value: float, integer: bool = False,
                    status: int | None = None, current_range: int | None = None) -> str:
    meta = "" if status is None else f",1{status:X}"
    meta += "" if current_range is None else f",2{current_range:02X}"
    return f"{var_type}{encode_value(value, integer)}{meta}"


def decode_variable(text: str) -> Variable:
    """`ttHHHHHHHp[,meta…]` → Variable; unknown metadata kinds are skipped."""
    field, *meta = text.split(",")
    var_type = field[:2]
    if len(field) != 10 or not var_type.isalpha() or not var_type.islower():
        raise ValueError(f"{text!r} is not a package variable")
    status, current_range, noise = 0, None, None
    for token in meta:
        if not _HEX.fullmatch(token):
            raise ValueError(f"{text!r} has metadata {token!r} that is not hex")
        kind, digits = token[:1], token[1:]
        if kind == "1" and len(digits) == 1:
            status = int(digits, 16)
        elif kind == "2" and len(digits) == 2:
            current_range = int(digits, 16)
        elif kind == "4" and len(digits) == 1:
            noise = int(digits, 16)
    return Variable(var_type, decode_value(field[2:]), status, current_range, noise)


def encode_package(variables: Sequence[str]) -> bytes:
    """Encoded variables → one `P` line."""
    return ("P" + ";".join(variables) + "\n").encode("ascii")


def decode_package(line: str) -> tuple[Variable, ...]:
    """A `P…` line (with or without its LF) → its variables. ValueError if malformed."""
    if not line.startswith("P") or len(line.rstrip("\n")) < 11:
        raise ValueError(f"{line!r} is not a data package")
    return tuple(decode_variable(part) for part in line[1:].rstrip("\n").split(";"))


@dataclass(frozen=True)
class DeviceError:
    """An `!XXXX` error: with a line (and column) when it is about a script."""

    code: int
    line: int | None = None
    column: int | None = None

    @property
    def meaning(self) -> str:
        return ERRORS.get(self.code, "an error code the manual table here does not list")

    def __str__(self) -> str:
        where = f" at script line {self.line}" if self.line is not None else ""
        where += f", column {self.column}" if self.column is not None else ""
        return f"!{self.code:04X} ({self.meaning}){where}"


def decode_error(line: str) -> DeviceError | None:
    """The error in a line (`Z!0006`, `e!4001: Line 3, Col 1`, `!0014: Line 9`), if any."""
    match = _ERROR.search(line)
    if not match:
        return None
    return DeviceError(int(match[1], 16), int(match[2]) if match[2] else None,
                       int(match[3]) if match[3] else None)


def encode_error(code: int, line: int | None = None, column: int | None = None,
                 echo: str = "") -> bytes:
    where = "" if line is None else f": Line {line}" + ("" if column is None else f", Col {column}")
    return f"{echo}!{code:04X}{where}\n".encode("ascii")


def is_marker(line: str) -> bool:
    """A loop or scan start/end line (`M0007`, `*`, `L`, `+`, `C0005`, `-`)."""
    return bool(_MARKER.fullmatch(line))


def script_bytes(lines: Sequence[str]) -> bytes:
    """The bytes that run a script: `e`, its lines, an empty line."""
    return ("e\n" + "".join(f"{line}\n" for line in lines) + "\n").encode("ascii")


@dataclass(frozen=True)
class Firmware:
    device_type: str
    version: str
    build: str

    @property
    def model(self) -> str:
        return DEVICE_MODELS.get(self.device_type, f"unknown device {self.device_type!r}")


DEVICE_MODELS = {"es4_lr": "EmStat4 LR", "es4_hr": "EmStat4 HR", "mes4lr": "MultiEmStat4 LR",
                 "mes4hr": "MultiEmStat4 HR", "espico": "EmStat Pico", "nexus1": "Nexus"}


def decode_firmware(first: str, second: str) -> Firmware:
    """The two lines answering `t`: `t<type, 6 chars><version>#<build>` and `…*`."""
    first, second = first.rstrip("\n"), second.rstrip("\n")
    match = _FIRMWARE.fullmatch(first)
    if not match or not re.fullmatch(r"[A-Z]\*", second):
        raise ValueError(f"{first!r} / {second!r} is not a firmware version reply")
    return Firmware(match[1], match[2], " ".join(match[3].split()))
