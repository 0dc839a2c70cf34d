"""Interlock rules, the same for every kind of run: a condition on recorded quantities
(`engine.conditions`) and a reaction, declared in the station (for every run on a tool or
a potentiostat) and in a recipe or protocol (for that run).

    interlocks:
      - {name: reflected, when: "reflected_power_W > 0.1 * forward_power_W for 5 s",
         then: pause, during: [presputter, deposit]}

Reactions, from the mildest (bluesky's suspenders are the model for `pause`):

    alarm   an alarm is stored and shown; nothing else changes
    hold    outputs kept as they are; the sequence stops advancing (step clocks stopped)
            until the condition clears
    pause   to the safe state of the run kind (a deposition's shutter closed and RF or
            source off; a cell at open circuit), then back to where it was once the
            condition clears
    abort   the run (a cell test: the channel) ends, to the safe state

A cell test's rule on the potentiostat as a whole (its link health, its channels in
fault: `celltest.rules`) reacts for every channel of the run on it at once
(`celltest.pstat_watch`).

`during` names the phases (step kinds) in which a rule is armed; empty: always. A rule
is checked at every sample; one that trips while another holds the run does not stack.
A malformed rule — bad syntax, an unknown quantity, an unknown phase — is one sentence
naming the file, line and field, before anything moves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, Field

from lipon_hw.engine.conditions import Condition, parse_condition
from lipon_hw.ranges import MAX_INTERLOCKS, MODEL_CONFIG

REACTIONS = ("alarm", "hold", "pause", "abort")
__all__ = ["MAX_INTERLOCKS", "REACTIONS", "Rule", "RuleSpec", "bind", "declare", "tripped"]


class RuleSpec(BaseModel):
    """An interlock rule as written in a station, recipe or protocol file."""

    model_config = MODEL_CONFIG
    name: str | None = Field(default=None, min_length=1, max_length=80)
    when: str  # bounded by the condition parser (`conditions.MAX_CHARS`), with its own words
    then: Literal["alarm", "hold", "pause", "abort"]
    during: list[str] = Field(default=[], max_length=50)  # phases armed in; empty: always


@dataclass
class Rule:
    name: str
    condition: Condition
    reaction: str
    during: tuple[str, ...] = ()
    origin: str = ""  # where it was declared: a recipe's or protocol's path, or the station

    @property
    def text(self) -> str:
        return self.condition.text

    def armed(self, phase: str) -> bool:
        return not self.during or phase in self.during

    def check(self, now: float, values: Mapping[str, float]) -> bool:
        return self.condition.check(now, values)

    @property
    def label(self) -> str:
        """How alarms name it: `interlock NAME` (a rule without a name is named by its
        place: `interlock 2`, or `interlock sputter 1` for the station's first on sputter)."""
        return f"interlock {self.name}"

    def describe(self) -> str:
        return f"{self.label} ({self.condition.text})"


@dataclass
class Declared:
    """Rules as parsed from a file, before the quantities of a run are known: the
    document they came from and each rule's place in it, for one-sentence errors later."""

    doc: object
    at: tuple
    specs: list[RuleSpec] = field(default_factory=list)
    conditions: list[Condition] = field(default_factory=list)


def declare(doc, at: tuple, specs: Sequence[RuleSpec]) -> Declared:
    """Check each rule's syntax and size now (a station is refused at load, not when a
    run starts); names stay unresolved."""
    out = Declared(doc, at)
    for i, spec in enumerate(specs):
        try:
            out.conditions.append(parse_condition(spec.when))
        except ValueError as exc:
            raise doc.error((*at, i, "when"), str(exc)) from None
        out.specs.append(spec)
    return out


def bind(declared: Declared, known: Mapping[str, str], phases: Sequence[str],
         origin: str, default_name: str = "") -> list[Rule]:
    """The declared rules for one run: every name resolved against the quantities the
    run records (`known`: qualified quantity → role), every phase one of `phases`. A rule
    without a name is named `default_name` and its place (1, 2, …)."""
    rules = []
    for i, (spec, condition) in enumerate(zip(declared.specs, declared.conditions,
                                              strict=True)):
        try:
            bound = condition.resolved(known)
        except ValueError as exc:
            raise declared.doc.error((*declared.at, i, "when"), str(exc)) from None
        for j, phase in enumerate(spec.during):
            if phase not in phases:
                raise declared.doc.error((*declared.at, i, "during", j),
                                         f"unknown step {phase!r} (known: {', '.join(phases)})")
        rules.append(Rule(spec.name or f"{default_name}{i + 1}", bound, spec.then,
                          tuple(spec.during), origin))
    return rules


def tripped(rules: Sequence[Rule], phase: str, now: float,
            values: Mapping[str, float]) -> list[Rule]:
    """The rules armed in `phase` whose condition holds now (each checked once, so the
    time a condition has held is counted for every rule)."""
    return [rule for rule in rules if rule.armed(phase) and rule.check(now, values)]


def strongest(rules: Sequence[Rule]) -> str | None:
    """The strongest reaction among `rules` (None: none)."""
    return max((rule.reaction for rule in rules), key=REACTIONS.index, default=None)
