"""What a step's polls took: the samples as the channel's rows (time on the run clock,
voltage, current, cycle, step count, step id, step type) for the store, the safety
limits, the rules and the step's ends; and, when the driver handed them over in columns
(a `SampleBlock`), the columns too, as 1-D float arrays, so that the store, the limits and
the step's cycle figures take them without a loop in Python per sample — the same outcome
as from the rows. A block's rows (a `ColumnRows`) are made only if something asks for them
one by one (a limit crossed, the channel's rules, a step end judged sample by sample)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lipon_hw.celltest import protocol as pr
from lipon_hw.celltest.step_ends import check_safety
from lipon_hw.column_rows import ColumnRows
from lipon_hw.readings import SampleBlock

#: (times on the run clock, voltages, currents) of a poll's samples: 1-D float arrays
Columns = tuple[np.ndarray, np.ndarray, np.ndarray]


def rows_of(samples, t0: float, cycle: int, step_count: int, step_id: int,
            step_type: str) -> tuple[Sequence[tuple], Columns | None]:
    """A poll's samples (a list of Samples, or a SampleBlock of voltages with their
    times) as rows (a `ColumnRows` for a block), and as columns (arrays) when they came
    so. A sample without a voltage makes no row; at open circuit the instrument reports
    no current: it is zero."""
    if isinstance(samples, SampleBlock):  # a column holds numbers only: no None in it
        times = np.asarray(samples.t_s, dtype=float) + t0
        volts = np.asarray(samples.E_V, dtype=float)
        currents = np.zeros(len(times)) if samples.I_A is None else \
            np.asarray(samples.I_A, dtype=float)
        columns = (times, volts, currents)
        return ColumnRows((), columns, (cycle, step_count, step_id, step_type)), columns
    return [(t0 + s.t_s, s.E_V, s.I_A or 0.0, cycle, step_count, step_id, step_type)
            for s in samples if s.E_V is not None], None


def as_rows(samples) -> bool:
    """Whether a poll's SampleBlock goes through `rows_of` as columns: voltages with their
    times (impedance points, or samples without a time or a voltage, go as Samples)."""
    return samples.t_s is not None and samples.E_V is not None and samples.f_Hz is None


def check_limits(number: int, rows: Sequence[tuple], limits: pr.Safety,
                 columns: Columns | None) -> None:
    """`check_safety` on the rows, from the columns' extremes when there are columns: a
    sample past a limit is looked for (and told) row by row. A NaN (which passes no limit)
    makes an extreme NaN: then row by row too."""
    if columns is None or not rows:
        check_safety(number, rows, limits)
        return
    _, volts, currents = columns
    lo, hi, i_max = limits.min_V, limits.max_V, limits.max_current_A
    v_lo, v_hi = float(volts.min()), float(volts.max())
    i_lo, i_hi = float(currents.min()), float(currents.max())
    if v_lo != v_lo or i_lo != i_lo or (lo is not None and v_lo < lo) or \
            (hi is not None and v_hi > hi) or \
            (i_max is not None and max(-i_lo, i_hi) > i_max):
        check_safety(number, rows, limits)


class Taken:
    """A step's samples so far: its columns while every poll came so (and the cycle,
    step count and step id they share), else its rows."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []
        self._parts: list[Columns] | None = []  # each poll's columns, joined when fed
        self._keys: tuple | None = None  # the rows' (cycle, step count, step id, step type)

    def add(self, rows: Sequence[tuple], columns: Columns | None) -> None:
        if self._keys is None and rows:
            self._keys = tuple(rows[0][3:])
        if columns is not None and self._parts is not None:
            self._parts.append(columns)
            return
        if self._parts is not None:  # a poll as rows: the columns so far become rows
            self.rows = self._columns_as_rows()
            self._parts = None
        self.rows += rows

    @property
    def columns(self) -> Columns | None:
        """The columns taken so far, joined (None once a poll came as rows)."""
        if self._parts is None:
            return None
        if len(self._parts) != 1:
            joined = tuple(np.concatenate(c) for c in zip(*self._parts, strict=True)) \
                if self._parts else (np.zeros(0), np.zeros(0), np.zeros(0))
            self._parts = [joined]
        return self._parts[0]

    def _columns_as_rows(self) -> list[tuple]:
        columns = self.columns
        if not len(columns[0]):
            return []
        return ColumnRows((), columns, self._keys).rows()

    def feed(self, counter) -> list:
        """The step's samples into the cycle counter (a step's rows share their cycle,
        step count and step id); returns the cycles closed."""
        columns = self.columns
        if columns is None:
            return counter.add(self.rows)
        if not len(columns[0]):
            return counter.add([])
        return counter.add_columns(*columns, *self._keys[:3])
