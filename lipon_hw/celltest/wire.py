"""How a cell-test channel lives with its instrument's wire: a lost link ridden out on the
run clock, output the wire lost told as alarms, and the cell's disconnection tried until
it is done or its patience is spent.

Budgets (run clock; virtual in a simulated run, so the same on every machine):
- LINK_PATIENCE_S: a start, poll, stop or cell-off that finds the link lost (an unplugged
  port, a silent or garbling instrument: `LinkLost` after the Link's own bounded retries)
  is tried again after 1, 2, 4 … 30 s, the last try at 15 minutes; then the channel fails
  with the link's words. A MethodSCRIPT instrument runs its step on its own meanwhile, its
  limits in its script, and keeps what it measured while the port was unplugged.
- OVERDUE_S: a step whose own end (the script's last lines) went unseen, lost on a
  garbling or silent wire, would be waited for forever; once it is overdue (its length,
  as the technique says, plus a tenth plus a minute) the channel stops it (`Z`): the
  instrument says nothing runs, and the lost end is told as a gap (`end_overdue`).
- SAFE_PATIENCE_S: a channel that has ended tries to stop its script and switch its cell
  off (after 1, 2, 4 … 30 s) for up to 30 minutes, the last try at the 30 minutes (a lost
  link, a channel in fault refusing commands) before it says the cell could not be
  disconnected. A run that stops at once (Ctrl-C, the store failing) does not wait:
  every cell gets one try, then the run's own bounded retry
  (`groups.disconnect`).

A port that has never answered (a run that could not start: not in this lab's life, and
the channel never ran before a resume) is not waited for: its first failure is the
channel's.
"""

from __future__ import annotations

from lipon_hw.celltest.step_ends import MIN_POLL_S
from lipon_hw.errors import LinkLost, LiponError
from lipon_hw.link_health import wire_slack_s
from lipon_hw.ride_out import Patience
from lipon_hw.techniques import CCCV, EIS, CyclicSweep, LinearSweep, Sequence, sweep_legs

LINK_PATIENCE_S = 900.0
SAFE_PATIENCE_S = 1800.0
RETRY_MAX_S = 30.0
#: how far past its expected length (plus a tenth of it) a step's own end may go unseen
#: before the host asks the instrument whether the script still runs
#: (at least WIRE_SLACK_WALL_S of wall time on a real-time clock: `wire_slack_s`)
OVERDUE_S = 60.0


def never_answered(channel) -> bool:
    """The channel's link has never answered: not since the lab was connected, nor in an
    earlier process of the run (a resumed channel's did)."""
    if getattr(channel, "ran_before", False):
        return False
    return any(not link.answered for link in _links_of(channel))


def _links_of(channel) -> list:
    """The channel's Link as a list, where its potentiostat's watch knows it (empty: not
    known)."""
    watch = getattr(channel, "watch", None)
    return watch.links_of(channel.number) if watch is not None else []


def patiently(channel, call):
    """call(), tried again while its link is lost (LinkLost), on the run clock, for up to
    LINK_PATIENCE_S; then LinkLost, in the words of the outage's first failure and its last.
    An outage ridden out is told as an alarm of the channel (reaction `gap`) at the moment
    the link answered again: the samples the host could not take meanwhile (a step that
    ended unseen waits for the next) are no sample lost without a word. A generator:
    `yield from` it."""
    env = channel.env
    patience, first = Patience(env, LINK_PATIENCE_S, MIN_POLL_S, RETRY_MAX_S), None
    while True:
        try:
            result = call()
        except LinkLost as exc:
            first = first or exc  # the words of the outage's start: what went wrong
            if never_answered(channel):
                raise
            if patience.spent:
                raise LinkLost(f"{first}; still lost after {patience.elapsed_s:.0f} s of "
                               f"trying again ({exc})") from None
        else:
            if first is not None:
                channel.store.add_alarm(
                    channel.run_id, env.now, "warning", f"channel {channel.number}",
                    f"link lost from t = {patience.since:.1f} s to t = {env.now:.1f} s, "
                    f"ridden out: no samples taken meanwhile ({first})", None, "gap")
            return result
        yield from patience.next_try(_links_of(channel))


def tell_gaps(channel, run, t0: float) -> None:
    """What the instrument's output lost on the wire (`run.take_gaps()`, script time),
    stored as an alarm of the channel with reaction `gap` at the start of each stretch."""
    take = getattr(run, "take_gaps", None)
    for a, b, why in (take() if take is not None else ()):
        end = (f"t = {t0 + b:.1f} s" if b is not None
               else f"the script's end (seen missing at t = {channel.env.now:.1f} s)")
        channel.store.add_alarm(channel.run_id, t0 + a, "warning", f"channel {channel.number}",
                                f"samples from t = {t0 + a:.1f} s to {end} not received: "
                                f"{why}", None, "gap")


def disconnect_patiently(channel):
    """The channel's technique stopped and cell off, tried on the run clock for up to
    SAFE_PATIENCE_S; marks the channel disconnected when done. What the last try could not
    do is the channel's own `_disconnect`'s to say. A generator: `yield from` it."""
    if channel._disconnected:
        return
    env, pstat = channel.env, channel.pstat
    patience = Patience(env, SAFE_PATIENCE_S, MIN_POLL_S, RETRY_MAX_S)
    while True:
        try:
            pstat.stop(channel.number)
            pstat.cell_off(channel.number)
        except LiponError:
            if never_answered(channel) or patience.spent:
                return  # the channel's own `_disconnect` tries once more and says so
            yield from patience.next_try(_links_of(channel))
            continue
        channel._disconnected = True
        if env.now > patience.since:  # more than one try: say when the cell was reached
            tell_reached(channel.store, channel.run_id, channel.number, env.now)
        return


def tell_reached(store, run_id: int, number: int, now: float) -> None:
    """The alarm of a cell disconnected once its lost link answered again."""
    store.add_alarm(run_id, now, "info", f"channel {number}",
                    "its link answers again: cell disconnected", reaction="safe state")


def expected_s(technique) -> float | None:
    """How long the instrument takes for the technique at most, as it says (None: not
    known): its run time (a CCCV's two phases each, a Sequence's phases' sum), an EIS'
    three periods and 50 ms a point, a sweep's legs at its rate."""
    if isinstance(technique, Sequence):  # its phases one after the other
        phases = [expected_s(phase) for phase in technique.phases]
        return None if None in phases else sum(phases)
    if isinstance(technique, EIS):
        return 1.0 + sum(3.0 / f + 0.05 for f in technique.frequencies_Hz)
    if isinstance(technique, LinearSweep | CyclicSweep):
        return sum(abs(b - a) for a, b in sweep_legs(technique)) / technique.rate_V_s
    duration = getattr(technique, "duration_s", None)
    if duration is None:
        return None
    return 2 * duration if isinstance(technique, CCCV) else duration


def end_overdue(channel, run, t0: float) -> bool:
    """Whether the step's own end is overdue (see OVERDUE_S): the caller stops it."""
    if run.finished:
        return False
    expected = expected_s(run.technique)
    if expected is None:
        return False
    return channel.env.now > t0 + 1.1 * expected + wire_slack_s(channel.env, OVERDUE_S)
