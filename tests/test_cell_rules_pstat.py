"""Interlock rules on a potentiostat as a whole (issue 11, items 2 and 3): its link health
and how many of its channels are in fault, read as the channels poll; `pause` puts every
channel of the run at open circuit at once and continues them all once it clears, `abort`
trips them all with their cells off, `alarm` alarms once for the potentiostat, not once
per channel; its link health is stored when it changes; a malformed rule is one sentence
naming the station file, line and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from faulty import station_with_rules

from lipon_hw.celltest.all_channels import run_channels
from lipon_hw.celltest.channels import ChannelState
from lipon_hw.celltest.groups import mount_cells
from lipon_hw.celltest.plan import load
from lipon_hw.celltest.session import start_cycling
from lipon_hw.engine.lifecycle import make_env
from lipon_hw.errors import InputError
from lipon_hw.link_health import instrument_links
from lipon_hw.station import load_station
from lipon_hw.store import Store

PROTOCOL = """
name: potentiostat rules
kind: cycling
potentiostat: mes4
channels: 1-3
cell: {kind: lnmo, area_cm2: 0.049, capacity_uAh: 1.47}
record: {every_s: 60, every_mV: 5}
safety: {min_V: 2.5, max_V: 5.2}
steps:
  - cc: {current_A: 3.0e-6, until: {voltage_V: 5.1, time_h: 2}}
  - cc: {current_A: -3.0e-6, until: {voltage_V: 3.5, time_h: 2}}
