"""Record points found in bulk without an instrument (sim/recording.py), against what the
MethodSCRIPT emulator sends for the same cell and the driver decodes."""

from __future__ import annotations

import pytest
from conftest import ManualClock, sim_link

from lipon_hw.drivers.methodscript import (
    ConstantCurrent,
    MethodScriptPotentiostat,
    Recording,
    decode_value,
    encode_value,
)
from lipon_hw.errors import InputError
from lipon_hw.sim.cells.factories import cell_from_spec
from lipon_hw.sim.emulators.methodscript import MethodScriptEmulator
from lipon_hw.sim.recording import record_constant_current


def _on_the_wire(value: float) -> float:
    return decode_value(encode_value(value))


@pytest.mark.parametrize("current_A, soc, limits, record", [
    (3e-6, 0.0, {"v_max_V": 5.1}, Recording(30, 0.005)),
    (-3e-6, 1.0, {"v_min_V": 3.5}, Recording(30, 0.005)),
    (3e-6, 0.3, {"v_max_V": 5.1}, Recording(dV=0.002)),
    (3e-6, 0.3, {}, Recording(60)),
    (-3e-6, 0.8, {"v_min_V": 4.6}, Recording()),
])
def test_record_points_are_what_the_emulator_sends(current_A, soc, limits, record):
    spec = {"kind": "lnmo", "params": {"initial_soc": soc}}
    clock = ManualClock()
    emulator = MethodScriptEmulator("p", {1: cell_from_spec(spec)}, clock)
    pstat = MethodScriptPotentiostat("p", sim_link(emulator))
    run = pstat.start(1, ConstantCurrent(current_A, 6000, interval_s=1.0, record=record,
                                         **limits))
    samples = []
    while not run.finished:
        clock.advance(450)
        samples += run.poll()

    cell = cell_from_spec(spec)
    out = record_constant_current(cell, 0.0, current_A, limits.get("v_min_V"),
                                  limits.get("v_max_V"), 1.0, record.dt_s, record.dV, 6000)
    assert len(out.t_s) == len(samples) > 20
    assert [_on_the_wire(x) for x in out.t_s] == [s.t_s for s in samples]
    assert [_on_the_wire(x) for x in out.E_V] == [s.E_V for s in samples]
    assert [_on_the_wire(x) for x in out.I_A] == [s.I_A for s in samples]
    assert out.end_reason == run.end_reason
    assert cell.t == out.end_t_s == (out.t_s[-1] if limits else 6000.0)  # last measured


def test_every_rule_and_the_end_of_the_run_time():
    cell = cell_from_spec({"kind": "lnmo", "params": {"initial_soc": 0.5}})
    out = record_constant_current(cell, 50.0, 3e-7, 3.5, 5.1, 2.0, 120.0, None, 1000.0)
    assert out.end_reason == "done"
    assert out.t_s.tolist() == [2.0, *range(122, 1000, 120)]  # first sample, then every 120 s
    assert cell.t == 1050.0 and out.end_t_s == 1000.0


@pytest.mark.parametrize("interval_s, max_s, words", [
    (0.0, 100.0, "interval_s must be a positive number"),
    (10.0, 5.0, "shorter than one interval_s"),
    (1.0, float("nan"), "max_s must be a positive number"),
])
def test_bad_timing_is_bad_input(interval_s, max_s, words):
    cell = cell_from_spec({"kind": "lnmo"})
    with pytest.raises(InputError, match=words):
        record_constant_current(cell, 0.0, 3e-6, 3.5, 5.1, interval_s, 30.0, 0.005, max_s)
