"""PalmSens MethodSCRIPT potentiostats (EmStat4, MultiEmStat4 class).

Wire format (MethodSCRIPT manual v1.8, www.palmsens.com/msmanual; PalmSens'
public MethodSCRIPT_Examples; protocols.md §4.1): ASCII lines ended by LF. The
host sends one-letter "online" commands (`t` firmware version, `Z` abort) or a
script: `e`, the script's lines, then an empty line. The instrument echoes `e`,
runs the script and streams its output, then ends it with an empty line.

Output lines: `P<var>;<var>;…` a data package; `M<tttt>`/`*` start and end of a
measurement loop (tttt is the technique number), `L`/`+` of a plain loop,
`C<tttt>`/`-` of one scan of a multi-scan sweep, `T…` text, and `…!XXXX` an
error, with `: Line L, Col C` when a script was refused.

A package variable is a 2-letter type (`ba` WE current, `da` applied potential,
`eb` time, …), 7 hex digits holding the value plus 2^27, and an SI prefix
(`u` = 1e-6, `i` = integer, a space = none); `     nan` is not a number. Metadata
may follow, comma-separated: `1X` status bits, `2XX` current range, `4X` noise.
Numbers in a script are an integer and an SI prefix (`1500m`, `-50n`, `3u`),
or an integer with `i` (`51i`): no decimal point.

A MultiEmStat4 is N EmStat4 channels, each on its own USB-CDC serial port with
its own MethodSCRIPT session (the firmware id `mes4lr`/`mes4hr`; PalmSens'
tools open one port per channel). One driver is the whole instrument: it takes
one Link per channel, and in each script selects the channel's own potentiostat
with `set_pgstat_chan 0`.

Sign convention: a positive WE current charges the cell, as in the Battery Data
Format (the cell's positive electrode is on WE).
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields

from lipon_hw.errors import FrameError, InputError, InstrumentError, LinkTimeout
from lipon_hw.links import Link
from lipon_hw.techniques import (  # noqa: F401 - re-exported for the driver's users
    CCCV,
    EIS,
    OCV,
    ConstantCurrent,
    ConstantVoltage,
    CyclicSweep,
    DCPolarization,
    LinearSweep,
    Recording,
    Sample,
    Technique,
    log_frequencies,
)

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


# --- codec (shared with the emulator) -------------------------------------------------
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


def parse_literal(text: str) -> tuple[float, bool]:
    """A script number → (value, is an integer). ValueError if it is not one."""
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


# --- samples --------------------------------------------------------------------------
_SAMPLE_FIELDS = {"eb": "t_s", "ab": "E_V", "da": "E_V", "ba": "I_A", "db": "I_A",
                  "dc": "f_Hz", "cc": "z_re_ohm", "cd": "z_im_ohm"}


def sample_from_package(variables: Sequence[Variable]) -> Sample:
    """ValueError if a quantity comes twice: two lines run together by a lost LF."""
    fields = {_SAMPLE_FIELDS[v.type]: v.value for v in variables if v.type in _SAMPLE_FIELDS}
    if len(fields) != sum(v.type in _SAMPLE_FIELDS for v in variables):
        raise ValueError(f"{variables!r} holds a quantity twice")
    return Sample(**fields)


_HEX_DIGITS = "0123456789abcdefABCDEF"
_PLAIN_VARIABLE = r"([a-z]{2})([0-9A-Fa-f]{7})([afpnumkMGTPE i])(?:,[0-9A-Fa-f]+)*"
_PLAIN_LINES: dict[int, re.Pattern] = {}  # by number of variables
_LAYOUTS: dict[tuple[str, ...], list[tuple[int, str]] | None] = {}
_TYPED: dict[tuple[str, ...], tuple[re.Pattern, list[tuple[int, str]], bool]] = {}
_LAST_LAYOUT: list = [None]  # the typed pattern of the last plain line decoded


def _layout(types: tuple[str, ...]) -> list[tuple[int, str]] | None:
    """(group index, Sample field) of each variable type a Sample takes; None if two
    give the same field."""
    if types in _LAYOUTS:
        return _LAYOUTS[types]
    layout = [(3 * k, _SAMPLE_FIELDS[t]) for k, t in enumerate(types) if t in _SAMPLE_FIELDS]
    if len({name for _, name in layout}) != len(layout):
        layout = None
    if len(_LAYOUTS) < 256:
        _LAYOUTS[types] = layout
    return layout


def _typed_pattern(types: tuple[str, ...]) -> tuple[re.Pattern, list[tuple[int, str]], bool]:
    """The plain line pattern with these variable types written in (so a match needs no
    type lookup), (group index, Sample field) of the variables a Sample takes, and
    whether those are a Sample's first fields in order (positional arguments)."""
    typed = _TYPED.get(types)
    if typed is None:
        pattern = re.compile("P" + ";".join(_PLAIN_VARIABLE.replace("([a-z]{2})", t)
                                            for t in types))
        layout = [(2 * k, _SAMPLE_FIELDS[t]) for k, t in enumerate(types)
                  if t in _SAMPLE_FIELDS]
        order = [f.name for f in dataclass_fields(Sample)]
        in_order = [name for _, name in layout] == order[:len(layout)]
        typed = (pattern, layout, in_order)
        if len(_TYPED) < 64:
            _TYPED[types] = typed
    return typed


