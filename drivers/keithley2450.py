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

Cell safety: in the "normal" output-off state the 2450 holds its terminals at 0 V through
a current limit of 10 % of the present range, which on a cell is a discharge. The driver
selects the high-impedance off state (`:OUTP:SMOD HIMP`, output relay open) on first use,
and again whenever it turns the output off.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from lipon_hw.errors import FrameError, InputError, InstrumentError
from lipon_hw.links import Link

T = TypeVar("T")

TERMINATOR = b"\n"
LAN_PORT = 5025
NO_ERROR = '0,"No error;0;0 0"'
READ_QUERY = ':READ? "defbuffer1", READ, SOUR, REL'
MAX_DRAIN = 16  # further error reports read after a refusal, so none is blamed on the next command

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

    def identify(self) -> str:
        model, serial, firmware = IDN.fullmatch(self._query("*IDN?", IDN)).groups()
        return f"Keithley {model} serial {serial}, firmware {firmware}"

    def make_safe(self) -> None:
        """Output off with the relay open: the cell is left disconnected, at open circuit."""
        self.output(False)

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
