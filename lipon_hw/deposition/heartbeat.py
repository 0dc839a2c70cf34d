"""The heartbeat: instruments with a host watchdog keep hearing from the run.

A generator with a host watchdog (`interfaces.HostWatchdog`; on AE Bus, command 39)
switches its output off by itself when the host has been silent for its watchdog time:
the hardware's own guard against a host that hangs, or dies with RF on, where no
software safe state can run any more. The run arms it with the station's period (the
instrument's `host_watchdog_s` limit: default 10 s, 1–65 s; see the driver's LIMITS) as
it starts, before any step can switch the output on; the watchdog acts only while the
output is on.

While a role's output is commanded on (`OUTPUTS`), some valid exchange with its instrument
happens at least every half period. The sampler's readings usually are those, and then
nothing is added; when none came for half a period (a record period longer than that, a
step that reads nothing), the heartbeat adds one: a status query, which also says whether
the watchdog has tripped. So does a reading that shows the output off while it is
commanded on (after a lost link, or a host that froze, the unit may have tripped while
the sampler's polls came back): one query, at most once a period. A trip aborts the run:
the output went off behind the process's back, so the layer is not what the recipe asked.

A run that goes faster than real time (`lipon-hw run --speed` on a served simulated lab)
leaves it disarmed: at 300× a 10 s watchdog is 33 ms of wall time, which no host process
can promise between two exchanges. A unit that refuses to be armed (a generator without
the command) costs one warning alarm, and the run goes on guarded by software alone. A
lost link is the sampler's to report: the heartbeat tries again half a period later, and
meanwhile the hardware's watchdog does what it is there for. The watchdog stays armed
when the run ends: every end of a run switches RF off, it acts only while RF is on, and a
power cycle disarms it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import simpy

from lipon_hw.errors import InstrumentError, LinkError, RunAborted
from lipon_hw.interfaces import HostWatchdog
from lipon_hw.link_health import instrument_links


@dataclass(frozen=True)
class Output:
    """How the run tells a guarded output is on: the setpoint that says it is commanded
    on, the one holding its level, and the sampler's reading that shows it."""

    on: str
    level: str
    reading: str


#: roles whose output a watchdog guards
OUTPUTS = {"rf_supply": Output("rf_on", "rf_power_W", "forward_power_W")}
#: a reading below this (in its unit) shows the output off
OFF_READING = 0.5
#: how close to its due time (s of the run clock) a check counts as due
DUE_EPS_S = 1e-9
#: after a beat the link refused, the next try this soon (its port re-opened at once, back-off
#: or not): a blip shorter than the watchdog's period must not cost the deposit its RF
RETRY_S = 1.0


@dataclass
class Watched:
    """One instrument the heartbeat keeps alive."""

    name: str
    role: str
    driver: HostWatchdog
    #: run clock of the start of the present silence (the last valid exchange)
    since_s: float = -math.inf
    #: run clock of the last look at the trip flag
    checked_s: float = -math.inf
    #: run clock when the heartbeat first saw the output commanded on (None: it is off)
    on_since_s: float | None = None
    armed: bool = False
    refused: bool = False
    #: the links the instrument talks through (re-opened at once for a retried beat)
    links: tuple = ()

    @property
    def half_s(self) -> float:
        return self.driver.watchdog_period_s / 2


