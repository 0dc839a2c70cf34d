"""Alicat MC-series mass-flow controller on the wire, feeding N2 into the sputter tool.

Sources. The MC-series manual's data format and setpoint methods; the project's
reference notes (protocols.md §3.4); facts read from the numat/alicat client library
(how a client sends and parses each command below). Alicat's Serial Primer itself was
not at hand, so the exact reply layouts marked (unverified) are this emulator's reading
of those sources, not the primer's text.

Command summary a client uses (after the unit id A-Z; not case sensitive), and the reply:

| command                        | reply                                             |
|--------------------------------|---------------------------------------------------|
| (none)                         | the data frame (poll)                             |
| `S<f>`, `<int 0..64000>`       | setpoint in sccm / of full scale → data frame     |
| `LS` / `LS <f>`                | `A <current> <requested> 12 SCCM` (unverified)    |
| `VE`                           | `A 10v05.0-R24`                                   |
| `R<n>`, `$$R<n>` (`$$r<n>`)    | register read → `A <nnn> = <value>`               |
| `W<n>=<v>`, `$$W<n>=<v>`       | register write → `A <nnn> = <value>`              |
| `$$W46=<gas>`, `G<gas>`        | gas select (register 46, low 9 bits) → `$$W`: reg |
|                                | line, `G`: data frame (`G` form unverified)       |
| `GS` / `GS <gas>`              | `A <number> <short> <long name>` (unverified)     |
| `??M*`                         | manufacturer lines `A M00 …` to `A M09 …`         |
| `??D*`                         | data-frame description `A D00 …` (unverified)     |
| `$$L`/`L`, `$$U`/`U`           | lock / unlock the front panel → frame (`LCK`)     |
| `$$H`/`HP`, `HC`, `$$C`/`C`    | hold valve here / closed, cancel → frame (`HLD`)  |
| `$$V`/`V`                      | tare flow → frame                                 |
| `$$PC`/`PC`                    | tare gauge pressure → frame                       |
| `LSRC` / `LSRC u d z p`        | ramp flags up/down/zero/power-up → `A u d z p`    |
| `SR` / `SR 0 <unit>`           | max ramp rate → `A 0.00 4 12 SCCM/s` (unverified) |

Anything else, a setpoint outside 0..full scale or a malformed argument is answered
`?`, as the unit does. Lines for other unit ids are ignored (shared RS-485 bus).

Acting on the World. The setpoint is what the unit's own reading is driven to; the
tool receives the true N2 flow that gives that reading:
- gas: the unit's laminar-flow element reads flow ∝ 1/viscosity of the *selected* gas,
  so with gas g selected on an N2 line the delivered N2 is setpoint × μ(g)/μ(N2) and
  the reading is the true flow × μ(N2)/μ(g) (viscosities at 25 °C, approximate,
  unverified). Gases outside that table (numbers 0-12 of Alicat's list) are refused;
- tare (`V`) zeroes the reading where the flow is now: taring with gas flowing makes
  the unit deliver that much more afterwards, as a real one does;
- hold: `HP` keeps the valve (the delivered flow) where it is, `HC` closes it (no flow),
  cancel returns to the setpoint; setpoints sent while held are kept, not applied.
Inlet pressure and gas temperature are fixed at 14.70 psia and 25.00 °C (assumption),
so volumetric and mass flow coincide; the gauge-pressure tare therefore changes no
reading. Emulator limits (documented, not the unit's): setpoint ramping is not
modelled, so `SR` reads 0 and only a 0 ramp is accepted; register 122 (control point)
takes only 36/37 (volumetric / mass flow), the pressure control points are refused;
registers nobody set read 0; the totalizer (`T`) is not fitted and answers `?`.
"""

from __future__ import annotations

import re

from lipon_hw.drivers.alicat import REFUSAL, TERMINATOR, DataFrame, format_data_frame
from lipon_hw.sim.emulator import DISCARD_ALL, Emulator

