"""What a step's polls took: the samples as the channel's rows (time on the run clock,
voltage, current, cycle, step count, step id, step type) for the store, the safety
limits, the rules and the step's ends; and, when the driver handed them over in columns
(a `SampleBlock`), the columns too, so that the store, the limits and the step's cycle
figures take them without a loop in Python per sample — the same outcome as from the
rows. A block's rows (a `ColumnRows`) are made only if something asks for them one by one
(a limit crossed, the channel's rules, a step end judged sample by sample)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from lipon_hw.celltest import protocol as pr
from lipon_hw.celltest.step_ends import check_safety
from lipon_hw.column_rows import ColumnRows
from lipon_hw.techniques import SampleBlock

#: (times on the run clock, voltages, currents) of a poll's samples
Columns = tuple[list, list, list]


def rows_of(samples, t0: float, cycle: int, step_count: int, step_id: int,
            step_type: str) -> tuple[Sequence[tuple], Columns | None]:
    """A poll's samples (a list of Samples, or a SampleBlock of voltages with their
    times) as rows (a `ColumnRows` for a block), and as columns when they came so. A
    sample without a voltage makes no row; at open circuit the instrument reports no
    current: it is zero."""
    if isinstance(samples, SampleBlock):  # a column holds numbers only: no None in it
        volts, currents = _listed(samples.E_V), _listed(samples.I_A)
        times = list(map(t0.__add__, _listed(samples.t_s)))
        if currents is None:
            currents = [0.0] * len(times)
        columns = (times, volts, currents)
        return ColumnRows((), columns, (cycle, step_count, step_id, step_type)), columns
    return [(t0 + s.t_s, s.E_V, s.I_A or 0.0, cycle, step_count, step_id, step_type)
            for s in samples if s.E_V is not None], None


def _listed(column):
    """A column as a list of Python numbers (a driver may hand over an array)."""
    if column is None or isinstance(column, list):
        return column
    return column.tolist() if hasattr(column, "tolist") else list(column)


def as_rows(samples) -> bool:
    """Whether a poll's SampleBlock goes through `rows_of` as columns: voltages with their
    times (impedance points, or samples without a time or a voltage, go as Samples)."""
    return samples.t_s is not None and samples.E_V is not None and samples.f_Hz is None


def check_limits(number: int, rows: Sequence[tuple], limits: pr.Safety,
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
    """A step's samples so far: its columns while every poll came so (and the cycle,
    step count and step id they share), else its rows."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []
        self.columns: Columns | None = ([], [], [])
        self._keys: tuple | None = None  # the rows' (cycle, step count, step id, step type)

    def add(self, rows: Sequence[tuple], columns: Columns | None) -> None:
        if self._keys is None and rows:
            self._keys = tuple(rows[0][3:])
        if columns is not None and self.columns is not None:
            for mine, more in zip(self.columns, columns, strict=True):
                mine += more
            return
        if self.columns is not None:  # a poll as rows: the columns so far become rows
            self.rows = self._columns_as_rows()
            self.columns = None
        self.rows += rows

    def _columns_as_rows(self) -> list[tuple]:
        if not self.columns[0]:
            return []
        return ColumnRows((), self.columns, self._keys).rows()

    def feed(self, counter) -> list:
        """The step's samples into the cycle counter (a step's rows share their cycle,
        step count and step id); returns the cycles closed."""
        if self.columns is None:
            return counter.add(self.rows)
        if not self.columns[0]:
            return counter.add([])
        return counter.add_columns(*self.columns, *self._keys[:3])
