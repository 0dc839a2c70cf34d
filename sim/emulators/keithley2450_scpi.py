"""SCPI parsing for the Keithley 2450 emulator: header patterns (short or long form of each
mnemonic, any case, optional nodes, numeric suffix 1), program message units and their
parameters (numbers with MINimum/MAXimum/DEFault, booleans, character data, strings), and
the SCPI errors a refused unit queues (codes and messages of the SCPI standard, as the
2450's event log shows them)."""

from __future__ import annotations

import functools
import re

from lipon_hw.drivers.keithley2450 import parse_number

_TOKEN = re.compile(r"\[1\]|\[|\]|:|\*|[A-Z]+[a-z]*[0-9]*")
BOOLEANS = {"ON": True, "1": True, "OFF": False, "0": False}
#: a reading that does not fit its range, and the value of a division by zero (manual:
#: "overflow readings are shown as 9.9E+37")
OVERFLOW = 9.9e37


class ScpiError(Exception):
    """A command the 2450 refuses: it answers nothing and queues this entry."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


UNDEFINED_HEADER = (-113, "Undefined header")


@functools.cache
def header_pattern(spec: str) -> re.Pattern:
    """`[:SENSe[1]]:FUNCtion[:ON]` → a regex accepting the short or long form of each
    mnemonic in any case, with the bracketed nodes optional."""
    parts = []
    for token in _TOKEN.findall(spec):
        if token == "[1]":
            parts.append("1?")
        elif token == "[":
            parts.append("(?:")
        elif token == "]":
            parts.append(")?")
        elif token in ":*":
            parts.append(re.escape(token))
        else:
            short = "".join(c for c in token if c.isupper() or c.isdigit())
            parts.append(f"(?:{short}|{token.upper()})")
    return re.compile("".join(parts), re.IGNORECASE)


_SUFFIX = re.compile(r"(?<=[A-Za-z])\d+(?=:|$)")


def with_suffix_one(header: str) -> str:
    """The header with every node's numeric suffix made 1 (to tell a suffix out of range,
    -114, from an unknown header, -113)."""
    return _SUFFIX.sub("1", header)


def split(text: str, separator: str) -> list[str]:
    """Split at `separator` outside quoted strings."""
    parts, current, quote = [], [], ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == separator:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def query_only(query: bool, args: list[str] | None = None) -> None:
    if not query:
        raise ScpiError(*UNDEFINED_HEADER)
    if args:
        raise ScpiError(-108, "Parameter not allowed")


def command_only(query: bool) -> None:
    if query:
        raise ScpiError(*UNDEFINED_HEADER)


def one(args: list[str]) -> str:
    if not args:
        raise ScpiError(-109, "Missing parameter")
    if len(args) > 1:
        raise ScpiError(-108, "Parameter not allowed")
    return args[0]


def choose(arg: str, options: dict[str, str]) -> str:
    """The value of the option whose short or long form `arg` is; -141 for none."""
    for spec, value in options.items():
        if header_pattern(spec).fullmatch(arg):
            return value
    raise ScpiError(-141, "Invalid character data")


def boolean(args: list[str]) -> bool:
    value = BOOLEANS.get(one(args).upper())
    if value is None:
        raise ScpiError(-141, "Invalid character data")
    return value


def named_value(arg: str, low: float, high: float, default: float) -> float | None:
    """MINimum, MAXimum or DEFault as its value; None for anything else."""
    for spec, value in {"MINimum": low, "MAXimum": high, "DEFault": default}.items():
        if header_pattern(spec).fullmatch(arg):
            return value
    return None


def number(args: list[str], low: float, high: float, default: float,
           signed: bool = False) -> float:
    """A numeric parameter or MINimum/MAXimum/DEFault; `signed` takes a magnitude. Out of
    `low..high`: -222."""
    arg = one(args)
    named = named_value(arg, low, high, default)
    if named is not None:
        return named
    try:
        value = parse_number(arg)
    except ValueError:
        raise ScpiError(-104, "Data type error") from None
    if signed:
        value = abs(value)
    if not low <= value <= high:
        raise ScpiError(-222, "Data out of range")
    return value


def integer(args: list[str], low: int, high: int, default: int) -> int:
    value = number(args, low, high, default)
    if value != int(value):
        raise ScpiError(-104, "Data type error")
    return int(value)


def query_named(args: list[str], low: float, high: float, default: float) -> float | None:
    """A query's optional MINimum/MAXimum/DEFault parameter as its value (None without
    one); anything else is a parameter the query does not take (-108)."""
    if not args:
        return None
    value = named_value(one(args), low, high, default)
    if value is None:
        raise ScpiError(-108, "Parameter not allowed")
    return value


def unquote(arg: str) -> str:
    if len(arg) >= 2 and arg[0] == arg[-1] and arg[0] in "\"'":
        return arg[1:-1]
    return arg


def quoted(arg: str) -> str:
    """A string parameter; -151 when it is not quoted."""
    if len(arg) >= 2 and arg[0] == arg[-1] and arg[0] in "\"'":
        return arg[1:-1]
    raise ScpiError(-151, "Invalid string data")


def esr_bit(code: int) -> int:
    """The standard event status bit an error sets: query (4), device-dependent (8),
    execution (16) or command error (32)."""
    if -199 <= code <= -100:
        return 32
    if -299 <= code <= -200:
        return 16
    if -499 <= code <= -400:
        return 4
    return 8
