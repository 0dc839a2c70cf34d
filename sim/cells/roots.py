"""First crossings of a sum of exponentials (`expsums.ExpSum`) with a level: where a
cell reaches a voltage or current limit. Never early; bracketed with bounds that are exact
for sums of monotone terms, then shrunk by regula falsi."""

from __future__ import annotations

from collections.abc import Callable

from lipon_hw.sim.cells.expsums import ExpSum

OVERSHOOT = 1e-9  # a crossing is reported once the limit is passed by this (relative) margin


def first_hit(f: ExpSum, level: float, above: bool, span: float) -> float | None:
    """Earliest τ in [0, span] with f(τ) ≥ level (above) or ≤ level, else None.

    The answer is never early: f has reached the level there (to rounding).
    """
    sgn = 1.0 if above else -1.0
    tol = 1e-12 * (abs(level) + 1e-300)

    def g(x: float) -> float:
        return sgn * (f(x) - level)

    def may_hit(x0: float, x1: float) -> bool:
        lo, hi = f.bounds(x0, x1)
        return (hi - level if above else level - lo) >= 0.0

    if g(0.0) >= 0.0:
        return 0.0
    if not may_hit(0.0, span):
        return None
    cuts = sorted({0.0, span, *(s * k for s in f.scales() for k in (0.5, 3.0, 20.0)
                                if 0.0 < s * k < span)})
    stack = [(b, a) for a, b in zip(cuts, cuts[1:], strict=False)][::-1]
    while stack:
        b, a = stack.pop()
        if not may_hit(a, b):
            continue
        gb = g(b)
        if f.monotone_on(a, b) or b - a <= 1e-12 * max(1.0, b):
            if gb >= 0.0:
                return _bracket(g, a, g(a), b, gb, tol)
            continue
        m = 0.5 * (a + b)
        stack.append((b, m))
        stack.append((m, a))
    return None


def voltage_hit(volts: ExpSum, v_min: float | None, v_max: float | None,
                 span: float) -> float | None:
    """First τ in [0, span] at which volts leaves (v_min, v_max): 0 if it is already out,
    otherwise the time it passes the limit by OVERSHOOT (so any later evaluation, whatever
    its rounding, agrees that the limit was reached)."""
    start = volts(0.0)
    if (v_max is not None and start >= v_max) or (v_min is not None and start <= v_min):
        return 0.0
    hits = []
    if v_max is not None:
        hits.append(first_hit(volts, v_max + OVERSHOOT * max(abs(v_max), 1.0), True, span))
    if v_min is not None:
        hits.append(first_hit(volts, v_min - OVERSHOOT * max(abs(v_min), 1.0), False, span))
    hits = [h for h in hits if h is not None]
    return min(hits) if hits else None


def _bracket(g: Callable[[float], float], a: float, ga: float, b: float, gb: float,
             tol: float) -> float:
    """Shrink [a, b] (g(a) < 0 ≤ g(b)) by Illinois regula falsi; return the hit end b."""
    side = 0
    for _ in range(200):
        if gb <= tol or b - a <= 1e-13 * max(1.0, abs(b)):
            break
        m = b - gb * (b - a) / (gb - ga)
        if not a < m < b:
            m = 0.5 * (a + b)
        gm = g(m)
        if gm >= 0.0:
            b, gb = m, gm
            if side == 1:
                ga *= 0.5
            side = 1
        else:
            a, ga = m, gm
            if side == -1:
                gb *= 0.5
            side = -1
    return b
