"""Conditions written as small expressions over recorded quantities — the safe expression
language of interlock rules (`engine.interlocks`), whatever the kind of run:

    when: "reflected_power_W > 0.1 * forward_power_W for 5 s"

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
from collections.abc import Callable, Mapping
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
class Condition:
    text: str
    tree: ast.expr
    names: dict[str, str]  # name as written → qualified quantity (itself while unresolved)
    hold_s: float = 0.0
    _true_since: float | None = field(default=None, repr=False)
    #: the tree as nested closures (`_compile`), made at the first check
    _evaluate: Callable[[Mapping[str, float]], object] | None = field(
        default=None, repr=False, compare=False)

    def check(self, now: float, values: Mapping[str, float]) -> bool:
        """True once the condition has held for `hold_s` (missing readings: False)."""
        if self._evaluate is None:
            self._evaluate = _compile(self.tree)
        try:
            active = bool(self._evaluate({k: values[v] for k, v in self.names.items()}))
        except (KeyError, ZeroDivisionError):
            active = False
        if not active:
            self._true_since = None
            return False
        if self._true_since is None:
            self._true_since = now
        return now - self._true_since >= self.hold_s

    def resolved(self, known: Mapping[str, str]) -> Condition:
        """A copy whose names are the quantities of `known` they stand for; ValueError,
        one sentence, for a name that is none of them."""
        return Condition(self.text, self.tree, {written: _resolve(written, known)
                                                for written in self.names}, self.hold_s)


def parse_condition(text: str, known: Mapping[str, str] | None = None) -> Condition:
    """`known` maps every qualified quantity to its role (None: the names are left as
    written, to be resolved when the run's quantities are known); raises ValueError, one
    sentence."""
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
                names[written] = written if known is None else _resolve(written, known)
        elif not isinstance(node, _ALLOWED):
            raise ValueError(f"{ast.unparse(node)!r} is not allowed in a condition "
                             "(use numbers, quantities, arithmetic, comparisons, and/or/not)")
    return Condition(text, tree, names, hold_s)


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
    matches = [q for q in known if "." in q and q.split(".", 1)[1] == name]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ValueError(f"{name!r} is ambiguous; write one of {', '.join(sorted(matches))}")
    instrument = name.split(".", 1)[0] if "." in name else None
    if instrument and not any(q.startswith(instrument + ".") for q in known):
        raise ValueError(f"{name!r} names instrument {instrument!r}, which records nothing "
                         "this run can read")
    raise ValueError(f"{name!r} is not a recorded quantity (known: {', '.join(sorted(known))})")


def _compile(node: ast.AST) -> Callable[[Mapping[str, float]], object]:
    """`node` as a function of the environment (name as written → value): the tree is
    walked once, here, and each check runs the closures (a condition is checked at every
    sample). Arithmetic, comparison chains and and/or/not short-circuit as Python does."""
    if isinstance(node, ast.Constant):
        value = node.value
        return lambda env: value
    if isinstance(node, ast.Name | ast.Attribute):
        name = ast.unparse(node)
        return lambda env: env[name]
    if isinstance(node, ast.BinOp):
        op, left, right = _BIN[type(node.op)], _compile(node.left), _compile(node.right)
        return lambda env: op(left(env), right(env))
    if isinstance(node, ast.UnaryOp):
        operand = _compile(node.operand)
        if isinstance(node.op, ast.USub):
            return lambda env: -operand(env)
        return lambda env: not operand(env)
    if isinstance(node, ast.BoolOp):
        parts = [_compile(v) for v in node.values]
        if isinstance(node.op, ast.And):
            return lambda env: all(part(env) for part in parts)
        return lambda env: any(part(env) for part in parts)
    if isinstance(node, ast.Compare):
        first = _compile(node.left)
        links = [(_CMP[type(op)], _compile(right))
                 for op, right in zip(node.ops, node.comparators, strict=True)]

        def compare(env):
            left = first(env)
            for op, right_of in links:
                right = right_of(env)
                if not op(left, right):
                    return False
                left = right
            return True
        return compare
    text = ast.unparse(node)

    def refuse(env):
        raise ValueError(f"cannot evaluate {text!r}")
    return refuse
