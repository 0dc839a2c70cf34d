"""What a step's polls took: the samples as the channel's rows (time on the run clock,
voltage, current, cycle, step count, step id, step type) for the store, the safety
limits, the rules and the step's ends; and, when the driver handed them over in columns
(a `SampleBlock`), the columns too, so that the limits and the step's cycle figures are
judged without a loop in Python per sample — the same outcome as from the rows."""

from __future__ import annotations

import math
from itertools import repeat

from lipon_hw.celltest import protocol as pr
from lipon_hw.celltest.step_ends import check_safety
from lipon_hw.techniques import SampleBlock

#: (times on the run clock, voltages, currents) of a poll's samples
Columns = tuple[list, list, list]


def rows_of(samples, t0: float, cycle: int, step_count: int, step_id: int,
            step_type: str) -> tuple[list[tuple], Columns | None]:
    """A poll's samples (a list of Samples, or a SampleBlock of voltages with their
    times) as rows, and as columns when they came so. A sample without a voltage makes
    no row; at open circuit the instrument reports no current: it is zero."""
    if isinstance(samples, SampleBlock):  # a column holds numbers only: no None in it
        n = len(samples)
        times = list(map(t0.__add__, samples.t_s))
        currents = [0.0] * n if samples.I_A is None else samples.I_A
        rows = list(zip(times, samples.E_V, currents, repeat(cycle, n), repeat(step_count, n),
                        repeat(step_id, n), repeat(step_type, n), strict=True))
        return rows, (times, samples.E_V, currents)
    return [(t0 + s.t_s, s.E_V, s.I_A or 0.0, cycle, step_count, step_id, step_type)
            for s in samples if s.E_V is not None], None


def as_rows(samples) -> bool:
    """Whether a poll's SampleBlock goes through `rows_of` as columns: voltages with their
    times (impedance points, or samples without a time or a voltage, go as Samples)."""
    return samples.t_s is not None and samples.E_V is not None and samples.f_Hz is None


def check_limits(number: int, rows: list[tuple], limits: pr.Safety,
                 columns: Columns | None) -> None:
    """`check_safety` on the rows, from the columns' extremes when there are columns: a
    sample past a limit is looked for (and told) row by row. Python's min and max skip
    NaN (which passes no limit) unless it comes first: then row by row too."""
    if columns is None or not rows:
        check_safety(number, rows, limits)
        return
    _, volts, currents = columns
    lo, hi, i_max = limits.min_V, limits.max_V, limits.max_current_A
    if math.isnan(volts[0]) or math.isnan(currents[0]) or \
            (lo is not None and min(volts) < lo) or (hi is not None and max(volts) > hi) or \
            (i_max is not None and max(map(abs, currents)) > i_max):
        check_safety(number, rows, limits)


class Taken:
    """A step's samples so far: its rows, and its columns while every poll came so."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []
        self.columns: Columns | None = ([], [], [])

    def add(self, rows: list[tuple], columns: Columns | None) -> None:
        self.rows += rows
        if columns is None:
            self.columns = None
        elif self.columns is not None:
            for mine, more in zip(self.columns, columns, strict=True):
                mine += more

    def feed(self, counter) -> list:
        """The step's samples into the cycle counter (a step's rows share their cycle,
        step count and step id); returns the cycles closed."""
        rows = self.rows
        if self.columns is None or not rows:
            return counter.add(rows)
        return counter.add_columns(*self.columns, rows[0][3], rows[0][4], rows[0][5])
