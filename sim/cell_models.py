"""The dynamics engine behind the simulated cells of `sim/cells.py`.

Every cell is one linear circuit around a nonlinear source:

  ┌ terminal ── R_series ── (R_k ‖ C_k) … ──┬── source E = E_pos(p) − E_neg(n)
  │                                            └── leak R_leak (σ_e)
  └ shunt R_shunt (soft short) ── other terminal        (a hard short replaces it all)

p and n are the states (charges, C) of the positive and negative electrode. The source
takes the current s' = I − E/R_leak and the electrodes follow it, p' = κ_p·s' and
n' = κ_n·s', where κ carries the coulombic efficiency of the present direction. (The σ_e
leak sits across the source rather than the terminals; the error is R_series/R_leak,
below 1e-6.) E_pos and E_neg are piecewise linear in their states, so between two table
breakpoints the circuit is linear with constant input and its exact solution is a sum of
exponentials in time; a current source with a shunt is handled as its Thevenin
equivalent, a voltage source I·R_shunt behind R_shunt. Cells therefore advance lazily,
one table segment at a time (`_Track`), with no time step, and limit crossings are roots
of those sums, bracketed with bounds that are exact for sums of monotone terms.

RC branches faster than FAST_BRANCH_TAU_S are quasi-static in the time domain (their
arcs still appear in the impedance). Parameters that age (capacity, efficiency, R_ct) and
the direction of the current are frozen at each `set_control`, so a trajectory does not
depend on how often it is looked at. Faults switch on at a time or at a cycle.

Current sign: positive charges the cell (Battery Data Format).
"""

from __future__ import annotations

import bisect
import cmath
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

HORIZON_S = 1.0e7  # next_crossing looks this far ahead (contract)
FAST_BRANCH_TAU_S = 1.0e-2  # RC branches faster than this are quasi-static in the time domain
OVERSHOOT = 1e-9  # a crossing is reported once the limit is passed by this (relative) margin
INF = math.inf
FAULT_KINDS = ("soft_short", "hard_short", "open", "high_interface")
MODES = ("open", "current", "voltage")


class Cell(Protocol):
    """What an instrument emulator may call (the cell contract of issue 4)."""

    name: str

    def set_control(self, t: float, mode: str, value: float) -> None: ...
    def voltage_V(self, t: float) -> float: ...
    def current_A(self, t: float) -> float: ...
    def impedance_ohm(self, t: float, f_Hz: float) -> complex: ...
    def next_crossing(self, t: float, v_min: float | None, v_max: float | None,
                      i_min_abs: float | None) -> float | None: ...
    def snapshot(self) -> dict: ...
    def restore(self, state: dict) -> None: ...


# --- piecewise-linear tables -------------------------------------------------------------
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


# --- one evaluation path for the exponentials ----------------------------------------------
# numpy picks its exp/expm1 kernels by CPU (on AVX-512 they differ from libm's by one ulp in
# a few % of values). Single readings therefore call the very ufuncs the bulk paths call,
# on a scalar, so a reading is the same number to the bit whichever path computes it, on
# every CPU. Across CPUs the numbers may differ by an ulp, so seeded figures agree to a
# stated tolerance, not to the bit (see tests/test_cells.py).
def _exp(x: float) -> float:
    return float(np.exp(x))


def _expm1(x: float) -> float:
    return float(np.expm1(x))


# --- sums of exponentials and their first crossing ------------------------------------------
def phi(beta: float, x: float) -> float:
    """(1 − e^{−βx})/β, the integral of e^{−βx}; x itself when β → 0."""
    z = beta * x
    return x if abs(z) < 1e-300 or beta == 0.0 else -_expm1(-z) / beta


def phi_many(beta: float, x: np.ndarray) -> np.ndarray:
    """phi at every element of x ≥ 0, ascending (the same numbers as phi)."""
    if beta == 0.0:
        return x.copy()
    z = np.multiply(x, -beta)
    out = np.divide(np.expm1(z, out=z), -beta, out=z)  # = −expm1(−βx)/β, bit for bit
    for k in range(len(x)):  # |βx| grows with x: only the first elements can be tiny
        if not abs(beta * x[k]) < 1e-300:
            break
        out[k] = x[k]
    return out


