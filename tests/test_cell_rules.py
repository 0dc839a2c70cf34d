"""Interlock rules for cell tests (issue 11, item 3): each channel checks its protocol's
rules and its potentiostat's station rules on every sample — `abort` trips that channel
alone, `alarm` alarms once as it trips and once as it clears, `pause` stops the step at
open circuit and goes on with what was left once the condition clears, `hold` lets the
step end and waits at open circuit before the next; a malformed rule is one sentence."""

from __future__ import annotations

from pathlib import Path

import pytest
from faulty import station_with_rules

from lipon_hw.celltest.all_channels import run_channels
from lipon_hw.celltest.channels import ChannelState
from lipon_hw.celltest.groups import mount_cells
from lipon_hw.celltest.plan import load
from lipon_hw.engine.lifecycle import make_env
from lipon_hw.errors import InputError
from lipon_hw.station import load_station
from lipon_hw.store import Store

PROTOCOL = """
name: rules test
kind: cycling
potentiostat: mes4
channels: CHANNELS
cell: {kind: lnmo, area_cm2: 0.049, capacity_uAh: 1.47}
record: {every_s: 60, every_mV: 5}
safety: {min_V: 2.5, max_V: 5.2}
steps:
  - cc: {current_A: 3.0e-6, until: {voltage_V: 5.1, time_h: 2}}
  - cc: {current_A: -3.0e-6, until: {voltage_V: 3.5, time_h: 2}}
interlocks:
RULES"""


def run(tmp_path: Path, rules: str, station_rules=None, channels: str = "1-2"):
    path = tmp_path / "rules.yaml"
    path.write_text(PROTOCOL.replace("RULES", rules).replace("CHANNELS", channels),
                    encoding="utf-8")
    station_path = None if station_rules is None else station_with_rules(tmp_path, station_rules)
    station, store = load_station(station_path), Store(tmp_path / "data")
    proto = load(str(path), station, store)
    run_id = store.create_run(proto.name, "cycling", str(path), proto.text, station.text, 1,
                              None)
    for plan in proto.channels:
        store.add_channel(run_id, plan.channel, proto.potentiostat, None, plan.program.name)
    env = make_env(station, None, 0.0)
    lab = station.connect(lambda: env.now, seed=1)
    try:
        cells = mount_cells(lab, proto, store, 1, {}, run_id)
        channels = run_channels(env, store, run_id, proto, lab.instruments["mes4"],
                                {p.channel: ChannelState() for p in proto.channels}, cells,
                                realtime=False)
    finally:
        lab.close()
    store.flush()
    return {c.number: c for c in channels}, store, run_id


def kinds(store: Store, run_id: int, channel: int) -> list[str]:
    seen: dict[int, str] = {}
    for row in store.cell_samples(run_id, channel):
        seen.setdefault(row[4], row[6])
    return [seen[k] for k in sorted(seen)]


def messages(store: Store, run_id: int) -> list[str]:
    return [f"{a.source}: {a.message}" for a in store.alarms(run_id)]


def test_an_abort_rule_trips_its_channel_at_the_sample(tmp_path):
    channels, store, run_id = run(tmp_path, '  - {name: high, when: "voltage_V > 4.9", '
                                            'then: abort, during: [cc]}')
    for ch in channels.values():
        assert ch.status == "tripped"
        assert ch.message.startswith(f"channel {ch.number}: interlock high (voltage_V > 4.9) "
                                     "tripped at t = ")
        assert ch._disconnected
    # it tripped at the first sample past the limit (those the same poll brought are kept)
    first = next(r for r in store.cell_samples(run_id, 1) if r[1] > 4.9)
    assert f"tripped at t = {first[0]:.0f} s" in channels[1].message


def test_an_alarm_rule_alarms_once_per_crossing(tmp_path):
    channels, store, run_id = run(tmp_path, '  - {name: high, when: "voltage_V > 4.9", '
                                            'then: alarm}')
    assert {ch.status for ch in channels.values()} == {"completed"}
    said = messages(store, run_id)
    for n in (1, 2):
        assert said.count(f"channel {n}: interlock high (voltage_V > 4.9) is true") == 1
        assert said.count(f"channel {n}: interlock high: no longer true") == 1


