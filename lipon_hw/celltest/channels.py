"""Cell tests: every channel runs its protocol as its own simpy process.

A channel sends one technique per step to its potentiostat channel, collects the
samples the instrument streams, and decides what comes next (end conditions the
instrument cannot judge — capacity, dV/dt — are judged here, as are the safety
limits). A trip, a fault or a lost link stops that channel alone: its cell is
disconnected and the others go on — unless a rule on the potentiostat as a whole (its
link health, its channels in fault) then holds, pauses or trips them all (`pstat_watch`:
each channel reads it as it polls, and is woken to poll at once when it acts).

Polling (when a channel asks its instrument for samples) is `polling`'s; which steps the
instrument runs as one program, without the host between them, `programs`'.

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
from lipon_hw.celltest import polling, programs
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
from lipon_hw.readings import SampleBlock
from lipon_hw.store import Store
from lipon_hw.techniques import OCV, Sequence

ENDED = ("completed", "tripped", "failed", "stopped", "terminated", "aborted")


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


@dataclass
class _Running:
    """A step, or a program of steps, as the instrument runs it: the steps (`pcs`, and each
    one's technique and limits), when it started, which of them runs (`phase`), that
    one's ends and samples, and the outcome its samples reached."""

    pcs: list[int]
    made: list[tuple]
    t0: float
    ends: HostEnds
    taken: Taken = field(default_factory=Taken)
    phase: int = 0
    outcome: StepOutcome | None = None


def run_end_lost(run) -> bool:
    """Whether the run's end went unseen on the wire (its last output lost)."""
    return getattr(run, "end_lost", False)


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
        self._programs: dict[tuple, Sequence] = {}  # each program's Sequence, made once

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
                outcome = yield from self._run_steps(self._program_from(st.pc))
                step = steps[st.pc]  # the last step the instrument ran
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

    # --- one step, or a program of steps ---------------------------------------------
    def _program_from(self, pc: int) -> list[int]:
        """The steps from `pc` to run as one program (`programs`), or [pc]: a channel runs
        programs only on an instrument that does (`Sequence` in its TECHNIQUES), without
        an interlock rule of its own or its potentiostat's (the host judges those on every
        sample; a `hold` acts between steps), with no pause wanted and no step cut short."""
        if self.window_poll_s is None or self._pause_wanted or self.state.done_before or \
                Sequence not in getattr(self.pstat, "TECHNIQUES", ()):
            return [pc]
        return programs.program_from(self.plan.program.steps, pc, self.state,
                                     lambda k: self._make(k)[0])

    def _run_steps(self, pcs: list[int]):
        """The step at pcs[0], or the steps at `pcs` as one program on the instrument
        (`programs`): each step's samples stored under its own step number, id and
        type, its cycle figures and duration taken as it ends. Returns the last step's
        outcome (st.pc at it), or where a pause or an abort cut the program short (st.pc at
        the step it cut)."""
        st, steps = self.state, self.plan.program.steps
        before = st.done_before or {"elapsed_s": 0.0, "q_Ah": 0.0}
        made = [self._make(pc) for pc in pcs]
        if len(pcs) == 1:
            technique = rest_of(made[0][0], before["elapsed_s"])
        else:
            key = tuple(pcs)
            technique = self._programs.get(key) or self._programs.setdefault(
                key, Sequence(tuple(tq for tq, _ in made)))
        st.pc = pcs[0]
        st.step_count += 1
        # on a real-time clock the instrument runs on while the host works (a step's end is
        # seen a poll later): a step never starts before the last sample of the one before
        run = yield from patiently(self, lambda: self.pstat.start(self.number, technique))
        t0 = max(self.env.now, self._last_sample_t)  # after a lost link ridden out, if any
        r = _Running(pcs, made, t0, HostEnds(steps[st.pc], self.plan, t0, before))
        # in columns, where the driver can; a program's by its steps
        poll = getattr(run, "poll_block", run.poll) if len(pcs) == 1 else run.poll_phases
        keys = [str(pc) for pc in pcs]  # each step's in the state (`polling`)
        while True:
            yield self._sleep(polling.wait_s(self, run, r.ends, *(
                (made[r.phase][0], keys[r.phase + 1:]) if len(pcs) > 1 else ())))
            self._absorb(r, run, (yield from patiently(self, poll)))
            self._check_watch(r.taken)
            outcome = r.outcome
            if outcome is None and self._abort_requested:
                outcome = StepOutcome("aborted", "stopped by the operator")
            if outcome is None and (self._pause_wanted or self.watch.pausing or any(
                    rule.reaction == "pause" for rule in self._held_by)):
                outcome = StepOutcome("paused")
                st.done_before = r.ends.done(self.env.now) if hasattr(
                    made[r.phase][0], "duration_s") else None  # a spectrum or a sweep cut
                # short is measured again
            if outcome is None and end_overdue(self, run, t0):  # its end lost on the wire
                yield from patiently(self, lambda: self.pstat.stop(self.number))
                if run.finished:  # what the stop brought, from the instrument's buffer
                    self._absorb(r, run, poll())
                    outcome = r.outcome
            if outcome is None and run.finished:
                outcome = r.ends.instrument_end(run.end_reason, self)
            elif outcome is not None:
                yield from patiently(self, lambda: self.pstat.stop(self.number))
                tell_gaps(self, run, t0)
            if outcome is not None:
                self._store_cycles(r.taken.feed(self.counter))
                if outcome.end not in ("aborted", "paused") and not run_end_lost(run):
                    polling.took(st, (r.ends.last[0] if r.ends.last else self.env.now)
                                 - r.ends.t0)
                return outcome

    def _absorb(self, r: _Running, run, got) -> None:
        """A poll's samples (a program's by its steps): each step the instrument went on
        from ended (`_next_in_program`), each sample taken by its own step (`_take`); what
        the wire lost told."""
        tell_gaps(self, run, r.t0)
        steps = self.plan.program.steps
        for k, samples in (got if len(r.pcs) > 1 else [(0, got)]):
            while r.phase < k:  # the instrument went on to its next step
                self._next_in_program(r, not run_end_lost(run))
            if samples:
                r.outcome = self._take(samples, r.t0, steps[self.state.pc],
                                       r.made[r.phase][1], r.ends, r.taken)

    def _take(self, samples, t0: float, step: pr.PlannedStep, limits, ends: HostEnds,
              taken: Taken) -> StepOutcome | None:
        """A poll's samples of the step at pc (times from `t0`): stored, checked against
        the safety limits and the channel's rules, added to what the step took, judged
        against the ends the host judges (the outcome, if one is reached)."""
        st = self.state
        if isinstance(samples, SampleBlock) and not as_rows(samples):
            samples = samples.samples()
        if not isinstance(samples, SampleBlock) and samples[0].f_Hz is not None:
            self._spectrum(samples, t0)
            return None
        step_type, step_id = step.step_type, st.pc
        rows, columns = rows_of(samples, t0, st.cycle, st.step_count, step_id, step_type)
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
        return ends.take(rows, columns)

    def _next_in_program(self, r: _Running, timed: bool) -> None:
        """The step at st.pc has ended within a program (by its own limit or time, as
        the instrument judged): its cycle figures taken, and its duration (from its start,
        the last sample of the step before, to its last sample) where `timed` (not where
        the program's end was lost on the wire: what it sent last is missing); the next
        step begins where it ended."""
        st = self.state
        self._store_cycles(r.taken.feed(self.counter))
        end = r.ends.last[0] if r.ends.last else r.ends.t0
        if timed:
            polling.took(st, end - r.ends.t0)
        r.phase += 1
        st.pc = r.pcs[r.phase]
        st.step_count += 1
        r.ends, r.taken = HostEnds(self.plan.program.steps[st.pc], self.plan, end), Taken()

    def _make(self, pc: int) -> tuple:
        """The technique and safety limits of the step at `pc`, made once (a cycling
        protocol runs the same few steps again and again): the same objects each time, so
        the driver finds its script by the technique itself."""
        made = self._made.get(pc)
        if made is None:
            step = self.plan.program.steps[pc]
            made = self._made[pc] = (pr.technique(step, self.plan),
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
