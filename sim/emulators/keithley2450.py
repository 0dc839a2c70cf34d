"""Keithley 2450 SourceMeter on the wire (SCPI command set), wired to one simulated cell.

The source acts on the cell through its controls ("current", "voltage", "open"), in the
virtual time of `clock`. A current source drives the cell at its level until |V| reaches
the voltage limit; there the 2450 clamps the voltage (manual: "the instrument clamps the
source to keep the source within the set limits"), so the cell is held at ±limit and its
current tapers. It returns to the current level if the cell would draw more than it. A
voltage source whose cell would draw more than the current limit holds ±limit instead,
until the cell's voltage reaches the level. The emulator does not tick: it asks the cell
for the next crossing and switches there. A rising current under voltage control cannot be
predicted that way, so it is caught at the next command (assumption of this emulator).
That regulation is sim/emulators/keithley2450_source.py; this module is the SCPI side.

Output off follows the off state of the present source function (manual, output-off
states): HIMPedance opens the relay (cell "open"); NORMal holds 0 V with a current limit of
10 % of the present current range and ZERO with the full range, both of which discharge
a cell; GUARd sources 0 A (the voltage clamp of that state is not modelled). The present
current range is taken as the smallest range holding the current level, or the current
limit when sourcing voltage (autorange; assumption).

Measurements are the cell's exact terminal values (no noise); with the relay open they read
0. The source element (SOUR) is the read-back, i.e. the measured source value. REL is the
time since the first reading stored in the buffer since it was last cleared. A reading is
stored as its count and the latest values only.

Commands: `*IDN? *RST *CLS *OPC?`, `:SYST:ERR[:NEXT]? :SYST:ERR:COUN? :SYST:CLE`,
`:OUTP[:STAT]`, `:OUTP[:CURR|:VOLT]:SMOD`, `:SOUR:FUNC`, `:SOUR:CURR|VOLT[:LEV]`,
`:SOUR:CURR:VLIM`, `:SOUR:VOLT:ILIM` (and `:TRIP?`), `[:SENS]:FUNC`, `:MEAS:VOLT|CURR?`,
`:READ?`, `:FETC?` (elements READ, SOUR, REL), `:TRAC:CLE`, `:TRAC:ACT?`, long or short
forms in any case, several per line separated by `;` (each taken from the root).

Assumed, not read in the 2450 manual: *RST defaults of source function VOLT and current
limit 105 µA (read in the 2461/2470 manuals; the 21 V voltage limit and the NORMal off state
are the 2450's) and of measure function CURR; out-of-range values are -222 "Data out of range", an
unknown buffer or buffer element -224 "Illegal parameter value", `:FETC?` of an empty buffer
-230 "Data corrupt or stale", a line longer than 4096 bytes -363 "Input buffer overrun";
an error ends the line; `[:SENS]:FUNC?` answers `"VOLT:DC"`; the event clock counts from
1970 with the virtual time.
"""

from __future__ import annotations

import functools
import re
from collections import deque
from collections.abc import Callable

from lipon_hw.drivers.keithley2450 import (
    NO_ERROR,
    TERMINATOR,
    encode_lines,
    format_error,
    format_number,
    parse_number,
)
from lipon_hw.errors import InputError
from lipon_hw.sim.emulator import DISCARD_ALL, Emulator
from lipon_hw.sim.emulators.keithley2450_source import (  # noqa: F401 - current_range_A re-exported
    BUFFERS,
    LEVEL_BOUNDS,
    LIMIT_BOUNDS,
    SourceRegulation,
    current_range_A,
)

MAX_LINE = 4096
ERROR_QUEUE = 1000
#: SCPI-standard messages of the errors an instrument fault puts in the queue
SCPI_FAULT_MESSAGES = {-300: "Device-specific error", -310: "System error",
                       -311: "Memory error", -313: "Calibration memory lost",
                       -315: "Configuration memory lost", -330: "Self-test failed",
                       -350: "Queue overflow", -200: "Execution error",
                       -240: "Hardware error", -241: "Hardware missing"}
FUNCTIONS = {"CURRent[:DC]": "CURR", "VOLTage[:DC]": "VOLT"}
OFF_MODES = {"NORMal": "NORM", "HIMPedance": "HIMP", "ZERO": "ZERO", "GUARd": "GUAR"}
ELEMENTS = {"READing": "READ", "SOURce": "SOUR", "RELative": "REL"}
BOOLEANS = {"ON": True, "1": True, "OFF": False, "0": False}
_TOKEN = re.compile(r"\[1\]|\[|\]|:|\*|[A-Z]+[a-z]*")


