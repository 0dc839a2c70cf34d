"""Keithley 2450 SourceMeter on the wire (SCPI command set), wired to one simulated cell.

The source acts on the cell through its controls ("current", "voltage", "open"), in the
virtual time of `clock`. A current source drives the cell at its level until |V| reaches
the voltage limit; there the 2450 clamps the voltage (manual: "the instrument clamps the
source to keep the source within the set limits"), so the cell is held at ±limit and its
current tapers. It returns to the current level if the cell would draw more than it. A
voltage source whose cell would draw more than the current limit holds ±limit instead,
until the cell's voltage reaches the level. The emulator does not tick: it asks the cell
for the next crossing and switches there. A rising current under voltage control cannot be
predicted that way, so it is caught at the next command (assumption of this emulator).
That regulation is keithley2450_source.py; the readings keithley2450_measure.py, the
stored settings and ranges keithley2450_settings.py, the buffers keithley2450_buffer.py,
the error queue and status registers keithley2450_status.py, the parser
keithley2450_scpi.py; this module is the SCPI side.

Output off follows the off state of the present source function (manual, output-off
states): HIMPedance opens the relay (cell "open"); NORMal holds 0 V with a current limit of
10 % of the present current range and ZERO with the full range, both of which discharge
a cell; GUARd sources 0 A (the voltage clamp of that state is not modelled). The cell is
on the FRONt terminals: with REAR selected it is disconnected, and the output drives open
terminals (a voltage source reads its level and 0 A; a current source other than 0 A is
clamped at its voltage limit). Overvoltage protection (PROTn) clamps the source voltage
(`:SOUR:VOLT:PROT:TRIP?` reads 1 while it does).

Measurements are the cell's exact terminal values (no noise, so NPLC, filters, autozero
and remote sense are kept but change no value); with the relay open they read 0. A fixed
measure range that the value exceeds by more than 5 % reads 9.9E+37 (overflow); so does a
resistance or an OHM-unit reading at 0 A. The source element (SOUR) is the read-back (the
measured source value), or with `:SOUR:<f>:READ:BACK OFF` the programmed level. REL is the
time since the first reading stored in the buffer since it was last cleared. `:READ?` and
`:MEASure?` take `[:SENS]:COUNt` readings and return the last (manual).

Command summary covered (2450 Reference Manual 2450-901-01, SCPI command reference; long
or short forms in any case, numeric suffix 1 optional — another suffix is -114 —, several
units per line separated by `;`, each from the root, a common command after `;` with or
without a leading `:`; numeric parameters take MINimum/MAXimum/DEFault and their queries
answer them):
  common   *IDN? *RST *CLS *ESE[?] *ESR? *SRE[?] *STB? *OPC[?] *WAI *TRG *TST? *LANG[?]
  SYSTem   :ERRor[:NEXT]? :ERRor:COUNt? :ERRor:ALL? :CLEar :VERSion? :LFRequency?
           :BEEPer[:IMMediate]
  STATus   :PRESet :CLEar :OPERation|:QUEStionable [:EVENt]? :CONDition? :ENABle[?]
           :STANdard[:EVENt]? :STANdard:ENABle[?]
  OUTPut   [:STATe][?] [:CURRent|:VOLTage]:SMODe[?]
  SOURce   :FUNCtion[?] :<f>[:LEVel][?] :<f>:RANGe[?] :<f>:RANGe:AUTO[?] :CURRent:VLIMit[?]
           :VOLTage:ILIMit[?] and their :TRIPped? :<f>:DELay[?] :<f>:DELay:AUTO[?]
           :<f>:READ:BACK[?] :VOLTage:PROTection[?] :VOLTage:PROTection:TRIPped?
  SENSe    :FUNCtion[?] ("CURR", "VOLT", "RES") :<f>:RANGe[?] :<f>:RANGe:AUTO[?] :<f>:NPLCycles[?]
           :<f>:AZERo[?] :AZERo:ONCE :<f>:AVERage[?] :AVERage:COUNt[?] :AVERage:TCONtrol[?]
           :<f>:RSENse[?] :<f>:UNIT[?] :RESistance:OCOMpensated[?] :COUNt[?]
  ROUTe    :TERMinals FRONt|REAR[?] (the output goes off on a change)
  MEASure? :MEASure:<f>?  READ?  FETCh?  (buffer name and elements)
  TRACe    :CLEar :ACTual? :ACTual:STARt? :ACTual:END? :POINts[?] :FILL:MODE[?] :DATA?
           :MAKE :DELete :TRIGger :STATistics:AVERage?|MINimum?|MAXimum?|STDDev?|PK2Pk?
  INITiate[:IMMediate] (takes COUNt readings into defbuffer1)  ABORt  FORMat[:DATA] ASCii
Not emulated, so -113 like any unknown header: the trigger model (:TRIGger), sweeps and
lists (:SOURce:SWEep, :SOURce:LIST), CALCulate (math, limit tests), DISPlay, DIGital I/O,
scripts, TSP-Link, :STATus:...:MAP, :SYSTem:TIME/DATE, file and setup commands
(*SAV, *RCL, :MMEMory), and the binary data formats.

An unknown header, or any error, queues its entry and ends the message: the rest of the
line is discarded (manual, FAQ "What does -420 Query unterminated mean?": "When the
instrument detects an error in a command string, it discards all further commands in the
command string"). A query that errors, unknown or not, gets no reply: the 2450 has then
"nothing to say" (same FAQ: an "Undefined header" query followed by a read gives "Query
unterminated" on GPIB). Over a raw socket there is no read request for the instrument to
refuse, so the documented answer to an unknown query is the -113 entry in the error
queue, which a client reads with `:SYSTem:ERRor?` (as the driver does after every
message); the emulator follows the instrument and sends nothing.

Assumed, not read in the 2450 manual: *RST defaults of source function VOLT and current
limit 105 µA (read in the 2461/2470 manuals; the 21 V voltage limit and the NORMal off state
are the 2450's) and of measure function CURR; out-of-range values are -222 "Data out of
range" (also a source level outside a fixed source range, and a fixed range that would not
hold the level); an unknown buffer or buffer element -224 "Illegal parameter value";
`:FETC?` of an empty buffer -230 "Data corrupt or stale"; a line longer than 4096 bytes
-363 "Input buffer overrun"; `[:SENS]:FUNC?` answers `"VOLT:DC"`; *LANG? answers the
command set in use, SCPI (a set *LANG would take effect after a power cycle, which the
emulator never has); *TST? answers 0; :SYST:VERS? 1999.0; :SYST:LFR? 60; the event clock
counts from 1970 with the virtual time. Identity: `serial` (the station's `sim: serial:`),
by default eight digits derived from the instrument's name.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable

from lipon_hw.drivers.keithley2450 import (
    TERMINATOR,
    encode_lines,
    format_number,
)
from lipon_hw.errors import InputError
from lipon_hw.sim.emulator import DISCARD_ALL, Emulator
from lipon_hw.sim.emulators.keithley2450_buffer import (
    BufferCommands,
    ReadingBuffer,
)
from lipon_hw.sim.emulators.keithley2450_measure import FUNCTIONS, SENSE_FUNCTIONS, Measuring
from lipon_hw.sim.emulators.keithley2450_scpi import (
    UNDEFINED_HEADER,
    ScpiError,
    boolean,
    choose,
    command_only,
    header_pattern,
    number,
    one,
    query_named,
    query_only,
    split,
    with_suffix_one,
)
from lipon_hw.sim.emulators.keithley2450_settings import OVERRANGE, SettingCommands
from lipon_hw.sim.emulators.keithley2450_source import (  # noqa: F401 - current_range_A re-exported
    LEVEL_BOUNDS,
    LIMIT_BOUNDS,
    SourceRegulation,
    current_range_A,
)
from lipon_hw.sim.emulators.keithley2450_status import StatusModel

MAX_LINE = 4096
#: SCPI-standard messages of the errors an instrument fault puts in the queue
SCPI_FAULT_MESSAGES = {-300: "Device-specific error", -310: "System error",
                       -311: "Memory error", -313: "Calibration memory lost",
                       -315: "Configuration memory lost", -330: "Self-test failed",
                       -350: "Queue overflow", -200: "Execution error",
                       -240: "Hardware error", -241: "Hardware missing"}
OFF_MODES = {"NORMal": "NORM", "HIMPedance": "HIMP", "ZERO": "ZERO", "GUARd": "GUAR"}
LANGUAGES = {"SCPI": "SCPI", "TSP": "TSP", "SCPI2400": "SCPI2400"}
_SERIAL = re.compile(r"[A-Za-z0-9.-]{1,20}")


def serial_from_name(name: str) -> str:
    """Eight digits from the instrument's name: the same name gives the same serial."""
    return f"{zlib.crc32(name.encode()) % 10**8:08d}"


