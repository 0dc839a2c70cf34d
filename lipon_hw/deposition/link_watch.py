"""Link health in a deposition run: a quantity interlock rules read, and alarms when it changes.

Every instrument of the recipe's tools has `<instrument>.link_health`: 0 ok, 1 retrying,
2 lost (its worst link, for an instrument on several), as its `Link` keeps it. The engine
reads it at every sample, so a rule such as

    {when: "qcm.link_health > 0 for 30 s", then: pause}

validates and trips like any other. The store gets the value when it changes from the one
before (a run starts from 0, which is not stored), not at every sample, and each change is
an alarm whose source is the instrument: `link to sim://qcm lost: …`, `link to sim://qcm
restored`. Drivers know nothing of this: the watch reads the links' health through the
lab's pool.

A link found lost while sampling costs that instrument's readings for the sample, and the
steps see no fresh sample meanwhile (a step waiting for a reading waits). How long the run
goes on so: only if an interlock rule names that instrument's link_health, for the longest
`for` of those rules plus two sample periods, so the rule can trip, and for as long as the
run is held by a rule or the operator; with no such rule a lost link fails the run at once,
to the safe state, as it always has.
"""

from __future__ import annotations

from lipon_hw.errors import LinkLost
from lipon_hw.link_health import QUANTITY, change_alarm, errors, instrument_links, worst


def link_quantities(tool_roles: dict[str, dict[str, str]]) -> dict[str, str]:
    """`<instrument>.link_health` → role, for every instrument of every tool."""
    return {f"{inst}.{QUANTITY}": role for roles in tool_roles.values()
            for role, inst in roles.items()}


class LinkWatch:
    """The link health of a run's instruments, their alarms, and the grace a lost one gets."""

    def __init__(self, lab, recipe):
        self.lab = lab
        self.recipe = recipe
        self._last: dict[str, int] = {}
        self._lost_since: dict[str, float] = {}
        self.grace_s: dict[str, float] = {}
        self._links: dict[str, list] = {}  # instrument → its links, looked up once
        self._names = {}  # instrument → its quantity's name
        for rule in recipe.interlocks:
            for quantity in rule.condition.names.values():
                inst, _, name = quantity.partition(".")
                if name == QUANTITY:
                    self.grace_s[inst] = max(self.grace_s.get(inst, 0.0),
                                             rule.condition.hold_s + 2 * recipe.record_every_s)
        # instruments on one port share its link: a rule reading one's health watches all
        station = lab.station
        for inst, grace in list(self.grace_s.items()):
            ports = set(station.instrument(inst).addresses)
            for other, spec in station.spec.instruments.items():
                if ports & set(spec.addresses):
                    self.grace_s[other] = max(self.grace_s.get(other, 0.0), grace)

    def health(self, instrument: str) -> int:
        links = self._links.get(instrument)
        if links is None:  # the pool keeps one Link per port for the lab's life
            links = self._links[instrument] = instrument_links(self.lab, instrument)
        return worst(links)

    def lost(self, instrument: str, error: LinkLost, now: float) -> None:
        """A reading found the instrument's link lost: re-raised unless a rule watches it."""
        if instrument not in self.grace_s:
            raise error
        self._lost_since.setdefault(instrument, now)

    @property
    def any_lost(self) -> bool:
        return bool(self._lost_since)

    def sample(self, ctx, instruments) -> tuple[dict[str, float], dict[str, float]]:
        """(every instrument's link_health, those that changed, to store); alarms changes."""
        values, changed, names = {}, {}, self._names
        for inst in instruments:
            code = self.health(inst)
            name = names.get(inst) or names.setdefault(inst, f"{inst}.{QUANTITY}")
            values[name] = float(code)
            if code != 2 and self._lost_since:
                self._lost_since.pop(inst, None)
            before = self._last.get(inst, 0)  # a link is taken to start healthy
            if before == code:
                continue
            self._last[inst] = code
            changed[name] = float(code)
            address = ", ".join(self.lab.station.instrument(inst).addresses)
            severity, message = change_alarm(code, address, self._error(inst))
            ctx.alarm(severity, inst, message)
        return values, changed

    def check(self, now: float, held: bool) -> None:
        """LinkLost once a watched link has been lost longer than its grace (not while held)."""
        for inst, since in self._lost_since.items():
            if not held and now - since > self.grace_s[inst]:
                address = ", ".join(self.lab.station.instrument(inst).addresses)
                raise LinkLost(f"{address} ({inst}) has been lost for {now - since:.0f} s, "
                               f"longer than its interlock rules wait "
                               f"({self.grace_s[inst]:.0f} s): {self._error(inst)}")

    def _error(self, instrument: str) -> str:
        return errors(instrument_links(self.lab, instrument))
