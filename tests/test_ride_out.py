"""ride_out: a lost link is waited for its whole grace on the run clock, the last try at
the grace itself (it gave up at 31 s of a 60 s grace: the next back-off would have passed
it), and no longer."""

from __future__ import annotations

import pytest
import simpy

from lipon_hw.errors import LinkLost
from lipon_hw.ride_out import ride_out


def _ride(back_at_s: float, grace_s: float = 60.0, t0: float = 0.0):
    """ride_out of a link lost from t = t0 until `back_at_s`: (the attempt's result or the
    LinkLost, the hold and back calls, the times tried)."""
    env = simpy.Environment(initial_time=t0)
    tried, told = [], []

    def attempt():
        tried.append(env.now)
        if env.now < back_at_s:
            raise LinkLost("sim://x is unplugged")
        yield env.timeout(0)
        return "measured"

    def run():
        try:
            return (yield from ride_out(env, attempt, grace_s, lambda: False,
                                        lambda exc: told.append(("hold", env.now)),
                                        lambda s: told.append(("back", s))))
        except LinkLost as exc:
            return exc

    proc = env.process(run())
    for _ in range(1000):  # a stalled clock (waits that round to nothing) fails, not hangs
        if proc.triggered:
            break
        env.step()
    assert proc.triggered, f"ride_out still waiting at t = {env.now!r} after 1000 events"
    env.run(proc)
    return proc.value, told, tried


@pytest.mark.parametrize("back_at_s", [0.5, 45.0, 59.5, 60.0])
def test_a_link_back_within_the_grace_is_ridden_out(back_at_s):
    result, told, tried = _ride(back_at_s)
    assert result == "measured"
    assert told[0] == ("hold", 0.0) and told[1][0] == "back" and told[1][1] >= back_at_s
    assert tried[-1] <= 60.0


def test_a_link_lost_past_the_grace_fails_at_the_grace_in_its_words():
    result, told, tried = _ride(60.5)
    assert isinstance(result, LinkLost)
    assert str(result).startswith("sim://x is unplugged; still lost after 60 s of trying "
                                  "again"), result
    assert tried == [0.0, 1.0, 3.0, 7.0, 15.0, 31.0, 60.0] and told == [("hold", 0.0)]


def test_the_last_wait_is_to_a_deadline_not_a_difference_that_rounds_to_nothing():
    """A chaos run hung here: lost from t = 13.609965982852207, the wait left after 31 s
    of trying was 60 − (now − since), which at now = since + 60 rounded to 1.4e-14 s, a
    timeout that does not move the clock, forever."""
    result, told, tried = _ride(1000.0, t0=13.609965982852207)
    assert isinstance(result, LinkLost) and "still lost after 60 s" in str(result)
    assert tried[-1] == 13.609965982852207 + 60.0 and len(tried) == 7
