"""A `Sequence` on a MethodSCRIPT channel: its phases run one after the other in one
script (one timer, variables declared once, one `on_finished:`), and the `Run` tells each
sample's phase and each phase's end from the output — also where a loop's start marker
was lost on the wire — and a safety window breached in a later phase ends the whole
script with 'window'."""

from __future__ import annotations

import pytest
from conftest import ManualClock, sim_link
from test_methodscript import RCCell

from lipon_hw.drivers.methodscript import MethodScriptPotentiostat, build_script
from lipon_hw.drivers.methodscript.run import Run
from lipon_hw.drivers.methodscript.scripts import script_bytes_for
from lipon_hw.errors import InputError
from lipon_hw.sim.emulators.methodscript import MethodScriptEmulator
from lipon_hw.techniques import EIS, OCV, ConstantCurrent, Recording, Sequence, Window

EVERY_2S = Recording(dt_s=2.0)
#: V = 3 V + I·t/C + I·Rs on the 10 mF, 100 Ω cell at ±1 mA, a measurement every 0.4 s:
#: the charge passes 4.05 V at 9.5 s (its sample at 9.6 s, 4.06 V: vc 3.96 V); the
#: discharge (from 3.86 V, 0.1 V/s down) passes 3.55 V 3.1 s in (its sample 3.2 s in,
#: 12.8 s on the sequence's timer, 3.54 V)
CHARGE = ConstantCurrent(1e-3, 60, v_max_V=4.05, interval_s=0.4, record=EVERY_2S)
DISCHARGE = ConstantCurrent(-1e-3, 60, v_min_V=3.55, interval_s=0.4, record=EVERY_2S)


def _start(technique):
    clock = ManualClock()
    emulator = MethodScriptEmulator("pstat", {1: RCCell(C=1e-2, Rs=100.0, V0=3.0)}, clock)
    pstat = MethodScriptPotentiostat("pstat", sim_link(emulator))
    return pstat.start(1, technique), clock, emulator


def test_a_sequence_is_one_script_of_its_phases():
    lines = build_script(Sequence((CHARGE, DISCHARGE)))
    assert lines.count("timer_start") == 1 and lines.count("var t") == 1
    assert lines.count("on_finished:") == 1 and lines[-2:] == ["on_finished:", "  cell_off"]
    loops = [k for k, line in enumerate(lines) if line.startswith("meas_loop_cp")]
    assert [lines[k] for k in loops] == ["meas_loop_cp e i 1m 400m 60",
                                         "meas_loop_cp e i -1m 400m 60"]
    # each phase's record threshold set afresh before its loop: its first sample goes out
    assert [k for k, line in enumerate(lines) if line.startswith("store_var tn")][1] < loops[1]
    for bad, said in [((CHARGE,), "two or more"), ((CHARGE, EIS(1e5, 10, 5)), "phase 2 is a EIS"),
                      ((CHARGE, OCV(10, 20.0)), "phase 2: OCV: interval_s 20.0")]:
        with pytest.raises(InputError, match=said):
            build_script(Sequence(bad))


def test_each_phases_samples_and_end_are_told_apart():
    run, clock, _ = _start(Sequence((CHARGE, DISCHARGE)))
    clock.advance(5)
    first = run.poll_phases()
    assert [(k, block.t_s) for k, block in first] == [(0, pytest.approx([0.4, 2.4, 4.4]))]
    clock.advance(5)  # the charge ends at 9.6 s, the discharge's first sample is at 10 s
    (_, charge), (_, nothing_yet) = run.poll_phases()
    assert charge.t_s == pytest.approx([6.4, 8.4, 9.6]) and not nothing_yet
    clock.advance(100)
    rest = run.poll_phases()
    assert [k for k, _ in rest] == [1]
    (_, discharge), = rest
    assert discharge.t_s == pytest.approx([10.0, 12.0, 12.8])  # one timer: from the start
    assert charge.E_V[-1] == pytest.approx(4.06) and discharge.E_V[-1] == pytest.approx(3.54)
    assert run.finished and run.phase == 1
    assert run.phase_end(0) == "v_max" and run.end_reason == "v_min"


def test_a_window_breached_in_a_later_phase_ends_the_script():
    """The discharge's window (3.7 V) comes before its own limit: the sample past it, 2 s
    in (3.66 V), is sent and the script aborts: the run ends 'window' in phase 1."""
    guarded = Sequence((CHARGE, ConstantCurrent(-1e-3, 60, v_min_V=3.55, interval_s=0.4,
                                                record=EVERY_2S, window=Window(3.7, 5.0))))
    run, clock, emulator = _start(guarded)
    clock.advance(100)
    phases = run.poll_phases()
    assert [k for k, _ in phases] == [0, 1]
    assert phases[1][1].E_V[-1] == pytest.approx(3.66) and phases[1][1].t_s[-1] == \
        pytest.approx(11.6)
    assert run.finished and run.phase == 1 and run.end_reason == "window"
    assert emulator.ports[1].cell.mode == "open"


