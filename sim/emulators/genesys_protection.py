"""The Genesys commands beyond programming and readback: foldback protection, auto-restart,
save/recall, the ADC filter, master/slave, and the status/fault enable and event registers
(GEN manual §7.7 command summary; §7.8 status registers).

| command                    | reply                                                     |
|----------------------------|-----------------------------------------------------------|
| `FLD ON/OFF/1/0`, `FLD?`   | `OK`; `ON`/`OFF`: foldback (output off on entering CC)    |
| `FBD n` (0-255), `FBD?`    | `OK`; `n`: extra foldback delay in 0.1 s                  |
| `FBDRST`                   | `OK`: the extra delay back to 0                           |
| `AST ON/OFF/1/0`, `AST?`   | `OK`; `ON`/`OFF`: auto-restart after an AC failure        |
| `SAV`, `RCL`               | `OK`: store / recall PV, PC, OVP, UVL, FLD, FBD, AST       |
| `FILTER 18/23/46`, `FILTER?` | `OK`; `18`/`23`/`46` (Hz)                               |
| `MS?`                      | `1`: a single unit is its own master (unverified)         |
| `SENA hh`, `SENA?`         | `OK`; 2 hex digits: status enable register                |
| `FENA hh`, `FENA?`         | `OK`; 2 hex digits: fault enable register                 |
| `SEVE?`, `FEVE?`           | 2 hex digits: status / fault event register, cleared on read |

Bits (§7.8, from memory of the manual's tables; unverified): status register CV 0x01,
CC 0x02, NFLT 0x04, FLT 0x08, AST 0x10, FDE (foldback enabled) 0x20, LCL 0x80; fault
register FOLD 0x08. A bad argument is C03, a missing one C02, as for the other commands.

Acting on the World: with foldback on, a supply whose output is on and in CC mode
switches its output off and sets FOLD (fault register, its event and FLT in the status
register); `OUT ON` clears it. Assumption: the unit trips at the next command it is
sent once in CC (the emulator acts when spoken to), the delay (0.25 s + FBD × 0.1 s in
the manual, unverified) is kept but not timed; AC failure never happens here, so AST is
memory only; the filter changes no reading (the readings' noise is not filtered); RCL
with nothing saved gives the factory settings, as RST does; RST also turns foldback and
auto-restart off and clears FOLD.
"""

from __future__ import annotations

FILTERS = ("18", "23", "46")
ON_OFF = {"1": True, "ON": True, "0": False, "OFF": False}
STATUS_FLT, STATUS_AST, STATUS_FDE = 0x08, 0x10, 0x20
FAULT_FOLD = 0x08
MAX_FBD = 255


class GenesysProtection:
    """Mixed into the Genesys emulator: `protection_queries` and `protection_setters`
    join its command tables; `check_foldback()` runs before each command."""

    def _init_protection(self) -> None:
        self.foldback = False
        self.foldback_delay = 0
        self.auto_restart = False
        self.filter_hz = "18"
        self.enables = {"SENA": 0, "FENA": 0}
        self.fault = 0
        self.events = {"SEVE": 0, "FEVE": 0}
        self.saved: dict | None = None

    def protection_state(self) -> dict:
        return {"foldback": self.foldback, "foldback_delay": self.foldback_delay,
                "auto_restart": self.auto_restart, "filter_hz": self.filter_hz,
                "enables": dict(self.enables), "fault": self.fault,
                "events": dict(self.events), "saved": self.saved}

    def restore_protection(self, state: dict) -> None:
        self.foldback, self.foldback_delay = state["foldback"], state["foldback_delay"]
        self.auto_restart, self.filter_hz = state["auto_restart"], state["filter_hz"]
        self.enables, self.fault = dict(state["enables"]), state["fault"]
        self.events, self.saved = dict(state["events"]), state["saved"]

    @property
    def protection_queries(self) -> dict:
        return {"FLD?": lambda: _on_off(self.foldback), "FBD?": lambda: str(self.foldback_delay),
                "AST?": lambda: _on_off(self.auto_restart), "FILTER?": lambda: self.filter_hz,
                "MS?": lambda: "1", "SENA?": lambda: f"{self.enables['SENA']:02X}",
                "FENA?": lambda: f"{self.enables['FENA']:02X}",
                "SEVE?": lambda: self._read_event("SEVE"),
                "FEVE?": lambda: self._read_event("FEVE"),
                "FBDRST": self._reset_delay, "SAV": self._save, "RCL": self._recall}

    @property
    def protection_setters(self) -> dict:
        return {"FLD": self._set_foldback, "FBD": self._set_delay, "AST": self._set_auto_restart,
                "FILTER": self._set_filter, "SENA": lambda arg: self._set_enable("SENA", arg),
                "FENA": lambda arg: self._set_enable("FENA", arg)}

    def protection_status_bits(self) -> int:
        return ((STATUS_FLT if self.fault else 0) | (STATUS_AST if self.auto_restart else 0)
                | (STATUS_FDE if self.foldback else 0))

    def check_foldback(self) -> None:
        """Foldback: an output on in CC mode goes off, with the FOLD fault."""
        if self.foldback and self.tool.supply_readings()["mode"] == "CC":
            self.tool.set_supply_output(False)
            self.fault |= FAULT_FOLD
            self.events["FEVE"] |= FAULT_FOLD

    def clear_fold(self) -> None:
        self.fault &= ~FAULT_FOLD

    # --- commands -------------------------------------------------------------------------
    def _read_event(self, register: str) -> str:
        value, self.events[register] = self.events[register], 0
        return f"{value:02X}"

    def _set_foldback(self, arg: str) -> str:
        on = ON_OFF.get(arg.upper())
        if on is None:
            return "C03"
        self.foldback = on
        return self._programmed()

    def _set_delay(self, arg: str) -> str:
        if not arg.isdigit() or int(arg) > MAX_FBD:
            return "C03"
        self.foldback_delay = int(arg)
        return self._programmed()

    def _reset_delay(self) -> str:
        self.foldback_delay = 0
        return self._programmed()

    def _set_auto_restart(self, arg: str) -> str:
        on = ON_OFF.get(arg.upper())
        if on is None:
            return "C03"
        self.auto_restart = on
        return self._programmed()

    def _set_filter(self, arg: str) -> str:
        if arg not in FILTERS:
            return "C03"
        self.filter_hz = arg
        return self._programmed()

    def _set_enable(self, register: str, arg: str) -> str:
        try:
            value = int(arg, 16)
        except ValueError:
            return "C03"
        if not 0 <= value <= 0xFF or len(arg) > 2:
            return "C03"
        self.enables[register] = value
        return "OK"

    def _save(self) -> str:
        readings = self.tool.supply_readings()
        self.saved = {"PV": readings["voltage_limit_V"], "PC": readings["current_set_A"],
                      "OVP": self.ovp_V, "UVL": self.uvl_V, "FLD": self.foldback,
                      "FBD": self.foldback_delay, "AST": self.auto_restart}
        return "OK"

    def _recall(self) -> str:
        if self.saved is None:  # nothing saved: the factory settings are what RCL gives
            return self._reset()
        s = self.saved
        self.tool.set_supply_voltage_limit_V(s["PV"])
        self.tool.set_supply_current_A(s["PC"])
        self.ovp_V, self.uvl_V = s["OVP"], s["UVL"]
        self.foldback, self.foldback_delay, self.auto_restart = s["FLD"], s["FBD"], s["AST"]
        self.programmed.clear()
        return self._programmed()


def _on_off(on: bool) -> str:
    return "ON" if on else "OFF"
