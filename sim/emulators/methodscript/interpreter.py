"""The MethodSCRIPT interpreter: statements, if-chains, plain loops and the commands
(one method per command, `_c_<name>`), as a mixin of the channel. A command that takes
time is a generator yielding the time it wakes at."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Generator, Sequence

from lipon_hw.drivers.methodscript import (
    CURRENT_RANGES_A,
    encode_error,
    encode_package,
    encode_variable,
    parse_literal,
)
from lipon_hw.sim.emulators.methodscript.parser import OPS, Block, Cmd, IfChain, Program

OVERLOAD_FACTOR = 3.0
GALVANOSTAT_MODE = 6


class LoopBroken(Exception):
    """`breakloop`: ends the innermost loop."""


class ScriptAborted(Exception):
    """`abort` or the host's `Z`: the script goes on at `on_finished:`."""


class RunTimeFault(Exception):
    """An error while the script runs: printed with its line, the cell switched off."""

    def __init__(self, code: int, line: int):
        super().__init__(f"!{code:04X}: Line {line}")
        self.code, self.line = code, line



class Interpreter:
    """Runs a Program's statements on the channel's state (vars, cell, clock)."""

    # --- script ---------------------------------------------------------------------
    def _script(self, program: Program) -> Generator[float, None, None]:
        try:
            yield from self._block(program.main)
        except ScriptAborted:
            pass
        except RunTimeFault as fault:
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
        except LoopBroken:
            pass
        except ScriptAborted:
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
            raise RunTimeFault(0x400C, st.line)
        self._package.append(name)

    def _c_pck_end(self, st):
        if self._package is None:
            raise RunTimeFault(0x400C, st.line)
        names, self._package = self._package, None
        self._out += encode_package([self._encoded(name) for name in names])

    def _c_breakloop(self, st):
        raise LoopBroken

    def _c_abort(self, st):
        raise ScriptAborted

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