def sample_from_line(line: str) -> Sample:
    """A `P…` line → its Sample: `sample_from_package(decode_package(line))` in one pass
    (the same checks, the same ValueErrors) without building the Variables. A line in
    the plain form the instrument writes is matched at once; others are checked field by
    field."""
    last = _LAST_LAYOUT[0]  # the lines of a run share their variable types
    if last is not None and (match := last[0].fullmatch(line)) is not None:
        groups = match.groups()
        values = []
        for k, _ in last[1]:
            raw = int(groups[k], 16) - OFFSET
            prefix = groups[k + 1]
            values.append(raw if prefix == "i" else raw * SI_PREFIXES[prefix])
        if last[2]:  # the first fields of a Sample, in its order
            return Sample(*values)
        return Sample(**{name: v for (_, name), v in zip(last[1], values, strict=True)})
    count = line.count(";") + 1
    pattern = _PLAIN_LINES.get(count)
    if pattern is None:
        pattern = _PLAIN_LINES[count] = re.compile("P" + ";".join([_PLAIN_VARIABLE] * count))
    match = pattern.fullmatch(line)
    if match is not None:
        groups = match.groups()
        layout = _layout(groups[::3])
        if layout is None:
            raise ValueError(f"{line!r} holds a quantity twice")
        fields = {}
        for k, name in layout:
            raw = int(groups[k + 1], 16) - OFFSET
            prefix = groups[k + 2]
            fields[name] = raw if prefix == "i" else raw * SI_PREFIXES[prefix]
        _LAST_LAYOUT[0] = _typed_pattern(groups[::3])
        return Sample(**fields)
    body = line.rstrip("\n")
    if not line.startswith("P") or len(body) < 11:
        raise ValueError(f"{line!r} is not a data package")
    fields: dict[str, float] = {}
    count = 0
    for part in body[1:].split(";"):
        field, *meta = part.split(",")
        if len(field) != 10 or not field[:2].isalpha() or not field[:2].islower():
            raise ValueError(f"{part!r} is not a package variable")
        for token in meta:
            if not token or token.strip(_HEX_DIGITS):
                raise ValueError(f"{part!r} has metadata {token!r} that is not hex")
        prefix = field[9]
        if field[2:] == NAN_FIELD:
            value = math.nan
        elif prefix == "i":
            value = int(field[2:9], 16) - OFFSET
        elif prefix in SI_PREFIXES:
            value = (int(field[2:9], 16) - OFFSET) * SI_PREFIXES[prefix]
        else:
            raise ValueError(f"{field[2:]!r} is not a package value")
        name = _SAMPLE_FIELDS.get(field[:2])
        if name is not None:
            fields[name] = value
            count += 1
    if len(fields) != count:
        raise ValueError(f"{line!r} holds a quantity twice")
    return Sample(**fields)


