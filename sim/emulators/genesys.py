"""TDK-Lambda Genesys GEN6-200 on the wire, feeding the evaporator's selected boat.

Programming acts on the tool: `PC` sets the supply current, `PV` the voltage
limit (the supply runs CC until the boat's I·R reaches it, then CV), `OUT` the
output. `MV?`/`MC?` read the tool's electrical state with 0.02 % (1σ) seeded
noise (assumption), printed with 5 digits as the manual shows (`5.9999`, `045.12`).
`PV?`/`PC?`/`OVP?`/`UVL?` answer the exact string last programmed when in remote,
and the 5-digit (4 for OVP/UVL) front-panel preview in local. If the tool was
changed by something else, they answer its value in the preview format.

Refusals follow the manual: PV above 105 % of the rating or 95 % of OVP is E01,
below UVL E02; OVP below PV + 5 % of the rating E04; UVL above PV E06; unknown
command C01, missing argument C02, bad argument C03, wrong checksum C04.
A PC above 105 % of the rating is C05 "setting out of range". The manual gives
no code for it, only that values 5 % above the rating are accepted (assumption).
The OVP maximum is 125 % of the rating, 7.5 V for the GEN6 (assumption).

Instrument behaviour that is assumed, not read in the manual:
- a set command received in local mode is carried out, and the unit goes to remote;
- a new connection starts unselected, so ADR must come first;
- no AC failure or over-temperature happens, so E07 never appears and the fault
  register shows only foldback (FOLD).

Foldback, auto-restart, save/recall, the filter and the status/fault enable and event
registers are in `genesys_protection` (its docstring has their table).
"""

from __future__ import annotations

import re

from lipon_hw.drivers.genesys import (
    ADDRESSES,
    NUMBER,
    TERMINATOR,
    ChecksumError,
    decode_message,
    encode_message,
    format_reading,
)
from lipon_hw.errors import InputError
from lipon_hw.sim.emulator import DISCARD_ALL, Emulator, Session
from lipon_hw.sim.emulators.genesys_protection import GenesysProtection

MAX_LINE = 64  # longer input without a CR is line noise, dropped
MAX_NUMBER_CHARS = 12  # manual §7.7.1: a numeric value may be up to 12 characters
READING_NOISE = 2e-4
OVP_MAX_OF_RATING = 1.25
REMOTE_STATES = {"0": "LOC", "LOC": "LOC", "1": "REM", "REM": "REM", "2": "LLO", "LLO": "LLO"}
OUTPUT_STATES = {"1": True, "ON": True, "0": False, "OFF": False}
STATUS_CV, STATUS_CC, STATUS_NO_FAULT, STATUS_LOCAL = 0x01, 0x02, 0x04, 0x80
_MODEL = re.compile(r"GEN(\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)")


