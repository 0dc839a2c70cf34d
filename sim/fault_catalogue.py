"""The catalogue of faults the simulated lab can inject, each where the real instrument
would show it. A station's `sim: faults:` list and `SimLab.faults.add(...)` name them;
`lipon_hw.sim.fault_schedule` parses, times and fires them. Reference: docs/faults.md.

Each fault, what it hits, and what a client sees on the wire:

- `link_drop` (any instrument): the port refuses (writes and re-opens fail), then answers
  again when it clears;
- `silent` (any instrument): it reads what is sent and never answers (timeouts);
- `garble` (any instrument): every reply has one byte flipped;
- `bad_checksum` (AE Bus, Modbus RTU, INFICON): replies intact but their checksum/CRC wrong;
- `error_reply` (AE Bus, MKS 937B, Alicat, Modbus RTU, Keithley 2450, MethodSCRIPT): each
  command refused as the protocol documents: CSR `code`, `NAK<code>`, `?`, exception
  `code`, SCPI `code` in the error queue, `<c>!XXXX`;
- `rf_arcs` (RF generator or sputter tool): `count` arcs at seeded times within `for_s`:
  reflected-power spikes, counted by the tool;
- `reflected_power` (RF generator or sputter tool): reflected reads `reflected_pct` % of
  forward;
- `plasma_loss` (RF generator or sputter tool): the plasma goes out and will not re-ignite:
  reflected ≈ forward, deposition (and the QCM rate) 0;
- `crystal_fail` (QCM or tool): the crystal stops oscillating: 0 Hz, rate 0, crystal fail;
- `crystal_life_end` (QCM): the crystal fails once its life, as that monitor reads it,
  falls to `at_life_pct`;
- `vacuum_leak` (tool, or any instrument on it): a leak of `leak_mbar_l_s`; chamber
  pressure rises as the vacuum model says;
- `gas_supply_loss` (MFC or sputter tool): flow falls to zero (e-fold `fall_s`) while the
  setpoint holds;
- `source_burnout` (source supply or evaporator): boat `boat` opens: current 0, the supply
  at its voltage limit (CV), rate 0;
- `substrate_overtemp` (thermometer or evaporator): the substrate heats `rise_C` above its
  normal temperature, with the substrate's time constant;
- `cell_soft_short`, `cell_hard_short`, `cell_open`, `cell_high_interface` (potentiostat
  channel): the cell's own fault (`lipon_hw.sim.cells.faults`) from `at_s` or after
  `after_cycles`;
- `channel_fault` (MethodSCRIPT channel): a running script ends `!XXXX: Line 0` with the
  cell off, and commands are refused `!XXXX` until it clears;
- `clock_jump` (the host): the lab's host clock (`SimLab.host_clock`) jumps by `jump_s`.

Each kind declares its parameters with their ranges (`Param`), whether it clears at the
end of `for_s` (`clears`), and what it acts on (`target`): "wire" (the emulators of an
instrument), a tool ("sputter", "evaporator", or "chamber" for either), "cell" or
"channel" (a potentiostat's channel), or "host". `start` and `stop` run with the World
advanced to the fault's own time, so physics sees it exactly then.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from lipon_hw.sim import crystal as xtal

#: 1 mbar·l/s in Torr·L/s
MBAR_L_TORR_L = 0.750062


@dataclass(frozen=True)
class Param:
    low: float
    high: float
    default: float | None
    unit: str
    doc: str
    integer: bool = False


@dataclass(frozen=True)
class FaultKind:
    name: str
    target: str
    doc: str
    params: dict[str, Param] = field(default_factory=dict)
    clears: bool = True  # `for_s` allowed: the fault ends by itself
    #: overlapping entries add up (two leaks); else the fault holds until the last ends
    additive: bool = False
    #: drivers whose instruments may be named (None: any simulated instrument)
    drivers: tuple[str, ...] | None = None
    start: Callable | None = None  # start(target, params, t)
    stop: Callable | None = None  # stop(target, params, t)


# --- wire faults: flags on each emulator's Faults ------------------------------------------
def _flag(name: str):
    """(start, stop) that set and clear the switch `name` of each emulator's Faults."""
    def start(emulators, params, t):
        for emulator in emulators:
            setattr(emulator.faults, name, True)

    def stop(emulators, params, t):
        for emulator in emulators:
            setattr(emulator.faults, name, False)
    return start, stop


def _error_start(emulators, params, t):
    for emulator in emulators:
        emulator.faults.error_code = int(params["code"])


def _error_stop(emulators, params, t):
    for emulator in emulators:
        emulator.faults.error_code = None