# --- scripts --------------------------------------------------------------------------
L = format_literal
#: 10 µA: the ranges of a thin-film cell; autoranging spans 1 nA–10 mA (EmStat4 LR)
I_RANGE_LOW, I_RANGE_HIGH = "1n", "10m"


def build_script(technique: Technique) -> list[str]:
    """The script lines (without the `e` and the final empty line) for a technique."""
    builders = {OCV: _ocv_script, ConstantCurrent: _cc_script, ConstantVoltage: _cv_script,
                DCPolarization: _cv_script, CCCV: _cccv_script, EIS: _eis_script,
                LinearSweep: _sweep_script, CyclicSweep: _sweep_script}
    _check_technique(technique)
    return builders[type(technique)](technique)


def _check_technique(tq: Technique) -> None:
    interval = getattr(tq, "interval_s", None)
    if interval is not None and not 0 < interval <= tq.duration_s:
        raise InputError(f"{type(tq).__name__}: interval_s {interval} must be > 0 and at most "
                         f"duration_s {tq.duration_s}")
    if isinstance(tq, EIS) and (tq.points < 1 or min(tq.f_start_Hz, tq.f_end_Hz) <= 0):
        raise InputError("EIS needs positive frequencies and at least one point")
    if isinstance(tq, LinearSweep | CyclicSweep) and (tq.step_V <= 0 or tq.rate_V_s <= 0):
        raise InputError(f"{type(tq).__name__}: step_V and rate_V_s must be positive")


def _record_vars(rec: Recording) -> list[str]:
    """The rules' thresholds, at 0 so that the first sample goes out."""
    lines = ["var tn"] if rec.dt_s is not None else []
    lines += ["var eh", "var el"] if rec.dV is not None else []
    lines += ["var ih", "var il"] if rec.dI is not None else []
    lines += ["store_var tn 0 eb"] if rec.dt_s is not None else []
    lines += ["store_var eh 0 ab", "store_var el 0 ab"] if rec.dV is not None else []
    lines += ["store_var ih 0 ba", "store_var il 0 ba"] if rec.dI is not None else []
    return lines


def _package(names: Sequence[str]) -> list[str]:
    return ["pck_start", *(f"pck_add {name}" for name in names), "pck_end"]


def _record_block(rec: Recording, names: Sequence[str]) -> list[str]:
    """The body lines that send a sample: always, or on the Δt/ΔV/ΔI rules (ΔI only where
    the loop measures a current `i`)."""
    if rec.every_point:
        return _package(names)
    send = _package(names)
    if rec.dt_s is not None:
        send += ["copy_var t tn", f"add_var tn {L(rec.dt_s)}"]
    if rec.dV is not None:
        send += ["copy_var e eh", f"add_var eh {L(rec.dV)}", "copy_var e el",
                 f"sub_var el {L(rec.dV)}"]
    if rec.dI is not None:
        send += ["copy_var i ih", f"add_var ih {L(rec.dI)}", "copy_var i il",
                 f"sub_var il {L(rec.dI)}"]
    rules = (["t >= tn"] if rec.dt_s is not None else []) + (
        ["e >= eh", "e <= el"] if rec.dV is not None else []) + (
        ["i >= ih", "i <= il"] if rec.dI is not None else [])
    lines: list[str] = []
    for n, rule in enumerate(rules):
        lines += [f"{'if' if n == 0 else 'elseif'} {rule}", *_indent(send)]
    return [*lines, "endif"]


def _limit(condition: str, names: Sequence[str]) -> list[str]:
    return [f"if {condition}", *_indent(_package(names)), "  breakloop", "endif"]


def _indent(lines: Sequence[str]) -> list[str]:
    return [f"  {line}" for line in lines]


def _loop(head: str, body: Sequence[str]) -> list[str]:
    return [head, *_indent(body), "endloop"]


def _finish() -> list[str]:
    return ["on_finished:", "  cell_off"]


TEI = ("t", "e", "i")


def _ocv_script(tq: OCV) -> list[str]:
    record = tq.record.without_current()  # no current to follow at open circuit
    body = ["timer_get t", *_record_block(record, ("t", "e"))]
    return ["var t", "var e", *_record_vars(record), "set_pgstat_chan 0",
            "set_pgstat_mode 2", "set_max_bandwidth 40", "cell_off", "timer_start",
            *_loop(f"meas_loop_ocp e {L(tq.interval_s)} {L(tq.duration_s)}", body)]


