"""A cell's linear circuit around its nonlinear source (`Branch`, `Circuit`; see
`model` for the picture) and its linearisation on one table segment (`linearise`): source
voltage, slopes, resistances and how far the state may move before a breakpoint."""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

from lipon_hw.sim.cells.tables import PiecewiseLinear

INF = math.inf
FAST_BRANCH_TAU_S = 1.0e-2  # RC branches faster than this are quasi-static in the time domain


@dataclass(frozen=True)
class Branch:
    """One (R ‖ C) element: R = R0 + slope_coeff·dE_pos/dp (a diffusion term grows where
    the OCV is steep; Circuit.branch_slopes may smooth that slope), time constant tau_s;
    alpha only shapes the impedance (CPE)."""

    R_ohm: float
    tau_s: float
    alpha: float = 1.0
    slope_coeff_s: float = 0.0


@dataclass(frozen=True)
class Circuit:
    """Everything the time domain needs, frozen for one control and one fault set."""

    pos: PiecewiseLinear
    neg: PiecewiseLinear | None
    kappa_p: float
    kappa_n: float
    r_series_ohm: float
    r_leak_ohm: float
    branches: tuple[Branch, ...]
    kinetic: tuple[str, PiecewiseLinear] | None = None  # current-proportional resistance r(p|n)
    short_ohm: float | None = None  # hard short: the terminals are this resistor
    r_shunt_ohm: float = INF  # soft short across the terminals
    # dE_pos/dp that slope-dependent branches see, per segment of pos (default: the table's)
    branch_slopes: list[float] | None = None
    cache: dict = field(default_factory=dict, compare=False, repr=False)  # linearisations


class Segment:
    """The circuit linearised on one table segment around the present state."""

    __slots__ = ("E0", "b", "rs", "rk", "slow", "R", "tau", "fast", "s_lo", "s_hi",
                 "snap_lo", "snap_hi")


class _Lin:
    """The circuit on one table segment, in absolute coordinates, so consecutive calls that
    stay inside the segment reuse it: pieces are (coordinate, κ, x_ref, y_ref, slope, lo,
    hi, located-upwards, role) with role +1/−1 for E_pos/E_neg and 0 for the kinetic r."""

    __slots__ = ("pieces", "b", "rk", "rs0", "slow", "R", "tau", "fast")

    def valid(self, p: float, n: float) -> bool:
        for key, _k, _x, _y, _s, lo, hi, upward, _r in self.pieces:
            x = p if key == "p" else n
            if not ((lo <= x < hi) if upward else (lo < x <= hi)):
                return False
        return True

    def at(self, p: float, n: float) -> Segment:
        """The segment seen from (p, n): E0, r_s and the s-range before a breakpoint."""
        seg = Segment()
        s_lo, s_hi, snap_lo, snap_hi = -INF, INF, None, None
        E0, rs = 0.0, self.rs0
        for key, k, x0, y0, slope, lo, hi, _up, role in self.pieces:
            x = p if key == "p" else n
            value = y0 + slope * (x - x0)
            if role == 0:
                rs += value
            else:
                E0 += role * value
            if k > 0.0:
                a, b = (lo - x) / k, (hi - x) / k
                if b < s_hi:
                    s_hi, snap_hi = b, (key, hi)
                if a > s_lo:
                    s_lo, snap_lo = a, (key, lo)
            elif k < 0.0:
                a, b = (hi - x) / k, (lo - x) / k
                if b < s_hi:
                    s_hi, snap_hi = b, (key, lo)
                if a > s_lo:
                    s_lo, snap_lo = a, (key, hi)
        seg.s_lo, seg.s_hi, seg.snap_lo, seg.snap_hi = s_lo, s_hi, snap_lo, snap_hi
        seg.E0, seg.b, seg.rs, seg.rk = E0, self.b, rs, self.rk
        seg.slow, seg.R, seg.tau, seg.fast = self.slow, self.R, self.tau, self.fast
        return seg


def _piece(key: str, table: PiecewiseLinear, x: float, kappa: float, up: bool, role: int):
    upward = (kappa >= 0) == up
    xs = table.x
    j = bisect.bisect_right(xs, x) if upward else bisect.bisect_left(xs, x)
    lo = xs[j - 1] if j > 0 else -INF
    hi = xs[j] if j < len(xs) else INF
    return j, (key, kappa, *table.anchor(j), lo, hi, upward, role)


def _build_lin(c: Circuit, p: float, n: float, up: bool) -> _Lin:
    lin = _Lin()
    kp, kn = c.kappa_p, c.kappa_n
    jp, piece = _piece("p", c.pos, p, kp, up, 1)
    pieces = [piece]
    slope_pos = piece[4]
    b = kp * slope_pos
    if c.branch_slopes is not None:
        slope_pos = c.branch_slopes[jp]
    if c.neg is not None:
        _, piece = _piece("n", c.neg, n, kn, up, -1)
        pieces.append(piece)
        b -= kn * piece[4]
    lin.rk = 0.0
    if c.kinetic is not None:
        which, table = c.kinetic
        k = kp if which == "p" else kn
        _, piece = _piece(which, table, p if which == "p" else n, k, up, 0)
        pieces.append(piece)
        lin.rk = k * piece[4]
    rs = c.r_series_ohm
    slow, Rs, taus, fast = [], [], [], []
    for i, br in enumerate(c.branches):
        R = br.R_ohm + br.slope_coeff_s * slope_pos
        if br.tau_s < FAST_BRANCH_TAU_S or R <= 0.0:
            rs += R
            fast.append((i, R))
        else:
            slow.append(i)
            Rs.append(R)
            taus.append(br.tau_s)
    lin.slow, lin.R, lin.tau, lin.fast = slow, Rs, taus, fast
    lin.pieces, lin.b, lin.rs0 = pieces, b, rs
    return lin


def linearise(c: Circuit, p: float, n: float, up: bool) -> Segment:
    """Source voltage, slopes, resistances and validity range at (p, n), moving up or down."""
    lin = c.cache.get(up)
    if lin is None or not lin.valid(p, n):
        lin = c.cache[up] = _build_lin(c, p, n, up)
    return lin.at(p, n)