class GenesysEmulator(GenesysProtection, Emulator):
    model = "GEN6-200"
    firmware = "REV:1U:4.3"
    serial = "12A3456-0001"
    test_date = "2021/03/15"

    def __init__(self, name: str, tool, address: int = 6, model: str = "GEN6-200"):
        super().__init__(name)
        ratings = _MODEL.fullmatch(model)
        if not ratings:
            raise InputError(f"{name}: model {model!r} is not a Genesys GEN<volts>-<amps>")
        self.tool = tool
        self.address = int(address)
        self.model = model
        self.rated_V, self.rated_A = float(ratings[1]), float(ratings[2])
        self.selected = False
        self.remote = "LOC"
        self.ovp_V = self.max_ovp_V
        self.uvl_V = 0.0
        self.programmed: dict[str, str] = {}  # exact strings of PV, PC, OVP, UVL
        self.last_command = ""
        self._queries = {
            "IDN?": lambda: f"LAMBDA,{self.model}", "REV?": lambda: self.firmware,
            "SN?": lambda: self.serial, "DATE?": lambda: self.test_date, "MDAV?": lambda: "1",
            "RMT?": lambda: self.remote, "PV?": self._pv_query, "PC?": self._pc_query,
            "OVP?": lambda: self._setting("OVP", self.ovp_V, self.rated_V, 4),
            "UVL?": lambda: self._setting("UVL", self.uvl_V, self.rated_V, 4),
            "MV?": lambda: format_reading(self._measured()[0], self.rated_V),
            "MC?": lambda: format_reading(self._measured()[1], self.rated_A),
            "MODE?": lambda: self.tool.supply_readings()["mode"],
            "OUT?": lambda: "ON" if self.tool.supply_readings()["output_on"] else "OFF",
            "DVC?": self._display, "STT?": self._status,
            "RST": self._reset, "CLS": lambda: "OK", "OVM": self._ovp_to_max,
        }
        self._setters = {"PV": self._set_pv, "PC": self._set_pc, "OUT": self._set_output,
                         "RMT": self._set_remote, "OVP": self._set_ovp, "UVL": self._set_uvl}
        self._init_protection()
        self._queries.update(self.protection_queries)
        self._setters.update(self.protection_setters)

    @property
    def max_ovp_V(self) -> float:
        return OVP_MAX_OF_RATING * self.rated_V

    # --- instrument memory (for checkpoints) ----------------------------------------
    def snapshot(self) -> dict:
        return {"selected": self.selected, "remote": self.remote, "ovp_V": self.ovp_V,
                "uvl_V": self.uvl_V, "programmed": dict(self.programmed),
                "last_command": self.last_command, "protection": self.protection_state()}

    def restore(self, state: dict) -> None:
        self.selected = state["selected"]
        self.remote = state["remote"]
        self.ovp_V = state["ovp_V"]
        self.uvl_V = state["uvl_V"]
        self.programmed = dict(state["programmed"])
        self.last_command = state["last_command"]
        if "protection" in state:  # checkpoints from before the protection commands lack it
            self.restore_protection(state["protection"])

    def open_session(self) -> Session:
        """A new host on the line must address the supply (`ADR n`) before it answers."""
        self.selected = False
        return super().open_session()

    # --- wire -------------------------------------------------------------------------
    def _process(self, buffer: bytes) -> tuple[int, bytes]:
        end = buffer.find(TERMINATOR)
        if end < 0:
            return (DISCARD_ALL if len(buffer) > MAX_LINE else 0), b""
        line = _edited(buffer[:end]) + TERMINATOR
        with self.world_lock:
            return end + 1, self._line(line)

    def _line(self, frame: bytes) -> bytes:
        try:
            text, with_checksum = decode_message(frame)
        except ChecksumError:
            return encode_message("C04", True) if self.selected else b""
        except ValueError:
            return encode_message("C01") if self.selected else b""
        text = text.strip()
        head, _, arg = text.partition(" ")
        if head.upper() == "ADR":
            return self._select(arg.strip(), with_checksum)
        if not self.selected:
            return b""
        self.check_foldback()
        if text == "\\":
            text = self.last_command
        else:
            self.last_command = text
        return encode_message(self._answer(text) if text else "OK", with_checksum)

    def _select(self, arg: str, with_checksum: bool) -> bytes:
        """Every supply on the bus hears ADR; only the one addressed answers."""
        if not arg.isdigit() or int(arg) not in ADDRESSES:
            return encode_message("C03", with_checksum) if self.selected else b""
        self.selected = int(arg) == self.address
        return encode_message("OK", with_checksum) if self.selected else b""

    def _answer(self, text: str) -> str:
        head, _, arg = text.partition(" ")
        head, arg = head.upper(), arg.strip()
        if head in self._queries:
            return "C03" if arg else self._queries[head]()
        if head in self._setters:
            return self._setters[head](arg) if arg else "C02"
        return "C01"

    # --- set commands -------------------------------------------------------------------
    def _set_pv(self, arg: str) -> str:
        volts = _number(arg)
        if volts is None:
            return "C03"
        if volts > 1.05 * self.rated_V or volts > 0.95 * self.ovp_V:
            return "E01"
        if volts < self.uvl_V:
            return "E02"
        self.tool.set_supply_voltage_limit_V(volts)
        return self._programmed("PV", arg)

    def _set_pc(self, arg: str) -> str:
        amps = _number(arg)
        if amps is None:
            return "C03"
        if amps > 1.05 * self.rated_A:
            return "C05"
        self.tool.set_supply_current_A(amps)
        return self._programmed("PC", arg)

    def _set_output(self, arg: str) -> str:
        on = OUTPUT_STATES.get(arg.upper())
        if on is None:
            return "C03"
        self.tool.set_supply_output(on)
        if on:
            self.clear_fold()
        return self._programmed()

    def _set_remote(self, arg: str) -> str:
        state = REMOTE_STATES.get(arg.upper())
        if state is None:
            return "C03"
        self.remote = state
        return "OK"

    def _set_ovp(self, arg: str) -> str:
        volts = _number(arg)
        if volts is None:
            return "C03"
        if volts < self.tool.supply_readings()["voltage_limit_V"] + 0.05 * self.rated_V:
            return "E04"
        if volts > self.max_ovp_V:
            return "C05"
        self.ovp_V = volts
        return self._programmed("OVP", arg)

    def _ovp_to_max(self) -> str:
        self.ovp_V = self.max_ovp_V
        self.programmed.pop("OVP", None)
        return self._programmed()

    def _set_uvl(self, arg: str) -> str:
        volts = _number(arg)
        if volts is None:
            return "C03"
        if volts > self.tool.supply_readings()["voltage_limit_V"]:
            return "E06"
        self.uvl_V = volts
        return self._programmed("UVL", arg)

    def _reset(self) -> str:
        """RST: output off, voltage and current zero, OVP maximum, UVL zero, remote."""
        self.tool.set_supply_output(False)
        self.tool.set_supply_current_A(0.0)
        self.tool.set_supply_voltage_limit_V(0.0)
        self.ovp_V, self.uvl_V = self.max_ovp_V, 0.0
        self.foldback, self.foldback_delay, self.auto_restart = False, 0, False
        self.clear_fold()
        self.programmed.clear()
        self.remote = "REM"
        return "OK"

    def _programmed(self, key: str | None = None, text: str = "") -> str:
        """A setting was taken: remember its exact string; a local unit goes remote."""
        if key:
            self.programmed[key] = text
        if self.remote == "LOC":
            self.remote = "REM"
        return "OK"

    # --- queries -------------------------------------------------------------------------
    def _pv_query(self) -> str:
        return self._setting("PV", self.tool.supply_readings()["voltage_limit_V"],
                             self.rated_V, 5)

    def _pc_query(self) -> str:
        return self._setting("PC", self.tool.supply_readings()["current_set_A"],
                             self.rated_A, 5)

    def _setting(self, key: str, value: float, rating: float, digits: int) -> str:
        text = self.programmed.get(key)
        if self.remote != "LOC" and text is not None and float(text) == value:
            return text
        return format_reading(value, rating, digits)

    def _measured(self) -> tuple[float, float]:
        readings = self.tool.supply_readings()
        noise = self.tool.world.rng.normal(0.0, READING_NOISE, 2)
        return readings["voltage_V"] * (1 + noise[0]), readings["current_A"] * (1 + noise[1])

    def _display(self) -> str:
        """DVC?: MV, PV, MC, PC, OVP, UVL (manual: `5.9999,6.0000,010.02,010.00,7.500,0.000`)."""
        readings = self.tool.supply_readings()
        volts, amps = self._measured()
        return ",".join([
            format_reading(volts, self.rated_V),
            format_reading(readings["voltage_limit_V"], self.rated_V),
            format_reading(amps, self.rated_A),
            format_reading(readings["current_set_A"], self.rated_A),
            format_reading(self.ovp_V, self.rated_V, 4),
            format_reading(self.uvl_V, self.rated_V, 4),
        ])

    def _status(self) -> str:
        """STT? (manual: `MV(45.201),PV(45),MC(4.3257),PC(10),SR(30),FR(00)`)."""
        volts, amps = self._measured()
        mode = self.tool.supply_readings()["mode"]
        status = {"CV": STATUS_CV, "CC": STATUS_CC}.get(mode, 0) | self.protection_status_bits()
        if not self.fault:
            status |= STATUS_NO_FAULT
        if self.remote == "LOC":
            status |= STATUS_LOCAL
        return (f"MV({format_reading(volts, self.rated_V)}),PV({self._pv_query()}),"
                f"MC({format_reading(amps, self.rated_A)}),PC({self._pc_query()}),"
                f"SR({status:02X}),FR({self.fault:02X})")


def _number(arg: str) -> float | None:
    if len(arg) > MAX_NUMBER_CHARS or not NUMBER.fullmatch(arg):
        return None
    return float(arg)


def _edited(line: bytes) -> bytes:
    """The supply ignores LF, and a backspace (ASCII 8) erases the character before it."""
    kept = bytearray()
    for byte in line:
        if byte == 0x08:
            del kept[-1:]
        elif byte != 0x0A:
            kept.append(byte)
    return bytes(kept)
