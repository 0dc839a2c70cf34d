"""What the chaos bench found on the wire (issue 11, item 6): a safe state tried again,
bounded, with a lost link re-opened at once; MethodSCRIPT output a garbled or silent wire
lost told as gaps, never dropped without a word; a short outage ridden out by a cell test
and a channel in fault disconnected once it clears; a told gap counted apart by the bench."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import simpy
from faulty import at, connect

from lipon_hw.celltest.wire import SAFE_PATIENCE_S, disconnect_patiently, patiently
from lipon_hw.errors import InstrumentError, LinkLost
from lipon_hw.link_health import instrument_links
from lipon_hw.links import Health
from lipon_hw.ride_out import ride_out
from lipon_hw.safe_retry import SafeCall, retry_safe_state
from lipon_hw.store import Store
from lipon_hw.techniques import OCV, ConstantCurrent, Recording

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from chaos_checks import judge  # noqa: E402


def _lost_mfc():
    lab, clock = connect([])
    mfc, emulator = lab.instruments["n2_mfc"], lab.sim.emulators["mfc"]
    mfc.flow_sccm()  # it answered once
    at(clock, 10.0)
    emulator.faults.unplugged = True
    with pytest.raises(LinkLost):
        mfc.flow_sccm()
    return lab, clock, mfc, emulator


def test_a_safe_state_is_tried_again_as_the_clock_moves_and_the_port_comes_back():
    lab, clock, mfc, emulator = _lost_mfc()
    waits = []

    def wait(s):
        waits.append(s)
        at(clock, clock.t + s)
        if clock.t >= 17.0:  # the port is back 7 s later
            emulator.faults.unplugged = False

    failed = retry_safe_state([SafeCall("n2_mfc", mfc.make_safe,
                                        instrument_links(lab, "n2_mfc"))], wait)
    assert failed == {}
    assert waits == [1.0, 2.0, 4.0] and lab.pool.link("sim://mfc").health is Health.OK


def test_a_safe_state_that_never_gets_through_fails_after_its_patience():
    lab, clock, mfc, _ = _lost_mfc()
    waits = []
    told = []
    failed = retry_safe_state([SafeCall("n2_mfc", mfc.make_safe,
                                        instrument_links(lab, "n2_mfc"))], waits.append,
                              patience_s=20.0, on_retry=told.append)
    assert list(failed) == ["n2_mfc"] and "unplugged" in failed["n2_mfc"]
    assert waits == [1.0, 2.0, 4.0, 8.0]  # 15 s waited; one more would pass 20 s
    assert clock.t == 10.0  # each try re-opened the port at once, back-off or not
    assert len(told) == 1 and list(told[0]) == ["n2_mfc"]  # told once, before the first wait


def test_one_dead_instrument_never_keeps_the_next_waiting():
    """Round one tries every instrument in order before any wait; only the dead one is
    tried again."""
    lab, clock, mfc, _ = _lost_mfc()
    calls, waits = [], []
    failed = retry_safe_state(
        [SafeCall("n2_mfc", lambda: (calls.append(("mfc", len(waits))), mfc.make_safe()),
                  instrument_links(lab, "n2_mfc")),
         SafeCall("other", lambda: calls.append(("other", len(waits))), [])],
        waits.append, patience_s=3.0)
    assert calls[:2] == [("mfc", 0), ("other", 0)]
    assert calls[2:] == [("mfc", 1), ("mfc", 2)] and waits == [1.0, 2.0]
    assert list(failed) == ["n2_mfc"]


def test_a_port_that_never_answered_is_reported_after_one_try():
    """A run that could not start: its port never answered, so its safe state is not
    waited for (the operator hears at once)."""
    lab, _ = connect([])
    lab.sim.emulators["mfc"].faults.unplugged = True
    assert not lab.pool.link("sim://mfc").answered
    waits = []
    failed = retry_safe_state([SafeCall("n2_mfc", lab.instruments["n2_mfc"].make_safe,
                                        instrument_links(lab, "n2_mfc"))], waits.append)
    assert list(failed) == ["n2_mfc"] and waits == []


def test_reopen_now_skips_the_back_off():
    lab, clock, mfc, emulator = _lost_mfc()
    emulator.faults.unplugged = False
    with pytest.raises(LinkLost, match="next re-open"):
        mfc.flow_sccm()
    lab.pool.link("sim://mfc").reopen_now()
    mfc.flow_sccm()


def _charging(lab):
    mes4 = lab.instruments["mes4"]
    return mes4, mes4.start(1, ConstantCurrent(3e-6, 3000.0, 5.1, None, 1.0,
                                                  Recording(30.0, 0.005)))


def test_garbled_output_lines_are_told_as_a_gap_between_the_samples_around_them():
    lab, clock = connect([])
    mes4, run = _charging(lab)
    at(clock, 300.0)
    good = run.poll()
    lab.sim.emulators["mes4/1"].faults.garble_replies = 1
    at(clock, 600.0)
    samples = run.poll()
    assert run.corrupt_lines, "the middle of the reply was garbled"
    gaps = run.take_gaps()
    assert len(gaps) == 1 and "garbled" in gaps[0][2]
    a, b, _ = gaps[0]
    times = [s.t_s for s in good + samples]
    assert a in times and b in times and b > a  # the garbled line(s) came between them
    assert not any(a < t < b for t in times) and run.take_gaps() == []


def test_output_sent_while_the_wire_was_silent_is_told_as_a_gap():
    lab, clock = connect([])
    mes4, run = _charging(lab)
    port = lab.sim.emulators["mes4/1"]
    at(clock, 300.0)
    before = run.poll()
    port.faults.link_down = True
    at(clock, 500.0)
    assert run.poll() == []  # a poll in the silence sees nothing: no error either
    port.faults.link_down = False
    at(clock, 700.0)
    after = run.poll()
    (a, b, why), = run.take_gaps()
    assert a == before[-1].t_s and b == after[0].t_s and "record rule" in why
    assert before[-1].t_s <= 300.0 and after[0].t_s >= 500.0


def test_output_kept_while_the_port_was_unplugged_is_no_gap():
    lab, clock = connect([])
    mes4, run = _charging(lab)
    port = lab.sim.emulators["mes4/1"]
    at(clock, 300.0)
    run.poll()
    port.faults.unplugged = True
    at(clock, 400.0)
    with pytest.raises(LinkLost):
        run.poll()
    port.faults.unplugged = False
    at(clock, 700.0)
    samples = run.poll()
    assert samples and samples[0].t_s <= 330.0 and run.take_gaps() == []


def test_an_end_that_went_unseen_is_a_gap_to_the_script_end():
    lab, clock = connect([])
    mes4 = lab.instruments["mes4"]
    run = mes4.start(1, OCV(400.0, 1.0, Recording(30.0)))
    port = lab.sim.emulators["mes4/1"]
    at(clock, 100.0)
    run.poll()
    port.faults.link_down = True
    at(clock, 500.0)
    run.poll()  # the end and the last samples go out into the silence
    port.faults.link_down = False
    mes4.stop(1)  # nothing runs any more
    assert run.finished and not run.aborted
    (a, b, why), = run.take_gaps()
    assert b is None and a <= 100.0 and "end" in why


class _Channel:
    """What the wire helpers use of a cell-test channel (its alarms kept in a list)."""

    def __init__(self, env, pstat, number):
        self.env, self.pstat, self.number = env, pstat, number
        self._disconnected = False
        self.run_id, self.alarms = 1, []
        self.store = self

    def add_alarm(self, *args, reaction=None):
        self.alarms.append((*args, reaction) if reaction else args)


def _on_env(faults):
    from faulty import station_text

    from lipon_hw.station import load_station

    env = simpy.Environment()
    station = load_station(text=station_text(faults), path="faulty_station.yaml")
    return env, station.connect(lambda: env.now)


def test_a_short_unplug_is_ridden_out_on_the_run_clock():
    env, lab = _on_env([{"fault": "link_drop", "instrument": "mes4", "at_s": 100,
                         "for_s": 20}])
    mes4 = lab.instruments["mes4"]
    run = mes4.start(1, OCV(1000.0, 1.0, Recording(30.0)))
    ch, got = _Channel(env, mes4, 1), []

    def channel():
        yield env.timeout(110)
        got.extend((yield from patiently(ch, run.poll)))

    env.process(channel())
    env.run()
    assert 120 <= env.now <= 140 and got and run.take_gaps() == []
    (_, t, _, source, message, _, reaction), = ch.alarms  # the outage, told where it ended
    assert (t, source, reaction) == (env.now, "channel 1", "gap")
    assert message.startswith("link lost from t = 110.0 s") and "unplugged" in message


def test_an_unplug_longer_than_the_patience_fails_with_the_links_words():
    env, lab = _on_env([{"fault": "link_drop", "instrument": "mes4", "at_s": 100}])
    run = lab.instruments["mes4"].start(1, OCV(5000.0, 1.0, Recording(30.0)))
    ch = _Channel(env, lab.instruments["mes4"], 1)

    def channel():
        yield env.timeout(110)
        yield from patiently(ch, run.poll)

    proc = env.process(channel())
    with pytest.raises(LinkLost, match="unplugged.*still lost after 900 s"):
        env.run(until=proc)
    assert env.now - 110 == 900.0 and ch.alarms == []  # the last try at the patience


class _Watch:
    """What the wire helpers ask of a potentiostat's watch: a channel's Link."""

    def __init__(self, lab, address):
        self.link = lab.pool.link(address)

    def links_of(self, number):
        return [self.link]


def test_an_unplug_just_shorter_than_the_patience_is_ridden_out():
    """Back 5 s before the 15 minutes are up: the last try comes at the patience itself,
    and opens the port although the link's own back-off (30 s by then) has not run out (it
    gave up at ~871 s, when the next 30 s back-off would have passed the patience)."""
    env, lab = _on_env([{"fault": "link_drop", "instrument": "mes4", "at_s": 100,
                         "for_s": 905}])
    run = lab.instruments["mes4"].start(1, OCV(5000.0, 1.0, Recording(30.0)))
    ch = _Channel(env, lab.instruments["mes4"], 1)
    ch.watch = _Watch(lab, "sim://mes4/1")

    def channel():
        yield env.timeout(110)
        yield from patiently(ch, run.poll)

    env.run(until=env.process(channel()))
    assert env.now - 110 == 900.0 and len(ch.alarms) == 1


@pytest.mark.parametrize("reopened", [True, False])
def test_ride_out_opens_the_port_for_its_last_try_whatever_the_links_back_off(reopened):
    """A grace of 100 s (a link_health rule's, longer than LINK_GRACE_S): tries at 0, 1, 3,
    7, 15, 31, 61, 91 s and 100 s; the link back at 95 s. After its failed open at 91 s the
    Link would re-open at 121 s, so the try at 100 s was refused unopened and the run
    failed with its instrument answering; told its links, ride_out opens the port for it."""
    env, lab = _on_env([{"fault": "link_drop", "instrument": "mes4", "at_s": 100,
                         "for_s": 105}])
    run = lab.instruments["mes4"].start(1, OCV(5000.0, 1.0, Recording(30.0)))
    link = lab.pool.link("sim://mes4/1")

    def attempt():
        yield env.timeout(0)
        return run.poll()

    def rider():
        yield env.timeout(110)
        try:
            return (yield from ride_out(env, attempt, 100.0, lambda: False, lambda exc: None,
                                        lambda s: None,
                                        links=(lambda: [link]) if reopened else tuple))
        except LinkLost as exc:
            return exc

    proc = env.process(rider())
    env.run(until=proc)
    assert env.now == 210.0
    if reopened:
        assert isinstance(proc.value, list) and proc.value, proc.value  # samples read
    else:
        assert isinstance(proc.value, LinkLost) and "next re-open in" in str(proc.value)


def test_a_channel_in_fault_is_disconnected_once_the_fault_clears():
    env, lab = _on_env([{"fault": "channel_fault", "instrument": "mes4", "channel": 1,
                         "at_s": 50, "for_s": 120}])
    mes4 = lab.instruments["mes4"]
    run = mes4.start(1, ConstantCurrent(3e-6, 3000.0, 5.1, None, 1.0, Recording(30.0)))
    ch = _Channel(env, mes4, 1)

    def end():
        yield env.timeout(60)
        run.poll()
        assert run.error is not None
        with pytest.raises(InstrumentError):
            mes4.cell_off(1)  # refused while the fault lasts
        yield from disconnect_patiently(ch)

    env.run(until=env.process(end()))
    assert ch._disconnected and 170 <= env.now <= 210
    assert not lab.sim.emulators["mes4/1"].cell_is_on


def _cell_off_refused_for(fault_s: float):
    """A channel fault from t = 50 s lasting `fault_s`; the channel's end tries its
    cell-off from t = 60 s (disconnect_patiently): the channel and its emulator after."""
    env, lab = _on_env([{"fault": "channel_fault", "instrument": "mes4", "channel": 1,
                         "at_s": 50, "for_s": fault_s}])
    mes4 = lab.instruments["mes4"]
    run = mes4.start(1, ConstantCurrent(3e-6, 3000.0, 5.1, None, 1.0, Recording(30.0)))
    ch = _Channel(env, mes4, 1)
    ch.watch = _Watch(lab, "sim://mes4/1")

    def end():
        yield env.timeout(60)
        run.poll()
        yield from disconnect_patiently(ch)

    env.run(until=env.process(end()))
    return ch, lab.sim.emulators["mes4/1"]


def test_a_cell_off_refused_until_just_before_the_safe_patience_is_done_at_it():
    """The fault clears at t = 1850 s: the last try comes at the 30 minutes (t = 1860 s)
    and switches the cell off (the old rule gave up at ~1831 s, when the next 30 s would
    have passed the patience)."""
    ch, emulator = _cell_off_refused_for(1800)
    assert ch._disconnected and ch.env.now == 60 + SAFE_PATIENCE_S
    assert not emulator.cell_is_on


def test_a_cell_off_refused_past_the_safe_patience_is_left_to_the_channel_to_say():
    ch, _ = _cell_off_refused_for(1900)
    assert not ch._disconnected and ch.env.now == 60 + SAFE_PATIENCE_S  # its end says so


def _cells(tmp_path, told: bool):
    store = Store(tmp_path)
    text = "name: p\nkind: cycling\nrecord: {every_s: 30}\nsteps: []\n"
    run_id = store.create_run("p", "cycling", "p.yaml", text, "", 1, None)
    store.add_channel(run_id, 1, "mes4", None, "p")
    rows = [(t, 4.0, 1e-6, 1, 1, 1, "CC_CHG") for t in (0, 30, 60, 150, 180)]
    store.add_cell_samples(run_id, 1, rows)
    if told:
        store.add_alarm(run_id, 60.0, "warning", "channel 1", "samples from t = 60.0 s to "
                        "t = 150.0 s not received: 2 output lines garbled", None, "gap")
    store.update_channel(run_id, 1, "completed", "protocol done", 1, 1, 180.0, "{}")
    store.set_status(run_id, "completed", "protocol done", {})
    store.close()
    return judge(tmp_path / "lipon.db")


@pytest.mark.parametrize("told", [True, False])
def test_a_cell_gap_the_run_told_of_is_accounted_and_one_it_did_not_is_lost(tmp_path, told):
    v = _cells(tmp_path, told)
    gap = [("channel 1", 60.0, 150.0)]
    assert (v.told_gaps, v.gaps) == ((gap, []) if told else ([], gap))


def test_a_silence_from_the_scripts_start_is_a_gap_from_its_start():
    lab, clock = connect([])
    run = lab.instruments["mes4"].start(1, OCV(1000.0, 1.0, Recording(30.0)))
    port = lab.sim.emulators["mes4/1"]
    port.faults.link_down = True
    at(clock, 200.0)
    run.poll()
    port.faults.link_down = False
    at(clock, 400.0)
    first = run.poll()[0]
    (a, b, why), = run.take_gaps()
    assert (a, b) == (0.0, first.t_s) and first.t_s >= 200.0 and "record rule" in why


def test_a_step_whose_end_went_unseen_is_overdue_after_its_length_and_a_margin():
    from types import SimpleNamespace

    from lipon_hw.celltest.wire import OVERDUE_S, end_overdue, expected_s
    from lipon_hw.techniques import CCCV, EIS

    assert expected_s(CCCV(3e-6, 4.2, 1e-7, 1000.0)) == 2000.0  # two phases, each capped
    assert expected_s(EIS(1000.0, 10.0, 3)) == pytest.approx(1.0 + 3 * 0.05 + 0.003 + 0.03
                                                             + 0.3)
    lab, clock = connect([])
    run = lab.instruments["mes4"].start(1, OCV(100.0, 1.0, Recording(10.0)))
    channel = SimpleNamespace(env=SimpleNamespace(now=110.0 + OVERDUE_S))
    assert not end_overdue(channel, run, 0.0)  # 100 s + a tenth + the margin: not yet
    channel.env.now = 110.5 + OVERDUE_S
    assert end_overdue(channel, run, 0.0)
    at(clock, 200.0)
    run.poll()
    assert run.finished and not end_overdue(channel, run, 0.0)


def test_on_a_fast_real_time_clock_an_unseen_end_waits_for_the_wire_in_wall_time():
    """At --speed 1000 the margin of 60 s of the clock is 60 ms of wall time, less than a
    loaded host may take to hear from a served lab: the margin is at least
    WIRE_SLACK_WALL_S of wall time there. On hardware (speed 1) it is OVERDUE_S as before."""
    from types import SimpleNamespace

    from lipon_hw.celltest.wire import OVERDUE_S, end_overdue
    from lipon_hw.link_health import WIRE_SLACK_WALL_S

    lab, clock = connect([])
    run = lab.instruments["mes4"].start(1, OCV(100.0, 1.0, Recording(10.0)))
    fast = SimpleNamespace(env=SimpleNamespace(now=110.5 + OVERDUE_S, factor=1 / 1000))
    assert not end_overdue(fast, run, 0.0)
    fast.env.now = 110.0 + WIRE_SLACK_WALL_S * 1000
    assert not end_overdue(fast, run, 0.0)
    fast.env.now = 110.5 + WIRE_SLACK_WALL_S * 1000
    assert end_overdue(fast, run, 0.0)
    hardware = SimpleNamespace(env=SimpleNamespace(now=110.5 + OVERDUE_S, factor=1.0))
    assert end_overdue(hardware, run, 0.0)
    # the same slack for a sheet's measurements (OVERDUE_S of 5 s): on a virtual clock, on
    # hardware, and at --speed 10, where 5 s of the clock is half a second of wall time
    from lipon_hw.link_health import wire_slack_s
    from lipon_hw.screening import measure

    assert wire_slack_s(SimpleNamespace(now=0.0), measure.OVERDUE_S) == measure.OVERDUE_S
    assert wire_slack_s(hardware.env, measure.OVERDUE_S) == measure.OVERDUE_S
    assert wire_slack_s(SimpleNamespace(factor=0.1), measure.OVERDUE_S) == \
        pytest.approx(WIRE_SLACK_WALL_S * 10)


def test_a_resumed_runs_port_is_tried_again_though_it_never_answered_this_process():
    """A resume: its links answered in the killed process, so a port silent since this
    process connected is worth the bounded retries (chaos seed 1 run 84: a shutter
    controller silent at the resume was reported NOT safe after one try)."""
    lab, clock = connect([])
    emulator = lab.sim.emulators["mfc"]
    emulator.faults.unplugged = True
    waits = []

    def wait(s):
        waits.append(s)
        at(clock, clock.t + s)
        if clock.t >= 5.0:
            emulator.faults.unplugged = False

    failed = retry_safe_state([SafeCall("n2_mfc", lab.instruments["n2_mfc"].make_safe,
                                        instrument_links(lab, "n2_mfc"))], wait,
                              answered_before=True)
    assert failed == {} and waits == [1.0, 2.0, 4.0]