class ExpSum:
    """f(τ) = c0 + Σ a·e^{−λτ} + Σ g·φ(β, τ): every term is monotone in τ, so the
    extremes of each term on an interval sit at its ends, which bounds f exactly."""

    __slots__ = ("c0", "exps", "phis")

    def __init__(self, c0: float, exps=(), phis=()):
        self.c0 = c0
        self.exps = [(a, lam) for a, lam in exps if a != 0.0]
        self.phis = [(g, beta) for g, beta in phis if g != 0.0]

    def __call__(self, x: float) -> float:
        v = self.c0
        for a, lam in self.exps:
            v += a * _exp(-lam * x)
        for g, beta in self.phis:
            v += g * phi(beta, x)
        return v

    def many(self, x: np.ndarray) -> np.ndarray:
        """f at every element of x, term by term as __call__ adds them (same numbers)."""
        v = np.full_like(x, self.c0)
        for a, lam in self.exps:
            v += a * np.exp(-lam * x)
        for g, beta in self.phis:
            v += g * phi_many(beta, x)
        return v

    def bounds(self, x0: float, x1: float) -> tuple[float, float]:
        lo = hi = self.c0
        for a, lam in self.exps:
            f0, f1 = a * _exp(-lam * x0), a * _exp(-lam * x1)
            lo, hi = (lo + f0, hi + f1) if f0 < f1 else (lo + f1, hi + f0)
        for g, beta in self.phis:
            f0, f1 = g * phi(beta, x0), g * phi(beta, x1)
            lo, hi = (lo + f0, hi + f1) if f0 < f1 else (lo + f1, hi + f0)
        return lo, hi

    def monotone_on(self, x0: float, x1: float) -> bool:
        """True when the derivative cannot change sign on [x0, x1]."""
        lo = hi = 0.0
        for a, lam in self.exps:
            d0, d1 = -a * lam * _exp(-lam * x0), -a * lam * _exp(-lam * x1)
            lo, hi = (lo + d0, hi + d1) if d0 < d1 else (lo + d1, hi + d0)
        for g, beta in self.phis:
            d0, d1 = g * _exp(-beta * x0), g * _exp(-beta * x1)
            lo, hi = (lo + d0, hi + d1) if d0 < d1 else (lo + d1, hi + d0)
        return lo >= 0.0 or hi <= 0.0

    def scales(self) -> list[float]:
        return [1 / lam for _, lam in self.exps if lam > 0] + \
               [1 / beta for _, beta in self.phis if beta > 0]


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