class Keithley2450Emulator(Measuring, SettingCommands, BufferCommands, StatusModel,
                           SourceRegulation, Emulator):
    model = "MODEL 2450"
    frame_window = MAX_LINE + 2  # a line longer than MAX_LINE is an input buffer overrun
    firmware = "1.0.0i"  # the manual's *IDN? example: KEITHLEY INSTRUMENTS INC.,MODEL 2450,…

    def __init__(self, name: str, cell, clock: Callable[[], float], off_mode: str = "NORMal",
                 serial: str | None = None):
        """`off_mode` is the power-up output-off state (factory: NORMal); `*RST` restores
        NORMal whatever it is. `serial`: the serial number *IDN? reports."""
        super().__init__(name)
        self.cell = cell
        self.clock = clock
        self._now = clock()
        try:
            power_up = choose(off_mode, OFF_MODES)
        except ScpiError:
            raise InputError(f"{name}: off_mode {off_mode!r} is not one of NORMal, HIMPedance, "
                             "ZERO, GUARd") from None
        if serial is None:
            serial = serial_from_name(name)
        if not isinstance(serial, str) or not _SERIAL.fullmatch(serial):
            raise InputError(f"{name}: serial {serial!r} must be a quoted string of 1–20 "
                             "letters, digits, '.' or '-', e.g. \"04412345\"")
        self.identity = f"KEITHLEY INSTRUMENTS INC.,{self.model},{serial},{self.firmware}"
        self._power_up_status()
        self._commands = [(header_pattern(spec), handler) for spec, handler in (
            ("*IDN", self._idn), ("*RST", self._rst), ("*TST", self._constant("0")),
            ("*TRG", self._no_op_command), ("*LANG", self._language),
            *self._status_commands(),
            (":SYSTem:VERSion", self._constant("1999.0")),
            (":SYSTem:LFRequency", self._constant("60")),
            (":SYSTem:BEEPer[:IMMediate]", self._beep),
            (":OUTPut[1][:STATe]", self._output),
            (":OUTPut[1]:SMODe", self._off_mode(("CURR", "VOLT"))),
            (":OUTPut[1]:CURRent:SMODe", self._off_mode(("CURR",))),
            (":OUTPut[1]:VOLTage:SMODe", self._off_mode(("VOLT",))),
            (":SOURce[1]:FUNCtion[:MODE]", self._source_function),
            (":SOURce[1]:CURRent[:LEVel][:IMMediate][:AMPLitude]", self._level("CURR")),
            (":SOURce[1]:VOLTage[:LEVel][:IMMediate][:AMPLitude]", self._level("VOLT")),
            (":SOURce[1]:CURRent:VLIMit[:LEVel]", self._limit("CURR")),
            (":SOURce[1]:VOLTage:ILIMit[:LEVel]", self._limit("VOLT")),
            (":SOURce[1]:CURRent:VLIMit[:LEVel]:TRIPped", self._tripped("CURR")),
            (":SOURce[1]:VOLTage:ILIMit[:LEVel]:TRIPped", self._tripped("VOLT")),
            *self._setting_commands(),
            ("[:SENSe[1]]:FUNCtion[:ON]", self._sense_function),
            ("[:SENSe[1]]:AZERo:ONCE", self._no_op_command),
            (":MEASure", self._measure(None)),
            *[(f":MEASure:{spec}", self._measure(f)) for spec, f in SENSE_FUNCTIONS.items()],
            (":READ", self._read), (":INITiate[:IMMediate]", self._initiate),
            (":ABORt", self._no_op_command),
            *self._buffer_commands(),
        )]
        self._known: dict = {}  # header in upper case → its handler, as met
        self.language = "SCPI"
        self._reset(power_up)

    @classmethod
    def from_cells(cls, name: str, cells: dict, clock: Callable[[], float],
                   **settings) -> Keithley2450Emulator:
        """The simulated lab's factory (`CELL_EMULATORS`): one channel, its cell on 1."""
        if set(cells) != {1}:
            raise InputError(f"{name}: a 2450 has one channel, so it takes one cell, on "
                             f"channel 1 (got channels {sorted(cells)})")
        return cls(name, cells[1], clock, **settings)

    @property
    def ports(self) -> dict[int, Keithley2450Emulator]:
        """Channel → the emulator serving it: the 2450 is its own single port."""
        return {1: self}

    def mount(self, cell) -> None:
        """Connect another cell to the terminals; it gets what the output applies now."""
        self._advance(self.clock())
        self.cell = cell
        self._apply()

    # --- instrument memory (for checkpoints; the cell keeps its own) -------------------
    def snapshot(self) -> dict:
        return {"function": self.function, "sense": self.sense, "level": dict(self.level),
                "limit": dict(self.limit), "off_mode": dict(self.off_mode),
                "output_on": self.output_on, "settings": dict(self.settings),
                "fixed_range": dict(self.fixed_range), "language": self.language,
                "buffers": {name: b.snapshot() for name, b in self.buffers.items()},
                **self.status_snapshot(), "regime": self.regime,
                "held": list(self._held), "switch_at": self._switch_at, "now": self._now}

    def restore(self, state: dict) -> None:
        """Instrument settings and regime; the cell is restored from its own snapshot."""
        self.function, self.sense = state["function"], state["sense"]
        self.level, self.limit = dict(state["level"]), dict(state["limit"])
        self.off_mode, self.output_on = dict(state["off_mode"]), state["output_on"]
        self._reset_settings()  # a checkpoint of lipon-hw 0.1.0 has only what follows
        self.settings |= state.get("settings", {})
        self.fixed_range |= state.get("fixed_range", {})
        self.language = state.get("language", "SCPI")
        self.buffers = {name: self._restored_buffer(b) for name, b in state["buffers"].items()}
        self.status_restore(state)
        self.regime, self._held = state["regime"], tuple(state["held"])
        self._switch_at, self._now = state["switch_at"], state["now"]

    def _restored_buffer(self, state: dict | None) -> ReadingBuffer:
        """A buffer from its snapshot, or from 0.1.0's (None, or its latest reading)."""
        if state is not None and "readings" in state:
            return ReadingBuffer.restored(state)
        buffer = ReadingBuffer()
        if state is not None:
            buffer.first_t = state["first_t"]
            buffer.add(state["t"], state["READ"], self.sense, state["SOUR"], self.function)
        return buffer

    # --- wire ---------------------------------------------------------------------------
    def _process(self, buffer: bytes) -> tuple[int, bytes]:
        end = buffer.find(TERMINATOR)
        if end < 0:
            if len(buffer) > MAX_LINE:
                self._push(-363, "Input buffer overrun")
                return DISCARD_ALL, b""
            return 0, b""
        with self.world_lock:
            self._advance(self.clock())
            return end + 1, self._line(buffer[:end].rstrip(b"\r"))

    def _line(self, raw: bytes) -> bytes:
        text = raw.decode("latin-1")
        if not (text.isascii() and text.isprintable()):
            self._push(-101, "Invalid character")
            return b""
        replies = []
        for unit in split(text, ";"):
            if not unit.strip():
                continue
            try:
                reply = self._execute(unit.strip())
            except ScpiError as error:
                self._push(error.code, error.message)
                break
            if reply is not None:
                replies.append(reply)
        return encode_lines([";".join(replies)]) if replies else b""

    def _execute(self, unit: str) -> str | None:
        header, _, rest = unit.partition(" ")
        query = header.endswith("?")
        header = header[:-1] if query else header
        if header.startswith(":*"):  # a common command written from the root
            header = header[1:]
        if not header.startswith((":", "*")):
            header = ":" + header
        args = [arg.strip() for arg in split(rest, ",")] if rest.strip() else []
        code = self.faults.error_code
        if code is not None and not header.upper().startswith((":SYST:ERR", ":SYSTEM:ERR")):
            raise ScpiError(code, SCPI_FAULT_MESSAGES.get(code, "Device-specific error"))
        key = header.upper()
        handler = self._known.get(key)
        if handler is None:
            handler = next((h for pattern, h in self._commands if pattern.fullmatch(header)),
                           None)
        if handler is not None:
            self._known[key] = handler  # only headers that exist: a bounded cache
            return handler(query, args)
        suffixed = with_suffix_one(header)
        if suffixed != header and any(p.fullmatch(suffixed) for p, _ in self._commands):
            raise ScpiError(-114, "Header suffix out of range")
        raise ScpiError(*UNDEFINED_HEADER)

    # --- common and system commands -----------------------------------------------------
    def _idn(self, query: bool, args: list[str]) -> str:
        query_only(query, args)
        return self.identity

    def _rst(self, query: bool, args: list[str]) -> None:
        command_only(query)
        self._reset("NORM")

    def _constant(self, answer: str):
        def handler(query: bool, args: list[str]) -> str:
            query_only(query, args)
            return answer

        return handler

    def _language(self, query: bool, args: list[str]) -> str | None:
        if query:
            query_only(query, args)
            return self.language
        choose(one(args), LANGUAGES)  # takes effect at the next power-up
        return None

    def _beep(self, query: bool, args: list[str]) -> None:
        """`:SYSTem:BEEPer frequency, duration`: 20 Hz–8 kHz, 1 ms–100 s (unverified)."""
        command_only(query)
        if len(args) != 2:
            raise ScpiError(-109 if len(args) < 2 else -108,
                            "Missing parameter" if len(args) < 2 else "Parameter not allowed")
        number(args[:1], 20.0, 8000.0, 1000.0)
        number(args[1:], 0.001, 100.0, 1.0)

    # --- output and source --------------------------------------------------------------
    def _output(self, query: bool, args: list[str]) -> str | None:
        if query:
            query_only(query, args)
            return "1" if self.output_on else "0"
        self.output_on = boolean(args)
        self._apply()
        return None

    def _off_mode(self, functions: tuple[str, ...]):
        def handler(query: bool, args: list[str]) -> str | None:
            if query:
                query_only(query, args)
                return self.off_mode[functions[0] if len(functions) == 1 else self.function]
            mode = choose(one(args), OFF_MODES)
            for function in functions:
                self.off_mode[function] = mode
            self._apply()
            return None

        return handler

    def _source_function(self, query: bool, args: list[str]) -> str | None:
        if query:
            query_only(query, args)
            return self.function
        self.function = choose(one(args), FUNCTIONS)
        self._apply()
        return None

    def _level(self, function: str):
        def handler(query: bool, args: list[str]) -> str | None:
            low, high, default = LEVEL_BOUNDS[function]
            if query:
                named = query_named(args, low, high, default)
                return format_number(self.level[function] if named is None else named)
            level = number(args, low, high, default)
            if not self.settings[f"SOUR:{function}:RANG:AUTO"] and \
                    abs(level) > OVERRANGE * self.fixed_range[f"SOUR:{function}"]:
                raise ScpiError(-222, "Data out of range")
            self.level[function] = level
            self._apply()
            return None

        return handler

    def _limit(self, function: str):
        """Limits are magnitudes; a negative value sets the same limit."""

        def handler(query: bool, args: list[str]) -> str | None:
            low, high, default = LIMIT_BOUNDS[function]
            if query:
                named = query_named(args, low, high, default)
                return format_number(self.limit[function] if named is None else named)
            self.limit[function] = number(args, low, high, default, signed=True)
            self._apply()
            return None

        return handler

    def _tripped(self, function: str):
        def handler(query: bool, args: list[str]) -> str:
            query_only(query, args)
            held = self.output_on and self.function == function and self.regime == "limit"
            if self.settings["ROUT:TERM"] != "FRON":
                held = self.output_on and self.function == function == "CURR" and \
                    self.level["CURR"] != 0
            return "1" if held else "0"

        return handler