#: each protocol's documented error reply: (lowest code, highest, default, what it is)
ERROR_REPLIES = {
    "ae_bus": (1, 255, 7, "the CSR of the reply (7: active faults)"),
    "mks937b": (150, 199, 160, "the NAK code (160: unrecognized message)"),
    "alicat": (0, 0, 0, "none: the unit answers ?"),
    "modbus_relay_shutter": (1, 11, 4, "the Modbus exception code (4: server device failure)"),
    "modbus_relay_valves": (1, 11, 4, "the Modbus exception code (4: server device failure)"),
    "modbus_relay_source_selector": (1, 11, 4, "the Modbus exception code"),
    "modbus_thermometer": (1, 11, 4, "the Modbus exception code (4: server device failure)"),
    "keithley2450": (-499, -100, -300, "the SCPI error queued (-300: device-specific error)"),
    "methodscript": (1, 0xFFFF, 1, "the MethodSCRIPT error code !XXXX (0x0001: unspecified)"),
    "grbl_stage": (1, 38, 9, "the GRBL error:N of every line (9: G-code locked out)"),
}
#: protocols whose replies carry a checksum or CRC
CHECKSUM_DRIVERS = ("ae_bus", "modbus_relay_shutter", "modbus_relay_valves",
                    "modbus_relay_source_selector", "modbus_thermometer", "sqm160", "sqc310")


# --- the sputter tool -------------------------------------------------------------------
def _arc(tool, params, t):
    tool.arc()


def _reflection_start(tool, params, t):
    tool.s.fault_reflection = params["reflected_pct"] / 100
    tool.s.last_change = t


def _reflection_stop(tool, params, t):
    tool.s.fault_reflection = 0.0
    tool.s.last_change = t


def _gas_start(tool, params, t):
    tool.lose_gas_supply(True, params["fall_s"])


def _gas_stop(tool, params, t):
    tool.lose_gas_supply(False)


# --- either chamber ---------------------------------------------------------------------
def _leak_start(tool, params, t):
    tool.s.leak_torr_L_s += params["leak_mbar_l_s"] * MBAR_L_TORR_L
    tool.s.last_change = t


def _leak_stop(tool, params, t):
    tool.s.leak_torr_L_s = max(0.0, tool.s.leak_torr_L_s - params["leak_mbar_l_s"]
                               * MBAR_L_TORR_L)
    tool.s.last_change = t


def _crystal_fail_start(tool, params, t):
    tool.s.crystal_failed = True


def _crystal_fail_stop(tool, params, t):
    s = tool.s
    s.crystal_failed = xtal.frequency_Hz(s) < s.crystal_fail_Hz


def _crystal_life_start(target, params, t):
    tool, (f_min, f_max) = target
    s = tool.s
    s.crystal_fail_Hz = max(s.crystal_fail_Hz, f_min + params["at_life_pct"] / 100
                            * (f_max - f_min))
    if xtal.frequency_Hz(s) < s.crystal_fail_Hz or params["at_life_pct"] >= 100.0:
        s.crystal_failed = True  # the monitor reads it at (or below) that life already


def life_limits_Hz(emulator) -> tuple[float, float]:
    """The frequencies a crystal monitor reads as 0 % and 100 % life."""
    if hasattr(emulator, "system2"):  # SQM-160
        return (emulator.system2.frequency_min_MHz * 1e6,
                emulator.system2.frequency_max_MHz * 1e6)
    return emulator.memory.frequency_limits_Hz()  # SQC-310


# --- the evaporator ---------------------------------------------------------------------
def _burnout_start(tool, params, t):
    boat = int(params["boat"]) or tool.s.selected
    if boat and boat not in tool.s.open_boats:
        tool.s.open_boats.append(boat)
        params["boat"] = boat  # the stop reconnects this one


def _burnout_stop(tool, params, t):
    if params["boat"] in tool.s.open_boats:
        tool.s.open_boats.remove(params["boat"])


def _overtemp_start(tool, params, t):
    tool.s.substrate_fault_C += params["rise_C"]


def _overtemp_stop(tool, params, t):
    tool.s.substrate_fault_C -= params["rise_C"]


# --- potentiostat channels and the host ---------------------------------------------------
def _channel_start(port, params, t):
    port.channel_fault(int(params["code"]), t)
    port.faults.error_code = int(params["code"])


def _channel_stop(port, params, t):
    port.faults.error_code = None


def _clock_start(lab, params, t):
    lab.host_clock_offset_s += params["jump_s"]


def _clock_stop(lab, params, t):
    lab.host_clock_offset_s -= params["jump_s"]


def _cell_kind(kind: str, doc: str, params: dict[str, Param]) -> FaultKind:
    return FaultKind(f"cell_{kind}", "cell", doc, params, clears=False)


_OHM = {"ohm": Param(1e-3, 1e15, None, "Ω", "the fault's resistance (default: the cell "
                                            "model's own)")}

