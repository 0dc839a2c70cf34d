"""Link health as a quantity of a deposition run (issue 11, item 2): interlock rules read
`<instrument>.link_health`, its changes are alarms in the store, and a watched link that
drops and comes back pauses the run instead of failing it."""

from __future__ import annotations

import pytest
from test_engine import Bench

from lipon_hw.deposition.link_watch import LINK_GRACE_S
from lipon_hw.errors import InputError, LinkLost

PAUSE_ON_QCM = '  - {when: "qcm.link_health > 0 for 30 s", then: pause}\n'


def _drop(bench: Bench, endpoint: str, for_s: float, after_s: float = 60.0) -> None:
    emulator = bench.lab.sim.emulators[endpoint]

    def unplug():
        emulator.faults.unplugged = True

        def replug():
            yield bench.env.timeout(for_s)
            emulator.faults.unplugged = False

        bench.env.process(replug())

    bench.at_deposit(unplug, after_s=after_s)


def test_a_watched_link_that_drops_pauses_the_run_which_then_completes(tmp_path):
    bench = Bench(tmp_path, thickness_nm=30, extra=PAUSE_ON_QCM)
    _drop(bench, "qcm", for_s=90.0)
    result = bench.engine.run()
    assert result.status == "completed"
    alarms = bench.store.alarms(bench.run_id)
    from_qcm = [a for a in alarms if a.source == "qcm"]
    assert from_qcm[0].message.startswith("link to sim://qcm lost:")
    assert "unplugged" in from_qcm[0].message and from_qcm[0].severity == "error"
    assert from_qcm[-1].message == "link to sim://qcm restored"
    lost_at, restored_at = from_qcm[0].t_s, from_qcm[-1].t_s
    assert 90.0 <= restored_at - lost_at <= 90.0 + 35.0  # within the back-off of the return
    paused = [a for a in alarms if a.reaction == "pause"]
    assert len(paused) == 1 and paused[0].rule == "interlock 3"
    assert paused[0].t_s == pytest.approx(lost_at + 30.0, abs=bench.recipe.record_every_s)
    assert any(a.reaction == "resume" and a.t_s >= restored_at for a in alarms)
    health = [v for _t, _q, v in bench.store.readings(bench.run_id, ["qcm.link_health"])]
    assert health == [2.0, 0.0]  # stored when it changes (from 0 at the start)
    layer = bench.store.film_stack("T-1")[0]
    assert layer.thickness_nm == pytest.approx(30, abs=0.5)
    bench.assert_safe()


def test_a_watched_link_that_never_returns_fails_safe_once_the_pause_cannot_help(tmp_path):
    """A rule that only alarms gives the lost link its grace: its `for` and two samples, or
    the ride-out every lost link gets (LINK_GRACE_S) if longer, no more."""
    rule = '  - {when: "qcm.link_health > 0 for 10 s", then: alarm}\n'
    bench = Bench(tmp_path, thickness_nm=200, extra=rule)
    bench.at_deposit(lambda: setattr(bench.lab.sim.emulators["qcm"].faults, "unplugged",
                                     True))
    with pytest.raises(LinkLost, match=r"sim://qcm \(qcm\) has been lost for"):
        bench.engine.run()
    alarms = bench.store.alarms(bench.run_id)
    assert any(a.rule == "interlock 3" and a.reaction == "alarm" for a in alarms)
    lost = next(a for a in alarms if a.source == "qcm")
    every = bench.recipe.record_every_s
    assert bench.env.now - lost.t_s <= max(10 + 2 * every, LINK_GRACE_S) + every
    bench.assert_safe()


def test_an_unwatched_link_lost_longer_than_its_ride_out_fails_the_run(tmp_path):
    bench = Bench(tmp_path, thickness_nm=200)
    _drop(bench, "qcm", for_s=LINK_GRACE_S + 30.0)
    with pytest.raises(LinkLost, match="sim://qcm"):
        bench.engine.run()
    bench.assert_safe()


def test_link_health_rules_validate_against_the_recipes_instruments(tmp_path):
    Bench(tmp_path, extra='  - {when: "shutter.link_health >= 2", then: abort}\n')
    with pytest.raises(InputError, match="nosuch"):
        Bench(tmp_path, extra='  - {when: "nosuch.link_health > 0", then: pause}\n')
