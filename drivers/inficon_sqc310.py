"""INFICON SQC-310 deposition controller: QCM readings plus the PID loop that drives a source.

Wire format: the INFICON packet (`lipon_hw.drivers.inficon_packet`), which the SQC-310 manual
(PN 074-550-P1B §5, P1C §4) documents as the SQM-160's. Reply status: 'A' OK, 'C' invalid
command, 'D' bad data (both manuals), and the SQC-310's own: 'E' wrong mode for this command,
'F' invalid CRC, 'G' reply longer than 221 characters (E-G as published with a public
SQC-310C driver; unverified in the manual). 'F' means the packet was damaged on the way, so it
is a FrameError and the link retries it.

Commands this driver sends. Byte-checked: the manual prints the frame (P1C §4.3: J, L, N,
P, PA, S, K1/K2 replies) or a public EPICS driver sent it to an SQC-310C (``@``, ``F``,
``U0/U1/U32/U33``, ``V?``); the others were read in the manual's command list:
- ``@`` model; ``L{s}`` rate Å/s; ``N{s}`` thickness kÅ; ``P{s}`` frequency Hz; ``PA{s}``
  "active frequency life"; ``S? {o}`` output power % ("0.00 ", with a trailing space);
  ``U{n}`` run state (1 stop process, 2 start layer, 3 stop layer, 32 zero thickness);
  ``V?`` "phase elapsed process layer" (newer firmware adds auto/manual);
  ``GE{relay} {1 on|2 off|3 unlock}``.
- Parameter groups: get ``A2 1? 1 2 3`` -> "1,50 2,5 3,0", set ``A2 1 1,50 2,5 3,0``; the
  same pairs for ``B`` (no index) and ``D{layer}``; ``F{material}? 2`` answers the bare value
  and ``F1 2,893`` sets one field at a time. Numbers are integers scaled by the displayed
  decimals (an I-term of 0.5 is sent as 5).
- Field numbers read in the manual: A2 1 P, 2 I (0.1 s), 3 D, 4 material, 6 tooling;
  A3 1 ramp1 power, 2 ramp1 time, 3 soak1 time, 4 ramp2 power, 5 ramp2 time, 6 soak2 time,
  7 idle power, 8 idle ramp; A4 1 shutter delay, 2 capture; D 1 initial rate, 2 final
  thickness; F 1 name, 2 density (0.01 g/cm³), 3 Z-ratio (0.001).

Unverified (assumptions a real instrument may refuse or read differently; each is one entry
in the tables below): the decimals of D-term, tooling (whole %), powers (0.1 %, as ``S``
uses), times (whole s), capture (0.1 %), rate setpoint (0.01 Å/s) and final thickness
(0.001 kÅ); the layer's film (D 5) and max power (D 6) field numbers, which the manual pages
that could be read do not list; the A1 film name as field 1; the counts of films,
materials and layers.

PID semantics (the manual defines the terms, not the arithmetic; the emulator implements
this): error e = (setpoint − rate) / setpoint; P-term is % output per unit e; I-term is the
integral time and D-term the derivative time, in seconds.

Link recovery (`Link.exchange`'s retry rule). Idempotent, resent as they are: the queries,
the parameter writes (A, B, D, F: absolute values), ``GE{r} 1|2|3`` (relay on, off,
unlocked: absolute states), ``U1`` stop process and ``U3`` stop layer (end states: sent
again they find the process or layer stopped). Read back before resending: ``U32`` zero
thickness (``N{s}``, as the SQM-160's zero) and ``U2`` start layer (``V?``: a phase of a
running layer means it took; a second ``U2`` is refused 'E' while a layer runs, or would
start a layer that had already ended again). Unverified: what a real SQC-310 answers to a
second ``U2``; the emulator refuses it as the wrong mode.
"""

from __future__ import annotations

from dataclasses import dataclass

from lipon_hw.drivers.inficon_packet import REFUSALS, InficonInstrument
from lipon_hw.errors import InputError, InstrumentError
from lipon_hw.interfaces import Film
from lipon_hw.links import Link