INLET_PSIA = 14.70
GAS_TEMPERATURE_C = 25.00
INTEGER_FULL_SCALE = 64000
MAX_LINE = 128  # longer input without a CR is line noise, dropped
SCCM_CODE = 12  # engineering-unit code printed with SCCM values (unverified)
SECONDS_CODE = 4  # time-unit code of a ramp per second (unverified)
#: Alicat gas numbers 0-12 → (short name, long name, viscosity µPa·s at 25 °C, approximate)
GASES = {0: ("Air", "Air", 18.49), 1: ("Ar", "Argon", 22.61), 2: ("CH4", "Methane", 11.07),
         3: ("CO", "Carbon Monoxide", 17.74), 4: ("CO2", "Carbon Dioxide", 14.93),
         5: ("C2H6", "Ethane", 9.35), 6: ("H2", "Hydrogen", 8.90), 7: ("He", "Helium", 19.85),
         8: ("N2", "Nitrogen", 17.81), 9: ("N2O", "Nitrous Oxide", 14.90),
         10: ("Ne", "Neon", 31.75), 11: ("O2", "Oxygen", 20.64), 12: ("C3H8", "Propane", 8.15)}
N2 = 8
GAS_BITS = 0x1FF
REG_P, REG_D, REG_I, REG_GAS, REG_LOOP, REG_CONTROL = 21, 22, 23, 46, 85, 122
CONTROL_POINTS = (36, 37)  # volumetric, mass flow
MAX_REGISTER = 999
_REGISTER_READ = re.compile(r"(?:\$\$)?R(\d{1,3})")
_REGISTER_WRITE = re.compile(r"(?:\$\$)?W(\d{1,3})=(\d{1,5})")
_MANUFACTURER = ("Alicat Scientific Inc.", "www.alicat.com", "Ph   520-290-6060",
                 "Fax  520-290-0109", "Model Number {model}", "Serial Number {serial}",
                 "Date Manufactured 01/15/2024", "Date Calibrated   01/15/2024",
                 "Calibrated By     SIM", "Software Revision {firmware}")
_FRAME_COLUMNS = (("700", "Unit ID", "string", "1", ""),
                  ("002", "Abs Press", "s decimal", "7/2", "010 02 PSIA"),
                  ("003", "Flow Temp", "s decimal", "7/2", "002 02 `C"),
                  ("004", "Volu Flow", "s decimal", "7/2", f"{SCCM_CODE:03d} 02 CCM"),
                  ("005", "Mass Flow", "s decimal", "7/2", f"{SCCM_CODE:03d} 02 SCCM"),
                  ("037", "Mass Flow Setpt", "s decimal", "7/2", f"{SCCM_CODE:03d} 02 SCCM"),
                  ("703", "Gas", "string", "6", ""))


