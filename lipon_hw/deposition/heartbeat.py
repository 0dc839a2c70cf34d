"""The heartbeat: instruments with a host watchdog keep hearing from the run.

A generator with a host watchdog (`interfaces.HostWatchdog`; on AE Bus, command 39)
switches its output off by itself when the host has been silent for its watchdog time:
the hardware's own guard against a host that hangs, or dies with RF on, where no
software safe state can run any more. The run arms it with the station's period (the
instrument's `host_watchdog_s` limit: default 10 s, 1–65 s; see the driver's LIMITS) as
it starts, before any step can switch the output on; the watchdog acts only while the
output is on.

While a role's output is commanded on (`OUTPUT_SETPOINTS`), some valid exchange with its
instrument happens at least every half period. The sampler's readings usually are those,
and then nothing is added; when none came for half a period (a record period longer than
that, a step that reads nothing), the heartbeat adds one: a status query, which also says
whether the watchdog has tripped. A trip aborts the run: the output went off behind the
process's back, so the layer is not what the recipe asked.

A unit that refuses to be armed (a generator without the command) costs one warning
alarm, and the run goes on guarded by software alone. A lost link is the sampler's to
report: the heartbeat tries again half a period later, and meanwhile the hardware's
watchdog does what it is there for. The watchdog stays armed when the run ends: every
end of a run switches RF off, it acts only while RF is on, and a power cycle disarms it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import simpy

from lipon_hw.errors import InstrumentError, LinkError, RunAborted
from lipon_hw.interfaces import HostWatchdog

#: roles whose output a watchdog guards → the setpoint saying that output is on
OUTPUT_SETPOINTS = {"rf_supply": "rf_on"}
#: how close to its due time (s of the run clock) a check counts as due
DUE_EPS_S = 1e-9


@dataclass
class Watched:
    """One instrument the heartbeat keeps alive."""

    name: str
    role: str
    driver: HostWatchdog
    #: run clock of the start of the present silence (the last valid exchange)
    since_s: float = -math.inf
    armed: bool = False
    refused: bool = False

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
                if role in OUTPUT_SETPOINTS and isinstance(driver, HostWatchdog) \
                        and all(w.name != name for w in self.watched):
                    self.watched.append(Watched(name, role, driver))

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
        if not ctx.setpoints.get(OUTPUT_SETPOINTS[w.role]):
            w.since_s = now  # nothing to keep alive; look again half a period on
            return
        try:
            tripped = w.driver.host_watchdog_tripped()
        except (LinkError, InstrumentError):
            return  # the sampler reports the link; the watchdog guards meanwhile
        finally:
            w.since_s = now  # heard now, or tried: the next try half a period on
        if tripped:
            why = (f"{w.name}: its host watchdog switched the output off (no valid exchange "
                   f"for {w.driver.watchdog_period_s:g} s)")
            ctx.alarm("error", w.name, f"{why}: the run is aborted", reaction="abort")
            raise RunAborted(why)

    def _arm(self, ctx, w: Watched) -> None:
        period = w.driver.watchdog_period_s
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
