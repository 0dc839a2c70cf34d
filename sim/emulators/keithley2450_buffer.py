"""The Keithley 2450's reading buffers: `defbuffer1`, `defbuffer2` and the ones a host makes
(`:TRACe:MAKE`), each a list of readings with the elements `:FETCh?`, `:READ?` and
`:TRACe:DATA?` print, and its statistics (`:TRACe:STATistics:...`).

Assumptions (not read in the 2450 manual): a reading holds its time, the measured value
and unit, the source value and unit; `STATus`/`SOURSTATus` print 0; `UNIT` prints
`Amp DC`, `Volt DC`, `Ohm` or `Watt DC`; a buffer that is full drops its oldest reading
(fill mode CONTinuous) or stores no more (ONCE), and its indexes then run 1..capacity;
a new capacity clears the buffer; default capacity 100 000 readings. A checkpoint keeps a
buffer's newest `CHECKPOINT_READINGS` readings (older ones are not restored).
"""

from __future__ import annotations

import math
import time
from collections import deque

from lipon_hw.drivers.keithley2450 import format_number
from lipon_hw.sim.emulators.keithley2450_scpi import (
    ScpiError,
    choose,
    command_only,
    integer,
    one,
    query_only,
    quoted,
    unquote,
)

DEFAULT_BUFFERS = ("defbuffer1", "defbuffer2")
DEFAULT_CAPACITY = 100_000
MAX_CAPACITY = 11_000_000  # readings of all buffers together, standard style (datasheet)
CHECKPOINT_READINGS = 1000
ELEMENTS = {"READing": "READ", "SOURce": "SOUR", "RELative": "REL", "UNIT": "UNIT",
            "SOURUNIT": "SOURUNIT", "SEConds": "SEC", "FRACtional": "FRAC",
            "TSTamp": "TST", "DATE": "DATE", "TIME": "TIME", "STATus": "STAT",
            "SOURSTATus": "SOURSTAT"}
UNITS = {"CURR": "Amp DC", "VOLT": "Volt DC", "RES": "Ohm", "WATT": "Watt DC"}
ILLEGAL = (-224, "Illegal parameter value")


class ReadingBuffer:
    def __init__(self, capacity: int = DEFAULT_CAPACITY, fill: str = "CONT"):
        self.capacity, self.fill = capacity, fill
        self.readings: deque[tuple] = deque()
        self.first_t: float | None = None

    def add(self, t: float, value: float, unit: str, source: float, source_unit: str) -> None:
        if self.first_t is None:
            self.first_t = t
        if len(self.readings) >= self.capacity:
            if self.fill == "ONCE":
                return
            self.readings.popleft()
        self.readings.append((t, value, unit, source, source_unit))

    def clear(self) -> None:
        self.readings.clear()
        self.first_t = None

    def reading(self, index: int) -> tuple:
        """Reading `index` (1 = oldest kept); -222 outside 1..count."""
        if not 1 <= index <= len(self.readings):
            raise ScpiError(-222, "Data out of range")
        return self.readings[index - 1]

    def format(self, reading: tuple, elements: list[str]) -> str:
        t, value, unit, source, source_unit = reading
        seconds = math.floor(t)
        clock = time.strftime("%H:%M:%S", time.gmtime(seconds)) + f"{t - seconds:.9f}"[1:]
        date = time.strftime("%m/%d/%Y", time.gmtime(seconds))
        fields = {"READ": format_number(value), "SOUR": format_number(source),
                  "REL": format_number(t - self.first_t), "UNIT": UNITS[unit],
                  "SOURUNIT": UNITS[source_unit], "SEC": str(seconds),
                  "FRAC": format_number(t - seconds), "STAT": "0", "SOURSTAT": "0",
                  "DATE": date, "TIME": clock, "TST": f"{date} {clock}"}
        return ",".join(fields[element] for element in elements)

    def statistic(self, kind: str) -> float:
        values = [reading[1] for reading in self.readings]
        if not values:
            raise ScpiError(-230, "Data corrupt or stale")
        if kind == "AVER":
            return sum(values) / len(values)
        if kind == "MIN":
            return min(values)
        if kind == "MAX":
            return max(values)
        if kind == "PK2P":
            return max(values) - min(values)
        mean = sum(values) / len(values)  # STDD: sample standard deviation
        if len(values) < 2:
            return 0.0
        return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))

    def snapshot(self) -> dict:
        kept = list(self.readings)[-CHECKPOINT_READINGS:]
        return {"capacity": self.capacity, "fill": self.fill, "first_t": self.first_t,
                "readings": [list(r) for r in kept]}

    @classmethod
    def restored(cls, state: dict) -> ReadingBuffer:
        buffer = cls(state["capacity"], state["fill"])
        buffer.first_t = state["first_t"]
        buffer.readings.extend(tuple(r) for r in state["readings"])
        return buffer


def elements_of(args: list[str]) -> list[str]:
    """Buffer elements named by `args` (READing alone by default); -224 for others."""
    try:
        return [choose(arg, ELEMENTS) for arg in args] or ["READ"]
    except ScpiError:
        raise ScpiError(*ILLEGAL) from None


def check_name(name: str) -> None:
    """A user buffer's name: up to 31 characters, a letter first (manual; unverified)."""
    if not (0 < len(name) <= 31 and name[0].isalpha() and
            all(c.isalnum() or c == "_" for c in name)):
        raise ScpiError(*ILLEGAL)


