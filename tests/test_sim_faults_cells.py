"""Cell and channel faults, the host clock jumping, determinism by seed, and refusals of
malformed fault entries (file:line: field: one sentence)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import CannedReplies
from faulty import at, connect, station_text

from lipon_hw.errors import InputError, InstrumentError, LinkLost
from lipon_hw.sim.cells.factories import cell_from_spec
from lipon_hw.sim.fault_schedule import FaultEntryError
from lipon_hw.station import load_station
from lipon_hw.techniques import OCV, ConstantCurrent


def test_cell_hard_short_at_its_time_on_one_channel():
    lab, clock = connect([{"fault": "cell_hard_short", "instrument": "mes4", "channel": 2,
                           "at_s": 500}])
    mes4 = lab.instruments["mes4"]
    runs = {ch: mes4.start(ch, OCV(1000.0, 50.0)) for ch in (1, 2)}
    at(clock, 1100.0)
    samples = {ch: run.poll() for ch, run in runs.items()}
    assert all(s.E_V > 2.5 for s in samples[1])
    assert all(s.E_V > 2.5 for s in samples[2] if s.t_s < 500.0)
    assert all(abs(s.E_V) < 1e-3 for s in samples[2] if s.t_s >= 500.0)
    assert any(s.t_s == 500.0 for s in samples[2])


@pytest.mark.parametrize("kind", ["cell_open", "cell_soft_short", "cell_high_interface"])
def test_other_cell_faults_reach_the_cell_at_their_time(kind):
    lab, clock = connect([{"fault": kind, "instrument": "mes4", "channel": 4, "at_s": 300}])
    mes4 = lab.instruments["mes4"]
    run = mes4.start(4, OCV(600.0, 100.0))
    at(clock, 200.0)
    run.poll()
    assert lab.sim.cell("mes4", 4).active_faults == []
    at(clock, 700.0)
    run.poll()
    assert lab.sim.cell("mes4", 4).active_faults == [kind.removeprefix("cell_")]


def test_cell_short_after_cycles_comes_when_the_cell_has_cycled():
    lab, clock = connect([{"fault": "cell_hard_short", "instrument": "mes4", "channel": 1,
                           "after_cycles": 0.5}])
    mes4 = lab.instruments["mes4"]
    charge = mes4.start(1, ConstantCurrent(3e-6, 20000.0, v_max_V=5.1, interval_s=60.0))
    at(clock, 5000.0)
    assert charge.poll()[-1].E_V > 5.0 and charge.end_reason == "v_max"
    discharge = mes4.start(1, ConstantCurrent(-3e-6, 20000.0, v_min_V=3.5, interval_s=60.0))
    at(clock, 10000.0)
    assert discharge.poll()[-1].E_V < 3.5 and discharge.end_reason == "v_min"
    rest = mes4.start(1, OCV(600.0, 100.0))  # one cycle done: the short comes with it
    at(clock, 11000.0)
    assert all(abs(s.E_V) < 1e-3 for s in rest.poll())


def test_a_cell_mounted_later_takes_the_channel_faults_still_ahead():
    lab, clock = connect([{"fault": "cell_hard_short", "instrument": "smu", "at_s": 2000}])
    smu = lab.instruments["smu"]
    at(clock, 100.0)
    lab.sim.mount_cell("smu", 1, cell_from_spec({"kind": "blocking", "name": "new"}))
    smu.set_voltage_limit_V(2.0)
    smu.set_current_A(1e-9)
    smu.output(True)
    at(clock, 1999.0)
    assert smu.voltage_V() == pytest.approx(2.0, abs=0.01)  # a capacitor: at compliance
    at(clock, 2001.0)
    assert smu.voltage_V() < 1e-3


def test_a_cell_restored_after_its_fault_fired_keeps_the_fault_it_counts():
    """A resumed channel's cell is built afresh and restored from its snapshot after the
    schedule's fault has fired (a worker mounting it later than the fault's onset takes no
    scheduled fault): the snapshot carries the faults its active set counts, so the
    restored cell is still shorted instead of failing on a fault it does not have (chaos
    seed 1 run 115: IndexError in the worker, the cell reported not disconnected)."""
    spec = {"kind": "plating", "name": "c", "faults": [{"kind": "hard_short", "at_s": 50}]}
    cell = cell_from_spec(spec)
    cell.set_control(0.0, "current", 1e-6)
    before = cell.voltage_V(100.0)
    state = cell.snapshot()
    assert state["active"] == [0]
    again = cell_from_spec({k: v for k, v in spec.items() if k != "faults"})
    again.restore(state)
    again.add_faults([{"kind": "hard_short", "at_s": 50}])  # the schedule again: not twice
    assert len(again.faults) == 1 and again.active_faults == ["hard_short"]
    assert again.voltage_V(200.0) == pytest.approx(before, abs=0.05)


def test_channel_fault_ends_the_running_script_with_its_error_then_clears():
    lab, clock = connect([{"fault": "channel_fault", "instrument": "mes4", "channel": 3,
                           "at_s": 1000, "for_s": 500, "code": 0x0032}])
    mes4 = lab.instruments["mes4"]
    run = mes4.start(3, OCV(3600.0, 100.0))
    other = mes4.start(5, OCV(3600.0, 100.0))
    at(clock, 1200.0)
    samples = run.poll()
    assert max(s.t_s for s in samples) < 1000.0 + 1e-9
    assert run.end_reason == "error" and run.error.code == 0x0032
    assert lab.sim.ports_of("mes4")[2].cell_is_on is False
    with pytest.raises(InstrumentError, match="!0032"):  # refused while it lasts
        mes4.start(3, OCV(60.0, 10.0))
    # the abort a safe state sends is refused too: said at once, never waited on until the
    # link times out and is declared lost
    with pytest.raises(InstrumentError, match=r"refused to abort its script \(Z\) with"):
        mes4.stop(3)
    assert lab.pool.link("sim://mes4/3").health.value == "ok"
    assert other.poll() and other.end_reason is None  # the other channel runs on
    at(clock, 1500.0)
    again = mes4.start(3, OCV(200.0, 100.0))
    at(clock, 1800.0)
    assert len(again.poll()) == 2 and again.end_reason == "done"


def test_a_garbled_refusal_of_an_abort_is_asked_again_not_taken_as_said():
    """`Z` answered with a refusal whose code a flipped byte made unreadable is a garbled
    frame: the Link asks again (after a flush) and the second, whole refusal is what the
    channel said (it said "refused … with None")."""
    from lipon_hw.drivers.methodscript import MethodScriptPotentiostat
    from lipon_hw.links import Link
    from lipon_hw.ports import SimPort

    wire = CannedReplies([b"Z!00\xb01\n", b"", b"Z!0032\n"])  # garbled, the flush, whole
    pstat = MethodScriptPotentiostat("p", Link("sim://p", SimPort(wire), timeout_s=0.05))
    with pytest.raises(InstrumentError) as said:
        pstat.stop(1)
    assert str(said.value) == "sim://p refused to abort its script (Z) with !0032 (a heavy " \
        "cell overload, so the measurement was stopped)"
    assert wire.replies == []


def test_host_clock_jumps_at_its_time_and_back_when_it_clears():
    lab, clock = connect([{"fault": "clock_jump", "at_s": 3600, "jump_s": -7200,
                           "for_s": 60}])
    at(clock, 3599.0)
    assert lab.sim.host_clock() == 3599.0
    at(clock, 3600.0)
    assert lab.sim.host_clock() == 3600.0 - 7200.0
    at(clock, 3700.0)
    assert lab.sim.host_clock() == 3700.0


def test_the_api_counts_after_s_from_now():
    lab, clock = connect()
    at(clock, 5000.0)
    entry = lab.sim.faults.add(fault="silent", instrument="rf", after_s=10.0, for_s=5.0)
    assert (entry.start_s, entry.end_s) == (5010.0, 5015.0)
    rf = lab.instruments["rf"]
    rf.forward_power_W()
    at(clock, 5010.0)
    with pytest.raises(LinkLost):
        rf.forward_power_W()
    with pytest.raises(FaultEntryError, match="need for_s") as info:
        lab.sim.faults.add(fault="rf_arcs", instrument="rf", count=4)
    assert info.value.loc == ("faults", 1, "count")


# --- determinism -----------------------------------------------------------------------
DRAWN = [{"fault": "vacuum_leak", "tool": "sputter", "at_s": [100, 900],
          "leak_mbar_l_s": [1.0e-3, 1.0e-2], "for_s": [100, 200]},
         {"fault": "rf_arcs", "instrument": "rf", "at_s": 1000, "for_s": 600, "count": 5},
         {"fault": "silent", "instrument": "qcm", "after_s": [0, 3000], "for_s": 30}]


def _trace(seed: int):
    lab, clock = connect(DRAWN, seed=seed)
    lab.instruments["valves"].pump()
    readings = []
    for t in range(0, 3000, 50):
        at(clock, float(t))
        readings.append(lab.instruments["chamber_gauge"].pressure_torr())
    entries = [(e.start_s, e.for_s, dict(e.params), list(e.times))
               for e in lab.sim.faults.entries]
    return entries, readings, list(lab.sim.faults.fired)


def test_same_seed_same_faults_at_the_same_virtual_times():
    first, second = _trace(7), _trace(7)
    assert first == second
    other = _trace(8)
    assert other[0] != first[0]
    entries = first[0]
    assert 100 <= entries[0][0] <= 900 and 1e-3 <= entries[0][2]["leak_mbar_l_s"] <= 1e-2
    assert len(entries[1][3]) == 5 and entries[1][3] == sorted(entries[1][3])


# --- refusals --------------------------------------------------------------------------
BAD = [
    ("leak_mbar_l_s", "fault: vacuum_leak\n  tool: sputter\n  leak_mbar_l_s: 500",
     "500 is outside 1e-09…100 mbar·l/s"),
    ("fault", "fault: vaccum_leak\n  tool: sputter", "did you mean vacuum_leak?"),
    ("at_s", "fault: silent\n  instrument: rf\n  at_s: -1", "is outside"),
    ("for_s", "fault: cell_open\n  instrument: smu\n  for_s: 10", "does not clear by itself"),
    ("at", "fault: silent\n  instrument: rf\n  at: {step: deposit, nth: 3}",
     "events of a run are the engine's"),
    ("instrument", "fault: gas_supply_loss\n  instrument: rf", "cannot show gas_supply_loss"),
    ("instrument", "fault: silent\n  instrument: nowhere", "is not a simulated instrument"),
    ("channel", "fault: cell_open\n  instrument: mes4\n  channel: 17",
     "is not a channel of mes4"),
    ("code", "fault: error_reply\n  instrument: chamber_gauge\n  code: 7", "outside 150…199"),
    ("after_cycles", "fault: silent\n  instrument: rf\n  after_cycles: 3", "not a field"),
    ("reflected_pct", "fault: reflected_power\n  instrument: rf\n  reflected_pct: [50, 20]",
     "runs backwards"),
    ("boat", "fault: source_burnout\n  tool: evaporator\n  boat: 4", "has boats 1–3"),
    ("rise_C", "fault: substrate_overtemp\n  tool: evaporator\n  rise_C: hot",
     "must be a finite number"),
]


@pytest.mark.parametrize(("field", "entry", "says"), BAD, ids=[b[1].split("\n")[0] for b in BAD])
def test_a_malformed_entry_is_one_sentence_with_file_line_and_field(tmp_path, field, entry,
                                                                     says):
    text = station_text("- fault: silent\n  instrument: qcm\n  at_s: 5\n- " + entry + "\n")
    path = tmp_path / "station.yaml"
    path.write_text(text)
    lines = text.splitlines()
    start = max(i for i, x in enumerate(lines) if x == "    - " + entry.split("\n")[0])
    line = next(i for i, x in enumerate(lines[start:], start + 1)
                if x.strip().removeprefix("- ").startswith(f"{field}:"))
    with pytest.raises(InputError) as info:
        load_station(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: sim.faults[1].{field}: "), message
    assert says in message and "\n" not in message


def test_the_cli_refuses_it_before_anything_moves(tmp_path):
    path = tmp_path / "station.yaml"
    path.write_text(station_text("- fault: vacuum_leak\n  tool: sputter\n"
                                 "  leak_mbar_l_s: 500\n"))
    proc = subprocess.run([sys.executable, "-m", "lipon_hw.cli", "station", "--check",
                           "--station", str(path)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)  # not the source tree (see conftest)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "sim.faults[0].leak_mbar_l_s: 500 is outside" in proc.stderr


def test_the_fault_page_names_every_fault_and_its_example_loads():
    import re
    from pathlib import Path

    import yaml

    from lipon_hw.sim.fault_catalogue import FAULTS

    text = (Path(__file__).parent.parent / "docs" / "faults.md").read_text("utf-8")
    rows = set(re.findall(r"^\| `(\w+)` \|", text, re.M))
    assert set(FAULTS) <= rows
    for kind in FAULTS.values():
        for param in kind.params:
            assert f"`{param}`" in text, (kind.name, param)
    example = re.search(r"```yaml\n(.*?)```", text, re.S)[1]
    faults = yaml.safe_load(example)["sim"]["faults"]
    lab, clock = connect(faults)
    assert [e.kind.name for e in lab.sim.faults.entries] == [f["fault"] for f in faults]


def test_overlapping_entries_hold_until_the_last_ends_and_leaks_add_up():
    lab, clock = connect([
        {"fault": "silent", "instrument": "rf", "at_s": 100, "for_s": 100},
        {"fault": "silent", "instrument": "rf", "at_s": 150, "for_s": 100},
        {"fault": "vacuum_leak", "tool": "sputter", "at_s": 0, "leak_mbar_l_s": 1e-2},
        {"fault": "vacuum_leak", "tool": "sputter", "at_s": 0, "leak_mbar_l_s": 1e-2}])
    rf = lab.instruments["rf"]
    lab.instruments["valves"].pump()
    at(clock, 210.0)  # the first ended, the second still holds
    with pytest.raises(LinkLost):
        rf.forward_power_W()
    at(clock, 260.0)
    rf.forward_power_W()
    at(clock, 7200.0)  # pumped down: the two leaks' gas load over the pumping speed
    assert lab.instruments["process_gauge"].pressure_torr() == \
        pytest.approx(2 * 7.5e-3 / 17.0, rel=0.05)
