"""Steps the instrument runs as one program (`celltest.programs`): once a
cycle's steps have each run, a MethodSCRIPT channel sends the whole cycle as one script
(a `Sequence`), told apart again by its output. What is stored reads as the same steps
run one by one — each step's samples under its own step number, id and type, its cycle
figures the same — less the host's pauses between them; a pause or an abort in the middle
of a program acts as in a step, and the steps after a cut one run on their own until the
next cycle."""

from __future__ import annotations

import collections

import pytest
from test_cell_pause import run, steps_of

from lipon_hw.celltest import polling, programs
from lipon_hw.drivers.methodscript.driver import MethodScriptPotentiostat

#: a charge (~30 min), a 1 h rest and a discharge (~30 min) a cycle, 8 cycles: three
#: steps a program, longer than WINDOW_POLL_S, so that it is polled in its middle step
PROTOCOL = """
name: program test
kind: cycling
potentiostat: mes4
channels: 1
cell: {kind: lnmo, area_cm2: 0.049, capacity_uAh: 1.47}
record: {every_s: 30, every_mV: 5}
safety: {min_V: 2.5, max_V: 5.2}
steps:
  - tag: cycle
  - cc: {current_A: 3.0e-6, until: {voltage_V: 5.1, time_h: 2}}
  - rest: {until: {time_h: 1}}
  - cc: {current_A: -3.0e-6, until: {voltage_V: 3.5, time_h: 2}}
  - loop: {to: cycle, times: 8}
"""
KINDS = ["CC_CHG", "REST", "CC_DCHG"]


def _started(monkeypatch) -> list[str]:
    """The technique type of each start the driver is asked for, in order."""
    started: list[str] = []
    real = MethodScriptPotentiostat.start

    def start(pstat, channel, technique):
        started.append(type(technique).__name__)
        return real(pstat, channel, technique)

    monkeypatch.setattr(MethodScriptPotentiostat, "start", start)
    return started


def steps_one_by_one(monkeypatch) -> None:
    """Every step started on its own, as an instrument that runs no programs would."""
    monkeypatch.setattr(programs, "program_from", lambda steps, pc, *_: [pc])


