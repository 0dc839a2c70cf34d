"""Interlock rules for deposition runs (issue 11, item 3): the station's rules for a tool
apply to every run on it; `alarm` alarms once as it trips, `hold` keeps the outputs and
stops the steps, `pause` goes to the safe state and back, `abort` ends the run; a
malformed rule is one sentence with file, line and field before anything moves."""

from __future__ import annotations

import pytest
import simpy
from faulty import station_with_rules

from lipon_hw.deposition.recipe import load_recipe
from lipon_hw.deposition.runner import Engine
from lipon_hw.errors import InputError, RunAborted
from lipon_hw.station import load_station
from lipon_hw.store import Store

from recipes import short_recipe

RULE_LINE = '  - {when: "reflected_power_W > 0.1 * forward_power_W for 5 s", then: pause,'


class Run:
    """A short sputter run wired by hand, so a test can detune the match mid-deposit."""

    def __init__(self, tmp_path, reaction="pause", station_rules=None, extra=""):
        text = short_recipe(tmp_path, 40, extra=extra).read_text(encoding="utf-8")
        recipe_path = tmp_path / "rules.yaml"
        recipe_path.write_text(text.replace(RULE_LINE, RULE_LINE.replace("pause", reaction)),
                               encoding="utf-8")
        station_path = None if station_rules is None else \
            station_with_rules(tmp_path, station_rules)
        self.station = load_station(station_path)
        self.recipe = load_recipe(str(recipe_path), self.station)
        self.env = simpy.Environment()
        self.lab = self.station.connect(lambda: self.env.now)
        self.tool = self.lab.sim.world.sputter
        self.store = Store(tmp_path / "data")
        self.run_id = self.store.create_run("rules", "deposition", str(recipe_path),
                                            self.recipe.text, self.station.text, 1, "T-1")
        self.engine = Engine(self.recipe, self.lab, self.store, self.run_id, self.env)
        self.seen: list[tuple[float, bool, bool]] = []  # (t, rf on, shutter open) while held

    def detune_during_deposit(self, at_s=30.0, for_s=15.0):
        def proc():
            while self.engine.ctx.step_idx < 4 or not self.tool.s.shutter_open:
                yield self.env.timeout(1)
            yield self.env.timeout(at_s)
            self.tool.sp.matched_reflection = 0.3
            for _ in range(int(for_s)):
                yield self.env.timeout(1)
                if self.engine.ctx.held:
                    self.seen.append((self.env.now, self.tool.s.rf_on, self.tool.s.shutter_open))
            self.tool.sp.matched_reflection = 0.006

        self.env.process(proc())

    def messages(self) -> list[str]:
        return [f"{a.severity}: {a.message}" for a in self.store.alarms(self.run_id)]


def test_pause_goes_to_the_safe_state_and_back(tmp_path):
    run = Run(tmp_path, "pause")
    run.detune_during_deposit()
    assert run.engine.run().status == "completed"
    # shutter closed all the while; RF off until the condition cleared (then ramped back
    # before the shutter reopens and the steps go on)
    assert run.seen and all(not shutter for _, _, shutter in run.seen)
    assert not run.seen[0][1]
    messages = run.messages()
    assert any(m.startswith("hold: interlock 1 (reflected_power_W") and
               m.endswith("shutter closed, RF off") for m in messages)
    assert any(m.endswith("cleared, process restored") for m in messages)


def test_hold_keeps_the_outputs_and_stops_the_steps(tmp_path):
    run = Run(tmp_path, "hold")
    run.detune_during_deposit()
    assert run.engine.run().status == "completed"
    assert run.seen and all(rf and shutter for _, rf, shutter in run.seen)
    messages = run.messages()
    assert any(m.startswith("warning: interlock 1") and
               m.endswith("held, outputs kept, steps stopped") for m in messages)
    assert any(m.endswith("cleared, steps go on") for m in messages)
    assert not any("RF off" in m for m in messages if not m.startswith("info: safe state"))


def test_an_alarm_rule_alarms_once_as_it_trips_and_once_as_it_clears(tmp_path):
    run = Run(tmp_path, "alarm")
    run.detune_during_deposit()
    assert run.engine.run().status == "completed"
    messages = run.messages()
    assert sum("interlock 1 (reflected_power_W" in m and m.endswith("is true")
               for m in messages) == 1
    assert sum(m == "info: interlock 1: no longer true" for m in messages) == 1
    assert not run.seen  # an alarm never holds


def test_a_station_rule_applies_to_every_run_on_its_tool(tmp_path):
    rules = {"sputter": [{"name": "N2 low", "when": "n2_mfc.flow_sccm < 25 for 20 s",
                          "then": "abort", "during": ["deposit"]}]}
    run = Run(tmp_path, station_rules=rules)
    assert [r.label for r in run.recipe.interlocks] == ["interlock N2 low", "interlock 1",
                                                         "interlock 2"]
    with pytest.raises(RunAborted, match=r"interlock N2 low \(n2_mfc.flow_sccm < 25"):
        run.engine.run()
    run_row = run.store.run(run.run_id)
    assert run_row.status == "aborted" and "N2 low" in run_row.message
    assert not run.tool.s.rf_on and not run.tool.s.shutter_open
    # the evaporator's runs do not see the sputter tool's rules
    au = load_recipe("sequences/au_seed.yaml", run.station)
    assert all(r.origin != "station" for r in au.interlocks)


def _station_error(tmp_path, rules) -> str:
    path = station_with_rules(tmp_path, rules)
    with pytest.raises(InputError) as info:
        load_recipe(str(short_recipe(tmp_path)), load_station(path))
    return str(info.value)


@pytest.mark.parametrize("rule, where, words", [
    ({"when": "n2_mfc.flow_sccm <", "then": "abort"}, "interlocks.sputter[0].when",
     "is not a valid condition"),
    ({"when": "n2_mfc.flow_sccm < 1", "then": "stop"}, "interlocks.sputter[0].then",
     "'alarm', 'hold', 'pause' or 'abort'"),
    ({"when": "nope.flow_sccm < 1", "then": "abort"}, "interlocks.sputter[0].when",
     "names instrument 'nope'"),
    ({"when": "n2_mfc.flow_sccm < 1", "then": "abort", "during": ["depositt"]},
     "interlocks.sputter[0].during[0]", "unknown step 'depositt'"),
    ({"when": "n2_mfc.flow_sccm < 1e999", "then": "abort"}, "interlocks.sputter[0].when",
     "not a finite number"),
])
def test_a_malformed_station_rule_is_one_sentence_naming_the_station_line(
        tmp_path, rule, where, words):
    message = _station_error(tmp_path, {"sputter": [rule]})
    assert "station.yaml:" in message and f": {where}: " in message, message
    assert words in message and "\n" not in message


def test_rules_for_something_the_station_does_not_have_are_refused(tmp_path):
    message = _station_error(tmp_path, {"sputterr": [{"when": "x > 1", "then": "alarm"}]})
    assert "interlocks.sputterr: 'sputterr' is neither a tool nor an instrument" in message
