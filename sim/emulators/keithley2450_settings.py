"""The Keithley 2450's stored settings: what a host sets and reads back with one header
(NPLC, autozero, filters, sense/remote-sense, units, delays, read-back, autorange flags,
overvoltage protection, terminals, data format), their `*RST` defaults and bounds, and the
ranges of its source and measure functions.

Bounds and defaults as the 2450 manual's command descriptions give them where read
(NPLC 0.01–10, default 1; filter count 1–100, default 10; count 1–300 000; source delay
0–10 000 s; overvoltage protection PROT2…PROT180 or NONE); assumed: autozero ON,
filter OFF and REPeat, remote sense OFF, source read-back ON, auto delay ON, terminals
FRONt, offset compensation OFF. `:FORMat:DATA` takes ASCii only: the binary formats
(REAL, SREal) are not emulated and get -141 "Invalid character data".
"""

from __future__ import annotations

from lipon_hw.drivers.keithley2450 import format_number
from lipon_hw.sim.emulators.keithley2450_scpi import (
    ScpiError,
    boolean,
    choose,
    integer,
    number,
    one,
    query_named,
    query_only,
)

CURRENT_RANGES_A = (1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
VOLTAGE_RANGES_V = (0.02, 0.2, 2.0, 20.0, 200.0)
RESISTANCE_RANGES_OHM = (20.0, 200.0, 2e3, 2e4, 2e5, 2e6, 2e7, 2e8)
#: a range holds up to 105 % of its full scale (the 2450's over-range)
OVERRANGE = 1.05
SOURCE_RANGES = {"CURR": CURRENT_RANGES_A, "VOLT": VOLTAGE_RANGES_V}
SENSE_RANGES = {"CURR": CURRENT_RANGES_A, "VOLT": VOLTAGE_RANGES_V,
                "RES": RESISTANCE_RANGES_OHM}
SOURCE_NODES = {"CURR": "CURRent", "VOLT": "VOLTage"}
SENSE_NODES = {"CURR": "CURRent[:DC]", "VOLT": "VOLTage[:DC]", "RES": "RESistance"}
PROTECTION_V = {f"PROT{v}": float(v) for v in (2, 5, 10, 20, 40, 60, 80, 100, 120, 140, 160,
                                               180)}
SENSE_UNITS = {"CURR": {"AMP": "AMP", "OHM": "OHM", "WATT": "WATT"},
               "VOLT": {"VOLT": "VOLT", "OHM": "OHM", "WATT": "WATT"}}


def range_for(value: float, ranges: tuple[float, ...]) -> float:
    """The smallest range that holds |value| (with over-range); the largest otherwise."""
    return next((r for r in ranges if abs(value) <= OVERRANGE * r), ranges[-1])


def _table() -> dict[str, tuple[str, tuple]]:
    """Setting key → (header spec, kind and its parameters)."""
    table: dict[str, tuple[str, tuple]] = {}
    for f, node in SENSE_NODES.items():
        base = f"[:SENSe[1]]:{node}"
        table |= {
            f"SENS:{f}:NPLC": (f"{base}:NPLCycles", ("num", 0.01, 10.0, 1.0)),
            f"SENS:{f}:AZER": (f"{base}:AZERo[:STATe]", ("bool", True)),
            f"SENS:{f}:AVER": (f"{base}:AVERage[:STATe]", ("bool", False)),
            f"SENS:{f}:AVER:COUN": (f"{base}:AVERage:COUNt", ("int", 1, 100, 10)),
            f"SENS:{f}:AVER:TCON": (f"{base}:AVERage:TCONtrol",
                                    ("choice", {"REPeat": "REP", "MOVing": "MOV"}, "REP")),
            f"SENS:{f}:RSEN": (f"{base}:RSENse", ("bool", False)),
            f"SENS:{f}:RANG:AUTO": (f"{base}:RANGe:AUTO", ("bool", True)),
        }
        if f in SENSE_UNITS:
            default = "AMP" if f == "CURR" else "VOLT"
            table[f"SENS:{f}:UNIT"] = (f"{base}:UNIT", ("choice", SENSE_UNITS[f], default))
    table["SENS:RES:OCOM"] = ("[:SENSe[1]]:RESistance:OCOMpensated", ("bool", False))
    table["SENS:COUN"] = ("[:SENSe[1]]:COUNt", ("int", 1, 300_000, 1))
    for f, node in SOURCE_NODES.items():
        base = f":SOURce[1]:{node}"
        table |= {
            f"SOUR:{f}:DEL": (f"{base}:DELay", ("num", 0.0, 10_000.0, 0.0)),
            f"SOUR:{f}:DEL:AUTO": (f"{base}:DELay:AUTO", ("bool", True)),
            f"SOUR:{f}:READ:BACK": (f"{base}:READ:BACK", ("bool", True)),
            f"SOUR:{f}:RANG:AUTO": (f"{base}:RANGe:AUTO", ("bool", True)),
        }
    table["SOUR:VOLT:PROT"] = (":SOURce[1]:VOLTage:PROTection[:LEVel]",
                               ("choice", {**{k: k for k in PROTECTION_V}, "NONE": "NONE"},
                                "NONE"))
    table["ROUT:TERM"] = (":ROUTe[1]:TERMinals", ("choice", {"FRONt": "FRON", "REAR": "REAR"},
                                                  "FRON"))
    table["FORM"] = (":FORMat[:DATA]", ("choice", {"ASCii": "ASC"}, "ASC"))
    return table


TABLE = _table()
#: a setting that switches another off when it is set (a fixed delay ends the auto delay)
TURNS_OFF = {f"SOUR:{f}:DEL": f"SOUR:{f}:DEL:AUTO" for f in SOURCE_NODES}


def defaults() -> dict:
    return {key: kind[-1] for key, (_, kind) in TABLE.items()}


def format_setting(kind: tuple, value) -> str:
    if kind[0] == "bool":
        return "1" if value else "0"
    if kind[0] == "num":
        return format_number(value)
    return str(value)


def parse_setting(kind: tuple, args: list[str]):
    if kind[0] == "bool":
        return boolean(args)
    if kind[0] == "num":
        return number(args, *kind[1:])
    if kind[0] == "int":
        return integer(args, *kind[1:])
    return choose(one(args), kind[1])


def query_setting(kind: tuple, value, args: list[str]) -> str:
    """A setting's value, or its MINimum/MAXimum/DEFault when the query names one."""
    if kind[0] in ("num", "int") and args:
        value = query_named(args, *kind[1:])
        if kind[0] == "int":
            value = int(value)
    else:
        query_only(True, args)
    return format_setting(kind, value)


class SettingCommands:
    """Handlers of the stored settings and the ranges, as a mixin of the emulator: it
    keeps `self.settings` (key → value, `*RST` → `defaults()`) and `self.fixed_range`
    (`SOUR:CURR`, `SENS:VOLT`, … → the range used while autorange is off)."""

    def _setting_commands(self) -> list[tuple[str, object]]:
        commands = [(spec, self._setting(key)) for key, (spec, _) in TABLE.items()]
        for f, node in SOURCE_NODES.items():
            commands.append((f":SOURce[1]:{node}:RANGe", self._range("SOUR", f)))
        for f, node in SENSE_NODES.items():
            commands.append((f"[:SENSe[1]]:{node}:RANGe[:UPPer]", self._range("SENS", f)))
        commands.append((":SOURce[1]:VOLTage:PROTection[:LEVel]:TRIPped", self._protection_trip))
        return commands

    def _reset_settings(self) -> None:
        self.settings = defaults()
        self.fixed_range = {f"SOUR:{f}": SOURCE_RANGES[f][-1] for f in SOURCE_RANGES}
        self.fixed_range |= {f"SENS:{f}": SENSE_RANGES[f][-1] for f in SENSE_RANGES}

    def _setting(self, key: str):
        kind = TABLE[key][1]

        def handler(query: bool, args: list[str]) -> str | None:
            if query:
                return query_setting(kind, self.settings[key], args)
            value = parse_setting(kind, args)
            if key == "ROUT:TERM" and value != self.settings[key]:
                self.output_on = False  # manual: changing terminals turns the output off
            if key.endswith(":RANG:AUTO") and not value and self.settings[key]:
                where = key.removesuffix(":RANG:AUTO")
                self.fixed_range[where] = self._range_in_use(*where.split(":"))
            self.settings[key] = value
            if key in TURNS_OFF:
                self.settings[TURNS_OFF[key]] = False
            self._apply()
            return None

        return handler

    def _range(self, subsystem: str, function: str):
        """`:SOURce:<f>:RANGe` and `:SENSe:<f>:RANGe`: a value selects the smallest range
        holding it and ends autorange; above the largest range (with over-range) is -222,
        as is a source range that would not hold the present source level (assumption)."""
        ranges = (SOURCE_RANGES if subsystem == "SOUR" else SENSE_RANGES)[function]
        where = f"{subsystem}:{function}"

        def handler(query: bool, args: list[str]) -> str | None:
            if query:
                named = query_named(args, ranges[0], ranges[-1], ranges[-1])
                return format_number(named if named is not None
                                     else self._range_in_use(subsystem, function))
            value = number(args, 0.0, OVERRANGE * ranges[-1], ranges[-1], signed=True)
            chosen = range_for(value, ranges)
            if subsystem == "SOUR" and abs(self.level[function]) > OVERRANGE * chosen:
                raise ScpiError(-222, "Data out of range")
            self.fixed_range[where] = chosen
            self.settings[f"{where}:RANG:AUTO"] = False
            self._apply()
            return None

        return handler

    def _range_in_use(self, subsystem: str, function: str) -> float:
        """The fixed range, or with autorange the one the present value needs: the source
        level's, or the present measurement's."""
        where = f"{subsystem}:{function}"
        if not self.settings[f"{where}:RANG:AUTO"]:
            return self.fixed_range[where]
        if subsystem == "SOUR":
            return range_for(self.level[function], SOURCE_RANGES[function])
        return range_for(self._measured(function), SENSE_RANGES[function])

    def _protection_trip(self, query: bool, args: list[str]) -> str:
        """Whether overvoltage protection is clamping the output now."""
        query_only(query, args)
        protection = self._protection_V()
        if protection is None or not self.output_on or self.settings["ROUT:TERM"] != "FRON":
            return "0"
        if self.function == "CURR":
            clamped = self.regime == "limit" and protection < self.limit["CURR"]
        else:
            clamped = abs(self.level["VOLT"]) > protection
        return "1" if clamped else "0"

    def _protection_V(self) -> float | None:
        return PROTECTION_V.get(self.settings["SOUR:VOLT:PROT"])