class Heartbeat:
    """The watched instruments of a recipe's tools, and the process that keeps them
    alive (`beat`), on the run's clock."""

    def __init__(self, lab, recipe, env: simpy.Environment):
        self.env = env
        self.watched: list[Watched] = []
        for tool_roles in recipe.tool_roles.values():
            for role, name in tool_roles.items():
                driver = lab.instruments[name]
                if role in OUTPUTS and isinstance(driver, HostWatchdog) \
                        and all(w.name != name for w in self.watched):
                    self.watched.append(Watched(name, role, driver,
                                                links=tuple(instrument_links(lab, name))))

    def beat(self, ctx):
        """The process: arm every watched instrument, then keep each alive while its
        output is on. Interrupted when the run ends; RunAborted on a trip."""
        if not self.watched:
            return
        for w in self.watched:
            w.since_s = self.env.now
            w.driver.on_exchange = lambda w=w: setattr(w, "since_s", self.env.now)
        try:
            for w in self.watched:
                self._arm(ctx, w)
            while True:
                if self._due_now():
                    # the other processes of this instant first: a sample taken now is
                    # the exchange the heartbeat would otherwise add
                    yield self.env.timeout(0)
                    for w in self._due_now():
                        self._due(ctx, w)
                for w in self.watched:
                    if self._looks_off(ctx, w):
                        self._check(ctx, w)
                wake = min(w.since_s + w.half_s for w in self.watched)
                yield self.env.timeout(max(wake - self.env.now, 0.0))
        except simpy.Interrupt:
            return
        finally:
            for w in self.watched:
                w.driver.on_exchange = None

    def _due_now(self) -> list[Watched]:
        now = self.env.now
        return [w for w in self.watched if now >= w.since_s + w.half_s - DUE_EPS_S]

    def _due(self, ctx, w: Watched) -> None:
        """Half a period without an exchange: add one if the output is on."""
        now = self.env.now
        if not w.armed and not w.refused:
            self._arm(ctx, w)
        if not ctx.setpoints.get(OUTPUTS[w.role].on):
            w.since_s = now  # nothing to keep alive; look again half a period on
            return
        self._check(ctx, w)

    def _looks_off(self, ctx, w: Watched) -> bool:
        """The sampler's last reading shows the output off while it is commanded on at
        some level (the host was silent too long: a lost link, a frozen host): worth one
        look at the trip flag, at most once a period. While a pause holds RF off this
        looks once a period too, which also keeps the unit hearing from the run."""
        out, now = OUTPUTS[w.role], self.env.now
        if not (ctx.setpoints.get(out.on) and ctx.setpoints.get(out.level, 0) > 0):
            w.on_since_s = None
            return False
        if w.on_since_s is None:
            w.on_since_s = now
        reading = ctx.latest.get(f"{w.name}.{out.reading}")
        return (reading is not None and reading < OFF_READING
                and now - w.on_since_s >= 2 * w.half_s  # not a reading from before it went on
                and now - w.checked_s >= 2 * w.half_s)

    def _check(self, ctx, w: Watched) -> None:
        """One status query: RunAborted if the watchdog has switched the output off."""
        now = self.env.now
        w.checked_s = now
        try:
            tripped = w.driver.host_watchdog_tripped()
        except (LinkError, InstrumentError):
            # the sampler reports the link; the next beat soon, in case it comes back
            # before the unit's deadline (the watchdog guards meanwhile)
            w.since_s = now - w.half_s + RETRY_S
            for link in w.links:
                link.reopen_now()
            return
        w.since_s = now  # heard now: the next beat half a period on
        if tripped:
            why = (f"{w.name}: its host watchdog switched the output off (no valid exchange "
                   f"for {w.driver.watchdog_period_s:g} s)")
            ctx.alarm("error", w.name, f"{why}: the run is aborted", reaction="abort")
            raise RunAborted(why)

    def _arm(self, ctx, w: Watched) -> None:
        period = w.driver.watchdog_period_s
        factor = getattr(self.env, "factor", 1.0)  # wall s per s of the run's clock
        if factor < 1.0:  # an accelerated simulation, never hardware
            w.refused = True
            ctx.engine.notify(f"{w.name}: host watchdog left disarmed: at {1 / factor:g}× "
                              f"real time {period:g} s of the run is {period * factor:.3g} s "
                              "of wall time, less than a host process can promise")
            return
        try:
            w.driver.set_host_watchdog_s(period)
            kept = w.driver.host_watchdog_s()
        except LinkError:
            return  # not reachable now: armed at a later check
        except InstrumentError as exc:
            w.refused = True
            ctx.alarm("warning", w.name, f"its host watchdog could not be armed ({exc}); "
                      "the output is guarded by software alone")
            return
        if kept <= 0:  # took the command, kept nothing: no guard all the same
            w.refused = True
            ctx.alarm("warning", w.name, f"its host watchdog reads 0 s after being set to "
                      f"{period:g} s; the output is guarded by software alone")
            return
        w.armed = True
        ctx.engine.notify(f"{w.name}: host watchdog armed, {kept:g} s")