def _voltage_hit(volts: ExpSum, v_min: float | None, v_max: float | None,
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


# --- circuits -----------------------------------------------------------------------------
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


@dataclass
class Fault:
    kind: str
    at_s: float | None = None  # onset, absolute time
    at_cycle: float | None = None  # onset, equivalent full cycles
    ohm: float | None = None  # soft/hard short or open resistance (default: the cell's)
    factor: float | None = None  # high interface resistance multiplier (default: the cell's)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def as_fault(spec) -> Fault:
    """A fault from a kind name or a dict {kind, at_s, at_cycle, ohm, factor}."""
    if isinstance(spec, Fault):
        return spec
    data = {"kind": spec} if isinstance(spec, str) else dict(spec)
    unknown = set(data) - {"kind", "at_s", "at_cycle", "ohm", "factor"}
    if unknown:
        raise ValueError(f"fault {spec!r} has unknown keys {sorted(unknown)}")
    if data.get("kind") not in FAULT_KINDS:
        raise ValueError(f"fault kind {data.get('kind')!r} is not one of {', '.join(FAULT_KINDS)}")
    return Fault(**data)


def draw_faults(rng: np.random.Generator, probability: dict[str, float],
                within_cycles: float | None = None) -> list[dict]:
    """Seeded faults for one cell: each kind appears with its probability, from the start
    or at a uniformly drawn cycle below `within_cycles` (rates are assumptions of the caller)."""
    out = []
    for kind in FAULT_KINDS:
        if rng.random() < probability.get(kind, 0.0):
            fault = {"kind": kind}
            if within_cycles:
                fault["at_cycle"] = float(rng.uniform(0.0, within_cycles))
            out.append(fault)
    return out


# --- state and trajectories -----------------------------------------------------------------
class _State:
    __slots__ = ("t", "p", "n", "v", "thr_ch", "thr_dis", "active")

    def __init__(self, t, p, n, v, thr_ch=0.0, thr_dis=0.0, active=frozenset()):
        self.t, self.p, self.n, self.v = t, p, n, v
        self.thr_ch, self.thr_dis, self.active = thr_ch, thr_dis, active

    def copy(self) -> _State:
        return _State(self.t, self.p, self.n, list(self.v), self.thr_ch, self.thr_dis,
                      self.active)


class _Seg:
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

    def at(self, p: float, n: float) -> _Seg:
        """The segment seen from (p, n): E0, r_s and the s-range before a breakpoint."""
        seg = _Seg()
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


def linearise(c: Circuit, p: float, n: float, up: bool) -> _Seg:
    """Source voltage, slopes, resistances and validity range at (p, n), moving up or down."""
    lin = c.cache.get(up)
    if lin is None or not lin.valid(p, n):
        lin = c.cache[up] = _build_lin(c, p, n, up)
    return lin.at(p, n)


def _time_to(s_target: float, cs: float, beta: float) -> float:
    """Time for s(τ) = cs·φ(β, τ) to reach s_target (same sign as cs)."""
    w = s_target / cs
    if not w < INF:
        return INF
    if beta == 0.0:
        return max(w, 0.0)
    r = beta * w
    return INF if r >= 1.0 else max(-math.log1p(-r) / beta, 0.0)


class _Track:
    """The exact trajectory on one table segment under one control, anchored at the state
    where the segment was entered: any number of looks inside it cost a few exponentials
    and give the same state however the time is split."""

    __slots__ = ("c", "key", "t0", "p0", "n0", "ch0", "dis0", "v0", "seg", "t_bd", "side",
                 "s_bd")

    def _anchor_at(self, c: Circuit, st: _State, key: tuple, seg: _Seg) -> None:
        self.c, self.key, self.seg = c, key, seg
        self.t0, self.p0, self.n0 = st.t, st.p, st.n
        self.ch0, self.dis0, self.v0 = st.thr_ch, st.thr_dis, tuple(st.v)

    def anchor(self) -> dict:
        return {"t": self.t0, "p": self.p0, "n": self.n0, "thr_ch": self.ch0,
                "thr_dis": self.dis0, "v": list(self.v0)}

    def _put(self, st: _State, tau: float, ds: float, boundary: str | None,
             i_cell: float) -> None:
        """Electrodes, throughput, quasi-static branches and time at τ; a reached
        breakpoint is snapped onto exactly."""
        seg, c = self.seg, self.c
        if boundary:
            ds = self.s_bd
        st.p, st.n = self.p0 + c.kappa_p * ds, self.n0 + c.kappa_n * ds
        snap = seg.snap_hi if boundary == "hi" else seg.snap_lo if boundary == "lo" else None
        if snap is not None:
            if snap[0] == "p":
                st.p = snap[1]
            else:
                st.n = snap[1]
        st.thr_ch, st.thr_dis = (self.ch0 + ds, self.dis0) if ds > 0 else \
            (self.ch0, self.dis0 - ds)
        for i, R in seg.fast:
            st.v[i] = i_cell * R
        st.t = self.t0 + tau


class _CurrentTrack(_Track):
    """Constant current I: s(τ) = cs·φ(β, τ) with cs = I − E0/R_leak and β = b/R_leak,
    each slow branch I·R + (v0 − I·R)·e^(−τ/τ_k), so V(τ) = base + Σ amp·e^(−τ/τ_k)
    + gain·φ(β, τ), a sum of monotone terms."""

    __slots__ = ("I", "cs", "beta", "amp", "gain", "base")

    def __init__(self, c: Circuit, st: _State, key: tuple, current: float, pref: bool):
        g_leak = 1.0 / c.r_leak_ohm if c.r_leak_ohm < INF else 0.0
        seg = linearise(c, st.p, st.n, pref)
        cs = current - seg.E0 * g_leak
        if cs != 0.0 and (cs > 0) != pref:
            seg = linearise(c, st.p, st.n, not pref)
        self._anchor_at(c, st, key, seg)
        self.I, self.cs = current, cs
        self.beta = beta = seg.b * g_leak
        self.side = "hi" if cs > 0 else "lo" if cs < 0 else None
        self.s_bd = seg.s_hi if cs > 0 else seg.s_lo
        self.t_bd = _time_to(self.s_bd, cs, beta) if self.side else INF
        self.amp = [self.v0[i] - current * R for i, R in zip(seg.slow, seg.R, strict=True)]
        self.gain = (seg.b + current * seg.rk) * cs
        self.base = seg.E0 + current * (seg.rs + sum(seg.R))

    def terminal(self, tau: float) -> tuple[float, float]:
        v = self.base + self.gain * phi(self.beta, tau)
        for a, tk in zip(self.amp, self.seg.tau, strict=True):
            v += a * _exp(-tau / tk)
        return v, self.I

    def terminal_many(self, tau: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """terminal() at every element of tau (the same operations, so the same numbers)."""
        v = phi_many(self.beta, tau)
        v *= self.gain
        v += self.base
        for a, tk in zip(self.amp, self.seg.tau, strict=True):
            e = np.divide(tau, -tk)  # = −τ/τ_k, bit for bit
            np.exp(e, out=e)
            e *= a
            v += e
        return v, np.full_like(tau, self.I)

    def first_hit(self, limits, span: float) -> float | None:
        """τ at which a limit is reached within [0, span], after a cheap bound test."""
        v_min, v_max, i_min = limits
        if i_min is not None and abs(self.I) <= i_min:
            return 0.0
        if v_min is None and v_max is None:
            return None
        lo = hi = self.base
        for a, tk in zip(self.amp, self.seg.tau, strict=True):
            e = a * _exp(-span / tk)
            lo, hi = lo + min(a, e), hi + max(a, e)
        g = self.gain * phi(self.beta, span)
        lo, hi = lo + min(0.0, g), hi + max(0.0, g)
        if not ((v_max is not None and hi >= v_max) or (v_min is not None and lo <= v_min)):
            return None
        f = ExpSum(self.base, [(a, 1.0 / tk) for a, tk in zip(self.amp, self.seg.tau,
                                                             strict=True)],
                   [(self.gain, self.beta)])
        return _voltage_hit(f, v_min, v_max, span)

    def place(self, st: _State, tau: float, boundary: str | None) -> None:
        seg, current = self.seg, self.I
        for k, i in enumerate(seg.slow):
            st.v[i] = current * seg.R[k] + self.amp[k] * _exp(-tau / seg.tau[k])
        self._put(st, tau, self.cs * phi(self.beta, tau), boundary, current)


def _current_tracks_many(pieces: list, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """_CurrentTrack.terminal_many over consecutive tracks, (track, count) each, in one
    pass: every element goes through its own track's operations (a missing branch adds
    0.0, which changes no sum), so the numbers are the same."""
    counts = [k for _, k in pieces]
    tracks = [tr for tr, _ in pieces]

    def each(values) -> np.ndarray:
        return np.repeat(np.array(values, dtype=float), counts)

    tau = times - each([tr.t0 for tr in tracks])
    beta = each([tr.beta for tr in tracks])
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.multiply(tau, -beta)
        v = np.divide(np.expm1(z), -beta)  # −expm1(−βτ)/β, as phi
    tiny = np.abs(beta * tau) < 1e-300
    if tiny.any():
        v = np.where(tiny, tau, v)
    v *= each([tr.gain for tr in tracks])
    v += each([tr.base for tr in tracks])
    for b in range(max(len(tr.amp) for tr in tracks)):
        amp = each([tr.amp[b] if b < len(tr.amp) else 0.0 for tr in tracks])
        tk = each([tr.seg.tau[b] if b < len(tr.amp) else 1.0 for tr in tracks])
        e = np.divide(tau, -tk)
        np.exp(e, out=e)
        e *= amp
        v += e
    return v, each([tr.I for tr in tracks])


class _NetworkTrack(_Track):
    """A voltage source v_src behind r_extra (an applied voltage, or an applied current
    with a shunt in its Thevenin form): the source voltage u and the slow branch voltages
    form a passive RC network, C·x' = −G·x + v_src/R_s, whose modes (symmetric once scaled
    by C^½) give x(τ) = x∞ + Σ w·e^(−λτ). The terminals are affine in the cell current:
    V = v0 + kv·i, I = i0 + ki·i."""

    __slots__ = ("u", "vs", "i_cell", "b", "E0", "affine")

    def __init__(self, c: Circuit, st: _State, key: tuple, v_src: float, r_extra: float,
                 affine: tuple, pref: bool):
        g_leak = 1.0 / c.r_leak_ohm if c.r_leak_ohm < INF else 0.0
        seg = linearise(c, st.p, st.n, pref)
        i0 = (v_src - seg.E0 - sum(st.v[i] for i in seg.slow)) / (seg.rs + r_extra)
        up = i0 - seg.E0 * g_leak > 0
        if up != pref:
            seg = linearise(c, st.p, st.n, up)
        self._anchor_at(c, st, key, seg)
        self.affine, self.E0 = affine, seg.E0
        rs = seg.rs + r_extra
        self.b = b = max(seg.b, 1e-300)
        m = 1 + len(seg.slow)
        cap = np.array([1.0 / b] + [tau / R for R, tau in zip(seg.R, seg.tau, strict=True)])
        g = np.full((m, m), 1.0 / rs)
        g[0, 0] += g_leak
        for k, R in enumerate(seg.R, start=1):
            g[k, k] += 1.0 / R
        # the steady state in closed form (solving G is ill-conditioned when R_leak ≫ R_s):
        # the whole current runs through every resistor of the chain
        if g_leak > 0.0:
            i_inf = v_src / (rs + sum(seg.R) + c.r_leak_ohm)
            x_inf = np.array([i_inf * c.r_leak_ohm] + [i_inf * R for R in seg.R])
        else:
            i_inf = 0.0
            x_inf = np.array([v_src] + [0.0] * len(seg.R))
        x0 = np.array([seg.E0] + [self.v0[i] for i in seg.slow])
        ci = 1.0 / np.sqrt(cap)
        lam, q = np.linalg.eigh(g * ci[:, None] * ci[None, :])
        w = ci[:, None] * q * (q.T @ ((x0 - x_inf) / ci))[None, :]
        rates = np.maximum(lam, 0.0).tolist()
        self.u = ExpSum(float(x_inf[0]), zip(w[0].tolist(), rates, strict=True))
        self.vs = [ExpSum(float(x_inf[k]), zip(w[k].tolist(), rates, strict=True))
                   for k in range(1, m)]
        self.i_cell = ExpSum(i_inf, zip((-w.sum(axis=0) / rs).tolist(), rates, strict=True))
        self.t_bd, self.side, self.s_bd = INF, None, 0.0
        # the breakpoints ahead and behind, as levels of u (one the state sits on, behind
        # its motion, is not a crossing)
        for s_edge, above, side in ((seg.s_hi, True, "hi"), (seg.s_lo, False, "lo")):
            if s_edge != 0.0 and abs(s_edge) < INF:
                hit = first_hit(self.u, seg.E0 + b * s_edge, above, HORIZON_S)
                if hit is not None and hit < self.t_bd:
                    self.t_bd, self.side, self.s_bd = hit, side, s_edge

    def terminal(self, tau: float) -> tuple[float, float]:
        v0, kv, i0, ki = self.affine
        i = self.i_cell(tau)
        return v0 + kv * i, i0 + ki * i

    def terminal_many(self, tau: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        v0, kv, i0, ki = self.affine
        i = self.i_cell.many(tau)
        return v0 + kv * i, i0 + ki * i

    def first_hit(self, limits, span: float) -> float | None:
        v_min, v_max, i_min = limits
        v0, kv, i0, ki = self.affine
        cell = self.i_cell
        hits = []
        if v_min is not None or v_max is not None:
            volts = ExpSum(v0 + kv * cell.c0, [(kv * a, lam) for a, lam in cell.exps])
            hits.append(_voltage_hit(volts, v_min, v_max, span))
        if i_min is not None:
            amps = ExpSum(i0 + ki * cell.c0, [(ki * a, lam) for a, lam in cell.exps])
            start = amps(0.0)
            if abs(start) <= i_min:
                return 0.0
            level = i_min * (1 - OVERSHOOT)
            hits.append(first_hit(amps, level if start > 0 else -level, start < 0, span))
        hits = [h for h in hits if h is not None]
        return min(hits) if hits else None

    def place(self, st: _State, tau: float, boundary: str | None) -> None:
        for k, i in enumerate(self.seg.slow):
            st.v[i] = self.vs[k](tau)
        self._put(st, tau, (self.u(tau) - self.E0) / self.b, boundary, self.i_cell(tau))


# --- the base cell ----------------------------------------------------------------------------
class CellModel:
    """Lazy, exact time evolution of a cell; subclasses supply the circuit.

    Subclasses implement `_circuit(direction, active)`, `_impedance(f_Hz, st, circuit)`,
    `nominal_capacity_C`, `spec` and set `self._st` (initial state) before use.
    """

    kind = "cell"

    def __init__(self, name: str, faults=(), temperature_C: float = 25.0, t0: float = 0.0):
        self.name = name
        self.faults = [as_fault(f) for f in faults]
        self.temperature_C = float(temperature_C)
        self.mode, self.value, self._dir = "open", 0.0, -1
        self.age_cycles = 0.0
        self._cache: dict = {}
        self._cache_epoch = 0
        self._lookahead = None
        self._track: _Track | None = None  # the current-mode segment the state is on
        self._plan: dict[float, _Track] = {}  # segments look-aheads walked, by entry time
        self._hit_track: _Track | None = None  # the segment the last crossing was found on
        self._st = _State(t0, 0.0, 0.0, [], active=self._faults_due(t0, 0.0, frozenset()))

    # --- the contract -------------------------------------------------------------------
    def set_control(self, t: float, mode: str, value: float) -> None:
        if mode not in MODES:
            raise ValueError(f"cell {self.name}: control mode {mode!r} is not one of "
                             f"{', '.join(MODES)}")
        self._advance(t)
        self.mode, self.value = mode, 0.0 if mode == "open" else float(value)
        st = self._st
        self.age_cycles = st.thr_dis / self.nominal_capacity_C
        st.active = self._faults_due(st.t, self.age_cycles, st.active)
        self._on_control()
        self._invalidate()
        if mode == "current":
            self._dir = 1 if self.value > 0 else -1
        elif mode == "voltage":
            self._dir = 1
            c = self._circuit_for(st)
            seg = linearise(c, st.p, st.n, True)
            i0 = (self.value - seg.E0 - sum(st.v[i] for i in seg.slow)) / seg.rs
            self._dir = 1 if i0 - self._leak(c, seg) > 0 else -1
            self._invalidate()
        else:
            self._dir = -1
        self._invalidate()

    def voltage_V(self, t: float) -> float:
        self._advance(t)
        return self._terminal()[0]

    def current_A(self, t: float) -> float:
        self._advance(t)
        return self._terminal()[1]

    def impedance_ohm(self, t: float, f_Hz: float) -> complex:
        self._advance(t)
        if f_Hz <= 0:
            raise ValueError(f"cell {self.name}: impedance needs a positive frequency, "
                             f"not {f_Hz!r} Hz")
        st = self._st
        c = self._circuit_for(st, direction=-1)
        if c.short_ohm is not None:
            return complex(c.short_ohm, 0.0)
        z = self._impedance(f_Hz, st, c)
        return z if c.r_shunt_ohm == INF else parallel(z, c.r_shunt_ohm)

    def next_crossing(self, t: float, v_min: float | None, v_max: float | None,
                      i_min_abs: float | None) -> float | None:
        """Earliest time ≥ t at which, under the present control, the voltage reaches
        v_min or v_max or |current| falls to i_min_abs; t itself when already there;
        None when nothing happens within HORIZON_S. Never early: at the returned time the
        limit is passed by 1e-9 (relative), so voltage_V/current_A there agree."""
        self._advance(t)
        if v_min is None and v_max is None and i_min_abs is None:
            return None
        st = self._st.copy()
        hit = self._evolve(st, st.t + HORIZON_S, (v_min, v_max, i_min_abs))
        if hit is not None:
            # an emulator usually jumps straight there: keep the state (and the segment it
            # is on, so readings there repeat the crossing's own numbers) to hand
            self._lookahead = (self._st.t, self._cache_epoch, st, self._hit_track)
        return hit

    def snapshot(self) -> dict:
        st = self._st
        return {"kind": self.kind, "name": self.name, "t": st.t, "p": st.p, "n": st.n,
                "v": list(st.v), "thr_ch": st.thr_ch, "thr_dis": st.thr_dis,
                "active": sorted(st.active), "mode": self.mode, "value": self.value,
                "dir": self._dir, "age_cycles": self.age_cycles,
                "temperature_C": self.temperature_C, "extra": self._extra_state(),
                "anchor": self._track.anchor() if self._track is not None else None}

    def restore(self, state: dict) -> None:
        if state.get("kind") != self.kind:
            raise ValueError(f"cell {self.name}: snapshot of a {state.get('kind')!r} cell "
                             f"cannot restore a {self.kind!r} cell")
        self._st = _State(state["t"], state["p"], state["n"], list(state["v"]),
                          state["thr_ch"], state["thr_dis"], frozenset(state["active"]))
        self.mode, self.value, self._dir = state["mode"], state["value"], state["dir"]
        self.age_cycles = state["age_cycles"]
        self.temperature_C = state["temperature_C"]
        self._restore_extra(state.get("extra", {}))
        self._invalidate()
        anchor = state.get("anchor")
        if anchor is not None:  # rebuild the segment track so the trajectory is bit-identical
            a = _State(anchor["t"], anchor["p"], anchor["n"], list(anchor["v"]),
                       anchor["thr_ch"], anchor["thr_dis"], self._st.active)
            self._track = self._new_track(self._circuit_for(a), a)

    # --- extras -----------------------------------------------------------------------------
    def readings_on_grid(self, t0: float, step: float, k_first: int,
                         k_last: int) -> tuple[np.ndarray, np.ndarray]:
        """Terminal voltage and current at t0 + k·step for k = k_first … k_last, or fewer
        (a fault onset, or a segment that is not a plain current track, ends the stretch;
        at least one comes back). These are the numbers voltage_V and current_A give one
        by one: the segments are walked as _run walks them and each track is evaluated
        with the same operations, all segments in one pass of array arithmetic. The cell
        moves to the first time only; read it at the last one used to move on."""
        self._advance(t0 + k_first * step)
        self._terminal()  # makes or checks the track of the present segment
        st = self._st
        t_end = self._next_onset(st) if self.faults else INF
        c = self._circuit_for(st)
        k_end = k_last if t_end == INF else min(k_last, int((t_end - t0) / step) + 1)
        times = t0 + np.arange(k_first, max(k_end, k_first) + 1, dtype=float) * step
        count = max(1, int(np.searchsorted(times, t_end, "left")))
        if c.short_ohm is not None:  # a hard short: the terminals do not move
            v, i = self._terminal()
            return np.full(count, v), np.full(count, i)
        track, walk, pieces, j = self._track, None, [], 0
        grid = times[:count].tolist()
        for _ in range(1_000_000):
            m = bisect.bisect_left(grid, track.t0 + track.t_bd, j)
            if m > j:
                pieces.append((track, m - j))
                j = m
            if j >= count or not isinstance(track, _CurrentTrack):
                break
            walk = walk or st.copy()  # the next segment, entered exactly as _run enters it
            track.place(walk, track.t_bd, track.side)
            track = self._new_track(c, walk)
            if len(self._plan) > 512:
                self._plan.clear()
            self._plan[track.t0] = track
            if not isinstance(track, _CurrentTrack):
                break
        if len(pieces) == 1:
            return pieces[0][0].terminal_many(times[:j] - pieces[0][0].t0)
        return _current_tracks_many(pieces, times[:j])

    @property
    def t(self) -> float:
        return self._st.t

    @property
    def trajectory_epoch(self) -> int:
        """Changes whenever what lies ahead may have changed (a control, a temperature, a
        restore): readings taken ahead before then no longer hold."""
        return self._cache_epoch

    def set_temperature(self, t: float, temperature_C: float) -> None:
        """Change the cell's temperature at t (Arrhenius terms follow from then on)."""
        self._advance(t)
        self.temperature_C = float(temperature_C)
        self._invalidate()

    def ocv_V(self, t: float) -> float:
        """The source voltage E_pos − E_neg at t (what the cell relaxes towards)."""
        self._advance(t)
        c = self._circuit_for(self._st, direction=-1)
        return linearise(c, self._st.p, self._st.n, False).E0

    def state_C(self, t: float) -> tuple[float, float]:
        """The electrode states (p, n) at t, in coulombs (see the module docstring)."""
        self._advance(t)
        return self._st.p, self._st.n

    @property
    def active_faults(self) -> list[str]:
        return [self.faults[i].kind for i in sorted(self._st.active)]

    @property
    def capacity_Ah(self) -> float | None:
        """Capacity for C-rates (None: a cell without one, e.g. a blocking cell)."""
        return None

    # --- hooks --------------------------------------------------------------------------------
    @property
    def nominal_capacity_C(self) -> float:
        """The charge one equivalent full cycle passes (ageing and at_cycle faults)."""
        return 1.0

    def _circuit(self, direction: int, active: frozenset) -> Circuit:
        raise NotImplementedError

    def _impedance(self, f_Hz: float, st: _State, c: Circuit) -> complex:
        raise NotImplementedError

    def _on_control(self) -> None:
        """Called at each set_control after ageing is updated (e.g. a nucleation flag)."""

    def _extra_state(self) -> dict:
        return {}

    def _restore_extra(self, extra: dict) -> None:
        pass

    # --- machinery ----------------------------------------------------------------------------
    def _fault_param(self, active: frozenset, kind: str, attr: str, default: float):
        """The parameter of the first active fault of a kind, or None if none is active."""
        for i in sorted(active):
            f = self.faults[i]
            if f.kind == kind:
                value = getattr(f, attr)
                return default if value is None else value
        return None

    def _faults_due(self, t: float, cycles: float, active: frozenset) -> frozenset:
        if not self.faults:
            return active
        due = {i for i, f in enumerate(self.faults)
               if (f.at_s is None and f.at_cycle is None)
               or (f.at_s is not None and f.at_s <= t)
               or (f.at_cycle is not None and f.at_cycle <= cycles)}
        return frozenset(active | due)

    def _next_onset(self, st: _State) -> float:
        times = [f.at_s for i, f in enumerate(self.faults)
                 if i not in st.active and f.at_s is not None and f.at_s > st.t]
        return min(times, default=INF)

    def _circuit_for(self, st: _State, direction: int | None = None) -> Circuit:
        key = (self._dir if direction is None else direction, st.active)
        c = self._cache.get(key)
        if c is None:
            c = self._cache[key] = self._circuit(key[0], st.active)
        return c

    @staticmethod
    def _leak(c: Circuit, seg: _Seg) -> float:
        return seg.E0 / c.r_leak_ohm if c.r_leak_ohm < INF else 0.0

    def _terminal(self) -> tuple[float, float]:
        """(voltage, current) at the terminals in the present state."""
        st = self._st
        c = self._circuit_for(st)
        mode, value = self.mode, self.value
        if c.short_ohm is not None:
            if mode == "voltage":
                return value, value / c.short_ohm
            return (value * c.short_ohm, value) if mode == "current" else (0.0, 0.0)
        track = self._track
        if track is None or track.c is not c or track.key != (mode, value) or \
                not track.t0 <= st.t < track.t0 + track.t_bd:
            track = self._track = self._new_track(c, st)
        return track.terminal(st.t - track.t0)

    def _invalidate(self) -> None:
        self._cache.clear()
        self._cache_epoch += 1
        self._lookahead = None
        self._track = None
        self._plan.clear()

    def _advance(self, t: float) -> None:
        ahead = self._lookahead
        if ahead is not None and ahead[0] == self._st.t and ahead[1] == self._cache_epoch \
                and ahead[2].t <= t:
            self._st, self._track = ahead[2], ahead[3]
            self._st.active = self._faults_due(self._st.t, self.age_cycles, self._st.active)
        self._lookahead = None
        st = self._st
        if t < st.t - 1e-9 * max(1.0, abs(st.t)):
            raise ValueError(f"cell {self.name}: time {t!r} s is before the cell's present "
                             f"time {st.t!r} s; simulated time only moves forward")
        if t > st.t:
            self._evolve(st, t, None)
            st.t = t

    def _evolve(self, st: _State, t_end: float, limits) -> float | None:
        """Advance st to t_end; with limits (v_min, v_max, i_min), stop at the first
        crossing and return its time instead."""
        while st.t < t_end:
            c = self._circuit_for(st)
            t_stop = min(t_end, self._next_onset(st)) if self.faults else t_end
            if c.short_ohm is not None:
                if limits is not None and self._short_violates(c, limits):
                    return st.t
                hit = None
            else:
                hit = self._run(st, c, t_stop, limits)
            if hit is not None:
                return hit
            st.t = t_stop  # exact, whatever the rounding of the segment sums
            if self.faults:
                st.active = self._faults_due(st.t, self.age_cycles, st.active)
        return None

    def _new_track(self, c: Circuit, st: _State) -> _Track:
        """The trajectory of the segment the state is on, under the present control."""
        key, pref, shunt = (self.mode, self.value), self._dir > 0, c.r_shunt_ohm
        if self.mode == "voltage":
            v = self.value
            return _NetworkTrack(c, st, key, v, 0.0,
                                 (v, 0.0, v / shunt if shunt < INF else 0.0, 1.0), pref)
        current = self.value if self.mode == "current" else 0.0
        if shunt < INF:
            return _NetworkTrack(c, st, key, current * shunt, shunt,
                                 (current * shunt, -shunt, current, 0.0), pref)
        return _CurrentTrack(c, st, key, current, pref)

    def _run(self, st: _State, c: Circuit, t_stop: float, limits) -> float | None:
        """Advance st on circuit c up to t_stop, or to the first crossing of the limits
        (whose time is returned), one table segment (`_Track`) at a time."""
        mine, key, plan = st is self._st, (self.mode, self.value), self._plan
        track = self._track if mine else None
        if track is not None and not (track.c is c and track.key == key and track.t0 <= st.t):
            track = None
        for _ in range(1_000_000):
            if t_stop <= st.t:
                return None
            if track is None:
                # a segment a look-ahead has already walked from this very state
                track = plan.get(st.t)
                if track is None or not (track.c is c and track.key == key and
                                         track.p0 == st.p and track.n0 == st.n):
                    track = self._new_track(c, st)
                    if not mine:
                        if len(plan) > 512:
                            plan.clear()
                        plan[track.t0] = track
            t_end = track.t0 + track.t_bd
            if limits is not None:
                hit = track.first_hit(limits, min(t_end, t_stop) - track.t0)
                if hit is not None:
                    track.place(st, hit, None)
                    self._hit_track = track
                    return st.t
            if t_stop < t_end:
                track.place(st, t_stop - track.t0, None)
                st.t = t_stop
                if mine:
                    self._track = track
                return None
            track.place(st, track.t_bd, track.side)
            track = None
            if mine:
                self._track = None
        raise RuntimeError(f"cell {self.name}: a million table segments without reaching "
                           f"t = {t_stop} s; the tables are degenerate")

    def _short_violates(self, c: Circuit, limits) -> bool:
        v_min, v_max, i_min = limits
        if self.mode == "voltage":
            v, i = self.value, self.value / c.short_ohm
        else:
            i = self.value if self.mode == "current" else 0.0
            v = i * c.short_ohm
        return ((v_min is not None and v <= v_min) or (v_max is not None and v >= v_max)
                or (i_min is not None and abs(i) <= i_min))


# --- impedance building blocks --------------------------------------------------------------
def zarc(R: float, tau: float, alpha: float, w: float) -> complex:
    """(R ‖ CPE) with R·Q = τ^α: R / (1 + (jωτ)^α)."""
    return R / (1.0 + (1j * w * tau) ** alpha) if R > 0 else 0j


def cpe(Q: float, alpha: float, w: float) -> complex:
    return 1.0 / (Q * (1j * w) ** alpha)


def parallel(*zs: complex) -> complex:
    y = sum(1.0 / z for z in zs if z != INF)
    return 1.0 / y if y != 0 else complex(INF, 0.0)


def warburg_reflective_excess(R_d: float, tau_d: float, w: float) -> complex:
    """Finite-length reflective Warburg, R_d·coth(√(jωτ))/√(jωτ), minus its capacitive
    limit R_d/(jωτ) (that part is the source's own capacitance)."""
    if R_d <= 0:
        return 0j
    z = (1j * w * tau_d) ** 0.5
    if abs(z) < 1e-3:
        return R_d * (1.0 / 3.0 - z * z / 45.0)
    e = cmath.exp(-2 * z) if z.real < 20 else 0j
    coth = (1 + e) / (1 - e)
    return R_d * (coth / z - 1.0 / (z * z))

