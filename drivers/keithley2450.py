"""Keithley 2450 SourceMeter (SCPI command set) used as a one-channel cell cycler.

Wire format (2450 Reference Manual 2450-901-01; protocols.md §4.2): SCPI lines ended by
LF, over LAN (raw socket, port 5025), USB-TMC or GPIB. The 2450 has no serial port
(datasheet SPEC-2450: GPIB, USB, Ethernet, TSP-Link), hence empty SERIAL_DEFAULTS: reach
it as `socket://host:5025` or through a VISA resource. Readings print as `%.6E`
(manual `:FETCh?` example `03/21/2013,-1.375422E-11,0.000000E+00`).

A command answers nothing, and a refused one only leaves an entry in the error queue.
So every message the driver sends ends with `:SYST:ERR?` in the same write: one round
trip returns the answers and the queue head, `0,"No error;0;0 0"` when empty, else
`<code>,"<message>;<type>;<date time>"` (event-log form of the 2450 generation). A refused
query answers nothing, so its error report arrives where the answer was expected.

As a `Potentiostat` (one channel) the 2450 runs techniques timed by the host: `start`
sets the source, clears the buffer and takes a first reading, which is the technique's
time origin; then every `poll()` takes one reading (`:READ?` with the relative time
stamp, so durations are instrument time), checks the technique's limits on it and
returns it if the technique's `Recording` rule asks for it (a sample that ends the run
on a limit is always returned; the runs are drivers/keithley2450_runs.py). A current
source runs with its voltage limit as the hardware v_max (or the station's ceiling, else
the 2450's 21 V); a voltage source with the station's max_current_A, else the 2450's 105
µA. CCCV switches to a voltage source at `voltage_V` limited to |current_A| once a
reading reaches it. A sweep is a staircase of `step_V` levels, one per poll. When a run
ends, for any reason, the output goes off.

Cell safety: in the "normal" output-off state the 2450 holds its terminals at 0 V through
a current limit of 10 % of the present range, which on a cell is a discharge. The driver
selects the high-impedance off state (`:OUTP:SMOD HIMP`, output relay open) on first use,
and again whenever it turns the output off.

Link recovery (`Link.exchange`'s retry rule). Idempotent, resent as they are: `*CLS`,
`:OUTP:SMOD HIMP`, `:OUTP ON|OFF`, `:SOUR:FUNC`, `:SENS:FUNC`, the source levels and
limits (absolute values), the queries, and `:TRAC:CLE "defbuffer1"` (sent before a run's
first reading, so a repeat clears a buffer already empty). `:READ?` takes a reading into
defbuffer1; a repeat takes one more, which changes no output (if a run's first `:READ?`
loses its answer, the run's time origin is that lost reading, a moment earlier). The
`:SYST:ERR?` that drains the queue after a refusal pops entries: a repeat can only leave
one out of the error message. Not used: `:INIT` and trace triggers, which start a
measurement and would need a read-back (`:TRIG:STAT?`) before any resend.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from lipon_hw.drivers.keithley2450_runs import SmuRun
from lipon_hw.errors import FrameError, InputError, InstrumentError
from lipon_hw.links import Link
from lipon_hw.readings import Sample
from lipon_hw.techniques import (
    KINDS,
    check_technique,
)

T = TypeVar("T")

TERMINATOR = b"\n"
LAN_PORT = 5025
NO_ERROR = '0,"No error;0;0 0"'
READ_QUERY = ':READ? "defbuffer1", READ, SOUR, REL'
MAX_DRAIN = 16  # further error reports read after a refusal, so none is blamed on the next command
#: the 2450's current ranges (datasheet: 10 nA to 1 A), smallest first
CURRENT_RANGES_A = (1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
DEFAULT_VOLTAGE_LIMIT_V = 21.0  # the 2450's *RST voltage limit of a current source
DEFAULT_CURRENT_LIMIT_A = 105e-6  # its *RST current limit of a voltage source
TRIP_QUERY = ":SOUR:CURR:VLIM:TRIP?"

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
NUMBER = re.compile(_NUMBER)
BOOLEAN = re.compile("[01]")
FUNCTION = re.compile("CURR|VOLT")
READING = re.compile(rf"{_NUMBER},{_NUMBER},{_NUMBER}")
IDN = re.compile(r"KEITHLEY INSTRUMENTS(?: INC\.)?,MODEL (\w+),([\w.-]+),([\w.-]+)")
_ERROR = re.compile(r'([-+]?\d+),"([^";]*)(?:;(\d+);([^"]*))?"')


# --- codec (shared with the emulator) -------------------------------------------------
def format_number(value: float) -> str:
    """A number as the 2450 prints it and as the driver sends it: `-1.375422E-11`."""
    return f"{value:.6E}"


def parse_number(text: str) -> float:
    """A SCPI decimal number; ValueError for anything else."""
    if not NUMBER.fullmatch(text):
        raise ValueError(f"{text!r} is not a number")
    return float(text)


def encode_lines(lines: Sequence[str]) -> bytes:
    """Program messages on the wire, each ended by LF."""
    return "".join(f"{line}\n" for line in lines).encode("ascii")


def format_error(code: int, message: str, time_s: float) -> str:
    """An error-queue entry: `-113,"Undefined header;1;1970/01/01 00:00:05.000"` (type 1 = error);
    the clock counts from the epoch, as an instrument whose clock was never set."""
    if code == 0:
        return NO_ERROR
    seconds, millis = divmod(round(time_s * 1000), 1000)
    stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.gmtime(seconds))
    return f'{code},"{message};1;{stamp}.{millis:03d}"'


def parse_error(line: str) -> tuple[int, str]:
    """(code, message) of an error-queue entry; ValueError when it is not one, or when a
    "no error" entry does not read exactly as the instrument prints it (a garbled reply)."""
    match = _ERROR.fullmatch(line)
    if not match:
        raise ValueError(f"{line!r} is not an error-queue entry")
    code = int(match[1])
    if code == 0 and line not in (NO_ERROR, '0,"No error"'):
        raise ValueError(f"{line!r} is a garbled empty-queue entry")
    return code, match[2]


# --- driver ---------------------------------------------------------------------------
class Keithley2450:
    """A 2450 sourcing current or voltage into one cell.

    Settings: `max_current_A` (the station's limit on |current| and on the current limit),
    `voltage_window_V` ((low, high) in V: voltage setpoints must lie inside it and the
    voltage limit may not exceed its largest magnitude). Setpoints outside them are refused
    before anything is sent. Current is positive when it charges the cell (the 2450 sources
    positive current out of FORCE HI, into the cell's positive terminal).
    """

    SERIAL_DEFAULTS: dict = {}  # no serial port on the 2450; see the module docstring
    #: the channel window and current limit a station may set: the 2450 sources ±210 V
    #: and ±1.05 A, and resolves currents down to 1 nA on its lowest useful range
    LIMITS = {"min_V": (-210.0, 210.0), "max_V": (-210.0, 210.0),
              "max_current_A": (1e-9, 1.05)}
    #: timed by the host, reading by reading (no EIS: the 2450 has no AC source; no
    #: Sequence: the host starts each step)
    TECHNIQUES = tuple(t for t, kind in KINDS.items()
                       if kind.control not in ("impedance", "sequence"))

    def __init__(self, name: str, link: Link, max_current_A: float | None = None,
                 voltage_window_V: Sequence[float] | None = None):
        if max_current_A is not None and not max_current_A > 0:
            raise InputError(f"{name}: max_current_A must be positive, not {max_current_A}")
        if voltage_window_V is not None:
            low, high = (float(v) for v in voltage_window_V)
            if not low < high:
                raise InputError(f"{name}: voltage_window_V must be (low, high) with low < high, "
                                 f"not {voltage_window_V}")
            voltage_window_V = (low, high)
        self.name = name
        self.link = link
        self.max_current_A = max_current_A
        self.voltage_window_V = voltage_window_V
        self._claimed = False
        self.run: SmuRun | None = None

    # --- sourcing -------------------------------------------------------------------
    def set_current_A(self, current_A: float) -> None:
        """Source `current_A` (measuring voltage); the voltage limit bounds the cell."""
        self._check_current(current_A, "current")
        self._command(":SOUR:FUNC CURR", ':SENS:FUNC "VOLT"',
                      f":SOUR:CURR {format_number(current_A)}")

    def set_voltage_V(self, voltage_V: float) -> None:
        """Source `voltage_V` (measuring current); the current limit bounds the cell."""
        self._check_voltage(voltage_V)
        self._command(":SOUR:FUNC VOLT", ':SENS:FUNC "CURR"',
                      f":SOUR:VOLT {format_number(voltage_V)}")

    def set_voltage_limit_V(self, voltage_V: float) -> None:
        """The compliance of current sourcing: |V| is held at or below it."""
        ceiling = max(map(abs, self.voltage_window_V)) if self.voltage_window_V else None
        if not voltage_V > 0 or (ceiling is not None and voltage_V > ceiling):
            raise InstrumentError(f"{self.name} will not set a voltage limit of {voltage_V} V: "
                                  "it must be positive"
                                  + (f" and at most {ceiling} V (voltage_window_V)"
                                     if ceiling is not None else ""))
        self._command(f":SOUR:CURR:VLIM {format_number(voltage_V)}")

    def set_current_limit_A(self, current_A: float) -> None:
        """The compliance of voltage sourcing: |I| is held at or below it."""
        if not current_A > 0:
            raise InstrumentError(f"{self.name} will not set a current limit of {current_A} A: "
                                  "it must be positive")
        self._check_current(current_A, "current limit")
        self._command(f":SOUR:VOLT:ILIM {format_number(current_A)}")

    def output(self, on: bool) -> None:
        """Output on, or off with the relay open so that the cell is disconnected."""
        if on:
            self._command(":OUTP ON")
        else:
            self._command(":OUTP:SMOD HIMP", ":OUTP OFF")

    def output_on(self) -> bool:
        return self._query(":OUTP?", BOOLEAN) == "1"

    def limit_tripped(self) -> bool:
        """Whether the source is held at its limit (a current source in voltage compliance)."""

        def transaction(link: Link) -> bool:
            function = self._say(link, [":SOUR:FUNC?"], [FUNCTION])[0]
            limit = "VLIM" if function == "CURR" else "ILIM"
            return self._say(link, [f":SOUR:{function}:{limit}:TRIP?"], [BOOLEAN])[0] == "1"

        return self._transact(transaction)

    # --- measuring ------------------------------------------------------------------
    def voltage_V(self) -> float:
        return float(self._query(":MEAS:VOLT?", NUMBER))

    def current_A(self) -> float:
        return float(self._query(":MEAS:CURR?", NUMBER))

    def read(self) -> tuple[float, float, float]:
        """(t, V, I) of one reading: the measured quantity and the source read back.

        t is the 2450's relative time stamp: seconds since the first reading of
        defbuffer1, which `*RST` clears.
        """

        def transaction(link: Link) -> tuple[float, float, float]:
            function = self._say(link, [":SOUR:FUNC?"], [FUNCTION])[0]
            measured = "VOLT" if function == "CURR" else "CURR"
            reading = self._say(link, [f':SENS:FUNC "{measured}"', READ_QUERY], [READING])[0]
            value, source, t = (float(x) for x in reading.split(","))
            return (t, value, source) if function == "CURR" else (t, source, value)

        return self._transact(transaction)

    # --- potentiostat (one channel) --------------------------------------------------
    @property
    def channels(self) -> int:
        return 1

    def start(self, channel: int, technique) -> SmuRun:
        """Set the source for `technique`, switch the output on and take the first reading
        (time 0); InputError for a technique the 2450 cannot run."""
        self._check_idle(channel)
        if type(technique) not in self.TECHNIQUES:
            raise InputError(f"{self.name} (Keithley 2450) cannot run "
                             f"{type(technique).__name__}; it runs "
                             f"{', '.join(t.__name__ for t in self.TECHNIQUES)}")
        check_technique(technique)
        self.run = SmuRun(self, technique)
        return self.run

    def stop(self, channel: int) -> None:
        """End the channel's run (aborted) with the output off and the relay open."""
        self._channel(channel)
        run = self.run
        self.output(False)
        if run is not None and not run.finished:
            run._end("aborted", switch_off=False)

    def cell_on(self, channel: int, voltage_V: float | None = None) -> None:
        """Hold `voltage_V`, or with None source 0 A (the cell stays at open circuit)."""
        self._check_idle(channel)
        if voltage_V is None:
            self._source_current(0.0, None)
        else:
            self._source_voltage(voltage_V, None)
        self.output(True)

    def cell_off(self, channel: int) -> None:
        self._check_idle(channel)
        self.output(False)

    def current_ranges_A(self) -> tuple[float, ...]:
        return CURRENT_RANGES_A

    def identify(self) -> str:
        model, serial, firmware = IDN.fullmatch(self._query("*IDN?", IDN)).groups()
        return f"Keithley {model} serial {serial}, firmware {firmware}"

    def make_safe(self) -> None:
        """Output off with the relay open: the cell is left disconnected, at open circuit;
        a running technique ends as aborted."""
        self.stop(1)

    # --- runs -----------------------------------------------------------------------
    def _channel(self, channel: int) -> None:
        if channel != 1:
            raise InputError(f"{self.name} (Keithley 2450) has one channel, 1, not {channel}")

    def _check_idle(self, channel: int) -> None:
        self._channel(channel)
        if self.run is not None and not self.run.finished:
            raise InstrumentError(f"{self.name} is still running "
                                  f"{type(self.run.technique).__name__}; stop() it first")

    def _voltage_ceiling_V(self) -> float:
        if self.voltage_window_V is None:
            return DEFAULT_VOLTAGE_LIMIT_V
        return max(map(abs, self.voltage_window_V))

    def _source_current(self, current_A: float, limit_V: float | None) -> None:
        self.set_voltage_limit_V(limit_V if limit_V is not None else self._voltage_ceiling_V())
        self.set_current_A(current_A)

    def _source_voltage(self, voltage_V: float, limit_A: float | None) -> None:
        if limit_A is None:
            limit_A = self.max_current_A if self.max_current_A is not None else \
                DEFAULT_CURRENT_LIMIT_A
        self.set_current_limit_A(limit_A)
        self.set_voltage_V(voltage_V)

    def _set_level(self, voltage_V: float) -> None:
        """The next level of a voltage sweep (the source is already a voltage source)."""
        self._check_voltage(voltage_V)
        self._command(f":SOUR:VOLT {format_number(voltage_V)}")

    def _output_and_first_reading(self, sourcing: str) -> tuple[Sample, bool]:
        self._command(':TRAC:CLE "defbuffer1"', ":OUTP ON")
        return self._reading(sourcing)

    def _reading(self, sourcing: str) -> tuple[Sample, bool]:
        """One reading as a Sample, and whether a current source sits at its voltage limit."""
        queries, shapes = [READ_QUERY], [READING]
        if sourcing == "CURR":
            queries.append(TRIP_QUERY)
            shapes.append(BOOLEAN)
        answers = self._transact(lambda link: self._say(link, queries, shapes))
        value, source, t = (float(x) for x in answers[0].split(","))
        volts, amps = (value, source) if sourcing == "CURR" else (source, value)
        return Sample(t_s=t, E_V=volts, I_A=amps), sourcing == "CURR" and answers[1] == "1"

    # --- protocol -------------------------------------------------------------------
    def _check_current(self, current_A: float, what: str) -> None:
        if self.max_current_A is not None and not abs(current_A) <= self.max_current_A:
            raise InstrumentError(f"{self.name} will not set a {what} of {current_A} A: the "
                                  f"station limit is ±{self.max_current_A} A (max_current_A)")

    def _check_voltage(self, voltage_V: float) -> None:
        if self.voltage_window_V is not None:
            low, high = self.voltage_window_V
            if not low <= voltage_V <= high:
                raise InstrumentError(f"{self.name} will not set {voltage_V} V: the station "
                                      f"window is {low}–{high} V (voltage_window_V)")

    def _command(self, *lines: str) -> None:
        self._transact(lambda link: self._say(link, lines, []))

    def _query(self, text: str, shape: re.Pattern) -> str:
        return self._transact(lambda link: self._say(link, [text], [shape])[0])

    def _transact(self, transaction: Callable[[Link], T]) -> T:
        """Run `transaction` in one exchange; the first one also clears stale errors and
        selects the high-impedance off state."""

        def claimed(link: Link) -> T:
            if not self._claimed:
                self._say(link, ["*CLS", ":OUTP:SMOD HIMP"], [])
                self._claimed = True
            return transaction(link)

        return self.link.exchange(claimed)

    def _say(self, link: Link, lines: Sequence[str], shapes: Sequence[re.Pattern]) -> list[str]:
        """Send `lines` and `:SYST:ERR?`; return the answers, one per shape."""
        request = encode_lines([*lines, ":SYST:ERR?"])
        link.write(request)
        received: list[str] = []
        for _ in range(len(shapes) + 1):
            received.append(self._line(link, request))
            if _ERROR.fullmatch(received[-1]):
                break
        *answers, status = received
        try:
            code, message = parse_error(status)
        except ValueError:
            raise self._garbled(request, received) from None
        if code != 0:
            raise self._refusal(link, request, code, message)
        if len(answers) != len(shapes) or not all(
                shape.fullmatch(answer) for shape, answer in zip(shapes, answers, strict=True)):
            raise self._garbled(request, received)
        return answers

    def _line(self, link: Link, request: bytes) -> str:
        frame = link.read_until(TERMINATOR)
        try:
            text = frame.decode("ascii").rstrip("\r\n")
        except UnicodeDecodeError:
            text = None
        if text is None or not text.isprintable():
            raise FrameError(f"{self.name} answered {request!r} with {frame!r}, which is not a "
                             "line of printable ASCII")
        return text

    def _garbled(self, request: bytes, received: list[str]) -> FrameError:
        return FrameError(f"{self.name} answered {request!r} with {received!r}, which is not "
                          "the reply it asked for")

    def _refusal(self, link: Link, request: bytes, code: int, message: str) -> InstrumentError:
        """Read the rest of the error queue too, then name every entry."""
        others = []
        for _ in range(MAX_DRAIN):
            link.write(encode_lines([":SYST:ERR?"]))
            line = self._line(link, request)
            try:
                more_code, more_message = parse_error(line)
            except ValueError:
                raise self._garbled(request, [line]) from None
            if more_code == 0:
                break
            others.append(f'{more_code} "{more_message}"')
        also = f" (then {', '.join(others)})" if others else ""
        return InstrumentError(f'{self.name} refused {request!r} with error {code} "{message}"'
                               f"{also}")
