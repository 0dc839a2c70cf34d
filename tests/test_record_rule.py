"""One record rule (techniques.RecordGate) on one stream of readings: the 2450's host-timed
run, the MethodSCRIPT script the driver compiles (run by the emulator's interpreter sample
by sample, event-driven, and in bulk by sim/recording.py) and the gate itself pick the
same samples."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from conftest import ManualClock, sim_link

from lipon_hw.drivers.keithley2450 import Keithley2450
from lipon_hw.drivers.methodscript import (
    MethodScriptPotentiostat,
    build_script,
    format_literal,
    parse_literal,
)
from lipon_hw.readings import Sample
from lipon_hw.sim.emulators.keithley2450 import Keithley2450Emulator
from lipon_hw.sim.emulators.methodscript import MethodScriptEmulator
from lipon_hw.techniques import (
    CCCV,
    OCV,
    ConstantCurrent,
    ConstantVoltage,
    RecordGate,
    Recording,
    Window,
    recording_of,
)

STEPS = 600  # readings, one a second


class TableCell:
    """A cell that replays a table of terminal readings on a 1 s grid whatever it is told
    to do: reading k holds from k s to just before k + 1 s. It keeps the Cell contract
    the emulators use (controls, readings, crossings, readings on a grid)."""

    def __init__(self, volts: list[float], amps: list[float]):
        self.volts, self.amps = volts, amps
        self.epoch = 0
        self.t = 0.0

    @property
    def trajectory_epoch(self) -> int:
        return self.epoch

    def _k(self, t: float) -> int:
        return min(max(int(math.floor(t + 1e-9)), 0), len(self.volts) - 1)

    def set_control(self, t, mode, value):
        self.t, self.epoch = t, self.epoch + 1

    def voltage_V(self, t):
        self.t = max(self.t, t)
        return self.volts[self._k(t)]

    def current_A(self, t):
        self.t = max(self.t, t)
        return self.amps[self._k(t)]

    def next_crossing(self, t, v_min, v_max, i_min_abs):
        """The first grid time from t on where a limit is reached (never late)."""
        for k in range(self._k(t), len(self.volts)):
            e, i = self.volts[k], self.amps[k]
            if (v_min is not None and e <= v_min) or (v_max is not None and e >= v_max) or \
                    (i_min_abs is not None and abs(i) <= i_min_abs):
                return max(t, float(k))
        return None

    def readings_on_grid(self, t0, step, k_first, k_last):
        ks = [self._k(t0 + k * step) for k in range(k_first, k_last + 1)]
        return (np.array([self.volts[k] for k in ks], dtype=float),
                np.array([self.amps[k] for k in ks], dtype=float))

    def snapshot(self):
        return {}

    def restore(self, state):
        pass


def stream(seed: int) -> tuple[list[float], list[float]]:
    """A random walk of E (0.1 mV steps, plateaus, turns) and I (1 nA steps), with values
    that print exactly in both wire formats (7 significant digits)."""
    rng = random.Random(seed)
    volts, amps, e, i = [], [], 35000, 2000
    for _ in range(STEPS + 1):
        e += rng.choice([-3, -1, 0, 0, 1, 2, 5])
        i += rng.choice([-4, -1, 0, 0, 1, 3])
        volts.append(float(f"{e / 10000:.4f}"))
        amps.append(float(f"{i}e-9"))
    return volts, amps


def gate_picks(record: Recording, volts, amps) -> list[int]:
    gate = RecordGate(record)
    return [k for k in range(1, STEPS + 1) if gate.offer(float(k), volts[k], amps[k])]


def smu_picks(technique, cell, end: str = "done") -> list[int]:
    """The samples the 2450 driver returns, polled once a second; `end` is how it must end."""
    clock = ManualClock()
    smu = Keithley2450("smu", sim_link(Keithley2450Emulator("smu", cell, clock)))
    run = smu.start(1, technique)
    picked = []
    while not run.finished:
        clock.advance(1.0)
        picked += [round(s.t_s) for s in run.poll()]
    assert run.end_reason == end
    return picked


def script_picks(technique, cell, path: str, served: dict, end: str = "done") -> list[int]:
    """The samples the MethodSCRIPT driver receives with the emulator set to run loops by
    `path`; `served` is how it must say it ran them, `end` how the run must end."""
    clock = ManualClock()
    emulator = MethodScriptEmulator("p", {1: cell}, clock)
    emulator.event_driven = path != "sample"
    emulator.bulk_loops = path == "bulk"
    pstat = MethodScriptPotentiostat("p", sim_link(emulator))
    run = pstat.start(1, technique)
    picked = []
    while not run.finished:
        clock.advance(47.0)
        picked += [round(s.t_s) for s in run.poll()]
    assert run.end_reason == end
    assert dict(emulator.loops_served) == served
    return picked


RULES = [Recording(), Recording(30), Recording(dV=0.0005), Recording(20, 0.0007),
         Recording(dI=5e-9), Recording(45, 0.0003, 2e-9)]
TECHNIQUES = [
    lambda rec: ConstantCurrent(3e-6, STEPS, interval_s=1.0, record=rec),
    lambda rec: ConstantVoltage(3.5, STEPS, interval_s=1.0, record=rec),
    lambda rec: OCV(STEPS, interval_s=1.0, record=rec),
]


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("record", RULES, ids=repr)
@pytest.mark.parametrize("make", TECHNIQUES, ids=["cc", "cv", "ocv"])
def test_every_path_picks_the_samples_the_gate_picks(make, record, seed):
    technique = make(record)
    rule = recording_of(technique)
    for step in (rule.dt_s, rule.dV, rule.dI):  # the script holds the same numbers
        assert step is None or parse_literal(format_literal(step))[0] == step
    volts, amps = stream(seed)
    expected = gate_picks(rule, volts, amps)
    assert expected[0] == 1 and len(expected) > 5
    if not rule.every_point:
        assert len(expected) < STEPS  # the rule did leave samples out
    assert smu_picks(technique, TableCell(volts, amps)) == expected
    # a body that sends every sample tests nothing an event could skip to
    event = "sample" if rule.every_point else "event"
    for path, served in (("sample", "sample"), ("event", event), ("bulk", "bulk")):
        picked = script_picks(technique, TableCell(volts, amps), path, {served: 1})
        assert picked == expected, path


def test_the_script_writes_the_gates_start_and_steps():
    """The compiled record block: thresholds stored where the gate starts them, moved by
    the Recording's own steps."""
    lines = build_script(ConstantCurrent(3e-6, 600, record=Recording(30, 0.005, 1e-8)))
    gate = RecordGate(Recording(30, 0.005, 1e-8))
    assert f"store_var tn {format_literal(gate.next_t)} eb" in lines
    assert f"store_var eh {format_literal(gate.e_high)} ab" in lines
    assert f"store_var il {format_literal(gate.i_low)} ba" in lines
    body = [line.strip() for line in lines]
    assert {"add_var tn 30", "add_var eh 5m", "sub_var el 5m", "add_var ih 10n",
            "sub_var il 10n"} <= set(body)


