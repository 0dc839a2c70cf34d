"""Piecewise-linear tables: the OCV curves and resistance profiles the simulated cells
are built from, with the segment bookkeeping the exact integration walks (`tracks`)."""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable

INF = math.inf


class PiecewiseLinear:
    """y(x) through the points, extended linearly past both ends.

    Segment j covers [x[j-1], x[j]]; j = 0 and j = len(x) are the two extensions.
    """

    __slots__ = ("x", "y", "slopes")

    def __init__(self, x: Iterable[float], y: Iterable[float]):
        self.x = [float(v) for v in x]
        self.y = [float(v) for v in y]
        if len(self.x) < 2 or len(self.x) != len(self.y):
            raise ValueError("a table needs at least two points and as many y as x values")
        if any(b <= a for a, b in zip(self.x, self.x[1:], strict=False)):
            raise ValueError("table x values must increase strictly")
        self.slopes = [(y1 - y0) / (x1 - x0) for x0, x1, y0, y1
                       in zip(self.x, self.x[1:], self.y, self.y[1:], strict=False)]

    def locate(self, x: float, up: bool) -> int:
        """Segment holding x, taking the one ahead when x sits on a breakpoint."""
        return bisect.bisect_right(self.x, x) if up else bisect.bisect_left(self.x, x)

    def slope(self, j: int) -> float:
        return self.slopes[min(max(j - 1, 0), len(self.slopes) - 1)]

    def bounds(self, j: int) -> tuple[float, float]:
        return (self.x[j - 1] if j > 0 else -INF, self.x[j] if j < len(self.x) else INF)

    def anchor(self, j: int) -> tuple[float, float, float]:
        """(x, y, slope) of segment j, anchored at its nearer table point (precision)."""
        if j >= len(self.x):
            return self.x[-1], self.y[-1], self.slopes[-1]
        k = max(j - 1, 0)
        return self.x[k], self.y[k], self.slopes[k]

    def value(self, j: int, x: float) -> float:
        x0, y0, slope = self.anchor(j)
        return y0 + slope * (x - x0)

    def __call__(self, x: float) -> float:
        return self.value(self.locate(x, True), x)

    def scaled(self, fx: float) -> PiecewiseLinear:
        """The same curve against x·fx, fx > 0 (e.g. SOC → charge)."""
        out = PiecewiseLinear.__new__(PiecewiseLinear)
        out.x, out.y = [v * fx for v in self.x], self.y
        out.slopes = [v / fx for v in self.slopes]
        return out
