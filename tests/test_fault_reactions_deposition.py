"""Every fault of the catalogue in a real deposition run (issue 11, acceptance 1): the
fault scheduled in the station's `sim: faults:`, a rule of the station or the recipe (or
the engine's own reaction) declaring what happens, the run started as an operator starts
it (`start_run`), and three things read back: the declared reaction (the run's status and
message), the hardware safe (the simulated world after the run: RF off at 0 W, shutters
closed, gas and sources off) and the alarm rows (time, instrument, rule, reaction).
docs/faults.md lists the reaction each fault shows. Wire faults come twice: a short blip,
ridden out while a rule watches the link, and a long one, aborted by that rule."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import pytest
from faulty import fault_station, spy_labs

from lipon_hw.deposition.link_watch import LINK_GRACE_S
from lipon_hw.deposition.session import start_run
from lipon_hw.errors import LiponError
from lipon_hw.store import Alarm, Store

from recipes import SHORT

#: the short LiPON recipe, quicker: rough vacuum is enough for the model's plasma
FAST = (SHORT.replace("below_torr: 2.0e-5", "below_torr: 1.0e-3")
        .replace("checkpoint_every_s: 30", "checkpoint_every_s: 600")
        .replace("presputter: {for_min: 1}", "presputter: {for_min: 0.5}"))
DEPOSIT_S = 605.0  # the shutter opens at 605 s of the run clock; 5 nm take ~100 s
EVAP = """\
name: evaporated Au
tool: evaporator
sample: {id: E-1, substrate: glass}
record_every_s: 10
checkpoint_every_s: 600
steps:
  - pump_down: {below_torr: 4.0e-7, timeout_min: 240}
  - source: {boat: 2, film: Au}
  - precondition: {ramp_to_A: 45, ramp_s: 30, soak_s: 30}
  - evaporate: {rate_A_s: 1.5, until_thickness_nm: 5, control: host, max_current_A: 80,
                stable_s: 10}
  - source_off: {ramp_s: 10}
interlocks:
  - {when: "evap_gauge.pressure_torr > 1.0e-6", then: abort, during: [evaporate]}
