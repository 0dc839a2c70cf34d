"""One MethodSCRIPT channel's serial port (and the MultiEmStat4 made of them): online
commands, the hosts' sessions, script uploads and the script run against the clock."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

import numpy as np

from lipon_hw.drivers.methodscript import encode_error
from lipon_hw.errors import InputError
from lipon_hw.sim.emulator import Emulator, Session
from lipon_hw.sim.emulators.methodscript.bulk import BulkLoops
from lipon_hw.sim.emulators.methodscript.events import EventDriven
from lipon_hw.sim.emulators.methodscript.interpreter import (
    Interpreter,
    RunTimeFault,
    ScriptAborted,
)
from lipon_hw.sim.emulators.methodscript.loops import MeasurementLoops
from lipon_hw.sim.emulators.methodscript.online import OnlineCommands
from lipon_hw.sim.emulators.methodscript.parser import Program, ScriptError, parse_script

MAX_LINE = 1024  # longer input without a LF is line noise, dropped
MAX_SCRIPT_BYTES = 65536  # assumption: script memory; the driver's scripts are a few kB
PROGRAMS_KEPT = 8  # parsed scripts kept for their next upload
EIS_NOISE = 0.003  # assumption: 0.3 % of |Z| on each part of an EIS point, ~0.4 % in all
MAX_EIS_NOISE = 0.1


@dataclass
class ScriptSession(Session):
    """What one host has half done: a script being uploaded (its lines so far and
    their bytes), or a refused script being skipped to its empty line; and the output
    meant for it that it has not yet been sent."""

    receiving: list[str] | None = None
    received_bytes: int = 0
    loading: str = "e"  # the command uploading the script: "e" runs it, "l" only loads it
    swallowing: bool = False
    out: bytearray = field(default_factory=bytearray)  # output not yet sent to this host


class MethodScriptChannel(OnlineCommands, Interpreter, MeasurementLoops, EventDriven, BulkLoops,
                          Emulator):
    """One channel's serial port: a MethodSCRIPT session driving one cell."""

    model = "MultiEmStat4 LR"
    session_class = ScriptSession

    def __init__(self, name: str, cell, clock: Callable[[], float], device_type: str = "mes4lr",
                 rng: np.random.Generator | None = None, eis_noise: float = EIS_NOISE):
        super().__init__(name)
        self.cell = cell
        self.clock = clock
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.eis_noise = _eis_noise(name, eis_noise)
        self.device_type = device_type
        self.cell_is_on = False
        self.mode = 2
        self.pgstat_chan = 0
        self.e_set = 0.0
        self.i_set = 0.0
        self.autorange: dict[str, tuple[float, float]] = {}
        self.t = clock()
        self.timer0 = self.t
        self.vars: dict[str, list] = {}
        self._gen: Generator[float, None, None] | None = None
        self._wake = 0.0
        self._package: list | None = None
        self._listener: ScriptSession = self._own_session  # where output goes now
        self._owner: ScriptSession | None = None  # the host that started the script
        self._programs: dict[tuple, Program] = {}  # scripts parsed, most recent last
        self._uploads: dict[bytes, tuple] = {}  # a script's bytes: its lines, their size
        self._watches: dict = {}  # per loop: its _Watch, and its _RecordBody under ("bulk", id)
        self.event_driven = True  # False runs every loop sample by sample (for tests)
        self.bulk_loops = True  # False: the driver's record loops go through next_crossing
        #: measurement loops run, by how: "bulk" (RecordLoop), "event" (next_crossing),
        #: "sample" (the body at every sample), "stepped" (EIS and sweeps, point by point)
        self.loops_served: Counter[str] = Counter()
        self.scripts_started = 0  # scripts begun, the empty one not counted (tests count)

    @property
    def running(self) -> bool:
        return self._gen is not None

    @property
    def _out(self) -> bytearray:
        return self._listener.out

    @_out.setter
    def _out(self, value: bytearray) -> None:  # `self._out += ...` writes it back
        self._listener.out = value

    # --- wire -----------------------------------------------------------------------
    def handle(self, data: bytes, session: Session | None = None) -> bytes:
        self.session = session = session if session is not None else self._own_session
        self.check_plugged()  # fires scheduled faults (channel_fault below) first
        with self.world_lock:
            self._advance_for(session)  # the script runs on whether or not the host listens
        if self.faults.link_down:
            session.out.clear()
            return b""
        buffer = session.buffer
        buffer += data
        start = 0  # each line sliced once, never the rest of the buffer again
        script_from = None  # where a script upload began in this buffer
        while (end := buffer.find(b"\n", start)) >= 0:
            text = buffer[start:end].decode("latin-1").rstrip("\r")
            line_from, start = start, end + 1
            if session.receiving is not None and text.strip():
                self._receive(session, text)  # a script's line: nothing runs meanwhile
                continue
            if session.receiving is not None and script_from is not None:
                self._remember_upload(bytes(buffer[script_from:line_from]), session)
            with self.world_lock:
                self._listener = session  # the answer to a command goes to its sender
                self._line(text)
                self._advance_for(session)
            if session.receiving == [] and session.received_bytes == 0:  # an upload begins
                script_from = start
                start = self._known_upload(buffer, start, session)
        del buffer[:start]
        if len(buffer) > MAX_LINE:
            buffer.clear()
        out = bytes(session.out)
        session.out.clear()
        return self._apply_faults(out)

    def _advance_for(self, session: ScriptSession) -> None:
        """Run the script to now; what it prints goes to the host that started it while
        that host is connected (another host polling must not take its data), else to
        `session`."""
        owner = self._owner
        self._listener = owner if owner is not None and not owner.closed else session
        self._advance()

    def _known_upload(self, buffer: bytearray, start: int, session: ScriptSession) -> int:
        """A script upload that begins with the bytes of one received before (a cycling
        test sends the same few scripts again) takes those lines at once, as line by line
        it would; returns where the buffer goes on."""
        for raw, (lines, size) in self._uploads.items():
            if buffer.startswith(raw, start):
                session.receiving, session.received_bytes = list(lines), size
                return start + len(raw)
        return start

    def _remember_upload(self, raw: bytes, session: ScriptSession) -> None:
        """The bytes of a script's lines received whole in one buffer, and those lines."""
        if raw and session.received_bytes <= MAX_SCRIPT_BYTES and raw not in self._uploads:
            if len(self._uploads) >= PROGRAMS_KEPT:
                del self._uploads[next(iter(self._uploads))]
            self._uploads[raw] = (tuple(session.receiving), session.received_bytes)

    def _receive(self, session: ScriptSession, text: str) -> None:
        """One line of a script being uploaded; past MAX_SCRIPT_BYTES the script is
        refused (`e!0008`) and the rest of it skipped to its empty line."""
        session.received_bytes += len(text) + 1
        if session.received_bytes <= MAX_SCRIPT_BYTES:
            session.receiving.append(text)
            return
        session.receiving = None
        session.swallowing = True
        session.out += encode_error(0x0008, echo=session.loading)

    def _line(self, text: str) -> None:
        session = self.session
        if session.receiving is not None:
            if text.strip():
                self._receive(session, text)
            else:
                self._load(session.receiving, run=session.loading == "e")
            return
        if session.swallowing:
            session.swallowing = bool(text.strip())
            return
        command = text.strip()
        if not command:
            return
        if self.faults.error_code is not None:  # the channel refuses every command
            first = command[0]
            self._out += encode_error(self.faults.error_code,
                                      echo=first if first.isascii() and first.isprintable()
                                      else "")
            session.swallowing = command == "e"
            return
        if command in ("e", "l"):
            if self.running:
                self._emit(f"{command}!0006")
                session.swallowing = True
            else:
                session.receiving, session.received_bytes = [], 0
                session.loading = command
        elif command in self._online:
            self._online[command]()
        elif command[0] in "GS" and command[0] in self._online_with_argument:
            self._online_with_argument[command[0]](command[1:])
        else:  # the output is ASCII only: a byte outside it is not echoed
            first = command[0]
            echo = first if first.isascii() and first.isprintable() else ""
            self._out += encode_error(0x0003, echo=echo)

    def _emit(self, line: str) -> None:
        self._out += line.encode("ascii") + b"\n"

    def _load(self, lines: list[str], run: bool = True) -> None:
        """A script uploaded with `e` (`run`) or `l`: parsed, kept in RAM, and run if `e`."""
        echo = "e" if run else "l"
        self.session.receiving = None
        key = tuple(lines)
        program = self._programs.pop(key, None)  # a cycling test sends the same few scripts
        if program is None:
            try:
                program = parse_script(lines)
            except ScriptError as exc:
                self._out += encode_error(exc.code, exc.line, exc.column, echo=echo)
                return
            if len(self._programs) >= PROGRAMS_KEPT:
                del self._programs[next(iter(self._programs))]
                self._watches.clear()  # keyed by the loops' ids, which may be reused now
        self._programs[key] = program
        self.ram_script = list(lines)
        self._emit(echo)
        if run:
            self._start(program, lines)

    def _start(self, program: Program, lines: list[str]) -> None:
        """Run a parsed script from now; its output goes to the host that started it."""
        self._owner = self.session
        self.scripts_started += bool(lines)
        self.t = self._wake = self.clock()
        self.vars = {name: [0.0, "aa", None] for name in program.variables}
        self.timer0 = self.t
        self._gen = self._script(program)

    def _advance(self) -> None:
        now = self.clock()
        while self._gen is not None and self._wake <= now:
            self.t = max(self.t, self._wake)
            try:
                self._wake = next(self._gen)
            except StopIteration:
                self._gen = None

    def channel_fault(self, code: int, t: float) -> None:
        """Fault injection: the channel fails at time `t` (≤ now): a running script runs
        up to `t`, then ends as a run-time error does (`!XXXX: Line 0`, cell off)."""
        clock = self.clock
        self.clock = lambda: t  # the script (a bulk loop too) runs as far as `t` only
        try:
            self._advance()
        finally:
            self.clock = clock
        if self._gen is None:
            return
        self.t = max(self.t, t)
        try:
            self._wake = self._gen.throw(RunTimeFault(code, 0))
        except StopIteration:
            self._gen = None

    def _abort(self) -> None:
        if self._gen is None:
            self._out += encode_error(0x0006, echo="Z")
            return
        self._emit("Z")
        self.t = max(self.t, self.clock())
        try:
            self._wake = self._gen.throw(ScriptAborted())
        except StopIteration:
            self._gen = None


