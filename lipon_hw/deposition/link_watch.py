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
steps see no fresh sample meanwhile (a step waiting for a reading waits). A step whose own
command finds a link lost waits too (`ride_out`): on the run clock, trying again after
1, 2, 4 … 30 s; once the link answers, the process is restored as after a resume (shutter
closed, RF ramped back, shutter re-opened: `steps.restore_process`) and the step goes on
from its state. How long a lost link is ridden out: LINK_GRACE_S (a USB adapter
re-enumerating, a garbled burst, an instrument busy for a moment), or longer where an
interlock rule names that instrument's link_health (the longest `for` of those rules plus
two sample periods, so the rule can trip), and for as long as the run is held by a rule or
the operator; then the run fails, to the safe state, in the words of the outage's first
failure. A step is not kept waiting for a port that has never answered since the run
started (a wrong address, an instrument switched off, a cable not plugged in): the run
fails at once, as a safe state does not try such a port again (`safe_retry`); a resumed
run's ports answered in its earlier process, and are waited for. The hardware keeps
itself safe meanwhile where it can: the RF generator's own host watchdog cuts RF after
`host_watchdog_s` without the host (`heartbeat`), and the run then aborts on its trip; a
deposit whose monitor was lost may overshoot by what grows during the outage, which its
restore reads back from the QCM (at most the rate times the grace: 6 nm at 1 Å/s).
"""

from __future__ import annotations

from lipon_hw.errors import LinkLost
from lipon_hw.link_health import (  # (the grace: when no interlock rule asks for longer)
    CODES,
    LINK_GRACE_S,
    QUANTITY,
    change_alarm,
    errors,
    instrument_links,
    worst,
)
from lipon_hw.links import Health, Link
from lipon_hw.ride_out import ride_out


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
        #: (Link.health_changes, instruments) of the last look, and its values
        self._looked: tuple | None = None
        self._looked_values: dict[str, float] = {}
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
        return CODES[links[0].health] if len(links) == 1 else worst(links)

    def lost(self, instrument: str, error: LinkLost, now: float) -> None:
        """A reading found the instrument's link lost: ridden out for its grace."""
        self._lost_since.setdefault(instrument, now)

    @property
    def any_lost(self) -> bool:
        return bool(self._lost_since)

    def sample(self, ctx, instruments) -> tuple[dict[str, float], dict[str, float]]:
        """(every instrument's link_health, those that changed, to store); alarms changes.
        While no link of the process has changed its health (`Link.health_changes`) since
        the last look at the same instruments, that look's values stand and none changed."""
        instruments = tuple(instruments)
        key = (Link.health_changes, instruments)
        if key == self._looked:
            return self._looked_values, {}
        values, changed = self._look(ctx, instruments)
        self._looked, self._looked_values = key, values
        return values, changed

    def _look(self, ctx, instruments) -> tuple[dict[str, float], dict[str, float]]:
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
        """LinkLost once a link has been lost longer than its grace (not while held)."""
        for inst, since in self._lost_since.items():
            if not held and now - since > self.grace(inst):
                address = ", ".join(self.lab.station.instrument(inst).addresses)
                raise LinkLost(f"{address} ({inst}) has been lost for {now - since:.0f} s, "
                               f"longer than it is ridden out "
                               f"({self.grace(inst):.0f} s): {self._error(inst)}")

    def grace(self, instrument: str) -> float:
        """How long a lost link of `instrument` is ridden out (run clock)."""
        return max(self.grace_s.get(instrument, 0.0), LINK_GRACE_S)

    def ride_out(self, ctx, run_step, restore, answered_before: bool = False):
        """`run_step()` (a step's generator), ridden through lost links: a LinkLost it
        raises is waited out on the run clock (1, 2, 4 … RIDE_OUT_MAX_S between tries) for
        up to the longest grace of the tool's instruments, then `restore()` (the process
        as commanded) and the step again from its state. An outage ridden out is an alarm
        as it starts (`hold`) and as it ends (`resume`); one that lasts fails the run in the
        words of its first failure. Not ridden out: links lost that have never answered,
        unless they did in an earlier process of the run (`answered_before`: a resume).
        A generator: `yield from` it."""
        grace = max(self.grace(inst) for inst in ctx.roles.values())
        yield from ride_out(
            ctx.env, run_step, grace,
            lambda: not answered_before and self._lost_never_answered(ctx.roles.values()),
            lambda exc: ctx.alarm("warning", "engine", f"{exc}: the step waits for the link "
                                  f"(up to {grace:.0f} s), then goes on", reaction="hold"),
            lambda s: ctx.alarm("info", "engine", f"the link answered again after {s:.0f} s: "
                                "process restored, the step went on", reaction="resume"),
            again=restore, links=lambda: [link for inst in set(ctx.roles.values())
                                          for link in instrument_links(self.lab, inst)])

    def _lost_never_answered(self, instruments) -> bool:
        """Some of these instruments' links are lost, and none of those ever answered."""
        lost = [link for inst in set(instruments) for link in instrument_links(self.lab, inst)
                if link.health is Health.LOST]
        return bool(lost) and not any(link.answered for link in lost)

    def _error(self, instrument: str) -> str:
        return errors(instrument_links(self.lab, instrument))