STATUS_WRONG_MODE = b"E"
STATUS_BAD_CRC = b"F"
STATUS_TOO_LONG = b"G"

CHANNELS = 4
FILMS = 50
MATERIALS = 100
LAYERS = 1000
RELAYS = 8
NAME_CHARS = 16


# --- parameters: (command, field number, displayed decimals) ---------------------------------
@dataclass(frozen=True)
class Param:
    command: str
    number: int
    decimals: int

    def to_wire(self, value: float) -> int:
        return round(value * 10**self.decimals)

    def from_wire(self, raw: int) -> float:
        return raw / 10**self.decimals


P_TERM = Param("A2", 1, 0)
I_TERM = Param("A2", 2, 1)
D_TERM = Param("A2", 3, 1)  # decimals unverified
FILM_MATERIAL = Param("A2", 4, 0)
FILM_TOOLING = Param("A2", 6, 0)  # decimals unverified
RAMP1_POWER = Param("A3", 1, 1)
RAMP1_TIME = Param("A3", 2, 0)
SOAK1_TIME = Param("A3", 3, 0)
RAMP2_POWER = Param("A3", 4, 1)
RAMP2_TIME = Param("A3", 5, 0)
SOAK2_TIME = Param("A3", 6, 0)
IDLE_POWER = Param("A3", 7, 1)
IDLE_RAMP = Param("A3", 8, 0)
SHUTTER_DELAY = Param("A4", 1, 0)
CAPTURE = Param("A4", 2, 1)
LAYER_RATE = Param("D", 1, 2)
LAYER_FINAL = Param("D", 2, 3)  # kÅ
LAYER_FILM = Param("D", 5, 0)  # field number unverified
LAYER_MAX_POWER = Param("D", 6, 1)  # field number unverified
MATERIAL_NAME = 1
MATERIAL_DENSITY = Param("F", 2, 2)
MATERIAL_Z = Param("F", 3, 3)
CRYSTAL_TOOLING = Param("HA", 1, 0)
SOURCE_SHUTTER_RELAY = Param("HB", 3, 0)

#: field numbers that exist: A1-A5 and B from the manual (P1B §5.3.2-3); D, HA, HB assumed
FILM_FIELDS = {"A1": range(1, 2), "A2": range(1, 12), "A3": range(1, 12), "A4": range(1, 9),
               "A5": range(1, 17)}
SYSTEM_FIELDS = range(1, 14)
LAYER_FIELDS = range(1, 31)
SENSOR_FIELDS = range(1, 10)

# --- run states (V): manual P1B §5.3.22 --------------------------------------------------------
STOPPED, RAMP1, SOAK1, RAMP2, SOAK2, SOAK_HOLD = 0, 7, 8, 9, 10, 11
SHUTTER_DELAY_PHASE, DEPOSIT, RATE_RAMP, RATE_RAMP_DEPOSIT = 12, 13, 14, 15
IDLE_RAMP_PHASE, CRYSTAL_FAIL, STOP_LAYER, MANUAL_POWER = 22, 24, 25, 26
PHASE_NAMES = {
    0: "Stopped", 1: "Crystal Verify", 2: "Initialize Layer", 3: "Manual Start Layer",
    4: "Crystal Rotate", 5: "Pocket Rotate", 6: "PreCond", 7: "Ramp 1", 8: "Soak 1",
    9: "Ramp 2", 10: "Soak 2", 11: "Soak Hold", 12: "Shutter Delay", 13: "Deposit",
    14: "Rate Ramp", 15: "Rate Ramp Deposit", 16: "Timed Power", 17: "Rate Sample Hold",
    18: "Rate Sample", 19: "Crystal Switch", 20: "Feed Ramp", 21: "Feed Soak", 22: "Idle Ramp",
    23: "Start Next Layer", 24: "Crystal Fail", 25: "Stop Layer", 26: "Manual Power",
    33: "Crystal Fail, Halted",
}
PHASE_CATEGORIES = {
    STOPPED: "idle", RAMP1: "ramp", RAMP2: "ramp", SOAK1: "soak", SOAK2: "soak",
    SOAK_HOLD: "soak", SHUTTER_DELAY_PHASE: "shutter-delay", DEPOSIT: "deposit",
    RATE_RAMP: "deposit", RATE_RAMP_DEPOSIT: "deposit", IDLE_RAMP_PHASE: "done",
    STOP_LAYER: "done", CRYSTAL_FAIL: "crystal-fail", 33: "crystal-fail",
    MANUAL_POWER: "manual",
}


