"""ride_out: a lost link is waited for its whole grace on the run clock, the last try at
the grace itself (it gave up at 31 s of a 60 s grace: the next back-off would have passed
it), and no longer."""

from __future__ import annotations

import pytest
import simpy

from lipon_hw.errors import LinkLost
from lipon_hw.ride_out import ride_out


def _ride(back_at_s: float, grace_s: float = 60.0):
    """ride_out of a link lost from t = 0 until `back_at_s`: (the attempt's result or the
    LinkLost, the hold and back calls, the times tried)."""
    env = simpy.Environment()
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
