"""Electrochemical techniques and samples, independent of any instrument's make.

A technique says what to apply, until when, and what to record; a `Potentiostat`
driver turns it into its own wire language (a MethodSCRIPT script, SCPI settings and
host-timed readings, ...). Samples come back in SI units. Current sign: positive
charges the cell (Battery Data Format).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


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


@dataclass(frozen=True)
class ConstantVoltage:
    """Potentiostatic step until |I| falls below `i_min_A` or `duration_s` ends."""

    voltage_V: float
    duration_s: float
    i_min_A: float | None = None
    interval_s: float = 1.0
    record: Recording = Recording()


@dataclass(frozen=True)
class DCPolarization:
    """A long potentiostatic hold whose decaying current gives the electronic leakage."""

    voltage_V: float
    duration_s: float
    interval_s: float = 1.0
    record: Recording = Recording()


@dataclass(frozen=True)
class CCCV:
    """Constant current until E reaches `voltage_V`, then hold it until |I| < `i_min_A`;
    each phase is capped at `duration_s`."""

    current_A: float
    voltage_V: float
    i_min_A: float
    duration_s: float
    interval_s: float = 1.0
    record: Recording = Recording()


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


Technique = (OCV | ConstantCurrent | ConstantVoltage | DCPolarization | CCCV | EIS
             | LinearSweep | CyclicSweep)


def log_frequencies(f_start: float, f_end: float, points: int) -> tuple[float, ...]:
    if points == 1:
        return (f_start,)
    ratio = (f_end / f_start) ** (1 / (points - 1))
    return tuple(f_start * ratio**k for k in range(points))


@dataclass(frozen=True, slots=True)
class Sample:
    """One decoded data package, SI units; fields the technique does not give are None."""

    t_s: float | None = None
    E_V: float | None = None
    I_A: float | None = None
    f_Hz: float | None = None
    z_re_ohm: float | None = None
    z_im_ohm: float | None = None
