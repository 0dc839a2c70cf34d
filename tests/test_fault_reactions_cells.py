"""Every cell and channel fault of the catalogue in a real cell test (issue 11,
acceptance 1): the fault scheduled in the station's `sim: faults:`, the protocol's safety
limits or interlock rule reacting, the run started as an operator starts it
(`start_cycling`), and three things read back: the channel's end and the run's status, the
cell disconnected on the simulated potentiostat, and the alarm row (time, channel, rule,
reaction). docs/faults.md lists the reaction each fault shows."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import pytest
from faulty import fault_station, spy_labs

from lipon_hw.celltest.session import start_cycling
from lipon_hw.errors import LiponError
from lipon_hw.store import Alarm, Channel, Store

#: charge (≈1760 s), a 30 min rest, discharge; a rule on self-discharge during the rest
PROTOCOL = """
name: fault reactions
kind: cycling
potentiostat: mes4
channels: 1
cell: {kind: lnmo, area_cm2: 0.049, capacity_uAh: 1.47}
record: {every_s: 30, every_mV: 5}
safety: {min_V: 2.5, max_V: 5.2}
steps:
  - cc: {current_A: 3.0e-6, until: {voltage_V: 5.1, time_h: 2}}
  - rest: {until: {time_min: 30}}
  - cc: {current_A: -3.0e-6, until: {voltage_V: 3.5, time_h: 2}}
interlocks:
  - {name: self-discharge, when: "voltage_V < 4.6", then: abort, during: [rest]}
"""
CHARGING_S = 600.0  # well inside the charge
RESTING_S = 1900.0  # inside the rest


@dataclass
class Ran:
    status: str
    message: str
    channel: Channel
    alarms: list[Alarm]
    cell_on: bool  # the channel's cell as the simulated potentiostat has it at the end


@pytest.fixture
def run(tmp_path, monkeypatch):
    labs = spy_labs(monkeypatch)

    def start(faults) -> Ran:
        path = tmp_path / "protocol.yaml"
        path.write_text(PROTOCOL, encoding="utf-8")
        station = fault_station(tmp_path, faults)
        with contextlib.suppress(LiponError):  # the store says how it ended
            start_cycling(str(path), tmp_path / "data", station_path=str(station), workers=1)
        store = Store(tmp_path / "data", read_only=True)
        row, (channel,) = store.run(1), store.channels(1)
        port = labs[-1].sim.potentiostats["mes4"].ports[1]
        return Ran(row.status, row.message, channel, store.alarms(1), port.cell_is_on)

    return start


def stopped(ran: Ran) -> Alarm:
    """The channel's one error alarm, saying why it was stopped."""
    alarm, = [a for a in ran.alarms if a.reaction == "abort"]
    assert (alarm.severity, alarm.source) == ("error", "channel 1")
    assert alarm.message.endswith(": the channel is stopped")
    assert ran.channel.message.startswith(alarm.message.removesuffix(": the channel is stopped"))
    return alarm


@pytest.mark.parametrize("fault, at_s, words", [
    ({"fault": "cell_hard_short"}, CHARGING_S, "V is below min_V 2.5 V"),
    ({"fault": "cell_open"}, CHARGING_S, "V is above max_V 5.2 V"),
    ({"fault": "cell_high_interface", "factor": 1.0e4}, CHARGING_S, "V is above max_V 5.2 V"),
])
def test_a_cell_fault_under_current_trips_the_safety_limit(run, fault, at_s, words):
    """A hard short collapses the voltage; an open contact under a current drives it out of
    range; a high interface resistance lifts it by I·R: the protocol's safety limit
    trips the channel at the first sample past it (rule: safety), the cell is disconnected
    and the run, whose only channel tripped, is failed."""
    ran = run([{**fault, "instrument": "mes4", "channel": 1, "at_s": at_s}])
    assert ran.channel.status == "tripped" and words in ran.channel.message
    assert ran.status == "failed" and ran.channel.message in ran.message
    alarm = stopped(ran)
    assert alarm.rule == "safety" and alarm.t_s >= at_s
    assert not ran.cell_on


def test_a_soft_short_trips_the_self_discharge_rule_during_the_rest(run):
    """A leak of 1 MΩ across the charged cell: at open circuit its voltage falls, and the
    protocol's rule (voltage below 4.6 V during the rest) trips the channel."""
    ran = run([{"fault": "cell_soft_short", "instrument": "mes4", "channel": 1,
                "at_s": RESTING_S, "ohm": 1.0e6}])
    assert ran.channel.status == "tripped"
    assert ran.channel.message.startswith("channel 1: interlock self-discharge (voltage_V < "
                                          "4.6) tripped at t = ")
    alarm = stopped(ran)
    assert alarm.rule == "interlock self-discharge" and alarm.t_s >= RESTING_S
    assert ran.status == "failed" and not ran.cell_on


def test_a_channel_fault_that_clears_stops_the_channel(run):
    """The instrument ends the running script with its error (heavy overload, 0x0032) and
    the cell off; the channel is stopped there (no rule: the instrument's end) and its cell
    disconnected once the channel answers again."""
    ran = run([{"fault": "channel_fault", "instrument": "mes4", "channel": 1,
                "at_s": CHARGING_S, "for_s": 5}])
    assert ran.channel.status == "tripped"
    assert ran.channel.message == "channel 1: the instrument ended the step with error"
    alarm = stopped(ran)
    assert alarm.rule is None and alarm.t_s >= CHARGING_S
    assert ran.status == "failed" and not ran.cell_on


def test_a_channel_fault_that_lasts_is_told_as_a_cell_not_known_to_be_off(run):
    """While the fault lasts the channel refuses every command, the disconnect included:
    the instrument switched the cell off itself, but the host cannot confirm it, so the
    run ends failed saying the hardware was NOT all made safe, with the potentiostat's
    alarm (reaction: safe state)."""
    ran = run([{"fault": "channel_fault", "instrument": "mes4", "channel": 1,
                "at_s": CHARGING_S}])
    assert ran.channel.status == "tripped"
    stopped(ran)
    unsure, = [a for a in ran.alarms if a.reaction == "safe state"]
    assert (unsure.severity, unsure.source) == ("error", "mes4")
    assert unsure.message.startswith("channel 1: the cell could not be disconnected")
    assert "!0032" in unsure.message
    assert ran.status == "failed" and ran.message.startswith("the hardware was NOT all made "
                                                             "safe: channel 1")
    assert not ran.cell_on  # the instrument's own fault handling switched it off


def test_a_lost_potentiostat_link_fails_the_channel_and_says_the_cell_may_be_on(run):
    """The channel's port refuses from mid-charge on: the next poll finds the link lost,
    the channel fails (no rule: the cell-test engine gives a lost link no grace), and the
    cell cannot be disconnected through a port that refuses, which the run says: failed,
    the hardware NOT all made safe, the potentiostat's alarm. (A drop between two polls is
    never seen: the channel polls rarely while far from a step's end.)"""
    ran = run([{"fault": "link_drop", "instrument": "mes4", "channel": 1,
                "at_s": CHARGING_S}])
    assert ran.channel.status == "failed"
    assert ran.channel.message.startswith("sim://mes4/1 is lost after 3 attempts")
    alarm = stopped(ran)
    assert alarm.rule is None and alarm.t_s >= CHARGING_S
    unsure, = [a for a in ran.alarms if a.reaction == "safe state"]
    assert (unsure.severity, unsure.source) == ("error", "mes4")
    assert ran.status == "failed" and "NOT all made safe" in ran.message
    assert ran.cell_on  # what the store says: an unplugged potentiostat cannot be told