class AlicatEmulator(Emulator):
    model = "Alicat MC-50SCCM-D"
    firmware = "10v05.0-R24"
    serial = "212121"

    def __init__(self, name: str, tool, unit: str = "A", full_scale_sccm: float = 50.0):
        super().__init__(name)
        self.tool = tool
        self.unit = unit.upper()
        self.full_scale_sccm = float(full_scale_sccm)
        self.setpoint = tool.n2_setpoint_sccm()  # in the selected gas's reading, sccm
        self.locked = False
        self.hold: str | None = None  # "HP" valve held where it is, "HC" closed
        self.offset_sccm = 0.0  # the reading's zero, moved by a tare
        self.ramp_flags = [0, 0, 0, 0]
        self.registers = {REG_P: 100, REG_D: 2500, REG_I: 0, REG_GAS: N2, REG_LOOP: 2,
                          REG_CONTROL: 37}
        self._commands = {
            "": self._frame, "VE": lambda: self._line(self.firmware),
            "LS": self._ls_query, "GS": self._gs_query,
            "??M*": self._manufacturer, "??D*": self._description,
            "$$L": lambda: self._lock(True), "L": lambda: self._lock(True),
            "$$U": lambda: self._lock(False), "U": lambda: self._lock(False),
            "$$H": lambda: self._hold("HP"), "HP": lambda: self._hold("HP"),
            "HC": lambda: self._hold("HC"),
            "$$C": lambda: self._hold(None), "C": lambda: self._hold(None),
            "$$V": self._tare_flow, "V": self._tare_flow,
            "$$PC": self._frame, "PC": self._frame,  # absolute pressure: nothing to zero
            "LSRC": lambda: self._line(" ".join(map(str, self.ramp_flags))),
            "SR": self._ramp_query,
        }

    # --- instrument memory (for checkpoints) ----------------------------------------
    def snapshot(self) -> dict:
        return {"setpoint": self.setpoint, "locked": self.locked, "hold": self.hold,
                "offset_sccm": self.offset_sccm, "ramp_flags": list(self.ramp_flags),
                "registers": {str(k): v for k, v in self.registers.items()}}

    def restore(self, state: dict) -> None:
        self.setpoint = state["setpoint"]
        self.locked = state["locked"]
        self.hold = state["hold"]
        self.offset_sccm = state["offset_sccm"]
        self.ramp_flags = list(state["ramp_flags"])
        self.registers = {int(k): v for k, v in state["registers"].items()}

    # --- wire -------------------------------------------------------------------------
    def _process(self, buffer: bytes) -> tuple[int, bytes]:
        end = buffer.find(TERMINATOR)
        if end < 0:
            return (DISCARD_ALL if len(buffer) > MAX_LINE else 0), b""
        line = buffer[:end].decode("ascii", errors="replace").strip().upper()
        if not line or line[0] != self.unit:
            return end + 1, b""
        with self.world_lock:
            return end + 1, self._answer(line[1:].strip())

    def _answer(self, command: str) -> bytes:
        if self.faults.error_code is not None:  # the unit refuses whatever it is sent
            return REFUSAL.encode("ascii") + TERMINATOR
        reply = self._dispatch(command)
        return (reply if reply is not None else REFUSAL).encode("ascii") + TERMINATOR

    def _dispatch(self, command: str) -> str | None:
        """The reply to one command (lines joined by CR, without the last CR), None for ?."""
        handler = self._commands.get(command)
        if handler is not None:
            return handler()
        head, _, arg = command.partition(" ")
        arg = arg.strip()
        if arg and head in ("LS", "GS", "LSRC", "SR"):
            return {"LS": self._ls_set, "GS": self._gs_set, "LSRC": self._ramp_flags_set,
                    "SR": self._ramp_set}[head](arg)
        if match := _REGISTER_READ.fullmatch(command):
            return self._register_read(int(match[1]))
        if match := _REGISTER_WRITE.fullmatch(command):
            return self._register_write(int(match[1]), int(match[2]))
        if command.startswith("G") and command[1:].isdigit():
            return self._frame() if self._select_gas(int(command[1:])) else None
        setpoint = self._setpoint_of(command)
        if setpoint is None:
            return None
        return self._frame() if self._set_setpoint(setpoint) else None

    # --- setpoint and flow ------------------------------------------------------------
    def _setpoint_of(self, command: str) -> float | None:
        if command.isdigit():
            return int(command) / INTEGER_FULL_SCALE * self.full_scale_sccm
        if command.startswith("S"):
            return _number(command[1:])
        return None

    def _set_setpoint(self, setpoint: float | None) -> bool:
        if setpoint is None or not 0.0 <= setpoint <= self.full_scale_sccm:
            return False
        self.setpoint = setpoint
        self._drive()
        return True

    def _viscosity_ratio(self) -> float:
        """μ(selected gas) / μ(N2): true N2 flow per unit of this unit's reading."""
        return GASES[self.registers[REG_GAS] & GAS_BITS][2] / GASES[N2][2]

    def _drive(self) -> None:
        """Give the tool the N2 flow that makes the reading equal the setpoint."""
        if self.hold == "HP":
            return
        if self.hold == "HC":
            self.tool.set_n2_flow_sccm(0.0)
            return
        target = self.setpoint + self.offset_sccm if self.setpoint > 0 else 0.0
        self.tool.set_n2_flow_sccm(max(0.0, target) * self._viscosity_ratio())

    def _reading(self) -> float:
        """The unit's flow reading without noise: the true flow through this gas's
        calibration, less the tare."""
        return self.tool.n2_flow_sccm() / self._viscosity_ratio() - self.offset_sccm

    def _frame(self) -> str:
        noise = self.tool.world.rng.normal(0.0, 0.002 * self.full_scale_sccm)
        flow = self._reading() + noise
        status = tuple(s for s, on in (("HLD", self.hold), ("LCK", self.locked)) if on)
        gas = GASES[self.registers[REG_GAS] & GAS_BITS][0]
        frame = DataFrame(self.unit, INLET_PSIA, GAS_TEMPERATURE_C, flow, flow,
                          self.setpoint, gas, status)
        return format_data_frame(frame).decode("ascii").rstrip("\r")

    def _line(self, text: str) -> str:
        return f"{self.unit} {text}"

    def _ls_query(self) -> str:
        sp = self.setpoint
        return self._line(f"{sp:+07.2f} {sp:+07.2f} {SCCM_CODE} SCCM")

    def _ls_set(self, arg: str) -> str | None:
        return self._ls_query() if self._set_setpoint(_number(arg)) else None

    # --- front panel, hold, tare ------------------------------------------------------
    def _lock(self, locked: bool) -> str:
        self.locked = locked
        return self._frame()

    def _hold(self, how: str | None) -> str:
        if how == "HP" and self.hold is None:
            self.tool.set_n2_flow_sccm(self.tool.n2_flow_sccm())
        self.hold = how
        self._drive()
        return self._frame()

    def _tare_flow(self) -> str:
        self.offset_sccm += self._reading()
        self._drive()
        return self._frame()

    def _ramp_query(self) -> str:
        return self._line(f"0.00 {SECONDS_CODE} {SCCM_CODE} SCCM/s")

    def _ramp_set(self, arg: str) -> str | None:
        parts = arg.split()
        if len(parts) != 2 or _number(parts[0]) != 0.0 or parts[1] != str(SECONDS_CODE):
            return None
        return self._ramp_query()

    def _ramp_flags_set(self, arg: str) -> str | None:
        flags = arg.split()
        if len(flags) != 4 or any(f not in ("0", "1") for f in flags):
            return None
        self.ramp_flags = [int(f) for f in flags]
        return self._line(" ".join(flags))

    # --- gas and registers ------------------------------------------------------------
    def _select_gas(self, number: int) -> bool:
        if number not in GASES:
            return False
        self.registers[REG_GAS] = (self.registers[REG_GAS] & ~GAS_BITS) | number
        self._drive()
        return True

    def _gs_query(self) -> str:
        number = self.registers[REG_GAS] & GAS_BITS
        short, long_name, _ = GASES[number]
        return self._line(f"{number} {short} {long_name}")

    def _gs_set(self, arg: str) -> str | None:
        return self._gs_query() if arg.isdigit() and self._select_gas(int(arg)) else None

    def _register_read(self, register: int) -> str | None:
        if register > MAX_REGISTER:
            return None
        return self._line(f"{register:03d} = {self.registers.get(register, 0)}")

    def _register_write(self, register: int, value: int) -> str | None:
        if register > MAX_REGISTER or value > 0xFFFF:
            return None
        if register == REG_GAS:
            return self._register_read(REG_GAS) if self._select_gas(value & GAS_BITS) else None
        if register == REG_CONTROL and value not in CONTROL_POINTS:
            return None
        if register == REG_LOOP and value not in (1, 2):
            return None
        self.registers[register] = value
        return self._register_read(register)

    # --- identity ---------------------------------------------------------------------
    def _manufacturer(self) -> str:
        model = self.model.removeprefix("Alicat ")
        return "\r".join(self._line(f"M{i:02d} " + text.format(
            model=model, serial=self.serial, firmware=self.firmware))
            for i, text in enumerate(_MANUFACTURER))

    def _description(self) -> str:
        header = self._line("D00 ID_ NAME______________________ TYPE_______ WIDTH NOTES")
        rows = [self._line(f"D{i:02d} {ident} {name:<26} {kind:<11} {width:>5} {notes}".rstrip())
                for i, (ident, name, kind, width, notes) in enumerate(_FRAME_COLUMNS, 1)]
        return "\r".join([header, *rows])


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value and abs(value) != float("inf") else None