def _cc_body(rec: Recording, v_max: float | None, v_min: float | None) -> list[str]:
    body = ["timer_get t"]
    body += _limit(f"e >= {L(v_max)}", TEI) if v_max is not None else []
    body += _limit(f"e <= {L(v_min)}", TEI) if v_min is not None else []
    return body + _record_block(rec, TEI)


def _cv_body(rec: Recording, i_min: float | None) -> list[str]:
    body = ["timer_get t"]
    if i_min is not None:  # |I| < i_min as two nested comparisons
        body += [f"if i < {L(i_min)}", *_indent(_limit(f"i > {L(-i_min)}", TEI)), "endif"]
    return body + _record_block(rec, TEI)


def _galvanostat(current: float) -> list[str]:
    return ["set_pgstat_mode 6", "set_max_bandwidth 40", "set_range ab 6",
            "set_autoranging ab 100m 6", f"set_range db {L(abs(current) or 1e-9)}", "set_i 0",
            "cell_on"]


def _potentiostat(voltage: float) -> list[str]:
    return ["set_pgstat_mode 2", "set_max_bandwidth 40", f"set_range_minmax da {L(voltage)} "
            f"{L(voltage)}", "set_range ba 10u", f"set_autoranging ba {I_RANGE_LOW} {I_RANGE_HIGH}",
            f"set_e {L(voltage)}", "cell_on"]


def _cc_script(tq: ConstantCurrent) -> list[str]:
    loop = f"meas_loop_cp e i {L(tq.current_A)} {L(tq.interval_s)} {L(tq.duration_s)}"
    return ["var t", "var e", "var i", *_record_vars(tq.record), "set_pgstat_chan 0",
            *_galvanostat(tq.current_A), "timer_start",
            *_loop(loop, _cc_body(tq.record, tq.v_max_V, tq.v_min_V)), *_finish()]


def _cv_script(tq: ConstantVoltage | DCPolarization) -> list[str]:
    loop = f"meas_loop_ca e i {L(tq.voltage_V)} {L(tq.interval_s)} {L(tq.duration_s)}"
    return ["var t", "var e", "var i", *_record_vars(tq.record), "set_pgstat_chan 0",
            *_potentiostat(tq.voltage_V), "timer_start",
            *_loop(loop, _cv_body(tq.record, getattr(tq, "i_min_A", None))), *_finish()]


def _cccv_script(tq: CCCV) -> list[str]:
    up = tq.current_A >= 0
    cc = f"meas_loop_cp e i {L(tq.current_A)} {L(tq.interval_s)} {L(tq.duration_s)}"
    cv = f"meas_loop_ca e i {L(tq.voltage_V)} {L(tq.interval_s)} {L(tq.duration_s)}"
    return ["var t", "var e", "var i", *_record_vars(tq.record), "set_pgstat_chan 0",
            *_galvanostat(tq.current_A), "timer_start",
            *_loop(cc, _cc_body(tq.record, tq.voltage_V if up else None,
                                None if up else tq.voltage_V)),
            *_potentiostat(tq.voltage_V), *_loop(cv, _cv_body(tq.record, tq.i_min_A)),
            *_finish()]


def _eis_script(tq: EIS) -> list[str]:
    dc = ["meas 100m e ab"] if tq.dc_V is None else [f"store_var e {L(tq.dc_V)} da"]
    loop = (f"meas_loop_eis f zr zi {L(tq.amplitude_V)} {L(tq.f_start_Hz)} {L(tq.f_end_Hz)} "
            f"{tq.points}i e")
    return ["var t", "var e", "var f", "var zr", "var zi", "set_pgstat_chan 0",
            "set_pgstat_mode 3", "set_max_bandwidth 200k", "set_range ba 10u",
            f"set_autoranging ba {I_RANGE_LOW} {I_RANGE_HIGH}", "cell_off", *dc, "set_e e",
            "cell_on", "timer_start",
            *_loop(loop, ["timer_get t", *_package(("t", "f", "zr", "zi"))]), *_finish()]


