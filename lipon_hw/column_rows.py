"""Rows held as columns: a block of samples that came in columns (a driver's
`SampleBlock`) read as the rows a list of tuples would hold — each row the values every
row shares before the columns (`head`), one value of each column, then those it shares
after them (`tail`) — without a tuple made per row until something reads them one by one.
The cell test's host side and the store's buffer both hold a poll's samples so."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import repeat

import numpy as np


def listed(column: list | np.ndarray) -> list:
    """A column's values as a list of Python numbers (a driver's may be an array)."""
    return column.tolist() if isinstance(column, np.ndarray) else column


def value_at(column: list | np.ndarray, k: int):
    """A column's k-th value as a Python number."""
    return column.item(k) if isinstance(column, np.ndarray) else column[k]


class ColumnRows(Sequence):
    """The rows (*head, column values…, *tail) of columns of one length (lists or 1-D
    arrays, never changed once given; an array's values come out as Python floats). Read
    whole (iterated, sliced) the rows are made once and kept; `stream` makes each as it
    is read and keeps none (a writer's single pass)."""

    __slots__ = ("head", "columns", "tail", "_rows")

    def __init__(self, head: tuple, columns: tuple[list, ...], tail: tuple):
        n = len(columns[0])
        if any(len(c) != n for c in columns):
            raise ValueError(f"columns of different lengths {[len(c) for c in columns]} "
                             "cannot make rows")
        self.head, self.columns, self.tail = head, columns, tail
        self._rows: list[tuple] | None = None

    def __len__(self) -> int:
        return len(self.columns[0])

    def __getitem__(self, k):
        if isinstance(k, int):  # one row (the first's keys, the last's time) alone
            return (*self.head, *[value_at(c, k) for c in self.columns], *self.tail)
        return self.rows()[k]

    def __iter__(self) -> Iterator[tuple]:
        return iter(self.rows())

    def rows(self) -> list[tuple]:
        if self._rows is None:
            self._rows = list(self.stream())
        return self._rows

    def stream(self) -> Iterator[tuple]:
        if self._rows is not None:
            return iter(self._rows)
        return zip(*map(repeat, self.head), *map(listed, self.columns), *map(repeat, self.tail),
                   strict=False)  # the repeats are endless: the columns end it
