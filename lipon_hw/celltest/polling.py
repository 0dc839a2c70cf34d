"""When a cell-test channel asks its instrument for samples (`wait_s`), from when it
expects the step to end (`expected_end`) and how long the step took before (`took`).

Polling: an instrument that measures and buffers on its own (MethodSCRIPT) is polled
rarely while a step is far from its end and often when it is near: a step that ran
before is expected to last about as long again (cycles repeat), or, once it has run twice,
to change by as much as it changed last time (a fading cell's steps shorten cycle by
cycle); a first constant current about as long as it takes to pass the cell's capacity.
Prompt polling starts a margin before the expected end: 2 % of the step, and once the step
is steady (NEAR_MARGIN_S and SHIFT_MARGINS times its last change both less than that),
the longer of those two; a steady step foreseen to within NEAR_END_POLL_S is first asked
END_GRACE_INTERVALS measurements after its expected end (the instrument sees an end only
at a measurement, and a foreseen end is off by about that much): it is found ended then,
or by a prompt poll within NEAR_END_POLL_S after (one poll where two were needed a third
of the time when the first came at the expected end itself). Before that, a step whose
voltage is seen heading for its end (the slope of its last two samples) is polled again
at half the time that slope gives to reach it, or 5 s: a step that ends sooner than its
last run (the second 15 h formation charge, 3 % shorter than the first) is caught in its
knee. A steady step is polled so only when that slope says its end comes before its
expected end, and from then on at NEAR_END_POLL_S: one or two polls a step (its end; a
halfway poll too where the longest wait is shorter than the step), where the slope's
polls made seven. So the gap between the instrument ending a step and the host starting
the next stays a few seconds, while a month of cycling costs few exchanges. The longest
wait: MAX_POLL_S, or WINDOW_POLL_S where the instrument judges the safety window (see
there), stretched by up to STRETCH_FRACTION to a steady step's expected end.
A host-timed instrument (an SMU) is polled at its measurement interval.

Steps the instrument runs one after the other as one program (a `Sequence`: see
`channels`) are polled as one step: their end is the last one's, expected after the
running step's expected duration and each later one's (`later`), steady when their
changes together are; the running step's own ends (its time limit, the slope towards
its voltage end) only bring the next step, not a poll.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from lipon_hw.celltest.step_ends import MIN_POLL_S, HostEnds
from lipon_hw.techniques import EIS, ConstantCurrent

NEAR_END_POLL_S = 5.0
#: ... or this fraction of the step (or program), if longer: a 10 h formation step's end
#: is asked for every 36 s, not every 5 s (once two runs of it differ by more than 2 %, 2 %
#: of it — 720 s — is polled promptly: 144 polls at 5 s)
PROMPT_FRACTION = 1e-3
#: a steady step (or program) is first asked this many of its measurement intervals after
#: its expected end: in the 16 × 200-cycle LNMO campaign (1 s intervals) programs ended
#: from 2 s before to 3 s after their foreseen end, a third of them after it and 6 % more
#: than 2 s after
END_GRACE_INTERVALS = 2.0
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
#: a steady end expected within this fraction of the longest wait after it is waited for,
#: not polled just before (a 3,630 s cycle: one poll, not one at 3,600 s and one at its end)
STRETCH_FRACTION = 0.05


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


def wait_s(channel, run, ends: HostEnds, technique=None, later: Sequence[str] = ()) -> float:
    """How long `channel` lets the instrument run before asking for its samples:
    `technique` the step running (the run's own if None), `later` the keys of the steps
    the instrument runs after it in the same program (a Sequence's)."""
    if getattr(run, "poll_interval_s", None):
        return run.poll_interval_s
    now, technique = channel.env.now, technique or run.technique
    if isinstance(technique, EIS):  # a few periods per frequency: poll a few times
        return min(channel.max_poll_s,
                   max(MIN_POLL_S, sum(1 / f for f in technique.frequencies_Hz)))
    expected = expected_end(channel.state, channel.plan, technique, ends, later)
    # longer while the instrument judges the safety window and the step's end is
    # known, not guessed (a first constant current's, from the cell's capacity)
    known_end = expected is not None and expected[2]
    longest = channel.window_poll_s if channel.window_poll_s and known_end and \
        getattr(run, "judges_window", False) else channel.max_poll_s
    if expected is not None:
        # rarely until the step's end is near, then at the record cadence or faster
        end, near, known, steady = expected
        prompt = max(NEAR_END_POLL_S, PROMPT_FRACTION * (end - ends.t0))
        if now < near - MIN_POLL_S:  # unless the voltage says its end comes sooner
            # (nor past the step's own run time: a first constant current is expected
            # to pass the cell's capacity, which its time limit may cut short)
            wait = near - now if steady and near - now <= (1 + STRETCH_FRACTION) * longest \
                else min(longest, near - now)
            if later:  # the step's own ends bring the next step, not the program's end
                return wait
            wait = min(wait, max(MIN_POLL_S, ends.duration_left(now)))
            soon = ends.voltage_time_left(now)
            # an extrapolation already overdue is stale: the slope of two samples an
            # hour apart (a rare record rule) points past a steady step's end for the
            # rest of it, and would call a poll every NEAR_END_POLL_S till then
            if not steady or 0 < soon < min(wait, end - now):
                wait = min(wait, max(prompt, 0.5 * soon))
            return wait
        if steady:  # its end foreseen to within the margin: the prompt cadence
            return min(prompt, longest)
    record = getattr(technique, "record", None)
    cadence = min(getattr(record, "dt_s", None) or longest, longest)
    if expected is not None and known:
        cadence = min(cadence, prompt)
    elif expected is not None:  # a first time: ever closer as the expected end nears
        cadence = min(max(cadence, 0.1 * (end - now)), longest)
    if later:
        return max(MIN_POLL_S, cadence)
    return min(cadence, max(MIN_POLL_S, 0.7 * ends.time_left(now)))


def expected_end(state, plan, technique, ends: HostEnds, later: Sequence[str] = ()
                 ) -> tuple[float, float, bool, bool] | None:
    """When the step should end, from when its end may come, and whether that is known
    (from its runs before, or its own capacity end) rather than guessed (a first
    constant current), and whether it is steady (foreseen from its last change, to
    within a margin under 2 % of it); None when there is nothing to go by. A step that
    ran before lasts as long again, changed by its last change when it has run twice; a
    constant current passes the cell's capacity — or the step's own capacity end when
    that comes first (it is exact: polled for, not guessed). The margins: see the
    module's docstring. With `later` (the keys of the steps the instrument runs after this
    one in the same program, each of which ran before), the end of the last of them: the
    durations summed, its margin from the changes' sizes added in quadrature."""
    key = str(state.pc)
    last = state.durations.get(key)
    if last is not None:
        keys = (key, *later)
        last = sum(state.durations[k] for k in keys)
        shifts = [state.shifts.get(k) for k in keys]
        window = (1 - EXPECTED_FRACTION) * last
        # the steps' changes as independent: their sizes add in quadrature
        change = None if None in shifts else math.hypot(*shifts)
        if change is None or change > window:  # not steady (yet): 2 % of it
            return ends.t0 + last, ends.t0 + last - window, True, False
        end = ends.t0 + last + sum(shifts)
        margin = min(max(NEAR_MARGIN_S, SHIFT_MARGINS * change), window)
        # foreseen to within the prompt cadence: first asked just after the end itself
        grace = END_GRACE_INTERVALS * getattr(technique, "interval_s", 1.0)
        near = end + grace if margin <= NEAR_END_POLL_S else end - margin
        return end, near, True, margin < window
    current = getattr(technique, "current_A", None)
    if not isinstance(technique, ConstantCurrent) or not current:
        return None
    if ends.capacity is not None:
        expected = (ends.capacity - abs(ends.q)) * 3600 / abs(current)
        return ends.t0 + expected, ends.t0 + EXPECTED_FRACTION * expected, True, False
    if plan.capacity_Ah:
        expected = plan.capacity_Ah * 3600 / abs(current)
        return ends.t0 + expected, ends.t0 + FIRST_TIME_FRACTION * expected, False, False
    return None


def took(state, duration: float) -> None:
    """The step at pc ran to its end in `duration`: its expected duration next time."""
    key = str(state.pc)
    last = state.durations.get(key)
    if last is not None:
        state.shifts[key] = duration - last
    state.durations[key] = duration