def _sweep_script(tq: LinearSweep | CyclicSweep) -> list[str]:
    if isinstance(tq, LinearSweep):
        low, high = sorted((tq.start_V, tq.end_V))
        loop = (f"meas_loop_lsv e i {L(tq.start_V)} {L(tq.end_V)} {L(tq.step_V)} "
                f"{L(tq.rate_V_s)}")
    else:
        low, high = sorted((tq.vertex1_V, tq.vertex2_V, tq.start_V))[::2]
        loop = (f"meas_loop_cv e i {L(tq.start_V)} {L(tq.vertex1_V)} {L(tq.vertex2_V)} "
                f"{L(tq.step_V)} {L(tq.rate_V_s)}" + (f" nscans({tq.scans})" if tq.scans > 1
                                                       else ""))
    return ["var t", "var e", "var i", "set_pgstat_chan 0", "set_pgstat_mode 2",
            "set_max_bandwidth 40", f"set_range_minmax da {L(low)} {L(high)}",
            "set_range ba 10u", f"set_autoranging ba {I_RANGE_LOW} {I_RANGE_HIGH}",
            f"set_e {L(tq.start_V)}", "cell_on", "timer_start",
            *_loop(loop, ["timer_get t", *_package(TEI)]), *_finish()]


_SCRIPTS: dict[str, bytes] = {}  # a cycling test starts the same few techniques again


def _script_bytes_for(technique: Technique) -> bytes:
    """script_bytes(build_script(technique)), kept by the technique's repr (which tells
    1 from 1.0, unlike ==)."""
    key = f"{type(technique).__qualname__}{technique!r}"
    script = _SCRIPTS.get(key)
    if script is None:
        script = script_bytes(build_script(technique))
        if len(_SCRIPTS) >= 64:
            _SCRIPTS.clear()
        _SCRIPTS[key] = script
    return script


# --- driver ---------------------------------------------------------------------------
class Run:
    """One technique running on one channel: its samples as they arrive.

    Iterating yields the samples received so far and stops; `finished` says whether
    the script has ended (normally, by `stop()`, or with an instrument error). Data
    lines that arrive corrupted cannot be asked for again: they are dropped and kept
    in `corrupt_lines`.
    """

    #: the instrument measures, checks limits and buffers on its own: poll when convenient
    poll_interval_s: float | None = None

    def __init__(self, pstat: MethodScriptPotentiostat, channel: int, technique: Technique):
        self.channel = channel
        self.technique = technique
        self.finished = False
        self.aborted = False
        self.error: DeviceError | None = None
        self.last: Sample | None = None
        self.corrupt_lines: list[str] = []
        self._open_loops = 0
        self._pending: deque[Sample] = deque()
        self._pstat = pstat

    def poll(self) -> list[Sample]:
        """Read what the instrument has sent; return the samples not yet returned."""
        if not self.finished:
            self._pstat._poll(self.channel)
        out = list(self._pending)
        self._pending.clear()
        return out

    def __iter__(self):
        return iter(self.poll())

    @property
    def end_reason(self) -> str | None:
        """Why the script ended: 'aborted', 'error', the limit the last sample is past
        ('v_max', 'v_min', 'i_min'), or 'done' (its time or sweep ran out); None while
        it runs."""
        if not self.finished:
            return None
        if self.aborted or self.error:
            return "aborted" if self.aborted else "error"
        tq, last = self.technique, self.last
        if last is None:
            return "done"
        v_max, v_min = getattr(tq, "v_max_V", None), getattr(tq, "v_min_V", None)
        i_min = getattr(tq, "i_min_A", None)
        potential = last.E_V
        if v_max is not None and potential >= v_max:
            return "v_max"
        if v_min is not None and potential <= v_min:
            return "v_min"
        if i_min is not None and abs(last.I_A) < i_min:
            return "i_min"
        return "done"

    def _line(self, line: str) -> None:
        """One output line of this run's script."""
        if line.startswith("P"):
            try:
                sample = sample_from_line(line)
            except (ValueError, TypeError):
                self.corrupt_lines.append(line)
                return
            self.last = sample
            self._pending.append(sample)
        elif line == "" and self._open_loops == 0:  # else an LF was garbled into the data
            self.finished = True
        elif line in ("*", "+") or line[:1] in ("M", "L") and is_marker(line):
            self._open_loops += 1 if line[:1] in ("M", "L") else -1
        elif line == "Z":
            self.aborted = True
        elif (error := decode_error(line)) is not None:
            self.error, self.finished = error, True
        elif not (is_marker(line) or line.startswith("T") or line == "e"):
            self.corrupt_lines.append(line)


