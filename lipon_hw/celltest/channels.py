"""Cell tests: every channel runs its protocol as its own simpy process.

A channel sends one technique per step to its potentiostat channel, collects the
samples the instrument streams, and decides what comes next (end conditions the
instrument cannot judge — capacity, dV/dt — are judged here, as are the safety
limits). A trip, a fault or a lost link stops that channel alone: its cell is
disconnected and the others go on — unless a rule on the potentiostat as a whole (its
link health, its channels in fault) then holds, pauses or trips them all (`pstat_watch`:
each channel reads it as it polls, and is woken to poll at once when it acts).

Polling: an instrument that measures and buffers on its own (MethodSCRIPT) is polled
rarely while a step is far from its end and often when it is near: a step that ran
before is expected to last about as long again (cycles repeat), or, once it has run twice,
to change by as much as it changed last time (a fading cell's steps shorten cycle by
cycle); a first constant current about as long as it takes to pass the cell's capacity.
Prompt polling starts a margin before the expected end: 2 % of the step, and once the step
is steady (NEAR_MARGIN_S and SHIFT_MARGINS times its last change both less than that),
the longer of those two; a steady step foreseen to within NEAR_END_POLL_S is first asked
at its expected end itself (it is found ended then, or by a prompt poll within
NEAR_END_POLL_S after: the same bound on the gap as polling from a margin before, with one
poll fewer). Before that, a step whose voltage is seen heading for its end
(the slope of its last two samples) is polled again at half the time that slope gives to
reach it, or 5 s: a step that ends sooner than its last run (the second 15 h formation
charge, 3 % shorter than the first) is caught in its knee. A steady step is polled so only
when that slope says its end comes before its prompt polling would begin, and from then
on at NEAR_END_POLL_S: one or two polls a step (its end; a halfway poll too where the
longest wait is shorter than the step), where the slope's polls made seven. So the gap
between the instrument ending a step and the host starting the next stays a few seconds,
while a month of cycling costs few exchanges. The longest wait: MAX_POLL_S, or
WINDOW_POLL_S where the instrument judges the safety window (see there).
A host-timed instrument (an SMU) is polled at its measurement interval.

A channel says it is running, committed, before its first technique starts.
After every step the channel's resume state (program position, loop counters, cycle
and step numbers, the running cycle's integrals and, where the lab can snapshot it (the
simulated lab's `cells` hook), the cell's physics) is committed with the samples taken
before it. Cycle and step numbers never go back: a resumed channel continues after the
largest step number it stored.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import simpy

from lipon_hw.analysis.cycles import CycleAccumulator
from lipon_hw.celltest import protocol as pr
from lipon_hw.celltest import step_ends as se
from lipon_hw.celltest.cycle_counter import CycleCounter
from lipon_hw.celltest.protocol_checks import FOREVER_S
from lipon_hw.celltest.pstat_watch import PotentiostatWatch
from lipon_hw.celltest.step_ends import MIN_POLL_S, ChannelTrip, HostEnds, StepOutcome, rest_of
from lipon_hw.celltest.taken import Taken, as_rows, check_limits, rows_of
from lipon_hw.celltest.wire import (
    disconnect_patiently,
    end_overdue,
    patiently,
    tell_gaps,
)
from lipon_hw.engine import interlocks as il
from lipon_hw.engine.lifecycle import OPERATOR_STOP
from lipon_hw.errors import LiponError, StoreError
from lipon_hw.store import Store
from lipon_hw.techniques import EIS, OCV, ConstantCurrent, SampleBlock

NEAR_END_POLL_S = 5.0
EXPECTED_FRACTION = 0.98  # of the step's last duration, after which its end is near
#: a step run twice or more: prompt polling starts this long before its expected end, or
#: SHIFT_MARGINS times its last change in duration if that is longer
NEAR_MARGIN_S = 5.0
SHIFT_MARGINS = 3.0
FIRST_TIME_FRACTION = 0.6  # of the time to pass the cell's capacity, for a step's first run
#: longest wait between polls of a buffering instrument: on a virtual clock in its seconds,
#: on a real-time clock in wall seconds (`longest_poll_s`)
MAX_POLL_S = {"virtual": 900.0, "realtime": 2.0}
#: the longest on a virtual clock where the instrument judges the step's safety window
#: itself (`techniques.Window`) and the channel has no interlock rule of its own: nothing
#: the host judges on the samples would come later than on the instrument (a step's
#: capacity and dV/dt ends are foreseen: see the module)
WINDOW_POLL_S = 3600.0

ENDED = ("completed", "tripped", "failed", "stopped", "terminated", "aborted")


def longest_poll_s(realtime: bool, clock_per_wall_s: float = 1.0,
                   judged: bool = False) -> float:
    """MAX_POLL_S in the run clock's seconds (WINDOW_POLL_S for the virtual clock's where
    the instrument judges the safety window: `judged`). A real-time clock may run faster
    than the wall (a simulated lab at `--speed`: `clock_per_wall_s` of it a wall second);
    its instruments are polled at least every MAX_POLL_S["realtime"] of wall time, as
    hardware is, not that much of the clock (at --speed 600 that was every 3 ms of wall
    time, a channel's samples taken a few at a time), and at most as seldom as on a
    virtual one."""
    virtual = WINDOW_POLL_S if judged else MAX_POLL_S["virtual"]
    if not realtime:
        return virtual
    return min(virtual, MAX_POLL_S["realtime"] * clock_per_wall_s)


@dataclass
class ChannelState:
    """Where a channel stands; JSON-able, stored after every step."""

    pc: int = 0
    loops: dict[str, int] = field(default_factory=dict)
    cycle: int = 1
    step_count: int = 0
    t_s: float = 0.0
    cycles: dict = field(default_factory=dict)  # CycleCounter state
    durations: dict[str, float] = field(default_factory=dict)  # last duration of each step
    shifts: dict[str, float] = field(default_factory=dict)  # its change since the run before
    cell: dict | None = None  # the cell physics' snapshot (a simulated lab's hook)
    # what the step at pc did before an operator pause cut it short: it continues with the
    # rest of its time and capacity ({"elapsed_s", "q_Ah"}); None when it starts afresh
    done_before: dict | None = None

    def copy(self) -> dict:
        """The state as a dict that later changes to it do not reach (its own maps copied;
        `cycles`, `cell` and `done_before` are replaced, not changed in place): for the
        store to encode when it writes, not at every step."""
        return {**vars(self), "loops": dict(self.loops), "durations": dict(self.durations),
                "shifts": dict(self.shifts)}

    @classmethod
    def from_dict(cls, d: dict) -> ChannelState:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


class Channel:
    """One channel's protocol on one potentiostat channel."""

    def __init__(self, env: simpy.Environment, store: Store, run_id: int, plan: pr.ChannelPlan,
                 pstat, state: ChannelState, max_poll_s: float, cell_physics=None,
                 on_cycle: Callable[[int, int], None] | None = None,
                 watch: PotentiostatWatch | None = None, window_poll_s: float | None = None):
        self.env, self.store, self.run_id = env, store, run_id
        self.plan, self.pstat, self.state = plan, pstat, state
        self.number = plan.channel
        self.max_poll_s = max_poll_s
        #: the longest wait while the instrument judges the step's safety window, where
        #: neither the channel nor its potentiostat has a rule (the host judges rules on
        #: the samples and link health as it polls): `longest_poll_s(…, judged=True)`
        self.window_poll_s = window_poll_s if not plan.rules and not (
            watch and watch.rules) else None
        self.cell_physics = cell_physics
        self.on_cycle = on_cycle
        self.status = "running"
        self.message = ""
        reference = plan.program.termination.reference_cycle
        leads = pr.leads(plan.program)
        self.counter = (CycleCounter.from_state(state.cycles, leads) if state.cycles else
                        CycleCounter(CycleAccumulator(pr.stores_with(plan.program)),
                                     reference, leads=leads))
        self._abort_requested = False
        self._pause_wanted = False
        self._alarming: set[str] = set()  # `alarm` rules true at the last sample
        self._held_by: list[il.Rule] = []  # `hold` and `pause` rules holding the channel
        self._saved: dict = state.copy()
        self._last_sample_t = -math.inf
        self._disconnected = self._recorded = False
        #: the run stopped this channel from outside (`all_channels._stop_all`): its cell
        #: disconnected and its end stored there, none of it left to this process
        self.ended_by_run = False
        #: the channel ran before this process (a resume): its link has answered, in an
        #: earlier process (`wire.never_answered`)
        self.ran_before = state.step_count > 0 or state.t_s > 0
        #: the potentiostat as a whole: its rules hold, pause or trip every channel
        self.watch = watch or PotentiostatWatch(store, run_id, "", [])
        self._wakeup = env.event()  # the watch's call to poll now, not at the next wait
        self._made: dict[int, tuple] = {}  # each step's technique and limits (`_make`)

    # --- the program ----------------------------------------------------------------
    def process(self):
        steps = self.plan.program.steps
        st = self.state
        run_stops = False
        try:
            if self.env.now < st.t_s:
                yield self.env.timeout(st.t_s - self.env.now)
            self._save()
            # committed now, before the cell is connected: a channel whose stored status says
            # it never started has no samples, and no one resumes it while this process runs
            self.store.flush()
            while st.pc < len(steps) and self.status == "running":
                step = steps[st.pc]
                if step.tag is not None:
                    st.pc += 1
                    continue
                if step.loop is not None:  # a loop ends a cycle, whether it jumps or not
                    done = st.loops.get(str(st.pc), 0) + 1
                    self._next_cycle()
                    if self._terminated():
                        break
                    if done < step.loop.times:
                        st.loops[str(st.pc)] = done
                        st.pc = step.target
                    else:
                        st.loops.pop(str(st.pc), None)
                        st.pc += 1
                    continue
                outcome = yield from self._run_step(step)
                if outcome.end == "paused":
                    yield from self._paused()
                    if not self._abort_requested:
                        continue  # the same step, with what is left of it
                    outcome = StepOutcome("aborted", "stopped by the operator")
                if outcome.end == "aborted":
                    self.status, self.message = "aborted", outcome.message
                    break
                st.pc = step.gotos.get(outcome.end, st.pc + 1)
                st.done_before = None
                self._save()
                if self._held_by or self.watch.held_by:  # a `hold`: the next step waits
                    yield from self._paused()
                    if self._abort_requested:
                        self.status, self.message = "aborted", "stopped by the operator"
                        break
            if self.status == "running":
                self.status, self.message = "completed", self.message or "protocol done"
        except ChannelTrip as exc:
            self.status, self.message = "tripped", str(exc)
            se.alarm_stop(self, exc)
        except simpy.Interrupt:
            self.status, self.message = "stopped", "stopped by the operator"
        except StoreError as exc:  # no channel can keep its data: the run stops
            self.status, self.message = "failed", f"stopped by an error ({stop_reason(exc)})"
            run_stops = True
            raise
        except LiponError as exc:
            self.status, self.message = "failed", str(exc)
            se.alarm_stop(self, exc)
        except KeyboardInterrupt:
            self.status, self.message = "interrupted", OPERATOR_STOP
            run_stops = True
            raise
        except Exception as exc:  # a bug, or the store failing: this channel says so
            self.status, self.message = "failed", f"stopped by an error ({stop_reason(exc)})"
            run_stops = True
            raise
        finally:
            # else the run disconnects every cell at once, then stores their ends; or did
            # so already (`ended_by_run`: this is the process closed afterwards)
            own_end = not run_stops and not self.ended_by_run
            if own_end:
                yield from disconnect_patiently(self)
            self._disconnect()
            if own_end:
                self._record_end()
                self.watch.observe(self.env.now)  # one fewer channel running, a link lost

    def _terminated(self) -> bool:
        """The protocol's termination: enough cycles (completed), or the capacity has
        faded below the retention limit (terminated: the cell reached its end of life)."""
        term = self.plan.program.termination
        if term.cycles is not None and self.completed_cycles >= term.cycles:
            self.message = f"{term.cycles} cycles done"
            return True
        retention = self.counter.retention
        if (term.retention_below_pct is not None and retention is not None
                and retention * 100 < term.retention_below_pct):
            self.status = "terminated"
            self.message = (f"retention {retention * 100:.1f} % fell below "
                            f"{term.retention_below_pct:g} % at cycle {self.completed_cycles}")
            return True
        return False

    def _next_cycle(self) -> None:
        self.state.cycle += 1
        if self.on_cycle:
            self.on_cycle(self.number, self.completed_cycles)

    # --- one step ---------------------------------------------------------------------
    def _run_step(self, step: pr.PlannedStep):
        st = self.state
        before = st.done_before or {"elapsed_s": 0.0, "q_Ah": 0.0}
        technique, limits = self._made.get(st.pc) or self._make(step)
        technique = rest_of(technique, before["elapsed_s"])
        st.step_count += 1
        # on a real-time clock the instrument runs on while the host works (a step's end is
        # seen a poll later): a step never starts before the last sample of the one before
        run = yield from patiently(self, lambda: self.pstat.start(self.number, technique))
        t0 = max(self.env.now, self._last_sample_t)  # after a lost link ridden out, if any
        ends = HostEnds(step, self.plan, t0, before)
        taken = Taken()  # the step's samples, for the cycle figures at its end
        outcome: StepOutcome | None = None
        step_type, step_id = step.step_type, st.pc
        poll = getattr(run, "poll_block", run.poll)  # in columns, where the driver can
        while True:
            yield self._sleep(self._wait(run, ends))
            samples = yield from patiently(self, poll)
            tell_gaps(self, run, t0)
            if samples:
                if isinstance(samples, SampleBlock) and not as_rows(samples):
                    samples = samples.samples()
                if not isinstance(samples, SampleBlock) and samples[0].f_Hz is not None:
                    self._spectrum(samples, t0)
                else:
                    rows, columns = rows_of(samples, t0, st.cycle, st.step_count, step_id,
                                            step_type)
                    if columns is None:
                        self.store.add_cell_samples(self.run_id, self.number, rows)
                    else:  # buffered as columns: the store makes the rows as it writes
                        self.store.add_cell_columns(self.run_id, self.number, *columns,
                                                    st.cycle, st.step_count, step_id, step_type)
                    taken.add(rows, columns)
                    if rows:
                        self._last_sample_t = rows[-1][0]
                    try:  # what tripped it is kept
                        check_limits(self.number, rows, limits, columns)
                        self._check_rules(rows, step.kind)
                    except ChannelTrip:
                        self._store_cycles(taken.feed(self.counter))
                        raise
                    outcome = ends.take(rows, columns)
            self._check_watch(taken)
            if outcome is None and self._abort_requested:
                outcome = StepOutcome("aborted", "stopped by the operator")
            if outcome is None and (self._pause_wanted or self.watch.pausing or any(
                    rule.reaction == "pause" for rule in self._held_by)):
                outcome = StepOutcome("paused")
                st.done_before = ends.done(self.env.now) if hasattr(technique, "duration_s") \
                    else None  # a spectrum or a sweep cut short is measured again
            if outcome is None and end_overdue(self, run, t0):  # its end lost on the wire
                yield from patiently(self, lambda: self.pstat.stop(self.number))
                tell_gaps(self, run, t0)
            if outcome is None and run.finished:
                outcome = ends.instrument_end(run.end_reason, self)
            elif outcome is not None:
                yield from patiently(self, lambda: self.pstat.stop(self.number))
                tell_gaps(self, run, t0)
            if outcome is not None:
                self._store_cycles(taken.feed(self.counter))
                if outcome.end not in ("aborted", "paused"):
                    self._took((ends.last[0] if ends.last else self.env.now) - t0)
                return outcome

    def _make(self, step: pr.PlannedStep) -> tuple:
        """The step's technique and safety limits, made once (a cycling protocol runs the
        same few steps again and again): the same objects each time, so the driver finds
        its script by the technique itself."""
        made = self._made[self.state.pc] = (pr.technique(step, self.plan),
                                            pr.safety(step, self.plan))
        return made

    def _paused(self):
        """The cell at open circuit, its voltage recorded (step type PAUSE, a step of its
        own), for as long as the operator's pause or an interlock rule holding the channel
        lasts: the operator continues (or aborts); a rule's condition clears on the
        recorded voltage. A step cut short then goes on with what is left of its time and
        capacity. The channel's stored status says `paused` meanwhile."""
        st = self.state
        yield from patiently(self, lambda: self.pstat.cell_off(self.number))
        by_rule = self._held_by and not self._pause_wanted
        # the potentiostat's rules alarm once for every channel (`pstat_watch`)
        by_watch = not by_rule and not self._pause_wanted and self.watch.holds()
        rule = "; ".join(r.describe() for r in self._held_by) if by_rule else None
        labels = "; ".join(r.label for r in self._held_by) if by_rule else None
        reaction = ("pause" if any(r.reaction == "pause" for r in self._held_by) else "hold") \
            if by_rule else None
        self.status, self.message = "paused", \
            f"paused by {rule or by_watch or 'the operator'}: cell at open circuit"
        self._save()
        if not by_watch:
            self.store.add_alarm(self.run_id, self.env.now, "hold" if rule else "info",
                                 f"channel {self.number}", f"{rule + ': ' if rule else ''}"
                                 f"paused at step {st.pc} (cycle {st.cycle}): cell at open "
                                 "circuit", labels, reaction)
        rec = self.plan.program.record
        st.step_count += 1
        pause = OCV(FOREVER_S, rec.interval_s, pr.recording(rec))
        run = yield from patiently(self, lambda: self.pstat.start(self.number, pause))
        t0 = max(self.env.now, self._last_sample_t)
        poll = min(self.max_poll_s, rec.every_s or self.max_poll_s)
        while True:
            yield self._sleep(max(MIN_POLL_S, poll))
            samples = yield from patiently(self, run.poll)
            tell_gaps(self, run, t0)
            rows = [(t0 + s.t_s, s.E_V, 0.0, st.cycle, st.step_count, st.pc, "PAUSE")
                    for s in samples if s.E_V is not None]
            if rows:
                self.store.add_cell_samples(self.run_id, self.number, rows)
                self._last_sample_t = rows[-1][0]
                self._store_cycles(self.counter.add(rows))
                self._held_by = [rule for rule in self._held_by
                                 if _holds_on(rule, rows)]
            self._check_watch(Taken())
            if not (self._pause_wanted or self._held_by or self.watch.held_by) \
                    or self._abort_requested:
                yield from patiently(self, lambda: self.pstat.stop(self.number))
                tell_gaps(self, run, t0)
                break
            if run.finished:  # a pause longer than an instrument step may last goes on
                run = yield from patiently(self, lambda: self.pstat.start(self.number, pause))
                t0 = max(self.env.now, self._last_sample_t)
        self.status, self.message = "running", ""
        if not by_watch or self._abort_requested:
            self.store.add_alarm(self.run_id, self.env.now, "info", f"channel {self.number}",
                                 "aborted while paused" if self._abort_requested else
                                 f"{rule}: cleared, the channel goes on" if rule else
                                 "continued by the operator", labels, "resume" if rule else None)
        self._save()

    def _sleep(self, dt: float):
        """Wait `dt` before the next poll, or less if the potentiostat's watch calls."""
        if not self.watch.rules:
            return self.env.timeout(dt)
        if self._wakeup.triggered:  # called while this channel was busy: poll at once
            self._wakeup = self.env.event()
            return self.env.timeout(0)
        return self.env.any_of([self.env.timeout(dt), self._wakeup])

    def wake(self) -> None:
        """Poll now (the potentiostat's watch: every channel pauses, goes on, or trips)."""
        if not self._wakeup.triggered:
            self._wakeup.succeed()

    def _check_watch(self, taken) -> None:
        """The potentiostat read as this channel polled; its `abort` trips the channel
        (the cycle figures of what the step took are kept)."""
        self.watch.observe(self.env.now)
        if self.watch.trip is not None:
            self._store_cycles(taken.feed(self.counter))
            trip = ChannelTrip(f"channel {self.number}: {self.watch.trip}",
                               self.watch.trip_rule)
            trip.alarmed = True  # the potentiostat's one alarm says it for every channel
            raise trip

    def _check_rules(self, rows: list[tuple], phase: str) -> None:
        """Each sample against the channel's interlock rules: `abort` trips the channel,
        `alarm` alarms once as it trips and once as it clears, `pause` stops the step at
        once and `hold` after it; both then wait at open circuit until they clear."""
        if not self.plan.rules:
            return
        for t, v, i, *_ in rows:
            fired = il.tripped(self.plan.rules, phase, t, {"voltage_V": v, "current_A": i})
            for rule in fired:
                if rule.reaction == "abort":
                    raise ChannelTrip(f"channel {self.number}: {rule.describe()} "
                                      f"tripped at t = {t:.0f} s", rule.label)
            alarming = {rule.label: rule for rule in fired if rule.reaction == "alarm"}
            for name in alarming.keys() - self._alarming:
                self.store.add_alarm(self.run_id, t, "warning", f"channel {self.number}",
                                     f"{alarming[name].describe()} is true", name, "alarm")
            for name in self._alarming - alarming.keys():
                self.store.add_alarm(self.run_id, t, "info", f"channel {self.number}",
                                     f"{name}: no longer true", name, "alarm")
            self._alarming = set(alarming)
            if not self._held_by:
                self._held_by = [rule for rule in fired if rule.reaction in ("hold", "pause")]

    def _wait(self, run, ends: HostEnds) -> float:
        """How long to let the instrument run before asking for its samples."""
        if getattr(run, "poll_interval_s", None):
            return run.poll_interval_s
        now, technique = self.env.now, run.technique
        if isinstance(technique, EIS):  # a few periods per frequency: poll a few times
            return min(self.max_poll_s, max(MIN_POLL_S, sum(1 / f for f in
                                                            technique.frequencies_Hz)))
        expected = self._expected_end(technique, ends)
        # longer while the instrument judges the safety window and the step's end is
        # known, not guessed (a first constant current's, from the cell's capacity)
        known_end = expected is not None and expected[2]
        longest = self.window_poll_s if self.window_poll_s and known_end and \
            getattr(run, "judges_window", False) else self.max_poll_s
        if expected is not None:
            # rarely until the step's end is near, then at the record cadence or faster
            end, near, known, steady = expected
            if now < near - MIN_POLL_S:  # unless the voltage says its end comes sooner
                # (nor past the step's own run time: a first constant current is expected
                # to pass the cell's capacity, which its time limit may cut short)
                wait = min(longest, near - now, max(MIN_POLL_S, ends.duration_left(now)))
                soon = ends.voltage_time_left(now)
                # an extrapolation already overdue is stale: the slope of two samples an
                # hour apart (a rare record rule) points past a steady step's end for the
                # rest of it, and would call a poll every NEAR_END_POLL_S till then
                if not steady or 0 < soon < wait:
                    wait = min(wait, max(NEAR_END_POLL_S, 0.5 * soon))
                return wait
            if steady:  # its end foreseen to within the margin: the prompt cadence
                return min(NEAR_END_POLL_S, longest)
        record = getattr(technique, "record", None)
        cadence = min(getattr(record, "dt_s", None) or longest, longest)
        if expected is not None and known:
            cadence = min(cadence, NEAR_END_POLL_S)
        elif expected is not None:  # a first time: ever closer as the expected end nears
            cadence = min(max(cadence, 0.1 * (end - now)), longest)
        return min(cadence, max(MIN_POLL_S, 0.7 * ends.time_left(now)))

    def _expected_end(self, technique, ends: HostEnds
                      ) -> tuple[float, float, bool, bool] | None:
        """When the step should end, from when its end may come, and whether that is known
        (from its runs before, or its own capacity end) rather than guessed (a first
        constant current), and whether it is steady (foreseen from its last change, to
        within a margin under 2 % of it); None when there is nothing to go by. A step that
        ran before lasts as long again, changed by its last change when it has run twice; a
        constant current passes the cell's capacity — or the step's own capacity end when
        that comes first (it is exact: polled for, not guessed). The margins: see the
        module."""
        key = str(self.state.pc)
        last = self.state.durations.get(key)
        if last is not None:
            shift = self.state.shifts.get(key)
            window = (1 - EXPECTED_FRACTION) * last
            if shift is None or abs(shift) > window:  # not steady (yet): 2 % of it
                return ends.t0 + last, ends.t0 + last - window, True, False
            end = ends.t0 + last + shift
            margin = min(max(NEAR_MARGIN_S, SHIFT_MARGINS * abs(shift)), window)
            # foreseen to within the prompt cadence: first asked at the end itself
            near = end if margin <= NEAR_END_POLL_S else end - margin
            return end, near, True, margin < window
        current = getattr(technique, "current_A", None)
        if not isinstance(technique, ConstantCurrent) or not current:
            return None
        if ends.capacity is not None:
            expected = (ends.capacity - abs(ends.q)) * 3600 / abs(current)
            return ends.t0 + expected, ends.t0 + EXPECTED_FRACTION * expected, True, False
        if self.plan.capacity_Ah:
            expected = self.plan.capacity_Ah * 3600 / abs(current)
            return ends.t0 + expected, ends.t0 + FIRST_TIME_FRACTION * expected, False, False
        return None

    def _took(self, duration: float) -> None:
        """The step at pc ran to its end in `duration`: its expected duration next time."""
        key = str(self.state.pc)
        last = self.state.durations.get(key)
        if last is not None:
            self.state.shifts[key] = duration - last
        self.state.durations[key] = duration

    def _spectrum(self, samples, t0: float) -> None:
        st = self.state
        self.store.add_spectrum(self.run_id, self.number, [
            (self.env.now, st.cycle, st.step_count, s.f_Hz, s.z_re_ohm, s.z_im_ohm)
            for s in samples])

    # --- state ------------------------------------------------------------------------
    def _save(self) -> None:
        st = self.state
        st.t_s = self.env.now
        st.cycles = self.counter.state()
        if self.cell_physics is not None:
            st.cell = self.cell_physics.snapshot()
        self._saved = st.copy()  # the state goes on changing
        self.store.update_channel(self.run_id, self.number, self.status, self.message,
                                  st.cycle, st.step_count, st.t_s, self._saved)

    def _disconnect(self) -> None:
        """Technique stopped, cell off: first, once, whatever happened."""
        if self._disconnected:
            return
        self._disconnected = True
        try:
            self.pstat.stop(self.number)
            self.pstat.cell_off(self.number)
        except Exception as exc:  # noqa: BLE001 - recorded; the other channels still get theirs
            self.message += f"; the cell could not be disconnected ({exc})"

    def _record_end(self) -> None:
        """The last cycle closed and the channel's end stored, once; the resume state stays
        the last step boundary: what came after it is redone."""
        if self._recorded:
            return
        self._recorded = True
        if self.status in ENDED:
            self._store_cycles(self.counter.finish())
        st = self.state
        self.store.update_channel(self.run_id, self.number, self.status, self.message,
                                  st.cycle, st.step_count, self.env.now, self._saved)

    def _store_cycles(self, closed) -> None:
        for stats in closed:
            self.store.add_cycle(self.run_id, self.number, stats.cycle, stats.to_dict())

    @property
    def completed_cycles(self) -> int:
        """Cycles ended by a loop (the running one, if any, is not counted)."""
        return self.state.cycle - 1

    def request_stop(self) -> None:
        self._abort_requested = True

    def request_pause(self, wanted: bool) -> None:
        """Pause (True) or continue (False); acted on at the channel's next poll."""
        self._pause_wanted = wanted


def stop_reason(exc: BaseException) -> str:
    """One sentence for what stopped a run or channel."""
    if isinstance(exc, StoreError):
        return f"the store failed: {exc}"
    return str(exc) if isinstance(exc, LiponError) else f"internal error: {exc!r}"


def _holds_on(rule: il.Rule, rows: list[tuple]) -> bool:
    """Whether a holding rule's condition still holds at the last of `rows` (recorded at
    open circuit)."""
    held = False
    for t, v, i, *_ in rows:
        held = rule.check(t, {"voltage_V": v, "current_A": i})
    return held
