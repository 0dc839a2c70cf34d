"""The run engine: a recipe's steps as simpy processes, one sampler, one safe state.

Two processes share one simpy environment (and the simulated lab's clock):
- the *plan* runs the steps in order, each a generator (bluesky's plan idea);
- the *sampler* reads every instrument of the tool each `record_every_s`,
  writes the readings to the store, evaluates interlocks and writes a
  checkpoint each `checkpoint_every_s` (at least VIRTUAL_CHECKPOINT_S apart on a virtual
  clock) and after every step.

A `hold` (from an interlock, or the operator's `lipon-hw pause`) closes the shutter and switches
RF off; steps' clocks stop while held; on release RF is ramped back and the
shutter reopened. Whatever ends a run — completion, an interlock abort, a lost
link, a store that refuses writes, Ctrl-C — `Engine.run` first puts every
instrument in its safe state (signals held), and only then writes to the store,
each write guarded: a store that fails cannot skip the safe state, and the error
that reaches the user says what was made safe, what was not, and whether the
run's status could be stored.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable

import simpy

from lipon_hw.deposition.downtime import Away, wall_mark
from lipon_hw.deposition.heartbeat import Heartbeat
from lipon_hw.deposition.layers import record_partial_layer
from lipon_hw.deposition.link_watch import LinkWatch
from lipon_hw.deposition.recipe import ROLE_QUANTITIES, Recipe
from lipon_hw.deposition.safety import (
    SafeState,
    alarmed,
    make_run_safe,
    recipe_roles,
)
from lipon_hw.deposition.steps import (
    SAMPLE_CHECKS,
    STEPS,
    account_time_away,
    restore_process,
    resume_after_hold,
    safe_hold,
)
from lipon_hw.engine import interlocks as il
from lipon_hw.engine.lifecycle import OPERATOR_STOP, Interrupted, RunResult, uninterruptible
from lipon_hw.engine.operator import ReadPace
from lipon_hw.errors import (
    InstrumentError,
    LinkLost,
    LiponError,
    RunAborted,
    RunTakenOver,
    StoreError,
)
from lipon_hw.station import Lab
from lipon_hw.store import Store

#: how many holds one step tolerates before the run is aborted
MAX_HOLDS_PER_STEP = 3
#: how long (wall or run clock, whichever first) a run goes on while the store refuses its
#: writes; the readings wait in memory meanwhile, and interlocks are still checked
STORE_PATIENCE_S = 45.0
#: how long the end of a run (made safe already) waits for a locked store to take its status
END_WRITE_WAIT_S = 5.0
#: the operator's requests are read at most once a wall second, and at least once a
#: minute of run time (`Engine._take_requests`)
REQUESTS_EVERY_S = 1.0
REQUESTS_EVERY_RUN_S = 60.0
#: a run on a virtual clock (the simulated lab in this process) checkpoints at least this
#: far apart on its run clock, whatever its recipe's `checkpoint_every_s` (meant for a
#: real-time clock: how much process a crashed host costs): its world rolls back with the
#: checkpoint, so a crash costs it only the wall time of running that stretch again, a
#: few hundredths of a second, while each checkpoint costs a commit, its JSON and the
#: world's snapshot (at 60 s: an eighth of a 22 h deposition's wall time)
VIRTUAL_CHECKPOINT_S = 600.0


class Context:
    """What a step may use: the environment, the tool's instruments, the latest readings."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.env: simpy.Environment = engine.env
        self.recipe = engine.recipe
        self.lab = engine.lab
        self.store = engine.store
        self.run_id = engine.run_id
        self.latest: dict[str, float] = {}
        self.setpoints: dict = {}
        self.held = False
        self.operator_pause = False
        self.holds_this_step = 0
        self.step_idx = 0
        self.step_state: dict = {}
        self.refusals: dict[str, str] = {}
        self._recorded_t: float | None = None  # the instant of the last readings stored
        self._recorded: set[str] = set()  # the quantities stored at that instant
        self._sampled = self.env.event()

    @property
    def tool(self) -> str:
        steps = self.recipe.steps
        return steps[min(self.step_idx, len(steps) - 1)].tool

    @property
    def station(self):
        """The station the run is on (its instruments' limits, films and ratings)."""
        return self.lab.station

    @property
    def sample_id(self) -> str | None:
        """The run's sample (chosen when it started; None: the recipe makes no stack)."""
        return self.engine.sample_id

    @property
    def roles(self) -> dict[str, str]:
        """Role → instrument on the tool the sample is in now."""
        return self.recipe.tool_roles[self.tool]

    def role(self, role: str):
        return self.lab.instruments[self.roles[role]]

    def quantity(self, role: str, name: str) -> float | None:
        return self.latest.get(f"{self.roles[role]}.{name}")

    @property
    def now(self) -> float:
        return self.env.now

    def alarm(self, severity: str, source: str, message: str, rule: str | None = None,
              reaction: str | None = None) -> None:
        """Stored, and heard by whoever listens to the store (`Store.on_alarm`)."""
        self.store.add_alarm(self.run_id, self.env.now, severity, source, message, rule,
                             reaction)

    def record(self, values: dict[str, float]) -> None:
        """Store readings at the run clock's now; a quantity read twice at one instant (a
        layer closing on a sample) is stored once: (time, quantity) is a reading's key."""
        now = self.env.now
        if now != self._recorded_t:  # the usual case: the first readings of this instant
            self._recorded_t, self._recorded, fresh = now, set(values), values
        else:
            fresh = {k: v for k, v in values.items() if k not in self._recorded}
            self._recorded.update(fresh)
        self.store.add_readings(self.run_id, now, fresh)
        self.latest.update(values)

    # --- waiting ----------------------------------------------------------------
    def next_sample(self):
        """Wait for a fresh set of readings taken while not held."""
        while True:
            yield self._sampled
            if not self.held:
                return

    def sleep(self, seconds: float, state: dict, key: str = "elapsed_s"):
        """Wait `seconds` of un-held time, resumable: progress is kept in `state[key]`."""
        tick = self.recipe.record_every_s
        while state.get(key, 0.0) < seconds - 1e-9:
            dt = min(tick, seconds - state.get(key, 0.0))
            yield self.env.timeout(dt)
            if not self.held:
                state[key] = state.get(key, 0.0) + dt

    def _new_sample(self) -> None:
        event, self._sampled = self._sampled, self.env.event()
        event.succeed()