"""
EVAPORATE_S = 6110.0  # the evaporate step starts at 6110 s and ends at ~6324 s


@dataclass
class Ran:
    status: str
    message: str
    alarms: list[Alarm]
    world: object
    store: Store

    def by(self, source: str) -> list[Alarm]:
        return [a for a in self.alarms if a.source == source]

    def reacted(self, reaction: str) -> list[Alarm]:
        return [a for a in self.alarms if a.reaction == reaction]

    @property
    def safe_state(self) -> Alarm:
        last = self.alarms[-1]
        assert last.reaction == "safe state" and last.source == "engine", self.alarms
        return last


@pytest.fixture
def run(tmp_path, monkeypatch):
    labs = spy_labs(monkeypatch)

    def start(faults, rules=None, extra="", recipe=FAST) -> Ran:
        path = tmp_path / "recipe.yaml"
        path.write_text(recipe.replace("THICKNESS", "5") + extra, encoding="utf-8")
        station = fault_station(tmp_path, faults, rules)
        with contextlib.suppress(LiponError):  # the store says how it ended
            start_run(str(path), tmp_path / "data", station_path=str(station))
        store = Store(tmp_path / "data", read_only=True)
        row = store.run(1)
        return Ran(row.status, row.message, store.alarms(1), labs[-1].sim.world, store)

    return start


def assert_sputter_safe(ran: Ran, unconfirmed: str | None = None) -> None:
    s = ran.world.sputter.s
    mfc_setpoint = s.gas_set_sccm if s.gas_supply_lost else s.gas_flow_sccm
    assert not s.rf_on and not s.shutter_open and mfc_setpoint == 0
    safe = ran.safe_state
    if unconfirmed is None:
        assert s.setpoint_W == 0
        assert safe.severity == "info" and "FAILED" not in safe.message, safe.message
    else:  # RF off sent, taken by the instrument, but its reply never came back whole
        assert safe.severity == "error" and f"FAILED for {unconfirmed} (" in safe.message
        assert "NOT all made safe" in ran.message


def assert_evaporator_safe(ran: Ran) -> None:
    s = ran.world.evaporator.s
    assert not s.shutter_open and not s.supply_on and s.current_set_A == 0
    assert ran.safe_state.severity == "info" and "FAILED" not in ran.safe_state.message


def watch(inst: str, then: str, for_s: float) -> dict:
    return {"sputter": [{"name": "link", "when": f"{inst}.link_health > 0 for {for_s:g} s",
                         "then": then}]}


# --- wire faults ---------------------------------------------------------------------------
WIRE = [("link_drop", "qcm"), ("silent", "process_gauge"), ("garble", "n2_mfc"),
        ("bad_checksum", "rf")]


@pytest.mark.parametrize("fault, inst", WIRE)
def test_a_wire_blip_on_a_watched_link_is_ridden_out(run, fault, inst):
    """10 s of the fault, 35 s into the deposit, with a station rule pausing the run after
    30 s of a bad link: the link is lost, re-opened after its back-off once the fault has
    cleared, and the run completes; the rule never trips."""
    ran = run([{"fault": fault, "instrument": inst, "at_s": DEPOSIT_S + 35, "for_s": 10}],
              watch(inst, "pause", 30))
    assert ran.status == "completed", ran.message
    lost, restored = ran.by(inst)[0], ran.by(inst)[-1]
    assert (lost.severity, lost.rule, lost.reaction) == ("error", None, None)
    assert lost.message.startswith("link to sim://") and " lost: " in lost.message
    assert restored.message.endswith(" restored") and restored.severity == "info"
    assert DEPOSIT_S + 35 <= lost.t_s < restored.t_s <= DEPOSIT_S + 35 + 10 + 10
    assert not [a for a in ran.alarms if a.rule == "interlock link"]  # ridden out
    health = [v for _t, _q, v in ran.store.readings(1, [f"{inst}.link_health"])]
    assert health == [2.0, 0.0]
    assert_sputter_safe(ran)


@pytest.mark.parametrize("fault, inst", WIRE)
def test_a_wire_fault_that_lasts_is_aborted_by_the_rule_watching_it(run, fault, inst):
    """The fault never clears; the station's rule aborts after 10 s of a bad link. The safe
    state is sent to every instrument (a lost link is tried again at once, whatever its
    back-off): a generator or MFC whose replies come back damaged takes the command, but
    the store says it could not be confirmed."""
    ran = run([{"fault": fault, "instrument": inst, "at_s": DEPOSIT_S + 35}],
              watch(inst, "abort", 10))
    assert ran.status == "aborted"
    assert ran.message.startswith(f"interlock link ({inst}.link_health > 0 for 10 s) tripped")
    lost = ran.by(inst)[0]
    assert lost.severity == "error" and " lost: " in lost.message
    tripped, = ran.reacted("abort")
    assert (tripped.source, tripped.rule, tripped.severity) == ("interlock", "interlock link",
                                                                "error")
    assert tripped.t_s == pytest.approx(lost.t_s + 10, abs=5)
    assert_sputter_safe(ran, unconfirmed=inst if inst in ("rf", "n2_mfc") else None)


def test_a_lasting_lost_link_fails_the_run_after_its_grace(run):
    """The engine's own reaction: a link lost for good, with no rule reading its health,
    is ridden out for LINK_GRACE_S of the run clock, then the run fails to the safe state
    in the words of the outage's first failure, with an alarm from the instrument."""
    ran = run([{"fault": "link_drop", "instrument": "qcm", "at_s": DEPOSIT_S + 35}])
    assert ran.status == "failed" and "sim://qcm (qcm) has been lost for" in ran.message
    assert f"longer than it is ridden out ({LINK_GRACE_S:.0f} s)" in ran.message
    lost, = ran.by("qcm")
    assert (lost.severity, lost.reaction) == ("error", None) and "lost" in lost.message
    assert lost.t_s == pytest.approx(DEPOSIT_S + 35, abs=5)
    stop, = ran.reacted("abort")
    assert stop.source == "engine" and stop.severity == "error"
    assert lost.t_s + LINK_GRACE_S <= stop.t_s <= lost.t_s + LINK_GRACE_S + 35
    assert_sputter_safe(ran)


@pytest.mark.parametrize("inst, for_s", [("qcm", 20), ("rf", 2), ("n2_mfc", 20)])
def test_a_short_lost_link_is_ridden_out_and_the_run_completes(run, inst, for_s):
    """Unplugged for a moment with no rule: the samples go on without the instrument, a
    step command that finds the link lost waits for it (alarm `hold`), the process is
    restored as after a resume (`resume`), and the deposit reaches its target."""
    ran = run([{"fault": "link_drop", "instrument": inst, "at_s": DEPOSIT_S + 35,
                "for_s": for_s}])
    assert ran.status == "completed", ran.message
    words = [a.message for a in ran.by(inst)]
    assert any("lost" in w for w in words) and any("restored" in w for w in words), words
    health = [v for _t, _q, v in ran.store.readings(1, [f"{inst}.link_health"])]
    assert health[-1] == 0.0 and 2.0 in health
    for held in ran.reacted("hold"):
        assert held.source == "engine" and "the step waits for the link" in held.message
    assert len(ran.reacted("resume")) == len(ran.reacted("hold"))
    assert_sputter_safe(ran)


