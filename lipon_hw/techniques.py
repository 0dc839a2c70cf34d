"""Electrochemical techniques, independent of any instrument's make.

A technique says what to apply, until when, and what to record; a `Potentiostat`
driver turns it into its own wire language (a MethodSCRIPT script, SCPI settings and
host-timed readings, ...). Samples come back in SI units (`lipon_hw.readings`). Current
sign: positive charges the cell (Battery Data Format).

What every driver needs to know about a technique type lives here, once: its entry in
`KINDS` (what it controls, whether it records by a rule and measures a current, how it
is checked), `check_technique`, `recording_of`, `end_limits`, `sweep_legs`. The record
rule itself is `RecordGate`: the host-timed SMU path and the simulated lab's bulk loops
ask it whether a sample goes out, and the MethodSCRIPT script compiler writes the same
thresholds and tests as script lines.

Impedance comes as a sweep (`EIS`, one frequency after the other) or as a multisine
(`MultisineEIS`, every frequency at once over one period of the lowest: lipon_hw.multisine
has its design and physics); `eis_physical_limit_s` is the shortest time either can take.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

import numpy as np

from lipon_hw import multisine
from lipon_hw import ranges as r
from lipon_hw.errors import InputError

if TYPE_CHECKING:
    from lipon_hw.readings import Sample

INF = math.inf


@dataclass(frozen=True)
class Recording:
    """When a sample goes out: every `dt_s`, whenever E moved by `dV` (volts) and whenever
    I moved by `dI` (amperes) since the last one. All None: every measurement. Checks of
    limits happen every measurement. dI matters where the current moves (a potentiostatic
    hold, whose decaying current a time rule samples too coarsely to integrate); a
    technique that measures no current (OCV) ignores it."""

    dt_s: float | None = None
    dV: float | None = None
    dI: float | None = None

    @property
    def every_point(self) -> bool:
        return self.dt_s is None and self.dV is None and self.dI is None

    def without_current(self) -> Recording:
        """The rules left where no current is measured (all of them gone: every point)."""
        return Recording(self.dt_s, self.dV) if self.dI is not None else self


@dataclass(frozen=True)
class Window:
    """The cell's safety window: E from `min_V` to `max_V` and |I| at most `max_current_A`
    (None: no such limit), a sample strictly past one being a breach. A cell test's host
    judges every sample it takes against it; a driver that can also has the instrument
    judge every measurement and stop there (a MethodSCRIPT script sends that sample and
    aborts: E on a galvanostatic loop, where E moves, I on a potentiostatic one), so that
    a cell is stopped within one measurement of a breach whatever the host does or however
    seldom it asks."""

    min_V: float | None = None
    max_V: float | None = None
    max_current_A: float | None = None

    def past(self, volts: float | None, amps: float | None, at_limit: bool = False
             ) -> str | None:
        """'min_V', 'max_V' or 'max_current_A' if E (`volts`) or I (`amps`) is strictly
        past that limit (a breach; at it too with `at_limit`), else None (NaN and None are
        past none). The host's check of every sample, the 2450's of every reading."""
        below, above = (operator.le, operator.ge) if at_limit else (operator.lt, operator.gt)
        if volts is not None:
            if self.min_V is not None and below(volts, self.min_V):
                return "min_V"
            if self.max_V is not None and above(volts, self.max_V):
                return "max_V"
        if amps is not None and self.max_current_A is not None and \
                above(abs(amps), self.max_current_A):
            return "max_current_A"
        return None

    def reached(self, sample: Sample) -> str | None:
        """`past`, at the limit too: for a driver judging why an instrument ended a step.
        The instrument compared the value it measured, which its wire format rounds, so a
        reading just past a limit may arrive as the limit itself."""
        return self.past(sample.E_V, sample.I_A, at_limit=True)


@dataclass(frozen=True)
class OCV:
    duration_s: float
    interval_s: float = 1.0
    record: Recording = Recording()


@dataclass(frozen=True)
class ConstantCurrent:
    """Galvanostatic step until E leaves [v_min_V, v_max_V] or `duration_s` ends."""

    current_A: float
    duration_s: float
    v_max_V: float | None = None
    v_min_V: float | None = None
    interval_s: float = 1.0
    record: Recording = Recording()
    window: Window | None = None


@dataclass(frozen=True)
class ConstantVoltage:
    """Potentiostatic step until |I| falls below `i_min_A` or `duration_s` ends."""

    voltage_V: float
    duration_s: float
    i_min_A: float | None = None
    interval_s: float = 1.0
    record: Recording = Recording()
    window: Window | None = None


@dataclass(frozen=True)
class DCPolarization:
    """A long potentiostatic hold whose decaying current gives the electronic leakage."""

    voltage_V: float
    duration_s: float
    interval_s: float = 1.0
    record: Recording = Recording()
    window: Window | None = None


@dataclass(frozen=True)
class CCCV:
    """Constant current until E reaches `voltage_V`, then hold it until |I| < `i_min_A`
    (0: no cutoff, the hold runs its time); each phase is capped at `duration_s`."""

    current_A: float
    voltage_V: float
    i_min_A: float = field(metadata={"none": 0.0})  # see `_values_in_range`
    duration_s: float
    interval_s: float = 1.0
    record: Recording = Recording()
    window: Window | None = None


@dataclass(frozen=True)
class EIS:
    """Potentiostatic impedance from `f_start_Hz` to `f_end_Hz`, `points` log-spaced
    (ends included, as `meas_loop_eis` does), at `dc_V` or, if None, at the open-circuit
    potential measured just before."""

    f_start_Hz: float
    f_end_Hz: float
    points: int
    amplitude_V: float = 0.01
    dc_V: float | None = None

    @classmethod
    def per_decade(cls, f_start_Hz: float, f_end_Hz: float, per_decade: int,
                   **kwargs) -> EIS:
        decades = abs(math.log10(f_start_Hz / f_end_Hz))
        return cls(f_start_Hz, f_end_Hz, max(2, round(decades * per_decade) + 1), **kwargs)

    @property
    def frequencies_Hz(self) -> tuple[float, ...]:
        return log_frequencies(self.f_start_Hz, self.f_end_Hz, self.points)


@dataclass(frozen=True)
class MultisineEIS:
    """Potentiostatic impedance at all `frequencies_Hz` at once (lipon_hw.multisine): tones
    on harmonics of the lowest frequency f0, Schroeder phases, `amplitude_V` the peak of
    the sum (for linearity), one period of f0 measured after a quarter period's settle,
    at `dc_V` or, if None, at the open-circuit potential measured just before. Each
    frequency is moved to its harmonic k·f0; `design.frequencies_Hz` (ascending) are the
    ones measured and reported."""

    frequencies_Hz: tuple[float, ...]
    amplitude_V: float = 0.01
    dc_V: float | None = None

    @property
    def design(self) -> multisine.MultisineDesign:
        return multisine.design(self.frequencies_Hz, self.amplitude_V)


@dataclass(frozen=True)
class LinearSweep:
    start_V: float
    end_V: float
    step_V: float
    rate_V_s: float


@dataclass(frozen=True)
class CyclicSweep:
    start_V: float
    vertex1_V: float
    vertex2_V: float
    step_V: float
    rate_V_s: float
    scans: int = 1


@dataclass(frozen=True)
class Sequence:
    """Recorded techniques run one after the other by the instrument itself, each to its
    own end (its limits or its time), without the host between them: a cycle's charge and
    discharge as one program on the instrument. The samples keep one time base (from the
    first phase's start), and a driver that runs it tells each sample's phase and each
    phase's end (a MethodSCRIPT Run's `poll_phases`, `phase_end`). Only an instrument
    that runs programs on its own takes it (MethodSCRIPT: one script, a measurement loop
    per phase); a safety window breached in any phase ends the whole sequence."""

    phases: tuple


#: the techniques a Sequence is made of: recorded, each ended by its own limits or time
SEQUENCE_PHASES = (OCV, ConstantCurrent, ConstantVoltage, DCPolarization, CCCV)

Technique = (OCV | ConstantCurrent | ConstantVoltage | DCPolarization | CCCV | EIS
             | MultisineEIS | LinearSweep | CyclicSweep | Sequence)


def log_frequencies(f_start: float, f_end: float, points: int) -> tuple[float, ...]:
    if points == 1:
        return (f_start,)
    ratio = (f_end / f_start) ** (1 / (points - 1))
    return tuple(f_start * ratio**k for k in range(points))


# --- the record rule -----------------------------------------------------------------
class RecordGate:
    """Whether a sample goes out under a `Recording`, as the driver's MethodSCRIPT script
    decides it: thresholds that start at 0 (so the first sample goes out: its timer is
    ≥ 0 and E is ≥ 0 or ≤ 0), then a sample goes out when t ≥ next_t or E ≥ e_high or
    E ≤ e_low or I ≥ i_high or I ≤ i_low, and moves them to t + dt_s, E ± dV, I ± dI.
    A rule the Recording does not have never fires (its thresholds are infinite); with
    no rule at all every sample goes out. A NaN passes no test, as in the script. A
    sample sent because it reached a limit is not offered: the loop ends there and the
    thresholds stay (the script's limit block breaks before its rule block).

    `offer(t, e, i)` is the rule in one call; `due` and `sent` are its two halves, for a
    caller that finds the first due sample its own way (sim/recording.py searches a
    stretch of readings for the first one outside the window these thresholds make)."""

    __slots__ = ("dt_s", "dV", "dI", "next_t", "e_high", "e_low", "i_high", "i_low")

    def __init__(self, record: Recording, next_t: float = 0.0, e_high: float = 0.0,
                 e_low: float = 0.0, i_high: float = 0.0, i_low: float = 0.0):
        self.dt_s, self.dV, self.dI = record.dt_s, record.dV, record.dI
        self.next_t = -INF if record.every_point else next_t if self.dt_s is not None else INF
        self.e_high, self.e_low = (e_high, e_low) if self.dV is not None else (INF, -INF)
        self.i_high, self.i_low = (i_high, i_low) if self.dI is not None else (INF, -INF)

    def due(self, t: float, e: float, i: float | None = None) -> bool:
        """Whether this sample goes out (the thresholds do not move)."""
        if t >= self.next_t or e >= self.e_high or e <= self.e_low:
            return True
        return self.dI is not None and i is not None and (i >= self.i_high or i <= self.i_low)

    def sent(self, t: float, e: float, i: float | None = None) -> None:
        """Move the thresholds past a sample that went out by the rule."""
        if self.dt_s is not None:
            self.next_t = t + self.dt_s
        if self.dV is not None:
            self.e_high, self.e_low = e + self.dV, e - self.dV
        if self.dI is not None and i is not None:
            self.i_high, self.i_low = i + self.dI, i - self.dI

    def offer(self, t: float, e: float, i: float | None = None) -> bool:
        """Whether this sample goes out; if it does, the thresholds move past it."""
        if self.due(t, e, i):
            self.sent(t, e, i)
            return True
        return False


# --- what each technique type is -------------------------------------------------------
@dataclass(frozen=True)
class EndLimits:
    """The limits that end a technique early: E ≥ v_max_V, E ≤ v_min_V, |I| < i_min_A."""

    v_max_V: float | None = None
    v_min_V: float | None = None
    i_min_A: float | None = None

    def reached(self, sample: Sample) -> str | None:
        """'v_max', 'v_min' or 'i_min' if the sample is past that limit, else None."""
        potential, current = sample.E_V, sample.I_A
        if self.v_max_V is not None and potential >= self.v_max_V:
            return "v_max"
        if self.v_min_V is not None and potential <= self.v_min_V:
            return "v_min"
        if self.i_min_A is not None and abs(current) < self.i_min_A:
            return "i_min"
        return None


NO_LIMITS = EndLimits()


@dataclass(frozen=True)
class TechniqueKind:
    """What drivers need to know about one technique type. `control`: "open" (open
    circuit), "current", "voltage", "current, then voltage" (CCCV), "sweep" (a voltage
    staircase) or "impedance". `records`: it has a `record` rule (else every sample
    goes out); `measures_current`: its samples carry a current (OCV's do not, so a ΔI
    rule means nothing there). `checks`: each returns what is wrong, or None. `limits`:
    the limits that end it early; `legs`: a sweep's (from, to) legs."""

    control: str
    records: bool
    measures_current: bool
    checks: tuple[Callable[[Technique], str | None], ...] = ()
    limits: Callable[[Technique], EndLimits] = lambda tq: NO_LIMITS
    legs: Callable[[Technique], list[tuple[float, float]]] | None = None


#: each number a technique (or its record rule, or its window) holds: its range, as the
#: files that make techniques give it (`lipon_hw.ranges`), in the technique's SI units
#: (the files' mV, mV/s and µA scaled). "Greater than zero" is not a range: a 1e-300 s
#: interval passes it and the run never ends.
_RANGES: dict[str, tuple[object, float]] = {
    "duration_s": (r.TECHNIQUE_S, 1.0), "interval_s": (r.MEASURE_S, 1.0),
    "current_A": (r.CELL_A, 1.0), "i_min_A": (r.CELL_A_CUTOFF, 1.0),
    "max_current_A": (r.CELL_A_CUTOFF, 1.0),
    **{name: (r.VOLTS, 1.0) for name in ("voltage_V", "v_max_V", "v_min_V", "dc_V", "min_V",
                                         "max_V", "start_V", "end_V", "vertex1_V",
                                         "vertex2_V")},
    "f_start_Hz": (r.FREQ_HZ, 1.0), "f_end_Hz": (r.FREQ_HZ, 1.0),
    "points": (r.EIS_POINTS, 1.0), "amplitude_V": (r.AMPLITUDE_MV, 1e-3),
    "step_V": (r.SWEEP_STEP_MV, 1e-3), "rate_V_s": (r.SWEEP_RATE_MV_S, 1e-3),
    "scans": (r.SCANS, 1.0),
    "dt_s": (r.RECORD_S, 1.0), "dV": (r.RECORD_MV, 1e-3), "dI": (r.RECORD_UA, 1e-6),
}


def _out_of_range(owner: str, name: str, value, optional: bool) -> str | None:
    """What is wrong with `value` as the field `name` (a key of _RANGES), or None: not a
    number (a bool is not one, nor NaN or ±inf), or outside its range (None is fine where
    the field is `optional`); `owner` names the technique in the sentence."""
    if value is None and optional:
        return None
    kind, scale = _RANGES[name]
    span = r.span_of(kind)
    lo, hi = span.lo * scale, span.hi * scale
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        wrong = "is not a number (it is due within {where})"
    elif (kind is r.EIS_POINTS or kind is r.SCANS) and not (
            math.isfinite(value) and value == int(value)):
        wrong = "is not a whole number within {where}"
    elif not lo <= (abs(value) if span.signed else value) <= hi:  # NaN fails this too
        wrong = "is outside {where} ({why})"
    else:
        return None
    unit = {"mV": "V", "mV/s": "V/s", "µA": "A"}.get(span.unit, span.unit)
    where = f"{'±' if span.signed else ''}{lo:g}–{hi:g}{' ' + unit if unit else ''}"
    return f"{owner}: {name} {value!r} " + wrong.format(where=where, why=span.why)


def _values_in_range(tq) -> str | None:
    """Each number of the technique, its record rule and its window within its range; a
    field whose default is None (no such limit, rule or window) may be None, and one whose
    metadata names a "none" value (CCCV's i_min_A 0: no cutoff) may be that."""
    owner = type(tq).__name__
    parts = [(owner, tq)]
    for name in ("record", "window"):
        part = getattr(tq, name, None)
        if isinstance(part, Recording | Window):
            parts.append((f"{owner} {name}", part))
    for label, part in parts:
        for f in fields(part):
            if f.name in _RANGES:
                value = getattr(part, f.name)
                if "none" in f.metadata and not isinstance(value, bool) and \
                        value == f.metadata["none"]:
                    continue
                problem = _out_of_range(label, f.name, value, optional=f.default is None)
                if problem is not None:
                    return problem
    return None


def _interval_within_duration(tq) -> str | None:
    if tq.interval_s > tq.duration_s:
        return (f"{type(tq).__name__}: interval_s {tq.interval_s} must be at most "
                f"duration_s {tq.duration_s}")
    return None


def _multisine_values(tq) -> str | None:
    if not isinstance(tq.frequencies_Hz, tuple | list):
        return f"MultisineEIS: frequencies_Hz is a list of frequencies, not {tq.frequencies_Hz!r}"
    problem = multisine.problems(tq.frequencies_Hz, tq.amplitude_V)
    if problem is not None:
        return f"MultisineEIS: {problem}"
    # its tones and amplitude (the peak of their sum) have the multisine's own ranges; its
    # potential is any technique's
    return _out_of_range("MultisineEIS", "dc_V", tq.dc_V, optional=True)


def _window_values(tq) -> str | None:
    """A safety window is a Window, min_V below max_V (its values' ranges: `_values_in_range`)."""
    window = tq.window
    if window is None:
        return None
    if not isinstance(window, Window):
        return f"{type(tq).__name__}: window is a Window, not {window!r}"
    if window.min_V is not None and window.max_V is not None and window.min_V >= window.max_V:
        return (f"{type(tq).__name__}: window min_V {window.min_V} must be below max_V "
                f"{window.max_V}")
    return None


def _sequence_phases(tq) -> str | None:
    """Two or more phases, each a recorded technique with good values of its own."""
    phases = tq.phases
    if not isinstance(phases, tuple) or len(phases) < 2:
        return f"Sequence: phases is a tuple of two or more techniques, not {phases!r}"
    for k, phase in enumerate(phases, 1):
        if type(phase) not in SEQUENCE_PHASES:
            return (f"Sequence: phase {k} is a {type(phase).__name__}; a phase is one of "
                    f"{', '.join(t.__name__ for t in SEQUENCE_PHASES)}")
        problem = problem_of(phase)
        if problem is not None:
            return f"Sequence: phase {k}: {problem}"
    return None


def _current_cutoff(tq) -> EndLimits:
    return EndLimits(i_min_A=tq.i_min_A)


_TIMED = (_values_in_range, _interval_within_duration)
_DRIVEN = (*_TIMED, _window_values)  # a cell driven by a current or voltage
_SWEPT = (_values_in_range,)

#: every technique type, keyed by its class
KINDS: dict[type, TechniqueKind] = {
    OCV: TechniqueKind("open", records=True, measures_current=False, checks=_TIMED),
    ConstantCurrent: TechniqueKind("current", records=True, measures_current=True,
                                   checks=_DRIVEN,
                                   limits=lambda tq: EndLimits(tq.v_max_V, tq.v_min_V)),
    ConstantVoltage: TechniqueKind("voltage", records=True, measures_current=True,
                                   checks=_DRIVEN, limits=_current_cutoff),
    DCPolarization: TechniqueKind("voltage", records=True, measures_current=True,
                                  checks=_DRIVEN),
    CCCV: TechniqueKind("current, then voltage", records=True, measures_current=True,
                        checks=_DRIVEN, limits=_current_cutoff),
    EIS: TechniqueKind("impedance", records=False, measures_current=False,
                       checks=(_values_in_range,)),
    MultisineEIS: TechniqueKind("impedance", records=False, measures_current=False,
                                checks=(_multisine_values,)),
    LinearSweep: TechniqueKind("sweep", records=False, measures_current=True, checks=_SWEPT,
                               legs=lambda tq: [(tq.start_V, tq.end_V)]),
    CyclicSweep: TechniqueKind(
        "sweep", records=False, measures_current=True, checks=_SWEPT,
        legs=lambda tq: [(tq.start_V, tq.vertex1_V), (tq.vertex1_V, tq.vertex2_V),
                         (tq.vertex2_V, tq.start_V)] * tq.scans),
    # its phases record and end each by their own rules (the driver's run tells which)
    Sequence: TechniqueKind("sequence", records=False, measures_current=True,
                            checks=(_sequence_phases,)),
}


def kind_of(technique: Technique) -> TechniqueKind:
    """The technique's entry in KINDS; InputError for anything that is not a technique."""
    kind = KINDS.get(type(technique))
    if kind is None:
        raise InputError(f"{type(technique).__name__} is not a technique; techniques are "
                         f"{', '.join(t.__name__ for t in KINDS)}")
    return kind


def check_technique(technique: Technique) -> None:
    """InputError naming the first thing wrong with the technique's values."""
    problem = problem_of(technique)
    if problem is not None:
        raise InputError(problem)


def problem_of(technique: Technique) -> str | None:
    """The first thing wrong with the technique's values (its kind's checks), or None."""
    for check in kind_of(technique).checks:
        problem = check(technique)
        if problem is not None:
            return problem
    return None


def recording_of(technique: Technique) -> Recording:
    """The rule that picks the samples that go out: the technique's own, without ΔI where
    no current is measured; every sample for a technique without one."""
    kind = kind_of(technique)
    if not kind.records:
        return Recording()
    return technique.record if kind.measures_current else technique.record.without_current()


def end_limits(technique: Technique) -> EndLimits:
    """The limits that end the technique early (CCCV: the cutoff of its voltage phase)."""
    return kind_of(technique).limits(technique)


def sweep_legs(technique: LinearSweep | CyclicSweep) -> list[tuple[float, float]]:
    """The legs of a sweep: start → end, or start → vertex 1 → vertex 2 → start per scan."""
    legs = kind_of(technique).legs
    if legs is None:
        raise InputError(f"{type(technique).__name__} is not a sweep")
    return legs(technique)


#: the fewest periods a single-sine measurement of one frequency can take: the amplitude
#: and phase of a sine are those of one whole period (less leaks the DC and the drift in)
SWEEP_MIN_PERIODS = 1.0


def eis_physical_limit_s(technique: EIS | MultisineEIS) -> float:
    """The shortest time physics allows for the technique's spectrum (settling and
    overheads not counted).

    A sweep measures one frequency after the other, each for at least SWEEP_MIN_PERIODS
    (1) period: Σ 1/f over its points. (The emulated EmStat takes 3 periods and 50 ms a
    point; commercial sweeps 1–10 periods and a settle.) A multisine measures every
    tone at once over one period of its lowest frequency f0, the tones being harmonics of
    f0: 1/f0, whatever the number of tones. Its actual time is `design.duration_s` (a
    quarter period's settle on top: 1.25/f0)."""
    if isinstance(technique, MultisineEIS):
        return technique.design.window_s
    if isinstance(technique, EIS):
        return sum(SWEEP_MIN_PERIODS / f for f in technique.frequencies_Hz)
    raise InputError(f"{type(technique).__name__} is not an impedance technique")