FAULTS: dict[str, FaultKind] = {k.name: k for k in [
    FaultKind("link_drop", "wire", "the port refuses (unplugged), then answers again",
              start=_flag("unplugged")[0], stop=_flag("unplugged")[1]),
    FaultKind("silent", "wire", "the instrument reads and never answers",
              start=_flag("link_down")[0], stop=_flag("link_down")[1]),
    FaultKind("garble", "wire", "every reply has one byte flipped",
              start=_flag("garble_all")[0], stop=_flag("garble_all")[1]),
    FaultKind("bad_checksum", "wire", "every reply's checksum (CRC) is wrong",
              drivers=CHECKSUM_DRIVERS, start=_flag("bad_checksum")[0],
              stop=_flag("bad_checksum")[1]),
    FaultKind("error_reply", "wire", "every command is refused with the protocol's error",
              {"code": Param(-499, 0xFFFF, None, "", "the error code; its range and default "
                                                     "are the protocol's (ERROR_REPLIES)",
                             integer=True)},
              drivers=tuple(ERROR_REPLIES), start=_error_start, stop=_error_stop),
    FaultKind("rf_arcs", "sputter", "arcs on the target: reflected-power spikes, counted",
              {"count": Param(1, 100_000, 1, "", "arcs, at seeded times within for_s",
                              integer=True)},
              drivers=("ae_bus",), start=_arc),
    FaultKind("reflected_power", "sputter", "reflected power reads a fraction of forward",
              {"reflected_pct": Param(1.0, 100.0, 30.0, "%", "reflected / forward")},
              drivers=("ae_bus",), start=_reflection_start, stop=_reflection_stop),
    FaultKind("plasma_loss", "sputter", "the plasma goes out and will not re-ignite",
              drivers=("ae_bus",), start=lambda tool, p, t: tool.block_plasma(True),
              stop=lambda tool, p, t: tool.block_plasma(False)),
    FaultKind("crystal_fail", "chamber", "the crystal stops oscillating",
              drivers=("sqm160", "sqc310"), start=_crystal_fail_start,
              stop=_crystal_fail_stop),
    FaultKind("crystal_life_end", "crystal", "the crystal fails when its life reaches a level",
              {"at_life_pct": Param(0.0, 100.0, 5.0, "%", "the life reading it fails at")},
              clears=False, drivers=("sqm160", "sqc310"), start=_crystal_life_start),
    FaultKind("vacuum_leak", "chamber", "an air leak into the chamber",
              {"leak_mbar_l_s": Param(1e-9, 100.0, 1e-3, "mbar·l/s", "the leak rate")},
              additive=True, start=_leak_start, stop=_leak_stop),
    FaultKind("gas_supply_loss", "sputter", "the gas bottle runs empty: flow falls to zero",
              {"fall_s": Param(0.1, 3600.0, 5.0, "s", "e-fold time of the falling flow")},
              drivers=("alicat",), start=_gas_start, stop=_gas_stop),
    FaultKind("source_burnout", "evaporator", "a boat burns through: an open circuit",
              {"boat": Param(0, 16, 0, "", "the boat (1-based); 0: the one selected at the "
                                              "onset", integer=True)},
              drivers=("genesys", "sqc310"), additive=True, start=_burnout_start,
              stop=_burnout_stop),
    FaultKind("substrate_overtemp", "evaporator", "the substrate heats above its normal "
              "temperature (a runaway heater)",
              {"rise_C": Param(1.0, 1000.0, 150.0, "°C", "the extra temperature it settles "
                                                         "at")},
              drivers=("modbus_thermometer",), additive=True, start=_overtemp_start,
              stop=_overtemp_stop),
    _cell_kind("soft_short", "a soft short (parallel leakage: self-discharge)", _OHM),
    _cell_kind("hard_short", "a hard short (the voltage collapses)", _OHM),
    _cell_kind("open", "an open contact", _OHM),
    _cell_kind("high_interface", "a high interface resistance (voids at a collector)",
               {"factor": Param(1.0, 1e6, None, "×", "interface resistance multiplier "
                                                      "(default: the model's)")}),
    FaultKind("channel_fault", "channel", "the channel fails: its script ends in an error",
              {"code": Param(1, 0xFFFF, 0x0032, "", "the MethodSCRIPT error code (0x0032: "
                                                    "heavy overload)", integer=True)},
              drivers=("methodscript",), start=_channel_start, stop=_channel_stop),
    FaultKind("clock_jump", "host", "the host clock jumps",
              {"jump_s": Param(-1e8, 1e8, None, "s", "the jump (negative: backwards)")},
              additive=True, start=_clock_start, stop=_clock_stop),
]}

#: what each target kind is, for messages
TARGETS = {"wire": "a simulated instrument", "sputter": "the sputter tool",
           "evaporator": "the evaporator", "chamber": "a tool's chamber",
           "crystal": "a crystal monitor", "cell": "a potentiostat channel",
           "channel": "a potentiostat channel", "host": "the host"}

