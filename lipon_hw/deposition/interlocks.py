"""Interlock conditions written as small expressions over recorded quantities.

    when: "reflected_power_W > 0.1 * forward_power_W for 5 s"
    then: hold            # or abort, alarm

Names are recorded quantities, qualified (`rf.reflected_power_W`) or, when only
one instrument records it, bare (`reflected_power_W`). Only arithmetic,
comparisons, `and`/`or`/`not`, numbers and names are allowed: the expression is
parsed with `ast` and evaluated by walking that tree, never by `eval`.

Size is bounded before any parsing cost is paid: at most MAX_CHARS characters and
MAX_NODES syntax nodes (a 20,000-term expression is refused in microseconds). Constants
are finite numbers: a string, `True` or `1e999` (inf) is refused, since a comparison
with one would fail, or never trip, in the middle of a run. A hold (`for 5 s`) is at
most MAX_HOLD_S.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

_FOR = re.compile(r"^(?P<expr>.*?)\s+for\s+(?P<n>[0-9]{1,6}(?:\.[0-9]{1,6})?)\s*"
                  r"(?P<unit>s|min)\s*$")
MAX_CHARS = 500  # a condition a person can read on one screen line or two
MAX_NODES = 200  # syntax nodes (names, numbers, operators) after parsing
MAX_HOLD_S = 3_600.0  # a condition held longer than an hour is a trend, not an interlock

_BIN = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.Div: operator.truediv}
_CMP = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
        ast.Eq: operator.eq, ast.NotEq: operator.ne}


@dataclass
class Interlock:
    text: str
    action: str
    tree: ast.expr
    names: dict[str, str]  # name as written → qualified quantity
    hold_s: float = 0.0
    during: tuple[str, ...] = ()
    _true_since: float | None = field(default=None, repr=False)

    @property
    def rule(self) -> str:
        """The rule an alarm of this interlock names: its condition as written."""
        return self.text

    def armed(self, step_kind: str) -> bool:
        return not self.during or step_kind in self.during

    def check(self, now: float, values: Mapping[str, float]) -> bool:
        """True once the condition has held for `hold_s` (missing readings: False)."""
        try:
            active = bool(_eval(self.tree, {k: values[v] for k, v in self.names.items()}))
        except (KeyError, ZeroDivisionError):
            active = False
        if not active:
            self._true_since = None
            return False
        if self._true_since is None:
            self._true_since = now
        return now - self._true_since >= self.hold_s


def parse_interlock(text: str, action: str, known: Mapping[str, str]) -> Interlock:
    """`known` maps every qualified quantity to its role; raises ValueError, one sentence."""
    if not isinstance(text, str) or len(text) > MAX_CHARS:
        raise ValueError(f"a condition is at most {MAX_CHARS} characters (this one has "
                         f"{len(text) if isinstance(text, str) else 0})")
    expr, hold_s = text.strip(), 0.0
    m = _FOR.match(expr)
    if m:
        expr = m["expr"]
        hold_s = float(m["n"]) * (60 if m["unit"] == "min" else 1)
        if hold_s > MAX_HOLD_S:
            raise ValueError(f"a hold of {hold_s:g} s is longer than {MAX_HOLD_S:g} s")
    try:
        tree = ast.parse(expr, mode="eval").body
    except (SyntaxError, RecursionError, MemoryError, ValueError):
        raise ValueError(f"{text!r} is not a valid condition") from None
    nodes = list(ast.walk(tree))
    if len(nodes) > MAX_NODES:
        raise ValueError(f"a condition has at most {MAX_NODES} terms and operators (this one "
                         f"has {len(nodes)})")
    names: dict[str, str] = {}
    for node in nodes:
        if isinstance(node, ast.Constant) and not _finite_number(node.value):
            raise ValueError(f"{ast.unparse(node)[:40]} is not a finite number: a condition "
                             "compares quantities with numbers")
        if isinstance(node, ast.Attribute | ast.Name):
            written = ast.unparse(node)
            if written not in names and not _inside_attribute(tree, node):
                names[written] = _resolve(written, known)
        elif not isinstance(node, _ALLOWED):
            raise ValueError(f"{ast.unparse(node)!r} is not allowed in a condition "
                             "(use numbers, quantities, arithmetic, comparisons, and/or/not)")
    return Interlock(text, action, tree, names, hold_s)


def _finite_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value)


_ALLOWED = (ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.BinOp,
            ast.Compare, ast.Constant, ast.Load, *_BIN, *_CMP)


def _inside_attribute(tree: ast.AST, node: ast.AST) -> bool:
    return any(isinstance(a, ast.Attribute) and a.value is node for a in ast.walk(tree))


def _resolve(name: str, known: Mapping[str, str]) -> str:
    if name in known:
        return name
    matches = [q for q in known if q.split(".", 1)[1] == name]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ValueError(f"{name!r} is ambiguous; write one of {', '.join(sorted(matches))}")
    instrument = name.split(".", 1)[0] if "." in name else None
    if instrument and not any(q.startswith(instrument + ".") for q in known):
        raise ValueError(f"{name!r} names instrument {instrument!r}, which this recipe's tool "
                         "does not have")
    raise ValueError(f"{name!r} is not a recorded quantity (known: {', '.join(sorted(known))})")


def _eval(node: ast.AST, env: Mapping[str, float]):
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name | ast.Attribute):
        return env[ast.unparse(node)]
    if isinstance(node, ast.BinOp):
        return _BIN[type(node.op)](_eval(node.left, env), _eval(node.right, env))
    if isinstance(node, ast.UnaryOp):
        value = _eval(node.operand, env)
        return -value if isinstance(node.op, ast.USub) else not value
    if isinstance(node, ast.BoolOp):
        values = (_eval(v, env) for v in node.values)
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, env)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = _eval(right_node, env)
            if not _CMP[type(op)](left, right):
                return False
            left = right
        return True
    raise ValueError(f"cannot evaluate {ast.unparse(node)!r}")