def test_cycles_after_the_first_run_as_programs_their_steps_told_apart(tmp_path,
                                                                       monkeypatch):
    started = _started(monkeypatch)
    polls: list[int] = []
    real_wait = polling.wait_s

    def wait(channel, *args, **kwargs):
        polls.append(channel.state.cycle)
        return real_wait(channel, *args, **kwargs)

    monkeypatch.setattr(polling, "wait_s", wait)
    channel, store, run_id = run(tmp_path, [], PROTOCOL)
    assert channel.status == "completed", channel.message
    # the first cycle step by step (each step's duration learnt), then a program a cycle
    assert started == ["ConstantCurrent", "OCV", "ConstantCurrent"] + ["Sequence"] * 7
    steps = steps_of(store, run_id)
    assert sorted(steps) == list(range(1, 25))  # every step once, numbered without a gap
    for n, rows in sorted(steps.items()):
        assert {(r[3], r[5], r[6]) for r in rows} == {
            ((n - 1) // 3 + 1, (n - 1) % 3 + 1, KINDS[(n - 1) % 3])}, n
    # no host between the steps of a program: the rest's first sample one measurement (1 s)
    # after the charge's last (its end), the discharge's first 3600 s and a measurement
    # after it (the rest's last sample is the record rule's, not its end); between
    # programs, the host's prompt poll
    for n in range(5, 25, 3):
        assert steps[n][0][0] - steps[n - 1][-1][0] == pytest.approx(1.0, abs=1e-6), n
        assert steps[n + 1][0][0] - steps[n - 1][-1][0] == pytest.approx(3601, abs=1e-6)
    for n in range(7, 25, 3):
        assert steps[n][0][0] - steps[n - 1][-1][0] < 10, n
    # a steady cycle is polled two or three times: after WINDOW_POLL_S (in its rest), at
    # its expected end, and a prompt poll later if it is not over yet
    per_cycle = collections.Counter(polls)
    assert all(per_cycle[c] <= 3 for c in range(5, 9)), per_cycle
    assert len(store.cycles(run_id, 1)) == 8
    store.close()


def test_a_program_gives_the_cycles_its_steps_give_one_by_one(tmp_path, monkeypatch):
    """The same cell, the same steps: each cycle's charge and discharge within 0.2 % (the
    programs leave out the host's second or so between steps), each charge and discharge
    (ended by its voltage: its last sample is its end) as long within a few seconds."""
    channel, store, run_id = run(tmp_path / "program", [], PROTOCOL)
    assert channel.status == "completed", channel.message
    programs = store.cycles(run_id, 1), steps_of(store, run_id)
    store.close()
    steps_one_by_one(monkeypatch)
    channel, store, run_id = run(tmp_path / "steps", [], PROTOCOL)
    assert channel.status == "completed", channel.message
    alone = store.cycles(run_id, 1), steps_of(store, run_id)
    store.close()
    assert len(programs[0]) == len(alone[0]) == 8
    for mine, theirs in zip(programs[0], alone[0], strict=True):
        for key in ("charge_Ah", "discharge_Ah", "charge_Wh", "discharge_Wh"):
            assert mine[key] == pytest.approx(theirs[key], rel=2e-3), (mine, theirs)
    assert sorted(programs[1]) == sorted(alone[1])
    for n in (n for n in programs[1] if (n - 1) % 3 != 1):
        took = [rows[-1][0] - rows[0][0] for rows in (programs[1][n], alone[1][n])]
        assert took[0] == pytest.approx(took[1], abs=5.0), n


def test_a_pause_in_a_programs_middle_step_finishes_it_alone(tmp_path, monkeypatch):
    """Paused early in cycle 4: the pause is acted on at the program's poll in its rest
    (WINDOW_POLL_S in): the program stops, the cell at open circuit; on continue the rest
    goes on with what was left of its hour and the discharge runs on its own; the next
    cycles are programs again."""
    started = _started(monkeypatch)
    probe, store, run_id = run(tmp_path / "probe", [], PROTOCOL)
    charge = steps_of(store, run_id)[10]  # cycle 4's charge
    store.close()
    started.clear()
    channel, store, run_id = run(tmp_path / "paused", [(charge[0][0] + 60, "pause"),
                                                       (charge[0][0] + 7200, "continue")],
                                 PROTOCOL)
    assert channel.status == "completed", channel.message
    assert started == ["ConstantCurrent", "OCV", "ConstantCurrent"] + ["Sequence"] * 3 + [
        "OCV", "OCV", "ConstantCurrent"] + ["Sequence"] * 4  # the pause's own OCV too
    steps = steps_of(store, run_id)
    kinds = [rows[0][6] for _, rows in sorted(steps.items())]
    assert kinds == KINDS * 3 + ["CC_CHG", "REST", "PAUSE", "REST", "CC_DCHG"] + KINDS * 4
    rests = [steps[11], steps[13]]  # the rest cut short, and what was left of it
    rested = sum(rows[-1][0] - rows[0][0] + 1.0 for rows in rests)
    assert rested == pytest.approx(3600, abs=35)  # within a record period
    assert {r[3] for n in (10, 11, 12, 13, 14) for r in steps[n]} == {4}
    assert len(store.cycles(run_id, 1)) == 8
    store.close()


def test_an_abort_in_a_program_stops_the_channel_with_its_cell_off(tmp_path):
    """Aborted early in cycle 3: acted on at the program's poll in its rest, WINDOW_POLL_S
    after the program's start; the rest is cut there, no discharge follows."""
    probe, store, run_id = run(tmp_path / "probe", [], PROTOCOL)
    charge, rest = (steps_of(store, run_id)[n] for n in (7, 8))  # cycle 3's
    store.close()
    channel, store, run_id = run(tmp_path / "aborted", [(charge[0][0] + 60, "abort")],
                                 PROTOCOL)
    assert channel.status == "aborted" and channel._disconnected
    steps = steps_of(store, run_id)
    assert sorted(steps) == list(range(1, 9))
    start = charge[0][0] - 1.0  # the program's first measurement is 1 s in
    assert steps[8][-1][0] < rest[-1][0] - 600
    assert start + polling.WINDOW_POLL_S - 31 < steps[8][-1][0] <= start + polling.WINDOW_POLL_S
    store.close()