def test_the_gate_passes_no_test_with_nan_and_sends_every_point_without_a_rule():
    gate = RecordGate(Recording(dV=0.01))
    assert not gate.offer(1.0, math.nan, 0.0)  # as `e >= eh` in the script
    assert gate.offer(2.0, 3.0, 0.0) and not gate.offer(3.0, 3.0099, 0.0)
    assert gate.offer(4.0, 3.01, 0.0)
    every = RecordGate(Recording())
    assert all(every.offer(float(k), math.nan, math.nan) for k in range(5))


def cccv_stream(seed: int) -> tuple[list[float], list[float]]:
    """E rising to the CCCV voltage (4 V) about half-way through the CC phase, then a
    current decaying below the 1 µA cutoff."""
    rng = random.Random(seed)
    volts, amps, e, i = [], [], 39800, 3000
    for _ in range(STEPS + 1):
        i -= rng.choice([5, 10, 20]) if e >= 40000 else rng.choice([-1, 0, 1])
        e += rng.choice([0, 1, 1, 2]) if e < 40000 else rng.choice([-1, 0, 1])
        volts.append(float(f"{e / 10000:.4f}"))
        amps.append(float(f"{i}e-9"))
    return volts, amps


@pytest.mark.parametrize("record", [Recording(30, 0.0005), Recording(dI=5e-8),
                                    Recording(25, None, 2e-8)], ids=repr)