def _eis_noise(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or \
            not 0.0 <= value <= MAX_EIS_NOISE:
        raise InputError(f"{name}: eis_noise is a fraction of |Z| from 0 to {MAX_EIS_NOISE}, "
                         f"not {value!r}")
    return float(value)


class MethodScriptEmulator(MethodScriptChannel):
    """A MultiEmStat4 (EmStat4 LR with one cell): `cells` maps channel numbers, from 1,
    to cells; this object is the first channel's port, `ports` has every channel's."""

    def __init__(self, name: str, cells: dict, clock: Callable[[], float],
                 device_type: str | None = None, seed: int = 0, eis_noise: float = EIS_NOISE):
        """`seed` seeds each channel's own noise generator (with the channel number);
        `eis_noise` is the standard deviation of the noise on each part of an EIS point,
        as a fraction of |Z| (0 for the exact impedance)."""
        if not cells or min(cells) < 1:
            raise InputError(f"{name}: a MethodSCRIPT instrument needs cells on channels "
                             f"numbered from 1, got {sorted(cells)}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InputError(f"{name}: the noise seed must be a whole number from 0, "
                             f"not {seed!r}")
        kind = device_type or ("mes4lr" if len(cells) > 1 else "es4_lr")
        first = min(cells)

        def rng(channel: int) -> np.random.Generator:
            return np.random.default_rng([seed, channel])

        super().__init__(name, cells[first], clock, kind, rng(first), eis_noise)
        self.model = "MultiEmStat4 LR" if kind.startswith("mes4") else "EmStat4 LR"
        self.ports: dict[int, MethodScriptChannel] = {
            ch: self if ch == first else MethodScriptChannel(f"{name}/{ch}", cell, clock, kind,
                                                             rng(ch), eis_noise)
            for ch, cell in sorted(cells.items())}
