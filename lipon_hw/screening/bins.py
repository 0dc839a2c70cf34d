"""Binning a screened cell, as semiconductor test does it.

A recipe's `bins` hold three things:

- `fail`: rules evaluated in order on the cell's measured values; the first whose
  condition holds bins the cell (its soft bin, and the hard bin that soft bin maps to);
- `grades`: pass grades, best first. A cell no rule failed starts at the first grade and
  can only be downgraded: each later grade whose condition holds moves it down to that
  grade, never back up;
- `tester_fault`: the bin of a cell the prober could not measure (no contact after its
  re-touches, a measurement the instrument did not finish). It is never a bad cell: its
  hard bin is its own, and yield is given over the cells measured as well.

Conditions are the engine's safe expressions (`engine.conditions`: numbers, metric names,
arithmetic, comparisons, and/or/not; parsed, never evaluated by `eval`), on the metrics
the recipe's tests give (`ocv_V`, `z_1000Hz_ohm`, `phase_1000Hz_deg`, `r_dc_ohm`, ...).
A name that is not one of them is refused when the recipe is loaded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from lipon_hw.engine.conditions import Condition, parse_condition


@dataclass(frozen=True)
class Bin:
    name: str
    soft_bin: int
    hard_bin: int
    hard_name: str
    passed: bool
    tester_fault: bool = False
    condition: Condition | None = None

    def definition(self) -> dict:
        return {"soft_bin": self.soft_bin, "name": self.name, "hard_bin": self.hard_bin,
                "hard_name": self.hard_name, "passed": self.passed,
                "tester_fault": self.tester_fault,
                "when": self.condition.text if self.condition else None}


@dataclass(frozen=True)
class Binned:
    """Where one cell went: its bin and the rule that put it there."""

    bin: Bin
    rule: str


@dataclass(frozen=True)
class BinRules:
    fail: tuple[Bin, ...]
    grades: tuple[Bin, ...]
    tester_fault: Bin

    def all(self) -> list[Bin]:
        return [*self.grades, *self.fail, self.tester_fault]

    def definitions(self) -> list[dict]:
        return [b.definition() for b in self.all()]

    def classify(self, metrics: Mapping[str, float], measured: bool = True) -> Binned:
        """The cell's bin: the tester-fault bin if it was not measured (or a value a rule
        needs is missing or not finite), else the first failing rule's, else its grade."""
        if not measured:
            return Binned(self.tester_fault, "no contact")
        for rule in self.fail:
            missing = _missing(rule.condition, metrics)
            if missing:
                return Binned(self.tester_fault, f"{missing} not measured")
            if rule.condition.check(0.0, metrics):
                return Binned(rule, rule.name)
        grade = 0
        for k, g in enumerate(self.grades[1:], start=1):
            missing = _missing(g.condition, metrics)
            if missing:
                return Binned(self.tester_fault, f"{missing} not measured")
            if g.condition.check(0.0, metrics):
                grade = max(grade, k)  # only ever down
        return Binned(self.grades[grade], "pass" if grade == 0 else self.grades[grade].name)


def _missing(condition: Condition, metrics: Mapping[str, float]) -> str | None:
    for name in condition.names.values():
        value = metrics.get(name)
        if value is None or not math.isfinite(value):
            return name
    return None


def compile_rules(fail: list[dict], grades: list[dict], tester_fault: dict,
                  metrics: list[str]) -> BinRules:
    """The recipe's bins checked: every condition parsed against the metrics the tests
    give, soft bins unique, no hard bin both pass and fail. Raises ValueError (one
    sentence) with the index path of what is wrong as its second argument."""
    known = {m: m for m in metrics}
    soft_seen: dict[int, str] = {}
    hard_kind: dict[int, tuple[bool, str]] = {}

    def make(where: tuple, spec: dict, passed: bool, fault: bool = False,
             needs_condition: bool = True) -> Bin:
        name = spec["name"]
        soft, hard = spec["soft_bin"], spec["hard_bin"]
        if soft in soft_seen:
            raise ValueError(f"soft bin {soft} is already {soft_seen[soft]!r}",
                             where + ("soft_bin",))
        soft_seen[soft] = name
        role = "tester fault" if fault else "pass" if passed else "fail"
        if hard in hard_kind and hard_kind[hard][0] != role:
            raise ValueError(f"hard bin {hard} is already a {hard_kind[hard][0]} bin "
                             f"({hard_kind[hard][1]!r}); a hard bin is pass, fail or tester "
                             "fault, never two of them", where + ("hard_bin",))
        hard_name = spec.get("hard_name") or (hard_kind[hard][1] if hard in hard_kind
                                              else name)
        hard_kind.setdefault(hard, (role, hard_name))
        condition = None
        if spec.get("when") is not None:
            try:
                condition = parse_condition(spec["when"])
            except ValueError as exc:
                raise ValueError(str(exc), where + ("when",)) from None
            unknown = [n for n in condition.names if n not in known]
            if unknown:
                raise ValueError(f"{unknown[0]!r} is not a metric the recipe's tests give "
                                 f"(they give {', '.join(metrics)})", where + ("when",))
            if condition.hold_s:
                raise ValueError("a bin rule is judged once per cell: no 'for' hold",
                                 where + ("when",))
        elif needs_condition:
            raise ValueError("needs a condition (when:)", where + ("when",))
        return Bin(name, soft, hard, hard_name, passed, fault, condition)

    built_grades = tuple(make(("grades", k), g, True, needs_condition=k > 0)
                         for k, g in enumerate(grades))
    if built_grades and built_grades[0].condition is not None:
        raise ValueError("the first (best) grade takes every cell no rule failed: it has no "
                         "condition", ("grades", 0, "when"))
    built_fail = tuple(make(("fail", k), f, False) for k, f in enumerate(fail))
    fault = make(("tester_fault",), {"when": None, **tester_fault}, False, fault=True,
                 needs_condition=False)
    return BinRules(built_fail, built_grades, fault)