def test_cccv_limit_samples_leave_the_rule_where_it_was(record):
    """The sample that ends the CC phase goes out on its limit without moving the rule's
    thresholds (the script's limit block breaks before its rule block); the 2450's host
    path does the same, so both pick the same samples in the CV phase."""
    technique = CCCV(3e-6, 4.0, 1e-6, STEPS, interval_s=1.0, record=record)
    volts, amps = cccv_stream(7)
    picked = smu_picks(technique, TableCell(volts, amps), end="i_min")
    crossing = next(k for k in range(STEPS) if volts[k] >= 4.0)
    assert crossing in picked and picked[-1] < STEPS
    for path in ("sample", "event", "bulk"):
        script = script_picks(technique, TableCell(volts, amps), path, {path: 2}, end="i_min")
        assert script == picked, path


def ramp(start: float, step: float) -> list[float]:
    """Readings start + k·step, each printed as it would print on the wire (exactly)."""
    return [float(f"{start + k * step:.7g}") for k in range(STEPS + 1)]


WINDOWED = {  # (technique, volts, amps, the first reading strictly past the window)
    # discharging: E falls 0.2 mV a second and is 3.5 V (min_V, not past it) at 300 s
    "cc": (ConstantCurrent(-3e-6, STEPS, None, 3.0, 1.0, Recording(30, 0.0005),
                           window=Window(3.5, 4.5)), ramp(3.56, -0.0002), [-3e-6] * 601, 301),
    # charging: E rises to max_V in the CC phase; the hold at 4.4 V must not follow
    "cccv": (CCCV(3e-6, 4.4, 1e-7, STEPS, 1.0, Recording(30, 0.0005),
                  window=Window(3.0, 4.2)), ramp(4.14, 0.0002), [3e-6] * 601, 301),
    # a hold whose current rises 10 nA a second to max_current_A (4 µA) at 200 s
    "cv": (ConstantVoltage(3.5, STEPS, None, 1.0, Recording(dI=5e-8),
                           window=Window(2.0, 5.0, 4e-6)), [3.5] * 601,
           [float(f"{2000 + 10 * k}e-9") for k in range(STEPS + 1)], 201),
}


@pytest.mark.parametrize("name", list(WINDOWED))
def test_the_window_ends_the_script_at_its_first_sample_past_it_on_every_path(name):
    """A technique's safety window, judged at every measurement: the script sends the first
    sample strictly past it and aborts (a CCCV's hold never starts); a sample at the
    limit is not past it. Every path of the emulator (sample by sample, event-driven,
    in bulk) sends the same samples and ends there, and the driver says 'window'; so does
    the 2450's host-timed run, reading by reading."""
    technique, volts, amps, breach = WINDOWED[name]
    window = technique.window
    for level in (window.min_V, window.max_V, window.max_current_A):
        assert level is None or parse_literal(format_literal(level))[0] == level
    rule = recording_of(technique)
    gate = RecordGate(rule)
    expected = [k for k in range(1, breach) if gate.offer(float(k), volts[k], amps[k])]
    expected.append(breach)
    assert window.reached(Sample(volts[breach - 1], amps[breach - 1])) is not None  # at it
    # the 2450, timed by the host, judges every reading as the script does
    assert smu_picks(technique, TableCell(volts, amps), end="window") == expected
    for path in ("sample", "event", "bulk"):
        picked = script_picks(technique, TableCell(volts, amps), path, {path: 1},
                              end="window")
        assert picked == expected, path


def test_the_window_is_written_into_the_script_before_the_steps_own_limits():
    lines = [line.strip() for line in build_script(CCCV(
        3e-6, 4.4, 1e-7, 600, window=Window(3.0, 4.5, 1e-5)))]
    cc_start, cv_start = (n for n, line in enumerate(lines) if line.startswith("meas_loop"))
    cc, cv = lines[cc_start:cv_start], lines[cv_start:]
    assert cc[2:5] == ["if e < 3", "pck_start", "pck_add t"]
    assert "if e > 4500m" in cc and cc.index("if e > 4500m") < cc.index("if e >= 4400m")
    assert cc[cc.index("if e > 4500m") + 6] == "abort"
    assert "if i > 10u" in cv and "if i < -10u" in cv
    assert cv.index("if i < -10u") < cv.index("if i < 100n")  # before the cutoff
    without = build_script(CCCV(3e-6, 4.4, 1e-7, 600))
    assert not any("abort" in line for line in without)
