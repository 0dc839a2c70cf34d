"""MethodSCRIPT script text → a Program of commands, if-chains and loops; what the
instrument refuses when a script is loaded is refused here with the manual's codes."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from lipon_hw.drivers.methodscript import parse_literal

OPS: dict[str, Callable[[float, float], bool]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
    ">": operator.gt, ">=": operator.ge}
FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}
_NAME = re.compile(r"[a-z][a-z0-9_]*")
_VAR_TYPE = re.compile(r"[a-j][a-z]")
_OPTION = re.compile(r"([a-z_]+)\((.*)\)")

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
#: the options each command takes, and the form of each option's value. `multisine` (the
#: tones' harmonic numbers) is the lipon-hw extension of meas_loop_eis, not in the manual
OPTIONS = {"meas_loop_cv": {"nscans"}, "meas_loop_eis": {"multisine"}}
OPTION_FORMS = {"multisine": re.compile(r"\d{1,9}(?:,\d{1,9})*")}

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
    form = OPTION_FORMS.get(match[1])
    if form is not None and not form.fullmatch(match[2]):
        raise ScriptError(0x4004, number, columns[len(args) - 1] + len(match[1]) + 1)
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