def test_a_hold_rule_lets_the_step_end_then_waits_at_open_circuit(tmp_path):
    channels, store, run_id = run(tmp_path, '  - {name: relax, when: "voltage_V > 4.95", '
                                            'then: hold, during: [cc]}')
    assert channels[1].status == "completed"
    assert kinds(store, run_id, 1) == ["CC_CHG", "PAUSE", "CC_DCHG"]
    charge = [r for r in store.cell_samples(run_id, 1) if r[6] == "CC_CHG"]
    assert charge[-1][1] >= 5.09  # the charge ran to its own end, 5.1 V
    pause = [r for r in store.cell_samples(run_id, 1) if r[6] == "PAUSE"]
    assert all(r[2] == 0.0 for r in pause) and pause[-1][1] <= 4.95
    said = messages(store, run_id)
    assert "channel 1: interlock relax (voltage_V > 4.95): cleared, the channel goes on" in said


def test_a_pause_rule_cuts_the_step_and_it_goes_on_with_what_was_left(tmp_path):
    """On the charge's plateau, 5 min above 4.65 V pause it; at open circuit the cell
    relaxes below, the rule clears, and the charge goes on — so it runs in parts of about
    5 minutes to its own end at 5.1 V."""
    rule = ('  - {name: soak, when: "current_A > 0 and voltage_V > 4.65 for 5 min", '
            'then: pause, during: [cc]}')
    channels, store, run_id = run(tmp_path, rule, channels="1")
    assert channels[1].status == "completed"
    steps = kinds(store, run_id, 1)
    assert steps[:3] == ["CC_CHG", "PAUSE", "CC_CHG"] and steps[-1] == "CC_DCHG"
    charges = [k for k in steps if k == "CC_CHG"]
    assert 2 <= len(charges) <= 10
    samples = list(store.cell_samples(run_id, 1))
    first = [r for r in samples if r[4] == 1]
    assert 4.65 < first[-1][1] < 4.9  # cut on the plateau, not at 5.1 V
    last_charge = [r for r in samples if r[6] == "CC_CHG"][-1]
    assert last_charge[1] >= 5.09
    said = messages(store, run_id)
    assert sum(m.startswith("channel 1: interlock soak (current_A > 0 and voltage_V > 4.65 "
                            "for 5 min): paused at step 0") for m in said) == len(charges) - 1


def test_the_station_rules_of_a_potentiostat_apply_to_every_channel(tmp_path):
    rules = {"mes4": [{"name": "bench limit", "when": "voltage_V > 4.8", "then": "abort"}]}
    channels, store, run_id = run(tmp_path, "  []", station_rules=rules)
    for ch in channels.values():
        assert ch.status == "tripped" and "interlock bench limit (voltage_V > 4.8)" in ch.message


@pytest.mark.parametrize("rule, field, words", [
    ('  - {when: "voltage > 4.9", then: abort}', "interlocks[0].when",
     "'voltage' is not a recorded quantity (known: current_A, mes4.channels_in_fault, "
     "mes4.link_health, voltage_V)"),
    ('  - {when: "voltage_V > 4.9", then: abort, during: [charge]}',
     "interlocks[0].during[0]", "unknown step 'charge'"),
    ('  - {when: "voltage_V >", then: abort}', "interlocks[0].when", "not a valid condition"),
    ('  - {when: "link_health > 0 or voltage_V > 5", then: pause}', "interlocks[0].when",
     "'voltage_V' is a quantity of each channel, and mes4.link_health one of mes4 as a "
     "whole: one rule reads one or the other (write two rules)"),
])
def test_a_malformed_protocol_rule_is_one_sentence(tmp_path, rule, field, words):
    path = tmp_path / "bad.yaml"
    text = PROTOCOL.replace("RULES", rule).replace("CHANNELS", "1-2")
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as info:
        load(str(path), load_station(), None)
    message = str(info.value)
    line = text.splitlines().index(rule) + 1
    assert message.startswith(f"{path}:{line}: {field}: ") and words in message, message