def test_a_phase_whose_loop_marker_was_lost_is_still_told_apart():
    """The output of the charge-then-discharge sequence as the emulator sends it, the
    discharge loop's `M` line lost on the wire: its first data line after the charge
    loop's `*` starts the next phase."""
    clock = ManualClock()
    emulator = MethodScriptEmulator("pstat", {1: RCCell(C=1e-2, Rs=100.0, V0=3.0)}, clock)
    sequence = Sequence((CHARGE, DISCHARGE))
    assert emulator.handle(script_bytes_for(sequence)) == b"e\nM000A\n"
    clock.advance(100)
    output = emulator.handle(b"\n")
    assert output.count(b"*\nM000A\n") == 1
    for data in (output, output.replace(b"*\nM000A\n", b"*\n")):
        run = Run(None, 1, sequence)  # no instrument: its output is given (`take`)
        run.take(b"M000A\n" + data)
        assert run.finished and run.phase == 1 and run.end_reason == "v_min"
        assert run.phase_end(0) == "v_max" and not run.corrupt_lines
        phases = run.poll_phases()  # finished: asks the instrument nothing
        assert [(k, block.t_s) for k, block in phases] == [
            (0, pytest.approx([0.4, 2.4, 4.4, 6.4, 8.4, 9.6])),
            (1, pytest.approx([10.0, 12.0, 12.8]))]


def test_a_sequence_whose_end_went_unseen_has_run_its_phases():
    """The charge's samples came, then the wire lost the rest: when the instrument says
    nothing runs (`Z!0006`: `_end_unseen`), the script ran to its end — the host takes
    every phase as ended, the lost output told as a gap, nothing judged from it."""
    clock = ManualClock()
    emulator = MethodScriptEmulator("pstat", {1: RCCell(C=1e-2, Rs=100.0, V0=3.0)}, clock)
    sequence = Sequence((CHARGE, DISCHARGE))
    emulator.handle(script_bytes_for(sequence))
    clock.advance(100)
    output = emulator.handle(b"\n")
    run = Run(None, 1, sequence)
    run.take(b"M000A\n" + output[:output.index(b"*\n")])  # the charge's data lines only
    assert run.phase == 0 and not run.finished
    run._end_unseen()
    assert run.finished and run.end_lost and run.phase == 1
    assert run.end_reason == "done"  # the discharge sent nothing the host saw
    assert [(k, len(block)) for k, block in run.poll_phases()] == [(0, 6), (1, 0)]
    (gap,) = run.take_gaps()
    assert gap[0] == pytest.approx(9.6) and gap[1] is None and "lost on the wire" in gap[2]


def test_data_lines_lost_inside_a_block_or_before_it_are_told_as_gaps():
    """The record rule sends a sample at least every 2 s (+ two 0.4 s measurements): data
    lines lost on the wire leave a longer stretch, told as a gap whether it lies inside a
    block decoded at once (as a matrix) or between the last sample before and a block's
    first; the samples that came are all kept. A whole block without a loss tells none."""
    technique = ConstantCurrent(1e-4, 60, v_max_V=9.0, interval_s=0.4, record=EVERY_2S)
    clock = ManualClock()
    emulator = MethodScriptEmulator("pstat", {1: RCCell(C=1e-2, Rs=100.0, V0=3.0)}, clock)
    emulator.handle(script_bytes_for(technique))
    clock.advance(100)
    output = emulator.handle(b"\n")
    lines = [line + b"\n" for line in output.split(b"\n") if line.startswith(b"P")]
    end = b"*\n\n"  # the loop's end, the script's (its start marker came with the upload)
    assert len(lines) == 30  # 0.4 s … 58.4 s, every 2 s, and its run time's end
    whole = Run(None, 1, technique)
    whole.take(b"M000A\n" + b"".join(lines) + end)
    assert whole.take_gaps() == [] and len(whole.poll_block()) == 30
    inside = Run(None, 1, technique)  # samples 12-14 lost (24.4 … 28.4 s)
    inside.take(b"M000A\n" + b"".join(lines[:12] + lines[15:]) + end)
    (gap,) = inside.take_gaps()
    assert gap[:2] == pytest.approx((22.4, 30.4)) and "no sample for 8 s" in gap[2]
    assert len(inside.poll_block()) == 27
    before = Run(None, 1, technique)  # a block whose first lines were lost: from the last
    before.take(b"M000A\n" + b"".join(lines[:10]))  # sample of the block before
    before.take(b"".join(lines[13:]) + end)
    (gap,) = before.take_gaps()
    assert gap[:2] == pytest.approx((18.4, 26.4)) and "no sample for 8 s" in gap[2]
    assert len(before.poll_block()) == 27