class BufferCommands:
    """`:TRACe` and `:FETCh?` handlers, as a mixin of the emulator (`self.buffers`: name →
    ReadingBuffer; `self._take_reading(name)` stores one reading)."""

    def _buffer_commands(self) -> list[tuple[str, object]]:
        return [
            (":FETCh", self._fetch), (":TRACe:CLEar", self._trace_clear),
            (":TRACe:ACTual", self._trace_actual), (":TRACe:ACTual:STARt", self._trace_start),
            (":TRACe:ACTual:END", self._trace_end), (":TRACe:POINts", self._trace_points),
            (":TRACe:FILL:MODE", self._trace_fill), (":TRACe:DATA", self._trace_data),
            (":TRACe:MAKE", self._trace_make), (":TRACe:DELete", self._trace_delete),
            (":TRACe:TRIGger", self._trace_trigger),
        ] + [(f":TRACe:STATistics:{spec}", self._statistic(kind)) for spec, kind in (
            ("AVERage", "AVER"), ("MINimum", "MIN"), ("MAXimum", "MAX"), ("STDDev", "STDD"),
            ("PK2Pk", "PK2P"))]

    def _buffer(self, args: list[str]) -> tuple[str, ReadingBuffer]:
        """The buffer named by the first parameter (defbuffer1 without one); -224 for a
        name that is no buffer."""
        name = unquote(args[0]) if args else DEFAULT_BUFFERS[0]
        if name not in self.buffers:
            raise ScpiError(*ILLEGAL)
        return name, self.buffers[name]

    def _fetch(self, query: bool, args: list[str]) -> str:
        """The latest reading of a buffer; -230 when it holds none (assumption)."""
        query_only(query)
        _, buffer = self._buffer(args[:1])
        elements = elements_of(args[1:])
        if not buffer.readings:
            raise ScpiError(-230, "Data corrupt or stale")
        return buffer.format(buffer.readings[-1], elements)

    def _trace_clear(self, query: bool, args: list[str]) -> None:
        command_only(query)
        if len(args) > 1:
            raise ScpiError(-108, "Parameter not allowed")
        self._buffer(args)[1].clear()

    def _trace_actual(self, query: bool, args: list[str]) -> str:
        query_only(query, args[1:])
        return str(len(self._buffer(args)[1].readings))

    def _trace_start(self, query: bool, args: list[str]) -> str:
        query_only(query, args[1:])
        return "1" if self._buffer(args)[1].readings else "0"

    def _trace_end(self, query: bool, args: list[str]) -> str:
        query_only(query, args[1:])
        return str(len(self._buffer(args)[1].readings))

    def _trace_points(self, query: bool, args: list[str]) -> str | None:
        if query:
            query_only(query, args[1:])
            return str(self._buffer(args)[1].capacity)
        if not args:
            raise ScpiError(-109, "Missing parameter")
        _, buffer = self._buffer(args[1:2])
        capacity = integer(args[:1], 1, MAX_CAPACITY, DEFAULT_CAPACITY)
        buffer.capacity = capacity
        buffer.clear()
        return None

    def _trace_fill(self, query: bool, args: list[str]) -> str | None:
        if query:
            query_only(query, args[1:])
            return self._buffer(args)[1].fill
        if not args:
            raise ScpiError(-109, "Missing parameter")
        _, buffer = self._buffer(args[1:2])
        buffer.fill = choose(args[0], {"CONTinuous": "CONT", "ONCE": "ONCE"})
        return None

    def _trace_data(self, query: bool, args: list[str]) -> str:
        """`:TRACe:DATA? start, end[, "buffer"[, elements]]` → the readings start..end."""
        query_only(query)
        if len(args) < 2:
            raise ScpiError(-109, "Missing parameter")
        _, buffer = self._buffer(args[2:3])
        elements = elements_of(args[3:])
        first, last = (integer([arg], 1, MAX_CAPACITY, 1) for arg in args[:2])
        if first > last:
            raise ScpiError(-222, "Data out of range")
        return ",".join(buffer.format(buffer.reading(index), elements)
                        for index in range(first, last + 1))

    def _trace_make(self, query: bool, args: list[str]) -> None:
        """`:TRACe:MAKE "name", size[, STANdard]`."""
        command_only(query)
        if len(args) < 2:
            raise ScpiError(-109, "Missing parameter")
        if len(args) > 3:
            raise ScpiError(-108, "Parameter not allowed")
        name = quoted(args[0])
        check_name(name)
        if name in self.buffers:
            raise ScpiError(*ILLEGAL)
        capacity = integer(args[1:2], 1, MAX_CAPACITY, DEFAULT_CAPACITY)
        if len(args) == 3:
            choose(args[2], {"STANdard": "STAN"})  # compact and writable: not emulated
        self.buffers[name] = ReadingBuffer(capacity)

    def _trace_delete(self, query: bool, args: list[str]) -> None:
        command_only(query)
        name = quoted(one(args))
        if name not in self.buffers or name in DEFAULT_BUFFERS:
            raise ScpiError(*ILLEGAL)
        del self.buffers[name]

    def _trace_trigger(self, query: bool, args: list[str]) -> None:
        """One reading of the present measure function into the buffer, no reply."""
        command_only(query)
        if len(args) > 1:
            raise ScpiError(-108, "Parameter not allowed")
        self._take_reading(self._buffer(args)[0])

    def _statistic(self, kind: str):
        def handler(query: bool, args: list[str]) -> str:
            query_only(query, args[1:])
            return format_number(self._buffer(args)[1].statistic(kind))

        return handler