def test_the_rf_link_lost_longer_than_its_host_watchdog_aborts_the_run(run):
    """The generator keeps itself safe: 20 s without the host is past its 10 s watchdog,
    which cuts RF; once the link answers the run sees the trip and aborts, safe."""
    ran = run([{"fault": "link_drop", "instrument": "rf", "at_s": DEPOSIT_S + 35,
                "for_s": 20}])
    assert ran.status == "aborted" and "host watchdog switched the output off" in ran.message
    assert_sputter_safe(ran)


def test_an_error_reply_leaves_the_reading_out_and_the_run_goes_on(run):
    """The gauge controller refuses (NAK160) for 20 s: each refused quantity is one warning
    (reaction: left out), the run goes on without those readings and completes. Note: a
    rule on a quantity that is not read does not trip meanwhile."""
    ran = run([{"fault": "error_reply", "instrument": "process_gauge",
                "at_s": DEPOSIT_S + 35, "for_s": 20}])
    assert ran.status == "completed", ran.message
    refused = ran.reacted("left out")
    assert {a.source for a in refused} == {"process_gauge.pressure_torr",
                                           "chamber_gauge.pressure_torr"}
    assert all(a.severity == "warning" and "NAK160" in a.message and a.rule is None
               for a in refused)
    times = [t for t, _q, _v in ran.store.readings(1, ["process_gauge.pressure_torr"])]
    assert not [t for t in times if DEPOSIT_S + 36 <= t <= DEPOSIT_S + 54]
    assert_sputter_safe(ran)


# --- the sputter tool ---------------------------------------------------------------------
def test_reflected_power_pauses_the_run_until_it_clears(run):
    """40 % reflected for 20 s: the recipe's rule (reflected > 10 % of forward for 5 s)
    pauses — shutter closed, RF off — then the process is restored and the run completes."""
    ran = run([{"fault": "reflected_power", "instrument": "rf", "at_s": DEPOSIT_S + 35,
                "for_s": 20, "reflected_pct": 40}])
    assert ran.status == "completed", ran.message
    paused, = ran.reacted("pause")
    resumed, = ran.reacted("resume")
    assert (paused.severity, paused.source, paused.rule) == ("hold", "interlock", "interlock 1")
    assert paused.message.endswith("shutter closed, RF off")
    assert DEPOSIT_S + 35 < paused.t_s <= DEPOSIT_S + 45 < resumed.t_s
    assert resumed.rule == "interlock 1"
    assert_sputter_safe(ran)


def test_plasma_loss_pauses_then_aborts_when_the_plasma_will_not_relight(run):
    """The recipe's reflected-power rule pauses; restoring RF finds no plasma within the
    ignition timeout, so the run is aborted (the engine's alarm) to the safe state."""
    ran = run([{"fault": "plasma_loss", "instrument": "rf", "at_s": DEPOSIT_S + 35}])
    assert ran.status == "aborted" and ran.message.startswith("rf: no matched plasma")
    paused, = ran.reacted("pause")
    assert paused.rule == "interlock 1" and paused.t_s > DEPOSIT_S + 35
    aborted, = ran.reacted("abort")
    assert (aborted.severity, aborted.source, aborted.rule) == ("error", "engine", None)
    assert aborted.message.startswith("rf: no matched plasma") and aborted.t_s > paused.t_s
    assert_sputter_safe(ran)


def test_arcs_are_alarmed_by_a_rule_on_reflected_power(run):
    """Each arc is a 0.3 s reflected-power spike; the station's `alarm` rule without `for`
    alarms for every sample that catches one (the engine reads no arc counter: the AE Bus
    driver has none), and the run completes."""
    rule = {"sputter": [{"name": "arc", "when": "reflected_power_W > 0.2 * forward_power_W",
                         "then": "alarm", "during": ["deposit"]}]}
    ran = run([{"fault": "rf_arcs", "instrument": "rf", "at_s": DEPOSIT_S + 5, "for_s": 60,
                "count": 40}], rule)
    assert ran.status == "completed", ran.message
    arcs = [a for a in ran.reacted("alarm") if a.severity == "warning"]
    assert arcs and all(a.rule == "interlock arc" and a.source == "interlock" for a in arcs)
    assert all(DEPOSIT_S + 5 <= a.t_s <= DEPOSIT_S + 65 for a in arcs)
    assert_sputter_safe(ran)


def test_a_vacuum_leak_aborts_on_the_pressure_rule(run):
    ran = run([{"fault": "vacuum_leak", "tool": "sputter", "at_s": DEPOSIT_S + 35,
                "leak_mbar_l_s": 10}])
    assert ran.status == "aborted"
    assert ran.message == "interlock 2 (process_gauge.pressure_torr > 0.03) tripped"
    tripped, = ran.reacted("abort")
    assert (tripped.source, tripped.rule, tripped.severity) == ("interlock", "interlock 2",
                                                                "error")
    assert DEPOSIT_S + 35 <= tripped.t_s <= DEPOSIT_S + 45
    assert_sputter_safe(ran)


