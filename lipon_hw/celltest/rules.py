"""What a cell test's interlock rules read, and which of them act on one channel or on the
whole potentiostat.

A rule that reads only a channel's own quantities is that channel's: every channel gets a
copy of it and checks it on its own samples. A rule that reads a quantity of the
potentiostat as a whole is the potentiostat's: it is checked once, as the channels poll,
and its reaction acts on every channel of the run on that potentiostat (`pstat_watch`).
One rule cannot read both (a channel quantity has no single value across channels), and a
potentiostat's rule is armed always (`during` names a channel's step, and each channel is
in a step of its own): both are one sentence naming file, line and field.
"""

from __future__ import annotations

from collections.abc import Sequence

from lipon_hw.celltest.protocol_schema import STEP_KINDS
from lipon_hw.engine import interlocks as il
from lipon_hw.link_health import QUANTITY as LINK_HEALTH

#: what a channel's rules read, sample by sample: quantity → what it is
CHANNEL_QUANTITIES = {
    "voltage_V": "the channel's cell voltage",
    "current_A": "the channel's current (0 at open circuit)",
}
#: what a potentiostat's rules read, as `<potentiostat>.<quantity>` (or bare, when
#: unambiguous): quantity → what it is
POTENTIOSTAT_QUANTITIES = {
    LINK_HEALTH: "the worst of its links: 0 ok, 1 retrying, 2 lost",
    "channels_in_fault": "how many of the run's channels on it ended tripped or failed",
}


def potentiostat_quantities(pstat: str) -> dict[str, str]:
    """`<pstat>.<quantity>` → role, for a rule's names to resolve against."""
    return {f"{pstat}.{q}": "potentiostat" for q in POTENTIOSTAT_QUANTITIES}


def bind(declared: il.Declared | None, pstat: str, origin: str, default_name: str = ""
         ) -> tuple[list[il.Rule], list[il.Rule]]:
    """(the channel's rules, the potentiostat's rules) of `declared`, bound afresh (each
    call gives rules with their own `for` clocks); a rule naming an unknown quantity, or
    both kinds, or a potentiostat's rule with `during`, is one sentence."""
    if declared is None:
        return [], []
    channel = {q: "channel" for q in CHANNEL_QUANTITIES}
    whole = potentiostat_quantities(pstat)
    rules = il.bind(declared, {**channel, **whole}, list(STEP_KINDS), origin, default_name)
    mine: list[il.Rule] = []
    wide: list[il.Rule] = []
    for i, rule in enumerate(rules):
        names = set(rule.condition.names.values())
        if not names & whole.keys():
            mine.append(rule)
            continue
        if per_channel := sorted(names & channel.keys()):
            raise declared.doc.error((*declared.at, i, "when"), _mixed(pstat, per_channel,
                                                                       names & whole.keys()))
        if rule.during:
            raise declared.doc.error((*declared.at, i, "during"),
                                     f"a rule on {', '.join(sorted(names))} reads "
                                     f"{pstat} as a whole, whose channels are each in a step "
                                     "of their own: it is armed always (leave out during)")
        wide.append(rule)
    return mine, wide


def _mixed(pstat: str, per_channel: Sequence[str], whole) -> str:
    return (f"{', '.join(repr(q) for q in per_channel)} is a quantity of each channel, and "
            f"{', '.join(sorted(whole))} one of {pstat} as a whole: one rule reads one or "
            "the other (write two rules)")