class Engine:
    def __init__(self, recipe: Recipe, lab: Lab, store: Store, run_id: int,
                 env: simpy.Environment, notify: Callable[[str], None] | None = None,
                 on_sample: Callable[[Context], None] | None = None):
        self.recipe = recipe
        self.lab = lab
        self.store = store
        self.run_id = run_id
        self.env = env
        self.notify = notify or (lambda _msg: None)
        self.on_sample = on_sample or (lambda _ctx: None)
        self.sample_id = store.run(run_id).sample_id  # chosen when the run started
        self.ctx = Context(self)
        self._last_checkpoint = env.now
        self._checkpoint_every_s = recipe.checkpoint_every_s if isinstance(
            env, simpy.rt.RealtimeEnvironment) else max(recipe.checkpoint_every_s,
                                                        VIRTUAL_CHECKPOINT_S)
        self._requests_pace = ReadPace(store.requests, REQUESTS_EVERY_S, REQUESTS_EVERY_RUN_S)
        self._polled: dict[str, list] = {}
        self._store_refused_at: float | None = None  # run clock when the store began refusing
        self._alarming: set[str] = set()  # `alarm` rules true at the last sample
        self.links = LinkWatch(lab, recipe)  # link health: quantities, alarms, grace
        self.heartbeat = Heartbeat(lab, recipe, env)  # generators' host watchdogs
        self._resumed = False  # a resumed run: its links answered in an earlier process

    # --- the run -------------------------------------------------------------------
    def run(self, start_idx: int = 0, step_state: dict | None = None,
            setpoints: dict | None = None, resumed: bool = False,
            away: Away | None = None) -> RunResult:
        """Run the steps from `start_idx`; a resumed run accounts for the time its host
        was `away` (`downtime`), re-establishes `setpoints`, and takes its first sample
        one period after it resumed, or at once if the checkpoint's own sample was never
        stored (`_first_sample_delay`)."""
        ctx, wall0 = self.ctx, time.monotonic()
        self._resumed = resumed
        ctx.step_idx, ctx.step_state = start_idx, dict(step_state or {})
        ctx.setpoints = dict(setpoints or {})

        def plan():
            if resumed:
                account_time_away(ctx, away)
                yield from restore_process(ctx)
            for idx in range(start_idx, len(self.recipe.steps)):
                step = self.recipe.steps[idx]
                if idx != start_idx:
                    ctx.step_state = {}
                ctx.step_idx, ctx.holds_this_step = idx, 0
                self.store.begin_step(self.run_id, idx, step.kind, step.describe(), self.env.now)
                self.notify(f"step {idx + 1}/{len(self.recipe.steps)}: {step.kind}")
                yield from self.links.ride_out(
                    ctx, lambda step=step: STEPS[step.kind].run(ctx, step.params,
                                                                ctx.step_state),
                    lambda: restore_process(ctx), answered_before=resumed)
                self.store.end_step(self.run_id, idx, "done", self.env.now)
                ctx.step_idx, ctx.step_state = idx + 1, {}
                self.checkpoint()

        status, message = "failed", ""
        error: BaseException | None = None
        sampler = beat = None
        try:
            sampler = self.env.process(self._sampler(delay_s=self._first_sample_delay(
                resumed)))
            beat = self.env.process(self.heartbeat.beat(ctx))  # armed before any step
            main = self.env.process(plan())
            if isinstance(self.env, simpy.rt.RealtimeEnvironment):
                self.env.sync()  # wall time starts now, not when the station was connecting
            self.env.run(until=main)
            status, message = "completed", "all steps done"
        except KeyboardInterrupt:
            status, message = "interrupted", OPERATOR_STOP
            error = Interrupted(message)
        except RunAborted as exc:
            status, message, error = "aborted", str(exc), exc
            self._alarm_stop(exc, "the run is aborted")
        except LiponError as exc:
            status, message, error = "failed", str(exc), exc
            self._alarm_stop(exc, "the run fails")
        except Exception as exc:
            status, message, error = "failed", f"internal error: {exc!r}", exc
        except BaseException as exc:  # SystemExit and the like: safe first all the same
            status, message, error = "failed", f"stopped by {type(exc).__name__}", exc
        finally:
            # the safe state before anything else, whatever failed; no signal cuts it short
            with uninterruptible():
                safe = self._stop((sampler, beat), message)
                unrecorded = self._record_end(status, message, safe)
            self.result = RunResult(self.run_id, status, message, self.env.now,
                                    time.monotonic() - wall0, self._summary)
        if unrecorded is not None:
            if isinstance(error, LiponError):
                unrecorded.exit_code = error.exit_code
            error = unrecorded
        if error is None:
            return self.result
        with contextlib.suppress(AttributeError):
            error.safe_state = safe  # what the CLI may truthfully say about the hardware
        raise error

    def _first_sample_delay(self, resumed: bool) -> float:
        """A run samples at once; a resumed one a period on when the store holds a sample
        of the instant it resumes at (the checkpoint's own), and at once when it does not
        (a host killed between the checkpoint's commit and its sample's: no hole of two
        periods at the seam)."""
        if not resumed:
            return 0.0
        last = self.store.last_reading_t(self.run_id)
        return self.recipe.record_every_s if last is not None and last >= self.env.now \
            else 0.0

    def _alarm_stop(self, exc: LiponError, what: str) -> None:
        """An error alarm for what stopped the run (a step's abort, an instrument that
        failed), unless an alarm said so already (an interlock, a lost link) or the
        store is what failed; the safe state's alarm follows."""
        if any(getattr(e, "alarmed", False) for e in (exc, exc.__cause__)) or \
                isinstance(exc, StoreError):  # (simpy raises a copy, caused by the original)
            return
        with contextlib.suppress(LiponError):
            self.ctx.alarm("error", "engine", f"{exc}: {what}", reaction="abort")

    def _stop(self, processes, reason: str) -> SafeState:
        """Nothing left running on the clock, then every instrument to its safe state."""
        for process in processes:
            if process is not None and process.is_alive:
                with contextlib.suppress(Exception):
                    process.interrupt()  # a finished run leaves nothing running on the clock
        return self.make_safe(reason=reason)

    def _record_end(self, status: str, message: str, safe: SafeState
                    ) -> StoreError | None:
        """The step and the run's status and summary, stored after the safe state; None when
        stored, else the one-sentence error telling the whole truth."""
        self._summary: dict = {}
        stored = message if safe.ok else f"{message}; {safe.sentence()}"
        try:
            if status != "completed":
                record_partial_layer(self.ctx, status, message)
                self._end_step(status)
            self._summary = self.summary()
            self.store.set_status(self.run_id, status, stored, self._summary,
                                  wait_s=END_WRITE_WAIT_S)
            return None
        except StoreError as exc:
            problem = exc
        except Exception as exc:  # noqa: BLE001 - the user must still hear what happened
            problem = f"{type(exc).__name__}: {exc}"
        if isinstance(problem, RunTakenOver):  # its status is the new driver's to store
            return RunTakenOver(f"{problem}; this engine stopped, and {safe.sentence()}")
        ended = {"completed": "completed", "interrupted": "was interrupted",
                 "aborted": "was aborted"}.get(status, "failed")
        return StoreError(f"run {self.run_id} {ended} ({message}) and {safe.sentence()}, "
                          f"but its status could not be stored: {problem}")

    def _end_step(self, status: str) -> None:
        if self.ctx.step_idx < len(self.recipe.steps):
            self.store.end_step(self.run_id, self.ctx.step_idx, status, self.env.now)

    def summary(self) -> dict:
        """The sample, the layers this run made on it (partial ones marked), and the last
        layer's thickness and mean rate (shutter open to closed); the plots come later."""
        layers = [layer for layer in self.store.film_stack(self.sample_id)
                  if layer.run_id == self.run_id] if self.sample_id else []
        monitor = self.ctx.roles.get("thickness_monitor")
        thickness = (layers[-1].thickness_nm if layers
                     else self.ctx.latest.get(f"{monitor}.thickness_nm"))
        return {"sample_id": self.sample_id, "thickness_nm": thickness,
                "mean_rate_A_s": layers[-1].rate_A_s if layers else None,
                "virtual_s": self.env.now, "layers": [layer.to_dict() for layer in layers]}

    # --- sampling, interlocks, checkpoints -------------------------------------------
    def _polled_quantities(self, tool: str) -> list[tuple]:
        """What a sample reads, in order: (quantity, instrument, the driver's bound method
        reading it, None) for each quantity, or (None, instrument, a reader of several, their
        names) for an instrument whose protocol answers several in one query
        (`interfaces.ReadsTogether`: the SQM-160's `W`)."""
        out = []
        for role, inst_name in self.recipe.tool_roles[tool].items():
            driver = self.lab.instruments[inst_name]
            quantities = ROLE_QUANTITIES.get(role, ())
            together = getattr(driver, "read_together", None)
            if together is not None and len(quantities) > 1:
                names = {q: f"{inst_name}.{q}" for q in quantities}
                out.append((None, inst_name, functools.partial(together, tuple(quantities)),
                            names))
                continue
            for q in quantities:
                out.append((f"{inst_name}.{q}", inst_name, getattr(driver, q), None))
        return out

    def sample(self) -> dict[str, float]:
        """Read every quantity of the current tool. An instrument that refuses one
        reading (a failed crystal) costs that reading and one alarm, not the run:
        the step in charge decides what the failure means."""
        tool = self.ctx.tool
        if tool not in self._polled:
            self._polled[tool] = self._polled_quantities(tool)
        values, lost = {}, set()
        for name, inst, read, names in self._polled[tool]:
            if lost and inst in lost:  # one lost link is asked once a sample
                continue
            try:
                got = read()
            except LinkLost as exc:  # ridden out for its grace (`link_watch`)
                self.links.lost(inst, exc, self.env.now)
                lost.add(inst)
                for other in self._polled[tool]:
                    if other[1] == inst:
                        for q in (other[3].values() if other[3] else (other[0],)):
                            self.ctx.latest.pop(q, None)
            except InstrumentError as exc:
                for q in (names.values() if names else (name,)):
                    self._refused(q, exc)
            else:
                if names is None:
                    values[name] = got
                    if self.ctx.refusals:
                        self.ctx.refusals.pop(name, None)
                    continue
                for q, value in got.items():
                    if isinstance(value, InstrumentError):
                        self._refused(names[q], value)
                    else:
                        values[names[q]] = value
                        if self.ctx.refusals:
                            self.ctx.refusals.pop(names[q], None)
        health, changed = self.links.sample(self.ctx, self.recipe.tool_roles[tool].values())
        self.ctx.latest.update(health)  # read by rules at every sample, stored on change
        values.update(changed)
        self.ctx.latest.update(values)
        self.ctx.record(values)
        return values

    def _refused(self, name: str, exc: InstrumentError) -> None:
        """A reading the instrument refused: one alarm while it keeps refusing."""
        refusals = self.ctx.refusals
        if name not in refusals:
            self.ctx.alarm("warning", name, str(exc), reaction="left out")
        refusals[name] = str(exc)
        self.ctx.latest.pop(name, None)

    def _sampler(self, delay_s: float = 0.0):
        ctx = self.ctx
        try:
            yield self.env.timeout(delay_s)
            while True:
                values = self.sample()
                self.links.check(self.env.now, ctx.held)
                self._check_store()
                self._take_requests()
                self._check_interlocks(values)
                if self.env.now - self._last_checkpoint >= self._checkpoint_every_s:
                    # after every process due at this instant (a rate loop sampling now): the
                    # checkpoint holds their readings too, so a resume re-takes none of them
                    yield self.env.timeout(0)
                    self.checkpoint()
                if not self.links.any_lost:  # steps wait for a sample with every reading
                    ctx._new_sample()
                self.on_sample(ctx)
                yield self.env.timeout(self.recipe.record_every_s)
        except simpy.Interrupt:
            return

    def _check_store(self) -> None:
        """Go on while another process holds the store's lock (readings wait in memory,
        interlocks are checked), but not for longer than STORE_PATIENCE_S of wall time or
        of run time, whichever comes first."""
        since = self.store.unwritable_since
        if since is None:
            self._store_refused_at = None
            return
        if self._store_refused_at is None:
            self._store_refused_at = self.env.now
        waited = max(time.monotonic() - since, self.env.now - self._store_refused_at)
        if waited > STORE_PATIENCE_S:
            raise self.store.unavailable(f"the run was stopped after {waited:.0f} s of "
                                         "readings it could not store")

    def _take_requests(self) -> None:
        """The operator's requests, read from the store as `ReadPace` allows: at most once
        a wall second, at least once every REQUESTS_EVERY_RUN_S of run time."""
        if not self._requests_pace.due(self.env.now):
            return
        ctx = self.ctx
        for action in self.store.requests.take(self.run_id):
            if action == "abort":  # the operator's own act: no alarm
                raise alarmed(RunAborted("aborted by the operator"))
            if action == "pause" and not ctx.operator_pause:
                ctx.operator_pause = True
                if not ctx.held:
                    self.env.process(self.hold([]))
            elif action == "continue" and ctx.operator_pause:
                ctx.operator_pause = False
                ctx.alarm("info", "operator", "continue requested")

    def _check_interlocks(self, values: dict[str, float]) -> None:
        """The tool's own limits, then the recipe's and the station's rules: an `alarm`
        rule alarms once as it trips (and says when it clears); `hold` and `pause` hold
        the run until their conditions clear; `abort` ends it."""
        ctx = self.ctx
        for check in SAMPLE_CHECKS:
            check(ctx)
        steps = self.recipe.steps
        phase = steps[ctx.step_idx].kind if ctx.step_idx < len(steps) else ""
        fired = il.tripped(self.recipe.interlocks, phase, self.env.now, ctx.latest)
        for rule in fired:
            if rule.reaction == "abort":
                ctx.alarm("error", "interlock", f"{rule.describe()} tripped: the run is "
                          "aborted", rule.label, "abort")
                raise alarmed(RunAborted(f"{rule.describe()} tripped"))
        alarming = {rule.label: rule for rule in fired if rule.reaction == "alarm"}
        for name in alarming.keys() - self._alarming:
            ctx.alarm("warning", "interlock", f"{alarming[name].describe()} is true", name,
                      "alarm")
        for name in self._alarming - alarming.keys():
            ctx.alarm("info", "interlock", f"{name}: no longer true", name, "alarm")
        self._alarming = set(alarming)
        holding = [rule for rule in fired if rule.reaction in ("hold", "pause")]
        if not ctx.held and holding:
            ctx.holds_this_step += 1
            if ctx.holds_this_step > MAX_HOLDS_PER_STEP:
                why = (f"{holding[0].describe()} held step {ctx.step_idx + 1} more "
                       f"than {MAX_HOLDS_PER_STEP} times")
                ctx.alarm("error", "interlock", f"{why}: the run is aborted", holding[0].label,
                          "abort")
                raise alarmed(RunAborted(why))
            self.env.process(self.hold(holding, safe=any(r.reaction == "pause"
                                                         for r in holding)))

    def hold(self, reasons, safe: bool = True):
        """Until every holding condition (and an operator's pause) has cleared, the steps'
        clocks stop; `safe` (a pause): shutter closed and RF off meanwhile, then RF ramped
        back and the shutter reopened; else (a hold) the outputs stay as they are."""
        ctx = self.ctx
        ctx.held = True
        source = "interlock" if reasons else "operator"
        text = "; ".join(r.describe() for r in reasons) or "pause requested"
        rule = "; ".join(r.label for r in reasons) or None
        reaction = "pause" if safe else "hold"
        if safe:  # severity `hold`: the shutter is closed (the layer plots mark it)
            ctx.alarm("hold", source, f"{text}: shutter closed, RF off", rule, reaction)
            safe_hold(ctx)
        else:
            ctx.alarm("warning", source, f"{text}: held, outputs kept, steps stopped", rule,
                      reaction)
        yield self.env.timeout(self.recipe.record_every_s)
        while ctx.operator_pause or any(r.check(self.env.now, ctx.latest) for r in reasons):
            yield self.env.timeout(self.recipe.record_every_s)
        if safe:
            yield from resume_after_hold(ctx)
        ctx.held = False
        ctx.alarm("info", source, f"{text}: cleared, " +
                  ("process restored" if safe else "steps go on"), rule, "resume")

    def checkpoint(self) -> None:
        ctx = self.ctx
        state = {"step_idx": ctx.step_idx, "step_state": ctx.step_state,
                 "setpoints": ctx.setpoints,
                 "physics": self.lab.physics.snapshot() if self.lab.physics else None,
                 "wall": wall_mark(self.env)}
        self.store.checkpoint(self.run_id, self.env.now, ctx.step_idx, state)
        self._last_checkpoint = self.env.now

    # --- safe state ----------------------------------------------------------------
    def make_safe(self, reason: str = "") -> SafeState:
        """Every instrument of the recipe's tools to its safe state, power first
        (`safety.make_run_safe`). Never raises."""
        return make_run_safe(self.lab, recipe_roles(self.recipe), self.store, self.run_id,
                             self.env, reason, resumed=self._resumed)