def test_gas_supply_loss_aborts_on_the_stations_flow_rule(run):
    rules = {"sputter": [{"name": "N2 low", "when": "n2_mfc.flow_sccm < 10 for 5 s",
                          "then": "abort", "during": ["presputter", "deposit"]}]}
    ran = run([{"fault": "gas_supply_loss", "instrument": "n2_mfc", "at_s": DEPOSIT_S + 35,
                "fall_s": 5}], rules)
    assert ran.status == "aborted" and ran.message.startswith("interlock N2 low")
    tripped, = ran.reacted("abort")
    assert (tripped.source, tripped.rule) == ("interlock", "interlock N2 low")
    assert DEPOSIT_S + 40 <= tripped.t_s <= DEPOSIT_S + 60
    assert_sputter_safe(ran)


@pytest.mark.parametrize("fault", [
    {"fault": "crystal_fail", "instrument": "qcm", "at_s": DEPOSIT_S + 35},
    {"fault": "crystal_life_end", "instrument": "qcm", "at_s": DEPOSIT_S + 35,
     "at_life_pct": 100},
])
def test_a_dead_crystal_stops_the_layer_and_aborts_the_run(run, fault):
    """The deposit cannot know its thickness without the crystal: the refused rate is left
    out (a warning from the monitor), the run is aborted (the engine's alarm), the layer
    kept as partial. (A fresh crystal reads 100 % life: `at_life_pct: 100` fails it at
    once when the fault starts.)"""
    ran = run([fault])
    assert ran.status == "aborted"
    assert ran.message.startswith("deposit: qcm gives no thickness or rate (qcm has a failed "
                                  "crystal")
    refused = ran.reacted("left out")
    assert refused and refused[0].source.startswith("qcm.") and refused[0].severity == "warning"
    aborted, = ran.reacted("abort")
    assert (aborted.source, aborted.severity) == ("engine", "error")
    assert aborted.t_s == pytest.approx(DEPOSIT_S + 35, abs=5) == refused[0].t_s
    assert_sputter_safe(ran)


def test_a_host_clock_jump_changes_nothing_the_run_stores(run):
    """The run clock is the engine's (monotonic; virtual here): an hour's jump back of the
    host clock leaves stored times monotonic and the run completes. The engine does not
    read the host clock, so no alarm says it jumped."""
    ran = run([{"fault": "clock_jump", "at_s": DEPOSIT_S + 35, "jump_s": -3600}])
    assert ran.status == "completed", ran.message
    times = [t for t, _q, _v in ran.store.readings(1, ["qcm.thickness_nm"])]
    assert times == sorted(times) and times[-1] > DEPOSIT_S + 35
    assert [a.reaction for a in ran.alarms] == ["safe state"]
    assert ran.world.clock() > DEPOSIT_S + 35
    assert_sputter_safe(ran)


# --- the evaporator -----------------------------------------------------------------------
def test_a_burnt_boat_aborts_on_the_stations_current_rule(run):
    """The boat opens mid-layer: current 0 with the supply at its voltage limit. The
    station's rule (source current below 5 A for 10 s while evaporating) aborts the run.
    (Without it the host loop would drive the supply at its limit until the step's
    `max_min`.)"""
    rules = {"evaporator": [{"name": "boat open", "when": "evap_supply.current_A < 5 for 10 s",
                             "then": "abort", "during": ["evaporate"]}]}
    ran = run([{"fault": "source_burnout", "tool": "evaporator", "at_s": EVAPORATE_S + 90}],
              rules, recipe=EVAP)
    assert ran.status == "aborted" and ran.message.startswith("interlock boat open")
    tripped, = ran.reacted("abort")
    assert (tripped.source, tripped.rule) == ("interlock", "interlock boat open")
    assert EVAPORATE_S + 100 <= tripped.t_s <= EVAPORATE_S + 120
    assert ran.world.evaporator.s.open_boats == [2]
    assert_evaporator_safe(ran)


def test_substrate_overtemp_aborts_on_the_stations_temperature_rule(run):
    rules = {"evaporator": [{"name": "substrate hot", "when":
                             "substrate_tc.temperature_C > 100", "then": "abort"}]}
    ran = run([{"fault": "substrate_overtemp", "instrument": "substrate_tc",
                "at_s": EVAPORATE_S + 30, "rise_C": 300}], rules, recipe=EVAP)
    assert ran.status == "aborted" and ran.message.startswith("interlock substrate hot")
    tripped, = ran.reacted("abort")
    assert (tripped.source, tripped.rule) == ("interlock", "interlock substrate hot")
    assert tripped.t_s > EVAPORATE_S + 30
    assert_evaporator_safe(ran)
