"""What a potentiostat's technique sends back, in SI units: one decoded data package (a
`Sample`), or many as columns (a `SampleBlock`: what a driver decoding a batch at once
hands over, without a Sample object each). The techniques themselves, what to apply and
when to stop, are `lipon_hw.techniques`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lipon_hw.column_rows import listed, value_at


@dataclass(frozen=True, slots=True)
class Sample:
    """One decoded data package, SI units; fields the technique does not give are None."""

    t_s: float | None = None
    E_V: float | None = None
    I_A: float | None = None
    f_Hz: float | None = None
    z_re_ohm: float | None = None
    z_im_ohm: float | None = None


@dataclass(frozen=True)
class SampleBlock:
    """Samples as columns, one list (or 1-D float array) of values per Sample field that
    every one of them has (None for a field none has): what a driver decoding a batch at
    once hands over, without a Sample object each. `samples()` gives them as Samples (of
    Python floats)."""

    t_s: list | np.ndarray | None = None
    E_V: list | np.ndarray | None = None
    I_A: list | np.ndarray | None = None
    f_Hz: list | np.ndarray | None = None
    z_re_ohm: list | np.ndarray | None = None
    z_im_ohm: list | np.ndarray | None = None

    def __len__(self) -> int:
        for column in self._columns():
            if column is not None:
                return len(column)
        return 0

    @property
    def fields(self) -> tuple[str, ...]:
        """The fields it has, in Sample's order."""
        return tuple(name for name, c in zip(_SAMPLE_FIELDS, self._columns(), strict=True)
                     if c is not None)

    def _columns(self) -> tuple:
        return (self.t_s, self.E_V, self.I_A, self.f_Hz, self.z_re_ohm, self.z_im_ohm)

    @classmethod
    def join(cls, chunks: list) -> SampleBlock | None:
        """Samples and SampleBlocks, in order, in one block; None unless they all have
        the same fields."""
        if not chunks:
            return None
        names = {c.fields if isinstance(c, SampleBlock) else
                 tuple(n for n in _SAMPLE_FIELDS if getattr(c, n) is not None) for c in chunks}
        if len(names) != 1:
            return None
        columns: dict[str, list] = {name: [] for name in next(iter(names))}
        for chunk in chunks:
            for name, column in columns.items():
                if isinstance(chunk, SampleBlock):
                    column += listed(getattr(chunk, name))
                else:
                    column.append(getattr(chunk, name))
        return cls(**columns)

    def sample(self, k: int) -> Sample:
        return Sample(*(None if c is None else value_at(c, k) for c in self._columns()))

    def samples(self) -> list[Sample]:
        n = len(self)
        return [Sample(*row) for row in zip(*[listed(c) if c is not None else [None] * n
                                              for c in self._columns()], strict=True)]


_SAMPLE_FIELDS = ("t_s", "E_V", "I_A", "f_Hz", "z_re_ohm", "z_im_ohm")