class ScpiError(Exception):
    """A command the 2450 refuses: it answers nothing and queues this entry."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


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
            short = "".join(c for c in token if c.isupper())
            parts.append(f"(?:{short}|{token.upper()})")
    return re.compile("".join(parts), re.IGNORECASE)


class Keithley2450Emulator(SourceRegulation, Emulator):
    model = "MODEL 2450"
    frame_window = MAX_LINE + 2  # a line longer than MAX_LINE is an input buffer overrun
    identity = "KEITHLEY INSTRUMENTS INC.,MODEL 2450,01234567,1.0.0i"  # the manual's *IDN? example

    def __init__(self, name: str, cell, clock: Callable[[], float], off_mode: str = "NORMal"):
        """`off_mode` is the power-up output-off state (factory: NORMal); `*RST` restores
        NORMal whatever it is."""
        super().__init__(name)
        self.cell = cell
        self.clock = clock
        self.errors: deque[tuple[int, str, float]] = deque(maxlen=ERROR_QUEUE)
        self._now = clock()
        try:
            power_up = _choose(off_mode, OFF_MODES)
        except ScpiError:
            raise InputError(f"{name}: off_mode {off_mode!r} is not one of NORMal, HIMPedance, "
                             "ZERO, GUARd") from None
        self._commands = [(header_pattern(spec), handler) for spec, handler in (
            ("*IDN", self._idn), ("*RST", self._rst), ("*CLS", self._cls), ("*OPC", self._opc),
            (":SYSTem:ERRor[:NEXT]", self._error_next), (":SYSTem:ERRor:COUNt", self._error_count),
            (":SYSTem:CLEar", self._cls),
            (":OUTPut[1][:STATe]", self._output),
            (":OUTPut[1]:SMODe", self._off_mode(("CURR", "VOLT"))),
            (":OUTPut[1]:CURRent:SMODe", self._off_mode(("CURR",))),
            (":OUTPut[1]:VOLTage:SMODe", self._off_mode(("VOLT",))),
            (":SOURce[1]:FUNCtion[:MODE]", self._source_function),
            (":SOURce[1]:CURRent[:LEVel][:IMMediate][:AMPLitude]", self._level("CURR")),
            (":SOURce[1]:VOLTage[:LEVel][:IMMediate][:AMPLitude]", self._level("VOLT")),
            (":SOURce[1]:CURRent:VLIMit[:LEVel]", self._limit("CURR")),
            (":SOURce[1]:VOLTage:ILIMit[:LEVel]", self._limit("VOLT")),
            (":SOURce[1]:CURRent:VLIMit[:LEVel]:TRIPped", self._tripped("CURR")),
            (":SOURce[1]:VOLTage:ILIMit[:LEVel]:TRIPped", self._tripped("VOLT")),
            ("[:SENSe[1]]:FUNCtion[:ON]", self._sense_function),
            (":MEASure:CURRent[:DC]", self._measure("CURR")),
            (":MEASure:VOLTage[:DC]", self._measure("VOLT")),
            (":READ", self._read), (":FETCh", self._fetch),
            (":TRACe:CLEar", self._trace_clear), (":TRACe:ACTual", self._trace_actual),
        )]
        self._reset(power_up)

    @classmethod
    def from_cells(cls, name: str, cells: dict, clock: Callable[[], float],
                   **settings) -> Keithley2450Emulator:
        """The simulated lab's factory (`CELL_EMULATORS`): one channel, its cell on 1."""
        if set(cells) != {1}:
            raise InputError(f"{name}: a 2450 has one channel, so it takes one cell, on "
                             f"channel 1 (got channels {sorted(cells)})")
        return cls(name, cells[1], clock, **settings)

    @property
    def ports(self) -> dict[int, Keithley2450Emulator]:
        """Channel → the emulator serving it: the 2450 is its own single port."""
        return {1: self}

    def mount(self, cell) -> None:
        """Connect another cell to the terminals; it gets what the output applies now."""
        self._advance(self.clock())
        self.cell = cell
        self._apply()

    # --- instrument memory (for checkpoints; the cell keeps its own) -------------------
    def snapshot(self) -> dict:
        return {"function": self.function, "sense": self.sense, "level": dict(self.level),
                "limit": dict(self.limit), "off_mode": dict(self.off_mode),
                "output_on": self.output_on, "buffers": dict(self.buffers),
                "errors": [list(entry) for entry in self.errors], "regime": self.regime,
                "held": list(self._held), "switch_at": self._switch_at, "now": self._now}

    def restore(self, state: dict) -> None:
        """Instrument settings and regime; the cell is restored from its own snapshot."""
        self.function, self.sense = state["function"], state["sense"]
        self.level, self.limit = dict(state["level"]), dict(state["limit"])
        self.off_mode, self.output_on = dict(state["off_mode"]), state["output_on"]
        self.buffers = dict(state["buffers"])
        self.errors = deque((tuple(entry) for entry in state["errors"]), maxlen=ERROR_QUEUE)
        self.regime, self._held = state["regime"], tuple(state["held"])
        self._switch_at, self._now = state["switch_at"], state["now"]

    # --- wire ---------------------------------------------------------------------------
    def _process(self, buffer: bytes) -> tuple[int, bytes]:
        end = buffer.find(TERMINATOR)
        if end < 0:
            if len(buffer) > MAX_LINE:
                self._push(-363, "Input buffer overrun")
                return DISCARD_ALL, b""
            return 0, b""
        with self.world_lock:
            self._advance(self.clock())
            return end + 1, self._line(buffer[:end].rstrip(b"\r"))

    def _line(self, raw: bytes) -> bytes:
        text = raw.decode("latin-1")
        if not (text.isascii() and text.isprintable()):
            self._push(-101, "Invalid character")
            return b""
        replies = []
        for unit in _split(text, ";"):
            if not unit.strip():
                continue
            try:
                reply = self._execute(unit.strip())
            except ScpiError as error:
                self._push(error.code, error.message)
                break
            if reply is not None:
                replies.append(reply)
        return encode_lines([";".join(replies)]) if replies else b""

    def _execute(self, unit: str) -> str | None:
        header, _, rest = unit.partition(" ")
        query = header.endswith("?")
        header = header[:-1] if query else header
        if not header.startswith((":", "*")):
            header = ":" + header
        args = [arg.strip() for arg in _split(rest, ",")] if rest.strip() else []
        code = self.faults.error_code
        if code is not None and not header.upper().startswith((":SYST:ERR", ":SYSTEM:ERR")):
            raise ScpiError(code, SCPI_FAULT_MESSAGES.get(code, "Device-specific error"))
        for pattern, handler in self._commands:
            if pattern.fullmatch(header):
                return handler(query, args)
        raise ScpiError(-113, "Undefined header")

    def _push(self, code: int, message: str) -> None:
        self.errors.append((code, message, self._now))

    # --- common and system commands -----------------------------------------------------
    def _idn(self, query: bool, args: list[str]) -> str:
        _query_only(query, args)
        return self.identity

    def _rst(self, query: bool, args: list[str]) -> None:
        _command_only(query)
        self._reset("NORM")

    def _cls(self, query: bool, args: list[str]) -> None:
        _command_only(query)
        self.errors.clear()

    def _opc(self, query: bool, args: list[str]) -> str | None:
        return "1" if query else None

    def _error_next(self, query: bool, args: list[str]) -> str:
        _query_only(query, args)
        return format_error(*self.errors.popleft()) if self.errors else NO_ERROR

    def _error_count(self, query: bool, args: list[str]) -> str:
        _query_only(query, args)
        return str(len(self.errors))

    # --- output and source --------------------------------------------------------------
    def _output(self, query: bool, args: list[str]) -> str | None:
        if query:
            _query_only(query, args)
            return "1" if self.output_on else "0"
        self.output_on = _boolean(args)
        self._apply()
        return None

    def _off_mode(self, functions: tuple[str, ...]):
        def handler(query: bool, args: list[str]) -> str | None:
            if query:
                _query_only(query, args)
                return self.off_mode[functions[0] if len(functions) == 1 else self.function]
            mode = _choose(_one(args), OFF_MODES)
            for function in functions:
                self.off_mode[function] = mode
            self._apply()
            return None

        return handler

    def _source_function(self, query: bool, args: list[str]) -> str | None:
        if query:
            _query_only(query, args)
            return self.function
        self.function = _choose(_one(args), FUNCTIONS)
        self._apply()
        return None

    def _level(self, function: str):
        def handler(query: bool, args: list[str]) -> str | None:
            if query:
                _query_only(query, args)
                return format_number(self.level[function])
            self.level[function] = _number(args, *LEVEL_BOUNDS[function])
            self._apply()
            return None

        return handler

    def _limit(self, function: str):
        """Limits are magnitudes; a negative value sets the same limit."""

        def handler(query: bool, args: list[str]) -> str | None:
            if query:
                _query_only(query, args)
                return format_number(self.limit[function])
            low, high, default = LIMIT_BOUNDS[function]
            self.limit[function] = _number(args, low, high, default, signed=True)
            self._apply()
            return None

        return handler

    def _tripped(self, function: str):
        def handler(query: bool, args: list[str]) -> str:
            _query_only(query, args)
            held = self.output_on and self.function == function and self.regime == "limit"
            return "1" if held else "0"

        return handler

    # --- measuring ----------------------------------------------------------------------
    def _sense_function(self, query: bool, args: list[str]) -> str | None:
        if query:
            _query_only(query, args)
            return f'"{self.sense}:DC"'
        self.sense = _choose(_unquote(_one(args)), FUNCTIONS)
        return None

    def _measure(self, function: str):
        """`:MEAS:<function>?` selects that measure function, then reads (manual)."""

        def handler(query: bool, args: list[str]) -> str:
            _query_only(query)
            self.sense = function
            return self._reading(args)

        return handler

    def _read(self, query: bool, args: list[str]) -> str:
        _query_only(query)
        return self._reading(args)

    def _fetch(self, query: bool, args: list[str]) -> str:
        _query_only(query)
        name, elements = _buffer_args(args)
        if self.buffers[name] is None:
            raise ScpiError(-230, "Data corrupt or stale")
        return self._format(self.buffers[name], elements)

    def _trace_clear(self, query: bool, args: list[str]) -> None:
        _command_only(query)
        self.buffers[_buffer_args(args[:1])[0]] = None

    def _trace_actual(self, query: bool, args: list[str]) -> str:
        _query_only(query)
        stored = self.buffers[_buffer_args(args[:1])[0]]
        return str(stored["count"] if stored else 0)

    def _reading(self, args: list[str]) -> str:
        name, elements = _buffer_args(args)
        volts, amps = self._terminals()
        values = {"VOLT": volts, "CURR": amps}
        stored = self.buffers[name] or {"first_t": self._now, "count": 0}
        stored = {**stored, "count": stored["count"] + 1, "t": self._now,
                  "READ": values[self.sense], "SOUR": values[self.function]}
        self.buffers[name] = stored
        return self._format(stored, elements)

    def _format(self, stored: dict, elements: list[str]) -> str:
        values = {"READ": stored["READ"], "SOUR": stored["SOUR"],
                  "REL": stored["t"] - stored["first_t"]}
        return ",".join(format_number(values[element]) for element in elements)

    def _terminals(self) -> tuple[float, float]:
        if self.regime == "open":
            return 0.0, 0.0
        return self.cell.voltage_V(self._now), self.cell.current_A(self._now)

