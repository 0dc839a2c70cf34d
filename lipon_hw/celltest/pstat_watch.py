"""A cell test's potentiostat as a whole: its quantities, the rules on them, and reactions
that act on every channel of the run on it.

Quantities (`celltest.rules.POTENTIOSTAT_QUANTITIES`): `<pstat>.link_health`, the worst
of its links (0 ok, 1 retrying, 2 lost), and `<pstat>.channels_in_fault`, how many of the
run's channels on it ended tripped or failed. They are read as the channels poll (a
link's health changes only when it is used) and as a channel ends, not on a clock of
their own. `link_health` is stored as a reading when it changes (a run starts from 0,
which is not stored), and every link's change is an alarm (`link to sim://mes4/2 lost:
…`), whether or not a rule reads it.

Reactions, each stored once, as one alarm with the rule and the reaction, whatever the
number of channels:

    alarm   as it trips and as it clears
    hold    every channel ends its step, then waits at open circuit until it clears
    pause   every channel cuts its step at once (its poll is woken) and waits at open
            circuit; all go on with what was left of their steps once it clears
    abort   every channel still running trips at once, its cell disconnected

While a rule reading `link_health` holds the channels, a channel that failed with its
link lost (its cell maybe still connected) is stopped and disconnected again each time
the others poll: once its link answers, its cell is off, the link is healthy again and
the rule can clear.
"""

from __future__ import annotations

from collections.abc import Sequence

from lipon_hw.celltest.wire import tell_reached
from lipon_hw.engine import interlocks as il
from lipon_hw.link_health import CODES, change_alarm, channel_links, worst
from lipon_hw.link_health import QUANTITY as LINK_HEALTH
from lipon_hw.links import Health, Link
from lipon_hw.store import Store

IN_FAULT = ("tripped", "failed")


class PotentiostatWatch:
    """The quantities and rules of one potentiostat, for the channels of one run on it."""

    def __init__(self, store: Store, run_id: int, name: str, rules: Sequence[il.Rule],
                 links: Sequence[Link] = (), pstat=None):
        self.store, self.run_id, self.name = store, run_id, name
        self.rules = list(rules)
        self.links = list(links)
        self.pstat = pstat
        self.channels: list = []  # the run's channels (celltest.channels.Channel)
        self.earlier_in_fault = 0  # its channels that ended in fault before a resume
        self.held_by: list[il.Rule] = []  # `hold` and `pause` rules holding every channel
        self.trip: str | None = None  # an `abort` rule's words, once one tripped
        self.trip_rule: str | None = None  # and its label
        self._alarming: set[str] = set()
        self._held_words = self._held_labels = ""
        self._codes = [0] * len(self.links)  # each link's last health code
        self._healths: list | None = None  # each link's health at the last look
        self._changes_seen = -1  # `Link.health_changes` at the last look
        self._reads_links = any(q == f"{name}.{LINK_HEALTH}" for rule in self.rules
                                for q in rule.condition.names.values())

    @property
    def pausing(self) -> bool:
        return any(rule.reaction == "pause" for rule in self.held_by)

    def values(self) -> dict[str, float]:
        return {f"{self.name}.{LINK_HEALTH}": float(worst(self.links)),
                f"{self.name}.channels_in_fault": float(self.earlier_in_fault + sum(
                    ch.status in IN_FAULT for ch in self.channels))}

    def observe(self, now: float) -> None:
        """Read the quantities now: store and alarm link changes, check the rules, react."""
        if self.held_by and self._reads_links and self.trip is None:
            self._disconnect_lost(now)
        self._links_changed(now)
        if not self.rules or self.trip is not None:
            return
        values = self.values()
        fired = il.tripped(self.rules, "", now, values)
        aborting = next((rule for rule in fired if rule.reaction == "abort"), None)
        if aborting is not None:
            self.trip = f"{aborting.describe()} on {self.name} tripped at t = {now:.0f} s"
            self.trip_rule = aborting.label
            self.store.add_alarm(self.run_id, now, "error", self.name,
                                 f"{self.trip}: every channel stopped, its cell disconnected",
                                 aborting.label, "abort")
            self._wake()
            return
        self._alarms(now, {rule.label: rule for rule in fired if rule.reaction == "alarm"})
        if self.held_by:
            self.held_by = [rule for rule in self.held_by if rule in fired]
            if not self.held_by:
                self.store.add_alarm(self.run_id, now, "info", self.name,
                                     f"{self._held_words}: cleared, every channel goes on",
                                     self._held_labels, "resume")
                self._wake()
            return
        self.held_by = [rule for rule in fired if rule.reaction in ("hold", "pause")]
        if self.held_by:
            self._held_words = "; ".join(rule.describe() for rule in self.held_by)
            self._held_labels = "; ".join(rule.label for rule in self.held_by)
            self.store.add_alarm(
                self.run_id, now, "hold", self.name,
                f"{self._held_words}: every channel "
                + ("paused at once" if self.pausing else "waits after its step")
                + " at open circuit", self._held_labels, "pause" if self.pausing else "hold")
            if self.pausing:
                self._wake()

    def holds(self) -> str | None:
        """What holds every channel, in words (None: nothing)."""
        return f"{self._held_words} on {self.name}" if self.held_by else None

    def _alarms(self, now: float, alarming: dict[str, il.Rule]) -> None:
        for label in alarming.keys() - self._alarming:
            self.store.add_alarm(self.run_id, now, "warning", self.name,
                                 f"{alarming[label].describe()} is true", label, "alarm")
        for label in self._alarming - alarming.keys():
            self.store.add_alarm(self.run_id, now, "info", self.name,
                                 f"{label}: no longer true", label, "alarm")
        self._alarming = set(alarming)

    def _links_changed(self, now: float) -> None:
        if Link.health_changes == self._changes_seen:
            return  # no link of this process changed its health since the last look
        self._changes_seen = Link.health_changes
        healths = [link.health for link in self.links]
        if healths == self._healths:  # as at the last look: no alarm, no reading
            return
        self._healths = healths
        before = max(self._codes, default=0)
        for i, link in enumerate(self.links):
            code = CODES[link.health]
            if code != self._codes[i]:
                self._codes[i] = code
                severity, message = change_alarm(code, link.address, link.last_error)
                self.store.add_alarm(self.run_id, now, severity, self.name, message)
        after = max(self._codes, default=0)
        if after != before:
            self.store.add_readings(self.run_id, now, {f"{self.name}.{LINK_HEALTH}": after})

    def _disconnect_lost(self, now: float) -> None:
        """Each ended channel whose link is lost stopped and its cell disconnected again
        (the link's own back-off spaces the attempts)."""
        if self.pstat is None:
            return
        for ch in self.channels:
            if ch.status in IN_FAULT and any(link.health is Health.LOST
                                             for link in self.links_of(ch.number)):
                try:
                    self.pstat.stop(ch.number)
                    self.pstat.cell_off(ch.number)
                except Exception:  # noqa: BLE001, S112 - still lost: tried again next poll
                    continue
                tell_reached(self.store, self.run_id, ch.number, now)

    def links_of(self, channel: int) -> list[Link]:
        """The channel's Link as a list (`channel_links`: empty if not known)."""
        return channel_links(self.links, channel)

    def _wake(self) -> None:
        for ch in self.channels:
            ch.wake()