#: phase categories that show a layer was started
STARTED = ("ramp", "soak", "shutter-delay", "deposit", "crystal-fail")


@dataclass(frozen=True)
class RunState:
    phase: int
    elapsed_s: int
    process: int
    layer: int

    @property
    def name(self) -> str:
        return PHASE_NAMES.get(self.phase, f"phase {self.phase}")

    @property
    def category(self) -> str:
        """idle, ramp, soak, shutter-delay, deposit, done, crystal-fail, manual or other."""
        return PHASE_CATEGORIES.get(self.phase, "other")


# --- command text (pure) ------------------------------------------------------------------------
def _index_text(command: str, index: int | None) -> str:
    """A-groups put a space before the film number; B has none; the others append it."""
    if index is None:
        return command
    return f"{command} {index}" if command.startswith("A") else f"{command}{index}"


def get_command(command: str, index: int | None, numbers: list[int]) -> str:
    """`A2 1? 1 2 3`, `B? 3 4`, `D1? 1 2`, `HA1? 1`, `F1? 2`."""
    return f"{_index_text(command, index)}? " + " ".join(str(n) for n in numbers)


def set_command(command: str, index: int | None, values: dict[int, int | str]) -> str:
    """`A2 1 1,50 2,5 3,0`, `B 3,100 4,100`, `D1 1,100 2,1000`, `F1 2,893`."""
    pairs = " ".join(f"{number},{value}" for number, value in values.items())
    return f"{_index_text(command, index)} {pairs}"


def parse_pairs(text: str) -> dict[int, str]:
    """ValueError unless `text` is `number,value` pairs separated by spaces."""
    pairs = {}
    for item in text.split():
        number, sep, value = item.partition(",")
        if not sep or not number.isdigit():
            raise ValueError(f"{item!r} is not a number,value pair")
        pairs[int(number)] = value
    return pairs


def sqc_name(name: str) -> str:
    """A film or material name as the SQC-310 stores it: printable ASCII, 16 characters."""
    if not name.isascii() or not name.isprintable() or "!" in name or not name.strip():
        raise InputError(f"name {name!r} must be printable ASCII without '!'")
    return name.strip()[:NAME_CHARS]


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise InputError(f"{name} must be {low} to {high}, not {value!r}")


