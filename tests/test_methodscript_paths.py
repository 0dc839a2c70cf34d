"""Every script the MethodSCRIPT driver builds takes the emulator's bulk path where the
emulator can take it: the emulator counts how it ran each measurement loop
(`loops_served`), so a change to the script compiler that the bulk path's recogniser no
longer knows shows up here instead of as a slow benchmark."""

from __future__ import annotations

import pytest
from conftest import ManualClock, sim_link

from lipon_hw.drivers.methodscript import MethodScriptPotentiostat
from lipon_hw.drivers.methodscript.scripts import SCRIPT_BUILDERS, loop_counts
from lipon_hw.sim.cells.factories import cell_from_spec
from lipon_hw.sim.emulators.methodscript import MethodScriptEmulator
from lipon_hw.techniques import (
    CCCV,
    EIS,
    OCV,
    ConstantCurrent,
    ConstantVoltage,
    CyclicSweep,
    DCPolarization,
    LinearSweep,
    MultisineEIS,
    Recording,
    Sequence,
    Window,
)

#: techniques whose loops cannot run in bulk, and why
NOT_BULK = {
    EIS: "each point is a new frequency, measured on its own (a stepped loop)",
    MultisineEIS: "one window for all tones, then a P line per tone (a stepped loop)",
    LinearSweep: "each step sets a new potential (a stepped loop)",
    CyclicSweep: "each step sets a new potential (a stepped loop)",
}

RULES = [Recording(), Recording(30), Recording(dV=0.005), Recording(dI=1e-8),
         Recording(30, 0.005), Recording(30, 0.005, 1e-8)]


def techniques():
    for rec in RULES:
        yield OCV(300, 1.0, rec)
        yield ConstantCurrent(3e-6, 600, 5.1, 3.5, 1.0, rec)
        yield ConstantCurrent(-3e-6, 600, None, 3.5, 2.0, rec)
        yield ConstantCurrent(3e-6, 600, interval_s=1.0, record=rec)
        yield ConstantVoltage(4.3, 600, 1e-7, 1.0, rec)
        yield ConstantVoltage(4.3, 600, None, 1.0, rec)
        yield DCPolarization(4.3, 600, 1.0, rec)
        yield CCCV(3e-6, 4.3, 1e-7, 600, 1.0, rec)
        yield CCCV(-3e-6, 4.0, 1e-7, 600, 1.0, rec)
    window = Window(2.5, 5.2, 1e-4)  # a safety window the instrument judges (on E or I)
    for rec in (Recording(), Recording(30, 0.005, 1e-8)):
        yield ConstantCurrent(3e-6, 600, 5.1, None, 1.0, rec, window)
        yield ConstantVoltage(4.3, 600, 1e-7, 1.0, rec, window)
        yield DCPolarization(4.3, 600, 1.0, rec, window)
        yield CCCV(3e-6, 4.3, 1e-7, 600, 1.0, rec, window)
    # a cycle as one program: each phase's loop its own, one after the other
    for rec in (Recording(30, 0.005), Recording(30, 0.005, 1e-8)):
        yield Sequence((ConstantCurrent(3e-6, 600, 5.1, None, 1.0, rec, window),
                        ConstantCurrent(-3e-6, 600, None, 3.5, 1.0, rec, window)))
        yield Sequence((OCV(120, 1.0, rec), CCCV(3e-6, 4.3, 1e-7, 600, 1.0, rec, window),
                        ConstantVoltage(4.0, 300, None, 1.0, rec)))
    yield EIS(1e5, 10, 9)
    yield EIS(1e5, 10, 5, dc_V=4.0)
    yield MultisineEIS((1e5, 1e4, 1e3, 100.0, 10.0))
    yield LinearSweep(4.0, 4.2, 0.01, 0.01)
    yield CyclicSweep(4.0, 4.2, 3.9, 0.01, 0.01, 2)


def test_every_technique_the_driver_builds_is_tried():
    assert {type(t) for t in techniques()} == set(SCRIPT_BUILDERS)


@pytest.mark.parametrize("technique", list(techniques()), ids=repr)
def test_the_drivers_scripts_take_the_bulk_path(technique):
    clock = ManualClock()
    emulator = MethodScriptEmulator("p", {1: cell_from_spec({"kind": "lnmo"})}, clock)
    pstat = MethodScriptPotentiostat("p", sim_link(emulator), multisine=True)
    run = pstat.start(1, technique)
    while not run.finished:
        clock.advance(100.0)
        run.poll()
    assert run.error is None
    # a CCCV runs two loops, every other technique one; a Sequence its phases' in turn
    per_phase = tuple(2 if isinstance(phase, CCCV) else 1
                      for phase in getattr(technique, "phases", (technique,)))
    assert loop_counts(technique) == per_phase
    loops = sum(per_phase)
    way = "stepped" if type(technique) in NOT_BULK else "bulk"
    assert dict(emulator.loops_served) == {way: loops}


def test_a_cell_without_grid_readings_is_run_event_by_event():
    """The bulk path needs the cell's readings on the sampling grid; a cell without them
    (as the hand-written test cells) is run event-driven instead."""

    class NoGrid:
        def __init__(self, cell):
            self._cell = cell

        def __getattr__(self, name):
            if name == "readings_on_grid":
                raise AttributeError(name)
            return getattr(self._cell, name)

    clock = ManualClock()
    cell = NoGrid(cell_from_spec({"kind": "lnmo"}))
    emulator = MethodScriptEmulator("p", {1: cell}, clock)
    pstat = MethodScriptPotentiostat("p", sim_link(emulator))
    run = pstat.start(1, ConstantCurrent(3e-6, 600, 5.1, 3.5, 1.0, Recording(30, 0.005)))
    while not run.finished:
        clock.advance(100.0)
        run.poll()
    assert dict(emulator.loops_served) == {"event": 1}
