"""A PalmSens EmStat4 / MultiEmStat4 on the wire: a MethodSCRIPT interpreter on cells.

Each channel is its own serial port with its own MethodSCRIPT session, as on the
MultiEmStat4: `MethodScriptEmulator(name, cells, clock)` is the instrument and
serves its first channel itself; `ports[channel]` serves each channel (give those
to `sim://` links or `serve()`). A single cell makes it an EmStat4 LR.

Online commands: `t` (firmware, two lines), `e` + script + empty line (echo `e`,
output, empty line; a refused script answers `e!XXXX: Line L, Col C`), `Z`
(abort: `Z`, the loop's end marker, `on_finished:`, empty line; `Z!0006` if idle).
Any other command answers `<its first letter>!0003`; an empty line is ignored.

The script language is the subset the driver sends and PalmSens' loop examples use:
`var`, `store_var`, `copy_var`, `add/sub/mul/div_var`, `set_pgstat_chan/mode`,
`set_max_bandwidth`, `set_range`, `set_range_minmax`, `set_autoranging`,
`set_acquisition_frac_autoadjust`, `set_e`, `set_i`, `cell_on/off`,
`timer_start/get`, `wait`, `meas`, `meas_loop_ocp/ca/cp/eis/lsv/cv`, `loop`, `if`,
`elseif`, `else`, `breakloop`, `abort`, `pck_*`, `on_finished:`. Anything else is
refused with `!4001` when the script is loaded.

Virtual time: a script runs only as far as `clock()`; what it printed by then is the
reply to whatever the host sends next (the driver sends a bare LF to collect it).
A measurement loop whose body only tests its measured values, the timer and values
it does not itself change at the top level (the driver's limit and Δt/ΔV recording
blocks) is event-driven: it asks the cell's `next_crossing` for the first sample at
which a test can turn true and skips the samples before it, which changes nothing a
host can see. A measurement loop (OCP, chronopotentiometry, chronoamperometry) whose
body is exactly the driver's (limits on E or a current cutoff, then a Δt/ΔV/ΔI rule or
every sample) runs in bulk instead: the cell gives
its readings on the sampling grid a stretch at a time and `RecordLoop`
(sim/recording.py) applies the rule to them, the same bytes for far less work. Any
other body runs at every sample.

Assumptions, not read in the manual: a measurement loop's first sample is one
interval after it starts and its last at the run time; an EIS point takes three
periods plus 50 ms and carries Gaussian noise, 0.3 % of |Z| on each part (seeded per
channel; `eis_noise=0` gives the exact impedance); a run-time error prints
`!XXXX: Line L`, switches the cell off and ends the script without `on_finished:`;
`L`/`+` mark a plain loop's start and end once; a multi-scan CV prints no scan markers;
the current range reported is the smallest EmStat4 range at or above |I| within the
autoranging limits, with the overload bit set above 3× the highest range.

Hostile hosts (a choice: the reference does not say what a MultiEmStat4 does when its
host goes mid-upload, and a USB port may give it no sign). A script being uploaded
belongs to its connection (`ScriptSession`): a host that goes mid-upload takes it
along and the next host starts clean, as a terminal server starts a new session
per connection. A script already running is the instrument's and runs on, its
output going to whoever connects next (`Z` aborts it). A command byte outside ASCII
is answered `!0003` with no echo, since the output is ASCII only; a script over
64 KiB is refused with `e!0008` and skipped to its empty line.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field

import numpy as np

from lipon_hw.drivers.methodscript import (
    CURRENT_RANGES_A,
    TECHNIQUE_IDS,
    encode_error,
    encode_package,
    encode_variable,
    parse_literal,
)
from lipon_hw.errors import InputError
from lipon_hw.sim.emulator import Emulator, Session
from lipon_hw.sim.package_values import encode_values
from lipon_hw.sim.recording import RecordLoop

MAX_LINE = 1024  # longer input without a LF is line noise, dropped
MAX_SCRIPT_BYTES = 65536  # assumption: script memory; the driver's scripts are a few kB
EIS_PERIODS = 3
EIS_SETTLE_S = 0.05
OVERLOAD_FACTOR = 3.0
GALVANOSTAT_MODE = 6
EIS_MODE = 3
FIRMWARE_VERSION = "14"
FIRMWARE_BUILD = "Oct  1 2025 12:00:00"
PROGRAMS_KEPT = 8  # parsed scripts kept for their next upload
EIS_NOISE = 0.003  # assumption: 0.3 % of |Z| on each part of an EIS point, ~0.4 % in all
MAX_EIS_NOISE = 0.1

OPS: dict[str, Callable[[float, float], bool]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
    ">": operator.gt, ">=": operator.ge}
FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}
_NAME = re.compile(r"[a-z][a-z0-9_]*")
_VAR_TYPE = re.compile(r"[a-j][a-z]")
_OPTION = re.compile(r"([a-z_]+)\((.*)\)")
NOW, NEVER = -math.inf, math.inf

# argument kinds: decl(are), var(iable), val(ue: number or variable), lit(eral), vt (var type), op
_LOOP3 = ("var", "var", "val", "val", "val")
SPEC: dict[str, tuple[str, ...]] = {
    "var": ("decl",), "store_var": ("var", "lit", "vt"), "copy_var": ("var", "var"),
    "add_var": ("var", "val"), "sub_var": ("var", "val"), "mul_var": ("var", "val"),
    "div_var": ("var", "val"), "set_pgstat_chan": ("val",), "set_pgstat_mode": ("val",),
    "set_max_bandwidth": ("val",), "set_range": ("vt", "val"),
    "set_range_minmax": ("vt", "val", "val"), "set_autoranging": ("vt", "val", "val"),
    "set_acquisition_frac_autoadjust": ("val",), "set_e": ("val",), "set_i": ("val",),
    "cell_on": (), "cell_off": (), "timer_start": (), "timer_get": ("var",), "wait": ("val",),
    "meas": ("val", "var", "vt"), "pck_start": (), "pck_add": ("var",), "pck_end": (),
    "breakloop": (), "abort": (), "if": ("val", "op", "val"), "elseif": ("val", "op", "val"),
    "else": (), "endif": (), "loop": ("val", "op", "val"), "endloop": (),
    "meas_loop_ocp": ("var", "val", "val"), "meas_loop_ca": _LOOP3, "meas_loop_cp": _LOOP3,
    "meas_loop_lsv": ("var", "var", "val", "val", "val", "val"),
    "meas_loop_cv": ("var", "var", "val", "val", "val", "val", "val"),
    "meas_loop_eis": ("var", "var", "var", "val", "val", "val", "val", "val"),
}
OPTIONS = {"meas_loop_cv": {"nscans"}}


# --- the parsed script ------------------------------------------------------------------
@dataclass
class Cmd:
    line: int
    name: str
    args: list[str]


@dataclass
class Block:
    """`loop` or a measurement loop, with its body."""

    line: int
    name: str
    args: list[str]
    option: dict[str, str]
    body: list = field(default_factory=list)


@dataclass
class IfChain:
    line: int
    branches: list[tuple[tuple[str, str, str], list]]
    else_body: list | None = None


@dataclass
class Program:
    main: list
    finished: list
    variables: set[str]


class ScriptError(Exception):
    """A script refused at load time."""

    def __init__(self, code: int, line: int, column: int):
        super().__init__(f"!{code:04X}: Line {line}, Col {column}")
        self.code, self.line, self.column = code, line, column


def parse_script(lines: Sequence[str]) -> Program:
    """Script lines → Program; ScriptError with the manual's codes for what is refused."""
    main: list = []
    finished: list | None = None
    current = main
    stack: list[tuple[str, object, list]] = []  # (opener, node, the list it sits in)
    declared: set[str] = set()
    for number, raw in enumerate(lines, start=1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        if text == "on_finished:":
            if stack or finished is not None:
                raise ScriptError(0x400C, number, 1)
            finished = current = []
            continue
        name, *args = text.split()
        if name not in SPEC:
            raise ScriptError(0x4001, number, raw.find(name) + 1)
        columns = [m.start() + 1 for m in re.finditer(r"\S+", raw.split("#", 1)[0])][1:]
        option = _option(name, args, columns, number)
        _check_args(name, args, columns, raw, number, declared)
        opener = stack[-1][0] if stack else ""
        if name == "if":
            node = IfChain(number, [(tuple(args), [])])
            current.append(node)
            stack.append(("if", node, current))
            current = node.branches[0][1]
        elif name == "loop" or name.startswith("meas_loop_"):
            if name != "loop" and any(o.startswith("meas_loop_") for o, _, _ in stack):
                raise ScriptError(0x400B, number, 1)
            node = Block(number, name, args, option)
            current.append(node)
            stack.append((name, node, current))
            current = node.body
        elif name in ("elseif", "else"):
            if opener != "if":
                raise ScriptError(0x4012, number, 1)
            chain = stack[-1][1]
            if name == "elseif":
                chain.branches.append((tuple(args), []))
                current = chain.branches[-1][1]
            else:
                stack[-1] = ("else", chain, stack[-1][2])
                chain.else_body = current = []
        elif name in ("endif", "endloop"):
            if (opener in ("if", "else")) != (name == "endif") or not stack:
                raise ScriptError(0x4012, number, 1)
            current = stack.pop()[2]
        elif name == "breakloop" and not any(o not in ("if", "else") for o, _, _ in stack):
            raise ScriptError(0x400C, number, 1)
        elif name != "var":
            current.append(Cmd(number, name, args))
    if stack:
        raise ScriptError(0x4018, len(lines), 1)
    return Program(main, finished or [], declared)


def _option(name: str, args: list[str], columns: list[int], number: int) -> dict[str, str]:
    if not args or not (match := _OPTION.fullmatch(args[-1])):
        return {}
    if match[1] not in OPTIONS.get(name, ()):
        raise ScriptError(0x4008, number, columns[len(args) - 1])
    args.pop()
    return {match[1]: match[2]}


def _check_args(name: str, args: list[str], columns: list[int], raw: str, number: int,
                declared: set[str]) -> None:
    """Count and kind of each argument; `columns` are where they start (from 1)."""
    spec = SPEC[name]
    if len(args) > len(spec):
        raise ScriptError(0x420A, number, columns[len(spec)])
    if len(args) < len(spec):
        raise ScriptError(0x4004, number, len(raw.split("#", 1)[0].rstrip()) + 1)
    for column, kind, arg in zip(columns, spec, args, strict=False):
        code = _arg_error(kind, arg, declared)
        if code:
            raise ScriptError(code, number, column)
    if name == "var":
        declared.add(args[0])


def _arg_error(kind: str, arg: str, declared: set[str]) -> int:
    """The error code for an argument, 0 if it is fine."""
    if kind == "decl":
        return 0x402B if not _NAME.fullmatch(arg) else 0x4026 if arg in declared else 0
    if kind == "vt":
        return 0 if _VAR_TYPE.fullmatch(arg) else 0x0002
    if kind == "op":
        return 0 if arg in OPS else 0x4004
    if _NAME.fullmatch(arg):
        return 0x420B if kind == "lit" or arg not in declared else 0
    if kind == "var":
        return 0x4004
    try:
        parse_literal(arg)
    except ValueError:
        return 0x4004
    return 0


# --- run time ---------------------------------------------------------------------------
class _Break(Exception):
    pass


class _Abort(Exception):
    pass


class _Fault(Exception):
    def __init__(self, code: int, line: int):
        super().__init__(f"!{code:04X}: Line {line}")
        self.code, self.line = code, line


@dataclass
class _Watch:
    """What a measurement loop body tests: its if-chains and which names are probes
    (E, I measured by the loop, T the timer)."""

    chains: list
    probes: dict[str, str]


@dataclass
class ScriptSession(Session):
    """What one host has half done: a script being uploaded (its lines so far and
    their bytes), or a refused script being skipped to its empty line; and the output
    meant for it that it has not yet been sent."""

    receiving: list[str] | None = None
    received_bytes: int = 0
    swallowing: bool = False
    out: bytearray = field(default_factory=bytearray)  # output not yet sent to this host


class MethodScriptChannel(Emulator):
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
        self._watches: dict = {}  # per loop: its _Watch, and its _RecordBody under ("bulk", id)
        self.event_driven = True  # False runs every loop sample by sample (for tests)
        self.bulk_loops = True  # False: the driver's record loops go through next_crossing

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
        with self.world_lock:
            self._advance_for(session)  # the script runs on whether or not the host listens
        if self.faults.link_down:
            session.out.clear()
            return b""
        buffer = session.buffer
        buffer += data
        start = 0  # each line sliced once, never the rest of the buffer again
        while (end := buffer.find(b"\n", start)) >= 0:
            text = buffer[start:end].decode("latin-1").rstrip("\r")
            start = end + 1
            if session.receiving is not None and text.strip():
                self._receive(session, text)  # a script's line: nothing runs meanwhile
                continue
            with self.world_lock:
                self._listener = session  # the answer to a command goes to its sender
                self._line(text)
                self._advance_for(session)
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

    def _receive(self, session: ScriptSession, text: str) -> None:
        """One line of a script being uploaded; past MAX_SCRIPT_BYTES the script is
        refused (`e!0008`) and the rest of it skipped to its empty line."""
        session.received_bytes += len(text) + 1
        if session.received_bytes <= MAX_SCRIPT_BYTES:
            session.receiving.append(text)
            return
        session.receiving = None
        session.swallowing = True
        session.out += encode_error(0x0008, echo="e")

    def _line(self, text: str) -> None:
        session = self.session
        if session.receiving is not None:
            if text.strip():
                self._receive(session, text)
            else:
                self._load(session.receiving)
            return
        if session.swallowing:
            session.swallowing = bool(text.strip())
            return
        command = text.strip()
        if not command:
            return
        if command == "e":
            if self.running:
                self._emit("e!0006")
                session.swallowing = True
            else:
                session.receiving, session.received_bytes = [], 0
        elif command == "t":
            self._emit(f"t{self.device_type}{FIRMWARE_VERSION}#{FIRMWARE_BUILD}")
            self._emit("R*")
        elif command == "Z":
            self._abort()
        else:  # the output is ASCII only: a byte outside it is not echoed
            first = command[0]
            echo = first if first.isascii() and first.isprintable() else ""
            self._out += encode_error(0x0003, echo=echo)

    def _emit(self, line: str) -> None:
        self._out += line.encode("ascii") + b"\n"

    def _load(self, lines: list[str]) -> None:
        self.session.receiving = None
        self._owner = self.session
        key = tuple(lines)
        program = self._programs.pop(key, None)  # a cycling test sends the same few scripts
        if program is None:
            try:
                program = parse_script(lines)
            except ScriptError as exc:
                self._out += encode_error(exc.code, exc.line, exc.column, echo="e")
                return
            if len(self._programs) >= PROGRAMS_KEPT:
                del self._programs[next(iter(self._programs))]
                self._watches.clear()  # keyed by the loops' ids, which may be reused now
        self._programs[key] = program
        self._emit("e")
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

    def _abort(self) -> None:
        if self._gen is None:
            self._out += encode_error(0x0006, echo="Z")
            return
        self._emit("Z")
        self.t = max(self.t, self.clock())
        try:
            self._wake = self._gen.throw(_Abort())
        except StopIteration:
            self._gen = None

    # --- script ---------------------------------------------------------------------
    def _script(self, program: Program) -> Generator[float, None, None]:
        try:
            yield from self._block(program.main)
        except _Abort:
            pass
        except _Fault as fault:
            self._out += encode_error(fault.code, fault.line)
            self._switch_off()
            return
        yield from self._block(program.finished)
        self._emit("")

    def _block(self, statements: list) -> Generator[float, None, None]:
        for st in statements:
            if isinstance(st, Cmd):
                result = getattr(self, f"_c_{st.name}")(st, *st.args)
                if result is not None:
                    yield from result
            elif isinstance(st, IfChain):
                yield from self._if(st)
            elif st.name == "loop":
                yield from self._loop(st)
            else:
                yield from getattr(self, f"_m_{st.name[10:]}")(st)

    def _if(self, chain: IfChain) -> Generator[float, None, None]:
        for condition, body in chain.branches:
            if self._test(condition):
                yield from self._block(body)
                return
        if chain.else_body:
            yield from self._block(chain.else_body)

    def _loop(self, st: Block) -> Generator[float, None, None]:
        self._emit("L")
        try:
            while self._test(st.args):
                yield from self._block(st.body)
        except _Break:
            pass
        except _Abort:
            self._emit("+")
            raise
        self._emit("+")

    def _test(self, condition: Sequence[str]) -> bool:
        a, op, b = condition
        return OPS[op](self._value(a), self._value(b))

    def _value(self, token: str) -> float:
        entry = self.vars.get(token)
        return entry[0] if entry is not None else parse_literal(token)[0]

    def _set(self, name: str, value: float, var_type: str, meta=None) -> None:
        self.vars[name] = [value, var_type, meta]

    # --- commands (one method per command: _c_<name>) ----------------------------------
    def _c_store_var(self, st, name, literal, var_type):
        self._set(name, parse_literal(literal)[0], var_type)

    def _c_copy_var(self, st, source, target):
        value, var_type, _ = self.vars.get(source, [0.0, "aa", None])
        self._set(target, value, var_type)

    def _arith(self, name: str, other: str, fn: Callable[[float, float], float]) -> None:
        entry = self.vars.setdefault(name, [0.0, "aa", None])
        try:
            entry[0] = fn(entry[0], self._value(other))
        except ZeroDivisionError:
            entry[0] = math.nan

    def _c_add_var(self, st, name, other):
        self._arith(name, other, operator.add)

    def _c_sub_var(self, st, name, other):
        self._arith(name, other, operator.sub)

    def _c_mul_var(self, st, name, other):
        self._arith(name, other, operator.mul)

    def _c_div_var(self, st, name, other):
        self._arith(name, other, operator.truediv)

    def _c_set_pgstat_chan(self, st, chan):
        self.pgstat_chan = int(self._value(chan))

    def _c_set_pgstat_mode(self, st, mode):
        if self.pgstat_chan == 0:  # other pgstat channels have no cell here
            self.mode = int(self._value(mode))

    def _c_set_max_bandwidth(self, st, value):
        pass

    def _c_set_acquisition_frac_autoadjust(self, st, value):
        pass

    def _c_set_range(self, st, var_type, value):
        if var_type == "ba":
            self.autorange["ba"] = (self._value(value),) * 2

    def _c_set_range_minmax(self, st, var_type, low, high):
        pass

    def _c_set_autoranging(self, st, var_type, low, high):
        self.autorange[var_type] = (self._value(low), self._value(high))

    def _c_set_e(self, st, value):
        self.e_set = self._value(value)
        if self.cell_is_on and self.mode != GALVANOSTAT_MODE:
            self.cell.set_control(self.t, "voltage", self.e_set)

    def _c_set_i(self, st, value):
        self.i_set = self._value(value)
        if self.cell_is_on and self.mode == GALVANOSTAT_MODE:
            self.cell.set_control(self.t, "current", self.i_set)

    def _c_cell_on(self, st):
        if self.pgstat_chan != 0:
            return
        self.cell_is_on = True
        if self.mode == GALVANOSTAT_MODE:
            self.cell.set_control(self.t, "current", self.i_set)
        else:
            self.cell.set_control(self.t, "voltage", self.e_set)

    def _c_cell_off(self, st):
        if self.pgstat_chan == 0:
            self._switch_off()

    def _switch_off(self) -> None:
        self.cell_is_on = False
        self.cell.set_control(self.t, "open", 0.0)

    def _c_timer_start(self, st):
        self.timer0 = self.t

    def _c_timer_get(self, st, name):
        self._set(name, self.t - self.timer0, "eb")

    def _c_wait(self, st, seconds):
        yield self.t + max(0.0, self._value(seconds))

    def _c_meas(self, st, interval, name, var_type):
        yield self.t + max(0.0, self._value(interval))
        self._set(name, *self._measure(var_type))

    def _c_pck_start(self, st):
        self._package = []

    def _c_pck_add(self, st, name):
        if self._package is None:
            raise _Fault(0x400C, st.line)
        self._package.append(name)

    def _c_pck_end(self, st):
        if self._package is None:
            raise _Fault(0x400C, st.line)
        names, self._package = self._package, None
        self._out += encode_package([self._encoded(name) for name in names])

    def _c_breakloop(self, st):
        raise _Break

    def _c_abort(self, st):
        raise _Abort

    def _encoded(self, name: str) -> str:
        value, var_type, meta = self.vars.get(name, [math.nan, "aa", None])
        integer = isinstance(value, int) and not isinstance(value, bool)
        status, code = meta if meta is not None else (None, None)
        return encode_variable(var_type, value, integer, status, code)

    def _measure(self, var_type: str) -> tuple[float, str, tuple | None]:
        if var_type in ("ba", "db"):
            current = self.cell.current_A(self.t)
            return current, var_type, self._range_meta(current)
        return self.cell.voltage_V(self.t), var_type, None

    def _range_meta(self, current: float) -> tuple[int, int]:
        """(status, EmStat4 range code): the smallest range at or above |I| that the
        autoranging limits allow."""
        low, high = self.autorange.get("ba", (1e-9, 10e-3))
        allowed = [(code, r) for code, r in CURRENT_RANGES_A.items()
                   if low * 0.999 <= r <= high * 1.001] or [(0x18, 10e-3)]
        for code, nominal in allowed:
            if abs(current) <= nominal:
                return 0, code
        code, nominal = allowed[-1]
        return (0x2 if abs(current) > OVERLOAD_FACTOR * nominal else 0), code

    # --- measurement loops (one generator per technique: _m_<name>) ----------------------
    def _need(self, condition: bool, code: int, st: Block) -> None:
        if not condition:
            raise _Fault(code, st.line)

    def _m_ocp(self, st: Block):
        self._need(not self.cell_is_on, 0x0014, st)
        yield from self._sampled(st, "ocp", None, st.args[1], st.args[2])

    def _m_ca(self, st: Block):
        self._need(self.cell_is_on, 0x4027, st)
        self._need(self.mode != GALVANOSTAT_MODE, 0x0023, st)
        self.e_set = self._value(st.args[2])
        self.cell.set_control(self.t, "voltage", self.e_set)
        yield from self._sampled(st, "ca", st.args[1], st.args[3], st.args[4])

    def _m_cp(self, st: Block):
        self._need(self.cell_is_on, 0x4027, st)
        self._need(self.mode == GALVANOSTAT_MODE, 0x0023, st)
        self.i_set = self._value(st.args[2])
        self.cell.set_control(self.t, "current", self.i_set)
        yield from self._sampled(st, "cp", st.args[1], st.args[3], st.args[4])

    def _sampled(self, st: Block, technique: str, i_name: str | None, interval: str,
                 run_time: str):
        """A loop sampling every `interval` for `run_time`: event-driven when it can be."""
        dt, span = self._value(interval), self._value(run_time)
        self._need(dt > 0, 0x4205, st)
        n = int(span / dt + 1e-9)
        self._need(n >= 1, 0x4029, st)
        e_name = st.args[0]
        e_type = "da" if technique == "ca" else "ab"
        watch = self._watch(st, e_name, i_name) if self.event_driven else None
        recorded = self._recorded_body(st, e_name, i_name) \
            if self.event_driven and self.bulk_loops else None
        self._emit(f"M{TECHNIQUE_IDS[technique]:04X}")
        t0, k = self.t, 0
        try:
            if recorded is not None:
                yield from self._bulk(recorded, e_name, i_name, e_type, t0, dt, n)
            while recorded is None:
                k = k + 1 if watch is None else self._next_sample(watch, t0, dt, k)
                if k > n:
                    yield t0 + n * dt
                    break
                yield t0 + k * dt
                self._set(e_name, self.cell.voltage_V(self.t), e_type)
                if i_name is not None:
                    self._set(i_name, *self._measure("ba"))
                try:
                    yield from self._block(st.body)
                except _Break:
                    break
        except _Abort:
            self._emit("*")
            raise
        self._emit("*")

    def _m_eis(self, st: Block):
        f_name, re_name, im_name, amplitude, f_start, f_end, points, dc = st.args
        self._need(self.cell_is_on, 0x4027, st)
        self._need(self.mode == EIS_MODE, 0x0023, st)
        count = int(self._value(points))
        self._need(count >= 1 and self._value(amplitude) > 0, 0x4205, st)
        first, last = self._value(f_start), self._value(f_end)
        self._need(first > 0 and last > 0, 0x0011, st)
        self.e_set = self._value(dc)
        self.cell.set_control(self.t, "voltage", self.e_set)
        ratio = (last / first) ** (1 / (count - 1)) if count > 1 else 1.0

        def point(k: int) -> Generator[float, None, None]:
            f = first * ratio**k
            yield self.t + EIS_PERIODS / f + EIS_SETTLE_S
            z = self.cell.impedance_ohm(self.t, f)
            if self.eis_noise:  # Gaussian on each part, a fraction of |Z| (PHYSICS.md §6)
                re_noise, im_noise = self.rng.normal(0.0, self.eis_noise * abs(z), 2)
                z += complex(re_noise, im_noise)
            self._set(f_name, f, "dc")
            self._set(re_name, z.real, "cc")
            self._set(im_name, z.imag, "cd")

        yield from self._stepped(st, "eis", (point(k) for k in range(count)))

    def _m_lsv(self, st: Block):
        begin, end, step, rate = (self._value(a) for a in st.args[2:6])
        yield from self._sweep(st, "lsv", [(begin, end)], step, rate)

    def _m_cv(self, st: Block):
        begin, vertex1, vertex2, step, rate = (self._value(a) for a in st.args[2:7])
        scans = int(parse_literal(st.option.get("nscans", "1i").rstrip("i") + "i")[0])
        legs = [(begin, vertex1), (vertex1, vertex2), (vertex2, begin)] * scans
        yield from self._sweep(st, "cv", legs, step, rate)

    def _sweep(self, st: Block, technique: str, legs, step: float, rate: float):
        self._need(self.cell_is_on, 0x4027, st)
        self._need(self.mode != GALVANOSTAT_MODE, 0x0023, st)
        self._need(step > 0 and rate > 0, 0x4205, st)
        e_name, i_name = st.args[0], st.args[1]
        potentials = _staircase(legs, step)

        def point(k: int) -> Generator[float, None, None]:
            self.e_set = potentials[k]
            self.cell.set_control(self.t, "voltage", self.e_set)
            yield self.t + step / rate
            self._set(e_name, self.e_set, "da")
            self._set(i_name, *self._measure("ba"))

        yield from self._stepped(st, technique, (point(k) for k in range(len(potentials))))

    def _stepped(self, st: Block, technique: str, points):
        """A loop whose samples are given by `points`, each a generator taking its time."""
        self._emit(f"M{TECHNIQUE_IDS[technique]:04X}")
        try:
            for point in points:
                yield from point
                try:
                    yield from self._block(st.body)
                except _Break:
                    break
        except _Abort:
            self._emit("*")
            raise
        self._emit("*")

    # --- loops run in bulk ----------------------------------------------------------------
    def _recorded_body(self, st: Block, e_name: str, i_name: str | None) -> _RecordBody | None:
        """The body as a record rule RecordLoop can run, if it is one and the cell reads
        on a grid."""
        if not hasattr(self.cell, "readings_on_grid"):
            return None
        key = ("bulk", id(st))
        if key not in self._watches:
            self._watches[key] = _record_body(st.body, e_name, i_name)
        return self._watches[key]

    def _bulk(self, body: _RecordBody, e_name: str, i_name: str | None, e_type: str,
              t0: float, dt: float, n: int) -> Generator[float, None, None]:
        """Run a recognised loop with RecordLoop: at each wake, every sample up to the
        clock, the packages of those sent, and the variables as the body leaves them."""
        value = self._value
        steps = {kind: (var, value(token)) for kind, var, token in body.rule}
        start = {kind: value(var) for kind, (var, _) in steps.items()}
        loop = RecordLoop(
            self.cell, t0, dt, n, self.timer0,
            [(op, (value(level[0]), value(level[1])) if op == "in" else value(level), reason)
             for op, level, reason in body.limits],
            steps["t"][1] if "t" in steps else None, steps["eh"][1] if "eh" in steps else None,
            start.get("t", 0.0), start.get("eh", 0.0), start.get("el", 0.0),
            every_point=body.every_point, dI=steps["ih"][1] if "ih" in steps else None,
            ih=start.get("ih", 0.0), il=start.get("il", 0.0))
        fields = {body.timer: "eb{0}", e_name: e_type + "{1}", i_name: "{2}"}
        templates = {reason: "P" + ";".join([fields[x] for x in names]) + "\n"
                     for reason, names in [(None, body.names), *body.limit_names.items()]}
        currents: dict[float, str] = {}  # a current's field, with its range metadata
        metas: dict[float, tuple] = {}  # a current's range metadata

        def samples_by(now: float) -> int:
            """How many samples are due by `now` (t0 + k·dt ≤ now, at most n)."""
            k = max(0, int((now - t0) / dt))
            while k < n and t0 + (k + 1) * dt <= now:
                k += 1
            while k > 0 and t0 + k * dt > now:
                k -= 1
            return min(k, n)

        recorded = False
        try:
            while loop.end is None:
                # nothing is sent before the next sample the rules may send: sleep till then
                yield t0 + loop.next_sample() * dt
                sent = loop.run_to(max(loop.k + 1, samples_by(self.clock())))
                recorded = self._send_bulk(sent, templates, currents, metas) or recorded
                self.t = t0 + loop.k * dt
        except _Abort:  # the variables as sampling every point would have left them
            loop.run_to(samples_by(self.t))
            raise
        finally:
            self._bulk_variables(loop, body, steps, e_name, i_name, e_type, metas, recorded)

    def _send_bulk(self, sent, templates, currents, metas) -> bool:
        """The packages of the samples sent; True if one of them was sent by the rule."""
        if sent:
            values = encode_values([x[0] for x in sent] + [x[1] for x in sent])
            out = []
            for (_, _, i, reason), t_field, e_field in zip(sent, values[:len(sent)],
                                                           values[len(sent):], strict=True):
                i_field = currents.get(i)
                if i_field is None:
                    meta = metas[i] = metas.get(i) or self._range_meta(i)
                    i_field = currents[i] = encode_variable("ba", i, False, *meta)
                out.append(templates[reason].format(t_field, e_field, i_field))
            self._out += "".join(out).encode("ascii")
        return any(reason is None for *_, reason in sent)

    def _bulk_variables(self, loop: RecordLoop, body: _RecordBody, steps: dict, e_name: str,
                        i_name: str | None, e_type: str, metas: dict, recorded: bool) -> None:
        """The variables as the body leaves them after the last sample measured."""
        if loop.last is None:
            return
        t, e, i = loop.last
        self._set(body.timer, t, "eb")
        self._set(e_name, e, e_type)
        if i_name is not None:
            self._set(i_name, i, "ba", metas.get(i) or self._range_meta(i))
        if recorded:  # copy_var then add_var/sub_var: the source's type, no metadata
            thresholds = {"t": (loop.tn, "eb"), "eh": (loop.eh, e_type),
                          "el": (loop.el, e_type), "ih": (loop.ih, "ba"),
                          "il": (loop.il, "ba")}
            for kind, (var, _) in steps.items():
                self._set(var, *thresholds[kind])

    # --- event-driven sampling --------------------------------------------------------
    def _watch(self, st: Block, e_name: str, i_name: str | None) -> _Watch | None:
        """The body's tests if it only tests (see the module docstring), else None."""
        if id(st) not in self._watches:
            self._watches[id(st)] = _analyse(st.body, e_name, i_name)
        return self._watches[id(st)]

    def _next_sample(self, watch: _Watch, t0: float, dt: float, k: int) -> int:
        """The first sample after k at which one of the body's tests may turn true."""
        bound = self._earliest(watch)
        if bound <= self.t:
            return k + 1
        if bound == NEVER:
            return 1 << 62
        return max(k + 1, math.ceil((bound - t0) / dt - 1e-9))

    def _earliest(self, watch: _Watch) -> float:
        t = self.t
        values = {"E": self.cell.voltage_V(t), "I": self.cell.current_A(t), "T": t - self.timer0}
        bounds: dict[tuple, object] = {}
        window = {"lo": [], "hi": [], "imin": []}
        for condition in _conditions(watch.chains):
            bounds[condition] = self._condition_bound(condition, watch.probes, values, window)
        crossing = NEVER
        if any(window.values()):
            found = self.cell.next_crossing(t, max(window["lo"], default=None),
                                            min(window["hi"], default=None),
                                            max(window["imin"], default=None))
            crossing = NEVER if found is None else found
        resolved = {c: crossing if b == "cell" else b for c, b in bounds.items()}
        return min((_chain_bound(chain, resolved) for chain in watch.chains), default=NEVER)

    def _condition_bound(self, condition, probes, values, window):
        """NOW if true now, NEVER if it cannot turn true, a time, or "cell" (the cell's
        crossing of the window collected in `window`)."""
        a, op, b = condition
        if a not in probes and b in probes:
            a, op, b = b, FLIPPED[op], a
        if a not in probes:
            return NOW if OPS[op](self._value(a), self._value(b)) else NEVER
        if b in probes or op in ("==", "!="):
            return NOW
        kind, x = probes[a], self._value(b)
        if OPS[op](values[kind], x):
            return NOW
        rising = op in (">", ">=")
        if kind == "T":
            return self.timer0 + x if rising else NEVER
        if kind == "E":
            window["hi" if rising else "lo"].append(x)
            return "cell"
        if (not rising and x > 0) or (rising and x < 0):  # |I| has to fall to |x|
            window["imin"].append(abs(x))
            return "cell"
        return NOW


@dataclass(frozen=True)
class _RecordBody:
    """A loop body as the driver writes it: `timer_get`, limits that send a package and
    break (on E, or a current cutoff: `if i < a` holding `if i > b`), then a Δt/ΔV/ΔI
    rule (an if-chain whose branches all send and move their thresholds: `copy_var` +
    `add_var`/`sub_var`), every sample sent, or nothing more."""

    timer: str
    # (">=" | "<=", level, reason) on E, ("in", (b, a), "i_min") on I, in body order
    limits: tuple[tuple[str, object, str], ...]
    limit_names: dict  # reason → the names its package sends
    names: tuple[str, ...]  # what the rule sends
    rule: tuple[tuple[str, str, str], ...]  # ("t" | "eh" | "el" | "ih" | "il", var, step)
    every_point: bool


def _record_body(body: list, e_name: str, i_name: str | None) -> _RecordBody | None:
    if not body or not _is_cmd(body[0], "timer_get"):
        return None
    timer = body[0].args[0]
    probes = {timer, e_name, i_name} - {None}
    if len(probes) != (3 if i_name else 2):
        return None
    limits, limit_names, k = [], {}, 1
    while k < len(body) and isinstance(body[k], IfChain) and _single(body[k]) is not None:
        limit = _limit(_single(body[k]), e_name, i_name)
        if limit is None:  # not a limit: a one-branch rule (Δt alone), or nothing known
            break
        op, level, reason, names = limit
        levels = level if op == "in" else (level,)
        if any(x in probes for x in levels) or reason in limit_names \
                or not set(names) <= probes:
            return None
        limits.append((op, level, reason))
        limit_names[reason] = names
        k += 1
    rest = body[k:]
    names = _package_names(rest)
    if names is not None or not rest:
        every = names is not None
        if every and not set(names) <= probes:
            return None
        return _RecordBody(timer, tuple(limits), limit_names, names or (), (), every)
    if len(rest) != 1 or not isinstance(rest[0], IfChain) or rest[0].else_body is not None:
        return None
    rule = _rule(rest[0], timer, e_name, i_name, probes)
    if rule is None:
        return None
    return _RecordBody(timer, tuple(limits), limit_names, rule[0], rule[1], False)


def _limit(branch, e_name: str, i_name: str | None):
    """(op, level, reason, names sent) of a limit's if (its one branch), else None: on E,
    `if e >= a` / `if e <= a` sending a package and breaking; on I, a cutoff `if i < a`
    holding only `if i > b` (or the other way round) that does so."""
    (a, op, level), inner = branch
    if a == e_name and op in (">=", "<="):
        reason = "v_max" if op == ">=" else "v_min"
    elif a == i_name and i_name is not None and op in ("<", ">") and len(inner) == 1 and \
            isinstance(inner[0], IfChain) and _single(inner[0]) is not None:
        (a2, op2, level2), inner = _single(inner[0])
        if a2 != i_name or {op, op2} != {"<", ">"}:
            return None
        op, level, reason = "in", (level, level2) if op == ">" else (level2, level), "i_min"
    else:
        return None
    names = _package_names(inner[:-1]) if inner and _is_cmd(inner[-1], "breakloop") \
        else None
    return None if names is None else (op, level, reason, names)


def _rule(chain: IfChain, timer: str, e_name: str, i_name: str | None, probes: set):
    """(names sent, ((kind, threshold var, step), …)) of a Δt/ΔV/ΔI if-chain, else None."""
    shapes = {tuple((c.name, *c.args) if isinstance(c, Cmd) else None for c in body)
              for _, body in chain.branches}
    first = chain.branches[0][1]
    if len(shapes) != 1 or None in next(iter(shapes)):
        return None
    end = next((n for n, c in enumerate(first) if c.name == "pck_end"), None)
    names = _package_names(first[:end + 1]) if end is not None else None
    updates = first[end + 1:] if names is not None else []
    if names is None or not set(names) <= probes or len(updates) % 2:
        return None
    moves = {}  # threshold var → (source, command, step)
    for copy, step in zip(updates[::2], updates[1::2], strict=True):
        if copy.name != "copy_var" or step.name not in ("add_var", "sub_var") or \
                step.args[0] != copy.args[1] or copy.args[1] in moves:
            return None
        moves[copy.args[1]] = (copy.args[0], step.name, step.args[1])
    wanted = {(timer, ">=", "add_var"): "t", (e_name, ">=", "add_var"): "eh",
              (e_name, "<=", "sub_var"): "el"}
    if i_name is not None:
        wanted.update({(i_name, ">=", "add_var"): "ih", (i_name, "<=", "sub_var"): "il"})
    rule = {}
    for a, op, var in (condition for condition, _ in chain.branches):
        source, command, step = moves.get(var, (None, None, None))
        kind = wanted.get((a, op, command)) if source == a else None
        if kind is None or kind in rule or var in probes or not _is_literal(step):
            return None
        rule[kind] = (kind, var, step)
    for high, low in (("eh", "el"), ("ih", "il")):
        if (high in rule) != (low in rule) or (high in rule and rule[high][2] != rule[low][2]):
            return None
    if len(rule) != len(moves):
        return None
    return names, tuple(rule.values())


def _is_literal(token: str) -> bool:
    try:
        parse_literal(token)
    except ValueError:
        return False
    return True


def _is_cmd(st, name: str) -> bool:
    return isinstance(st, Cmd) and st.name == name


def _single(chain: IfChain):
    """The one branch of an if without elseif or else, or None."""
    return chain.branches[0] if len(chain.branches) == 1 and chain.else_body is None else None


def _package_names(statements: list) -> tuple[str, ...] | None:
    """The names a `pck_start`, `pck_add`…, `pck_end` sequence sends, else None."""
    if len(statements) < 2 or not _is_cmd(statements[0], "pck_start") or \
            not _is_cmd(statements[-1], "pck_end") or \
            not all(_is_cmd(c, "pck_add") for c in statements[1:-1]):
        return None
    return tuple(c.args[0] for c in statements[1:-1])


def _eis_noise(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or \
            not 0.0 <= value <= MAX_EIS_NOISE:
        raise InputError(f"{name}: eis_noise is a fraction of |Z| from 0 to {MAX_EIS_NOISE}, "
                         f"not {value!r}")
    return float(value)


def _staircase(legs, step: float) -> list[float]:
    potentials: list[float] = []
    for start, end in legs:
        steps = max(1, round(abs(end - start) / step))
        first = 0 if not potentials else 1
        potentials += [start + (end - start) * k / steps for k in range(first, steps + 1)]
    return potentials


def _analyse(body: list, e_name: str, i_name: str | None) -> _Watch | None:
    timers: set[str] = set()
    chains = []
    for st in body:
        if isinstance(st, Cmd) and st.name == "timer_get":
            timers.add(st.args[0])
        elif isinstance(st, IfChain) and st.else_body is None:
            chains.append(_chain(st))
        else:
            return None
    probes = {name: "T" for name in timers}
    probes[e_name] = "E"
    if i_name is not None:
        probes[i_name] = "I"
    return _Watch(chains, probes)


def _chain(chain: IfChain) -> list:
    """[(condition, nested chains or None)]: nested when a branch only holds if-chains,
    so that it acts only when one of them does."""
    out = []
    for condition, body in chain.branches:
        nested = None
        if body and all(isinstance(s, IfChain) and s.else_body is None for s in body):
            nested = [_chain(s) for s in body]
        out.append((condition, nested))
    return out


def _conditions(chains: list):
    for chain in chains:
        for condition, nested in chain:
            yield condition
            if nested:
                yield from _conditions(nested)


def _chain_bound(chain: list, bounds: dict) -> float:
    best = NEVER
    for condition, nested in chain:
        bound = bounds[condition]
        if nested is not None and bound != NEVER:
            bound = max(bound, min((_chain_bound(c, bounds) for c in nested), default=NEVER))
        best = min(best, bound)
    return best


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