# --- driver ---------------------------------------------------------------------------------------
class SQC310(InficonInstrument):
    """ThicknessMonitor on one sensor, and the rate loop of one output, film and layer.

    `material` is the material slot `set_film` writes (default: the film number); on a real
    instrument pick a user slot so no built-in material is overwritten. `layer` must be the
    layer that "Start Layer" runs (the active process's current layer).
    """

    REFUSALS = {**REFUSALS,
                STATUS_WRONG_MODE: "refused because it is in the wrong mode for this command",
                STATUS_TOO_LONG: "refused because its reply would exceed 221 characters"}
    DAMAGED = {STATUS_BAD_CRC: "reported a CRC error in the command"}

    def __init__(self, name: str, link: Link, sensor: int = 1, output: int = 1, film: int = 1,
                 layer: int = 1, material: int | None = None):
        for key, value, high in (("sensor", sensor, CHANNELS), ("output", output, CHANNELS),
                                 ("film", film, FILMS), ("layer", layer, LAYERS),
                                 ("material", film if material is None else material, MATERIALS)):
            if not 1 <= int(value) <= high:
                raise InputError(f"{name}: {key} must be 1 to {high}, not {value!r}")
        super().__init__(name, link)
        self.sensor = int(sensor)
        self.output = int(output)
        self.film = int(film)
        self.layer = int(layer)
        self.material = int(film if material is None else material)
        self._relays_on: set[int] = set()

    def get_parameters(self, command: str, index: int | None, numbers: list[int]) -> dict[int, str]:
        """Read fields of a parameter group (A1..A5, B, D, HA, HB) as raw text."""
        def fields(data: str) -> dict[int, str]:
            pairs = parse_pairs(data)
            if set(pairs) != set(numbers):
                raise ValueError(f"{data!r} holds the fields {sorted(pairs)}")
            return pairs

        return self.query_as(get_command(command, index, numbers), fields,
                             f"the fields {numbers}")

    def set_parameters(self, command: str, index: int | None,
                       values: dict[Param, float]) -> None:
        """Write fields of one group, each scaled to the integer the instrument expects."""
        raw = {p.number: p.to_wire(v) for p, v in values.items() if p.command == command}
        if len(raw) != len(values):
            raise InputError(f"{self.name}: every field written with {command} must belong to it")
        self.query(set_command(command, index, raw))

    # --- Instrument ------------------------------------------------------------------
    def make_safe(self) -> None:
        """Stop the process (output 0; the controller closes the source shutter), then turn
        off the relays this driver turned on."""
        self.query("U1")
        for relay in sorted(self._relays_on):
            self.set_relay(relay, False)

    # --- ThicknessMonitor --------------------------------------------------------------
    def set_film(self, film: Film) -> None:
        """Material slot: name, density, Z; film: name, that material, tooling (whole %)."""
        name = sqc_name(film.name)
        _check_range("density_g_cm3", film.density_g_cm3, 0.5, 99.99)
        _check_range("z_ratio", film.z_ratio, 0.1, 9.999)
        _check_range("tooling_pct", film.tooling_pct, 10, 399)
        self.query(f"F{self.material} {MATERIAL_NAME},{name}")
        for param, value in ((MATERIAL_DENSITY, film.density_g_cm3), (MATERIAL_Z, film.z_ratio)):
            self.set_parameters("F", self.material, {param: value})
        self.query(set_command("A1", self.film, {1: name}))
        self.set_parameters("A2", self.film, {FILM_MATERIAL: self.material,
                                              FILM_TOOLING: film.tooling_pct})

    def rate_A_s(self) -> float:
        rate = self.query_number(f"L{self.sensor}")
        if rate == 0.0 and self.crystal_failed():
            raise InstrumentError(f"{self.name} has a failed crystal on sensor {self.sensor} "
                                  f"('PA{self.sensor}' reads 0 Hz), so its rate of 0 is no "
                                  "measurement")
        return rate

    def thickness_nm(self) -> float:
        """Thickness since the last zero (start of deposit or `zero()`), reported in kÅ."""
        return self.query_number(f"N{self.sensor}") * 100.0

    def frequency_Hz(self) -> float:
        return self.query_number(f"P{self.sensor}")

    def crystal_life_pct(self) -> float:
        return self.query_numbers(f"PA{self.sensor}", 3)[2]

    def crystal_failed(self) -> bool:
        return self.query_numbers(f"PA{self.sensor}", 3)[1] <= 0.0

    def zero(self) -> None:
        """`U32`, read back with `N{s}` before any resend (`zero_once`)."""
        self.zero_once("U32", f"N{self.sensor}")

    # --- deposition control --------------------------------------------------------------
    def set_rate_control(self, rate_A_s: float, final_thickness_nm: float, p_gain: float,
                         i_time_s: float, d_time_s: float, max_power_pct: float,
                         shutter_delay_s: float = 10.0, capture_pct: float = 5.0) -> None:
        """Write the film's PID and deposit controls and the layer's rate, end and power cap.

        With a shutter delay, the loop runs with the shutter closed until the rate has stayed
        within `capture_pct` of the setpoint for `shutter_delay_s`; 0 opens it at once.
        """
        _check_range("rate_A_s", rate_A_s, 0.01, 999.99)
        _check_range("final_thickness_nm", final_thickness_nm, 0, 99999.9)
        _check_range("p_gain", p_gain, 0, 9999)
        _check_range("i_time_s", i_time_s, 0, 999.9)
        _check_range("d_time_s", d_time_s, 0, 999.9)
        _check_range("max_power_pct", max_power_pct, 0.1, 100)
        _check_range("shutter_delay_s", shutter_delay_s, 0, 9999)
        _check_range("capture_pct", capture_pct, 0.1, 100)
        self.set_parameters("A2", self.film, {P_TERM: p_gain, I_TERM: i_time_s,
                                              D_TERM: d_time_s})
        self.set_parameters("A4", self.film, {SHUTTER_DELAY: shutter_delay_s,
                                              CAPTURE: capture_pct})
        self.set_parameters("D", self.layer, {LAYER_RATE: rate_A_s,
                                              LAYER_FINAL: final_thickness_nm / 100.0,
                                              LAYER_FILM: self.film,
                                              LAYER_MAX_POWER: max_power_pct})

    def set_preconditioning(self, ramp1_power_pct: float, ramp1_time_s: float,
                            soak1_time_s: float, ramp2_power_pct: float, ramp2_time_s: float,
                            soak2_time_s: float, idle_power_pct: float = 0.0,
                            idle_ramp_s: float = 0.0) -> None:
        """Ramp/soak power steps before control starts, and the power left after the layer."""
        for key, value in (("ramp1_power_pct", ramp1_power_pct),
                           ("ramp2_power_pct", ramp2_power_pct),
                           ("idle_power_pct", idle_power_pct)):
            _check_range(key, value, 0, 100)
        for key, value in (("ramp1_time_s", ramp1_time_s), ("soak1_time_s", soak1_time_s),
                           ("ramp2_time_s", ramp2_time_s), ("soak2_time_s", soak2_time_s),
                           ("idle_ramp_s", idle_ramp_s)):
            _check_range(key, value, 0, 99999)
        self.set_parameters("A3", self.film, {
            RAMP1_POWER: ramp1_power_pct, RAMP1_TIME: ramp1_time_s, SOAK1_TIME: soak1_time_s,
            RAMP2_POWER: ramp2_power_pct, RAMP2_TIME: ramp2_time_s, SOAK2_TIME: soak2_time_s,
            IDLE_POWER: idle_power_pct, IDLE_RAMP: idle_ramp_s})

    def start_layer(self) -> None:
        """`U2`, never sent twice blindly: a second start is refused while the layer runs
        ('E', wrong mode), or would restart one that ended. After a failed attempt `V?` is
        read back: a phase of a running layer (or Crystal Fail, which only a started layer
        enters) means the start took."""
        def started(link) -> bool:
            phase = int(self.ask(link, "V?", 4)[0])
            return PHASE_CATEGORIES.get(phase) in STARTED

        self.command_once("U2", started)

    def stop_layer(self) -> None:
        self.query("U3")

    def output_pct(self) -> float:
        return self.query_number(f"S? {self.output}")

    def run_state(self) -> RunState:
        """`V?`: phase, process elapsed time, process and layer (a 5th field, auto/manual
        control on newer firmware, is ignored)."""
        fields = self.query_numbers("V?", 4)
        return RunState(*(int(f) for f in fields[:4]))

    def phase(self) -> str:
        """idle, ramp, soak, shutter-delay, deposit, done, crystal-fail, manual or other."""
        return self.run_state().category

    def set_relay(self, relay: int, on: bool) -> None:
        """Set a relay remotely (`GE`); it stays locked to remote control until released."""
        number = self._relay(relay)
        self.query(f"GE{number} {1 if on else 2}")
        if on:
            self._relays_on.add(number)
        else:
            self._relays_on.discard(number)

    def release_relay(self, relay: int) -> None:
        """Unlock a relay back to the controller's logic; this also turns it off."""
        number = self._relay(relay)
        self.query(f"GE{number} 3")
        self._relays_on.discard(number)

    def _relay(self, relay: int) -> int:
        if not 1 <= int(relay) <= RELAYS:
            raise InputError(f"{self.name}: relay must be 1 to {RELAYS}, not {relay!r}")
        return int(relay)