class MethodScriptPotentiostat:
    """A MethodSCRIPT potentiostat with one or more channels.

    `link` is the Link of an EmStat4, or a sequence of Links, one per MultiEmStat4
    channel port (channel k on `link[k-1]`); `channels`, if given, must match.
    Channels are numbered from 1. `start(channel, technique)` sends the script and
    returns a `Run` to poll; `stop`, `cell_on`, `cell_off` act on one channel.
    """

    SERIAL_DEFAULTS: dict = {"baudrate": 921600, "bytesize": 8, "parity": "N", "stopbits": 1}
    #: the channel window and current limit a station may set: an EmStat4 applies at
    #: most ±10 V (compliance) and ±30 mA, down to its 1 nA range
    LIMITS = {"min_V": (-10.0, 10.0), "max_V": (-10.0, 10.0), "max_current_A": (1e-9, 0.03)}
    #: every technique runs on the instrument, limits included
    TECHNIQUES = (OCV, ConstantCurrent, ConstantVoltage, DCPolarization, CCCV, EIS, LinearSweep,
                  CyclicSweep)

    def __init__(self, name: str, link: Link | Sequence[Link], channels: int | None = None):
        links = list(link) if isinstance(link, list | tuple) else [link]
        if channels is not None and int(channels) != len(links):
            raise InputError(f"{name}: {channels} channels need {channels} links, one per "
                             f"channel port (a MultiEmStat4 has one serial port per channel); "
                             f"got {len(links)}")
        self.name = name
        self.links = links
        self.runs: dict[int, Run | None] = {ch: None for ch in range(1, len(links) + 1)}

    @property
    def channels(self) -> int:
        return len(self.links)

    # --- potentiostat -------------------------------------------------------------
    def start(self, channel: int, technique: Technique) -> Run:
        """Send the technique's script; InstrumentError if the channel refuses it."""
        self._check_idle(channel)
        script = _script_bytes_for(technique)
        run = Run(self, channel, technique)
        attempts = [0]

        def upload(link: Link) -> None:
            attempts[0] += 1
            if attempts[0] > 1:  # a failed attempt may have started the script: abort it
                self._sync(link, None)
            link.write(script)
            while True:
                line = self._read_line(link)
                if line == "e":
                    return
                error = decode_error(line)
                if error is not None and line.startswith("e"):
                    raise InstrumentError(f"{self.name} channel {channel} refused the "
                                          f"{type(technique).__name__} script with {error}")
                if not (line.startswith("P") or is_marker(line)):
                    raise FrameError(f"{self.name} channel {channel} answered the script "
                                     f"{script[:40]!r}… with {line!r} instead of its echo 'e'")
                run._line(line)  # the echo was lost but the script is running
                return

        self._link(channel).exchange(upload)
        self.runs[channel] = run
        return run

    def stop(self, channel: int) -> None:
        """Abort the channel's script (`Z`); its `on_finished:` turns the cell off."""
        run = self.runs.get(channel)
        self._link(channel).exchange(lambda link: self._sync(link, run))

    def cell_on(self, channel: int, voltage_V: float | None = None) -> None:
        """Hold `voltage_V`; if None, connect the cell at zero current (galvanostat),
        so that its potential stays at open circuit. Takes no time on the instrument."""
        self._check_idle(channel)
        if voltage_V is None:
            lines = ["set_pgstat_chan 0", "set_pgstat_mode 6", "set_range db 1u", "set_i 0"]
        else:
            lines = ["set_pgstat_chan 0", *_potentiostat(voltage_V)[:-1]]
        self._script(channel, [*lines, "cell_on"])

    def cell_off(self, channel: int) -> None:
        self._check_idle(channel)
        self._script(channel, ["set_pgstat_chan 0", "cell_off"])

    def current_ranges_A(self) -> tuple[float, ...]:
        return tuple(sorted(CURRENT_RANGES_A.values()))

    def identify(self) -> str:
        """`t` on the first channel: model, firmware version and build."""
        def ask(link: Link) -> Firmware:
            link.write(b"t\n")
            first = self._read_line(link, dispatch=self.runs.get(1))
            second = self._read_line(link)
            try:
                return decode_firmware(first, second)
            except ValueError as exc:
                raise FrameError(f"{self.name} answered b't\\n' with {first!r}, {second!r}: "
                                 f"{exc}") from None

        fw = self._link(1).exchange(ask)
        return (f"PalmSens {fw.model} firmware {fw.version} ({fw.build}), "
                f"{self.channels} channel{'s' * (self.channels > 1)}")

    def make_safe(self) -> None:
        """Abort and switch the cell off on every channel, even if one of them fails."""
        failure: Exception | None = None
        for channel in self.runs:
            try:
                self.stop(channel)
                self._script(channel, ["set_pgstat_chan 0", "cell_off"])
            except Exception as exc:  # every channel is tried; the first failure is raised
                failure = failure or exc
        if failure is not None:
            raise failure

    # --- protocol -----------------------------------------------------------------
    def _link(self, channel: int) -> Link:
        if channel not in self.runs:
            raise InputError(f"{self.name} has channels 1–{self.channels}, not {channel}")
        return self.links[channel - 1]

    def _check_idle(self, channel: int) -> None:
        self._link(channel)  # checks the channel number
        run = self.runs[channel]
        if run is not None and not run.finished:
            run.poll()
            if not run.finished:
                raise InstrumentError(f"{self.name} channel {channel} is still running "
                                      f"{type(run.technique).__name__}; stop() it first")

    def _poll(self, channel: int) -> None:
        """Send a bare LF and read every complete line that has arrived. PalmSens' own
        resync sends one as a harmless flush; here it also makes request/reply links
        (sim://, the loopback server) hand over what the instrument printed meanwhile."""
        run = self.runs[channel]

        def read(link: Link) -> None:
            link.write(TERMINATOR)
            while not run.finished:
                try:
                    lines = link.read_lines(TERMINATOR)
                except LinkTimeout:
                    return
                for n, line in enumerate(lines):
                    run._line(line[:-1].decode("ascii", "replace"))
                    if run.finished:  # what follows the script's end is not the run's
                        link.unread(b"".join(lines[n + 1:]))
                        break

        self._link(channel).exchange(read)

    def _script(self, channel: int, lines: list[str]) -> None:
        """Run a script that takes no time and wait for its end."""
        def execute(link: Link) -> None:
            link.write(script_bytes(lines))
            while (line := self._read_line(link)) != "":
                error = decode_error(line)
                if error is not None:
                    raise InstrumentError(f"{self.name} channel {channel} refused "
                                          f"{lines!r} with {error}")

        self._link(channel).exchange(execute)

    def _sync(self, link: Link, run: Run | None) -> None:
        """`Z`: `Z!0006` if nothing runs, else `Z`, the script's last lines, an empty line."""
        link.write(b"Z\n")
        while True:
            line = self._read_line(link, dispatch=run)
            if line == "Z!0006":  # nothing runs: a run whose end went unseen is over too
                if run is not None and not run.finished:
                    run.aborted = run.finished = True
                return
            if line == "Z":
                break
        while (line := self._read_line(link, dispatch=run)) != "":
            if decode_error(line) is not None:
                break
        if run is not None:
            run.aborted = run.finished = True

    def _read_line(self, link: Link, dispatch: Run | None = None) -> str:
        """The next line that is not script output; output goes to `dispatch`'s run."""
        while True:
            line = link.read_until(TERMINATOR)[:-1].decode("ascii", "replace")
            if dispatch is None or dispatch.finished or not _is_output(line):
                return line
            dispatch._line(line)


def _is_output(line: str) -> bool:
    return line.startswith(("P", "T")) or is_marker(line)