"""
#: channel 2's USB port unplugged mid-charge for 20 min
UNPLUGGED = [{"fault": "link_drop", "instrument": "mes4", "channel": 2, "at_s": 900,
              "for_s": 1200}]


def protocol(tmp_path: Path, rules: list[dict] = ()) -> Path:
    path = tmp_path / "protocol.yaml"
    path.write_text(PROTOCOL + (f"interlocks: {json.dumps(list(rules))}\n" if rules else ""),
                    encoding="utf-8")
    return path


def run(tmp_path: Path, rules: list[dict], faults: list[dict] = (), in_protocol=False):
    """The protocol's channels on one clock in this process, the lab still open after;
    `rules` the station's for mes4, or (`in_protocol`) the protocol's."""
    station = load_station(station_with_rules(tmp_path, {} if in_protocol else {"mes4": rules},
                                              faults))
    store = Store(tmp_path / "data")
    proto = load(str(protocol(tmp_path, rules if in_protocol else ())), station, store)
    run_id = store.create_run(proto.name, "cycling", proto.path, proto.text, station.text, 1,
                              None)
    for plan in proto.channels:
        store.add_channel(run_id, plan.channel, proto.potentiostat, None, plan.program.name)
    env = make_env(station, None, 0.0)
    lab = station.connect(lambda: env.now, seed=1)
    cells = mount_cells(lab, proto, store, 1, {}, run_id)
    channels = run_channels(env, store, run_id, proto, lab.instruments["mes4"],
                            {p.channel: ChannelState() for p in proto.channels}, cells,
                            realtime=False, links=instrument_links(lab, "mes4"))
    store.flush()
    return {c.number: c for c in channels}, store, run_id, lab


def alarms(store: Store, run_id: int) -> list[tuple]:
    return [(a.t_s, a.source, a.message, a.rule, a.reaction) for a in store.alarms(run_id)]


def samples_by_channel(store: Store, run_id: int, channel: int) -> list[tuple]:
    return sorted(store.cell_samples(run_id, channel))


def assert_monotonic(rows: list[tuple]) -> None:
    """Time, cycle and step number never go back across the pause."""
    for before, after in zip(rows, rows[1:], strict=False):
        assert after[0] > before[0] and after[3] >= before[3] and after[4] >= before[4]


def test_a_lost_link_pauses_every_channel_until_it_answers_again(tmp_path):
    """Channel 2's port is unplugged at 900 s for 20 min: channel 2 fails on its lost link
    (its cell cannot be reached), and the potentiostat's rule pauses channels 1 and 3 at
    open circuit at once. While they wait, channel 2 is stopped and disconnected again as
    they poll; once its port answers (2100 s) its cell is off, the link healthy, the rule
    clears, and 1 and 3 go on with what was left of their charge, to their protocol's end.
    Asked for two worker processes, the run uses one: the rule needs all three channels in
    view (split, channels 1 and 3 would never see channel 2's link)."""
    station = station_with_rules(tmp_path, {"mes4": [
        {"name": "usb hub", "when": "mes4.link_health >= 2", "then": "pause"},
        {"name": "link watch", "when": "link_health > 0", "then": "alarm"}]}, UNPLUGGED)
    result = start_cycling(str(protocol(tmp_path)), tmp_path / "data", str(station), seed=1,
                           workers=2)
    store = Store(tmp_path / "data")
    status = {c.channel: c.status for c in store.channels(result.run_id)}
    assert status == {1: "completed", 2: "failed", 3: "completed"}, status
    said = alarms(store, result.run_id)
    held = [a for a in said if a[4] == "pause"]
    assert held == [(900.0, "mes4", "interlock usb hub (mes4.link_health >= 2): every channel "
                     "paused at once at open circuit", "interlock usb hub", "pause")]
    resumed = [a for a in said if a[4] == "resume"]
    assert len(resumed) == 1 and resumed[0][1:4] == (
        "mes4", "interlock usb hub (mes4.link_health >= 2): cleared, every channel goes on",
        "interlock usb hub")
    assert 2100.0 <= resumed[0][0] < 2100.0 + 120  # a pause poll after the port answers
    # the alarm rule: once for the potentiostat as it trips and once as it clears
    assert [(a[1], a[4]) for a in said if a[3] == "interlock link watch"] == \
        [("mes4", "alarm"), ("mes4", "alarm")]
    assert any(a[1:3] == ("channel 2", "its link answers again: cell disconnected")
               for a in said)
    health = [(t, v) for t, _q, v in store.readings(result.run_id, ["mes4.link_health"])]
    assert health == [(900.0, 2.0), (resumed[0][0], 0.0)]
    for n in (1, 3):
        rows = samples_by_channel(store, result.run_id, n)
        assert_monotonic(rows)
        kinds = []
        for row in rows:
            if not kinds or kinds[-1] != row[6]:
                kinds.append(row[6])
        assert kinds == ["CC_CHG", "PAUSE", "CC_CHG", "CC_DCHG"], kinds
        pause = [r for r in rows if r[6] == "PAUSE"]
        assert pause[0][0] <= 900 + 60 and pause[-1][0] <= resumed[0][0]
        assert all(r[2] == 0.0 for r in pause)
        assert max(r[1] for r in rows if r[6] == "CC_CHG") >= 5.09  # the charge ended at 5.1 V
    store.close()


@pytest.mark.parametrize("in_protocol", [False, True], ids=["station", "protocol"])
def test_an_abort_on_channels_in_fault_trips_every_channel_with_its_cell_off(tmp_path,
                                                                             in_protocol):
    """Channel 2's cell shorts at 600 s: it trips on its safety limit, which makes
    `channels_in_fault` 1, and the potentiostat's abort rule trips channels 1 and 3 at
    once (not at their own next poll) — each disconnected, as the emulators themselves
    say — with one alarm; declared in the station or in the protocol alike."""
    rule = {"name": "one down", "when": "channels_in_fault >= 1", "then": "abort"}
    chans, store, run_id, lab = run(tmp_path, [rule], [
        {"fault": "cell_hard_short", "instrument": "mes4", "channel": 2, "at_s": 600}],
        in_protocol)
    try:
        for n in (1, 2, 3):
            emulator = lab.sim.emulators[f"mes4/{n}"]
            assert not emulator.running and not emulator.cell_is_on, n
    finally:
        lab.close()
    assert chans[2].status == "tripped" and "below min_V" in chans[2].message
    every = alarms(store, run_id)
    aborts = [a for a in every if a[4] == "abort" and a[1] == "mes4"]
    assert len(aborts) == 1, aborts
    # channel 2 tells its own trip; channels 1 and 3 were told by the potentiostat's alarm
    assert [a[1:4] for a in every if a[4] == "abort" and a[1] != "mes4"] == [
        ("channel 2", f"{chans[2].message}: the channel is stopped", "safety")]
    t_abort = aborts[0][0]  # as channel 2's poll found its trip (its sample came before)
    assert float(chans[2].message.rsplit("t = ", 1)[1].split()[0]) <= t_abort
    trip = f"interlock one down (channels_in_fault >= 1) on mes4 tripped at t = {t_abort:.0f} s"
    assert aborts[0][1:] == ("mes4", f"{trip}: every channel stopped, its cell disconnected",
                             "interlock one down", "abort")
    for n in (1, 3):
        assert chans[n].status == "tripped" and chans[n].message == f"channel {n}: {trip}"
        assert chans[n]._disconnected
        assert samples_by_channel(store, run_id, n)[-1][0] <= t_abort  # stopped at once


def test_without_a_rule_the_link_health_is_stored_and_alarmed_all_the_same(tmp_path):
    chans, store, run_id, lab = run(tmp_path, [], UNPLUGGED)
    lab.close()
    assert chans[2].status == "failed" and {chans[1].status, chans[3].status} == {"completed"}
    # channel 2 rides the unplug out in vain (15 min) and keeps trying to disconnect its
    # cell; channels 1 and 3 go on, so the run sees the port answer again at 2100 s
    assert [v for _t, _q, v in store.readings(run_id, ["mes4.link_health"])] == [2.0, 0.0]
    assert [a[1:3] for a in alarms(store, run_id) if "link to" in a[2]] == [
        ("mes4", "link to sim://mes4/2 lost: sim://mes4/2 is unplugged (the port refuses)"),
        ("mes4", "link to sim://mes4/2 restored")]
    assert any(a[1:3] == ("channel 2", "its link answers again: cell disconnected")
               for a in alarms(store, run_id))


@pytest.mark.parametrize("rule, field, words", [
    ({"when": "mes4.link_health > 0 and voltage_V > 4.2", "then": "pause"}, "when",
     "'voltage_V' is a quantity of each channel, and mes4.link_health one of mes4 as a "
     "whole: one rule reads one or the other (write two rules)"),
    ({"when": "mes4.temperature_C > 40", "then": "abort"}, "when",
     "'mes4.temperature_C' is not a recorded quantity (known: current_A, "
     "mes4.channels_in_fault, mes4.link_health, voltage_V)"),
    ({"when": "link_health > 0", "then": "pause", "during": ["cc"]}, "during",
     "a rule on mes4.link_health reads mes4 as a whole, whose channels are each in a step "
     "of their own: it is armed always (leave out during)"),
])
def test_a_malformed_potentiostat_rule_is_one_sentence_before_anything_moves(
        tmp_path, rule, field, words):
    path = station_with_rules(tmp_path, {"mes4": [rule]})
    text = path.read_text(encoding="utf-8").splitlines()
    key = "when" if field == "when" else "during"
    line = next(i for i, ln in enumerate(text, 1) if ln.lstrip(" -").startswith(f"{key}:")
                and i > text.index("interlocks:"))
    with pytest.raises(InputError) as info:
        start_cycling(str(protocol(tmp_path)), tmp_path / "data", str(path))
    assert str(info.value) == f"{path}:{line}: interlocks.mes4[0].{field}: {words}"
    assert not (tmp_path / "data" / "lipon.db").exists() or not list(
        Store(tmp_path / "data").runs())


def test_a_hold_lets_every_channel_end_its_step_then_wait(tmp_path):
    """The same lost link under `hold`: channels 1 and 3 end their charge at 5.1 V, then
    wait at open circuit until the link answers again, then discharge."""
    rule = {"name": "usb hub", "when": "mes4.link_health >= 2", "then": "hold"}
    chans, store, run_id, lab = run(tmp_path, [rule], UNPLUGGED)
    lab.close()
    assert {chans[1].status, chans[3].status} == {"completed"}
    (cleared,) = [a[0] for a in alarms(store, run_id) if a[4] == "resume"]
    for n in (1, 3):
        rows = samples_by_channel(store, run_id, n)
        assert_monotonic(rows)
        kinds = [k for i, k in enumerate(r[6] for r in rows) if i == 0 or rows[i - 1][6] != k]
        assert kinds == ["CC_CHG", "PAUSE", "CC_DCHG"], kinds
        assert [r for r in rows if r[6] == "CC_CHG"][-1][1] >= 5.09
        assert min(r[0] for r in rows if r[6] == "CC_DCHG") >= cleared


def test_a_channel_whose_port_never_answered_fails_at_once(tmp_path):
    """Unplugged from the start (a run that cannot start on that channel): no 15 minutes
    of riding out and no 30 of disconnection tries for a port that never answered — the
    channel fails at its first exchange, says its cell could not be disconnected, and the
    others run on."""
    never = [{"fault": "link_drop", "instrument": "mes4", "channel": 2, "at_s": 0,
              "for_s": 1e5}]
    chans, store, run_id, lab = run(tmp_path, [], never)
    lab.close()
    assert chans[2].status == "failed" and "unplugged" in chans[2].message
    assert "the cell could not be disconnected" in chans[2].message
    ended = {c.channel: c.t_s for c in store.channels(run_id)}
    assert ended[2] < 60.0, ended
    assert {chans[1].status, chans[3].status} == {"completed"}
    store.close()