# --- parameters -------------------------------------------------------------------------
def _split(text: str, separator: str) -> list[str]:
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


def _query_only(query: bool, args: list[str] | None = None) -> None:
    if not query:
        raise ScpiError(-113, "Undefined header")
    if args:
        raise ScpiError(-108, "Parameter not allowed")


def _command_only(query: bool) -> None:
    if query:
        raise ScpiError(-113, "Undefined header")


def _one(args: list[str]) -> str:
    if not args:
        raise ScpiError(-109, "Missing parameter")
    if len(args) > 1:
        raise ScpiError(-108, "Parameter not allowed")
    return args[0]


def _choose(arg: str, options: dict[str, str]) -> str:
    for spec, value in options.items():
        if header_pattern(spec).fullmatch(arg):
            return value
    raise ScpiError(-141, "Invalid character data")


def _boolean(args: list[str]) -> bool:
    value = BOOLEANS.get(_one(args).upper())
    if value is None:
        raise ScpiError(-141, "Invalid character data")
    return value


def _number(args: list[str], low: float, high: float, default: float,
            signed: bool = False) -> float:
    """A numeric parameter or MINimum/MAXimum/DEFault; `signed` takes a magnitude."""
    arg = _one(args)
    named = {"MINimum": low, "MAXimum": high, "DEFault": default}
    for spec, value in named.items():
        if header_pattern(spec).fullmatch(arg):
            return value
    try:
        value = parse_number(arg)
    except ValueError:
        raise ScpiError(-104, "Data type error") from None
    if signed:
        value = abs(value)
    if not low <= value <= high:
        raise ScpiError(-222, "Data out of range")
    return value


def _unquote(arg: str) -> str:
    if len(arg) >= 2 and arg[0] == arg[-1] and arg[0] in "\"'":
        return arg[1:-1]
    return arg


def _buffer_args(args: list[str]) -> tuple[str, list[str]]:
    """(buffer name, elements) of `"defbuffer1", READ, SOUR, REL`; READ alone by default."""
    name = _unquote(args[0]) if args else BUFFERS[0]
    if name not in BUFFERS:
        raise ScpiError(-224, "Illegal parameter value")
    try:
        elements = [_choose(arg, ELEMENTS) for arg in args[1:]] or ["READ"]
    except ScpiError:
        raise ScpiError(-224, "Illegal parameter value") from None
    return name, elements
