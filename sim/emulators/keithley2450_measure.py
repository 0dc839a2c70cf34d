"""The Keithley 2450's measurements, as a mixin of the emulator: the measure function,
`:READ?`, `:MEASure?` and `:INITiate`, each reading taken from the terminals into a buffer
in the unit and range of the measure function (see the emulator's module docstring)."""

from __future__ import annotations

from lipon_hw.sim.emulators.keithley2450_buffer import DEFAULT_BUFFERS, elements_of
from lipon_hw.sim.emulators.keithley2450_scpi import (
    OVERFLOW,
    ScpiError,
    choose,
    command_only,
    one,
    query_only,
    unquote,
)
from lipon_hw.sim.emulators.keithley2450_settings import OVERRANGE, SENSE_RANGES

FUNCTIONS = {"CURRent[:DC]": "CURR", "VOLTage[:DC]": "VOLT"}
SENSE_FUNCTIONS = FUNCTIONS | {"RESistance": "RES"}


class Measuring:
    """Readings of `self`: its cell, source programme, settings and buffers."""

    def _sense_function(self, query: bool, args: list[str]) -> str | None:
        if query:
            query_only(query, args)
            return f'"{self.sense}:DC"' if self.sense != "RES" else '"RES"'
        self.sense = choose(unquote(one(args)), SENSE_FUNCTIONS)
        return None

    def _measure(self, function: str | None):
        """`:MEAS[:<function>]?` selects that measure function, then reads (manual)."""

        def handler(query: bool, args: list[str]) -> str:
            query_only(query)
            if function is not None:
                self.sense = function
            return self._read(query, args)

        return handler

    def _read(self, query: bool, args: list[str]) -> str:
        query_only(query)
        name, _ = self._buffer(args[:1])
        elements = elements_of(args[1:])
        for _ in range(self.settings["SENS:COUN"]):
            self._take_reading(name)
        buffer = self.buffers[name]
        return buffer.format(buffer.readings[-1], elements)

    def _initiate(self, query: bool, args: list[str]) -> None:
        command_only(query)
        if args:
            raise ScpiError(-108, "Parameter not allowed")
        for _ in range(self.settings["SENS:COUN"]):
            self._take_reading(DEFAULT_BUFFERS[0])

    def _take_reading(self, name: str) -> None:
        volts, amps = self._terminals()
        value, unit = self._reading_value(volts, amps)
        if self.settings[f"SOUR:{self.function}:READ:BACK"]:
            source = volts if self.function == "VOLT" else amps
        else:
            source = self.level[self.function]
        self.buffers[name].add(self._now, value, unit, source, self.function)

    def _reading_value(self, volts: float, amps: float) -> tuple[float, str]:
        """The measured value in the function's unit, overflowing a fixed range."""
        unit = "RES" if self.sense == "RES" else \
            {"AMP": "CURR", "VOLT": "VOLT", "OHM": "RES", "WATT": "WATT"}[
                self.settings[f"SENS:{self.sense}:UNIT"]]
        measured = self._measured(self.sense, volts, amps)
        ranges = SENSE_RANGES[self.sense]
        fixed = not self.settings[f"SENS:{self.sense}:RANG:AUTO"]
        if fixed and abs(measured) > OVERRANGE * self.fixed_range[f"SENS:{self.sense}"]:
            return OVERFLOW, unit
        if not fixed and abs(measured) > OVERRANGE * ranges[-1]:
            return OVERFLOW, unit
        if unit == "RES" and self.sense != "RES":
            return _ohms(volts, amps), unit
        if unit == "WATT":
            return volts * amps, unit
        return measured, unit

    def _measured(self, function: str, volts: float | None = None,
                  amps: float | None = None) -> float:
        if volts is None or amps is None:
            volts, amps = self._terminals()
        if function == "RES":
            return _ohms(volts, amps)
        return volts if function == "VOLT" else amps

    def _terminals(self) -> tuple[float, float]:
        if self.settings["ROUT:TERM"] != "FRON":  # nothing on the rear terminals
            return self._open_terminals()
        if self.regime == "open":
            return 0.0, 0.0
        return self.cell.voltage_V(self._now), self.cell.current_A(self._now)

    def _open_terminals(self) -> tuple[float, float]:
        if not self.output_on:
            return 0.0, 0.0
        function, level, limit = self.function, self.level[self.function], \
            self.limit[self.function]
        if function == "VOLT":
            return level, 0.0
        return (limit if level > 0 else -limit if level < 0 else 0.0), 0.0


def _ohms(volts: float, amps: float) -> float:
    return OVERFLOW if amps == 0 else volts / amps

