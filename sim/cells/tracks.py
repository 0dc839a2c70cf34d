"""The exact trajectory of a cell's state on one table segment under one control: a
constant current (`CurrentTrack`) or a voltage source behind a resistance
(`NetworkTrack`), anchored where the segment was entered, so any number of looks inside it
give the same state however the time is split."""

from __future__ import annotations

import math

import numpy as np

from lipon_hw.sim.cells.circuit import Circuit, Segment, linearise
from lipon_hw.sim.cells.expsums import ExpSum, exp_scalar, phi, phi_many
from lipon_hw.sim.cells.roots import OVERSHOOT, first_hit, voltage_hit

HORIZON_S = 1.0e7  # next_crossing looks this far ahead (contract)
INF = math.inf


class CellState:
    """Where a cell is: time, electrode states p and n (C), branch voltages, charge
    throughput in each direction, the active faults (indices)."""

    __slots__ = ("t", "p", "n", "v", "thr_ch", "thr_dis", "active")

    def __init__(self, t, p, n, v, thr_ch=0.0, thr_dis=0.0, active=frozenset()):
        self.t, self.p, self.n, self.v = t, p, n, v
        self.thr_ch, self.thr_dis, self.active = thr_ch, thr_dis, active

    def copy(self) -> CellState:
        return CellState(self.t, self.p, self.n, list(self.v), self.thr_ch, self.thr_dis,
                         self.active)


def _time_to(s_target: float, cs: float, beta: float) -> float:
    """Time for s(τ) = cs·φ(β, τ) to reach s_target (same sign as cs)."""
    w = s_target / cs
    if not w < INF:
        return INF
    if beta == 0.0:
        return max(w, 0.0)
    r = beta * w
    return INF if r >= 1.0 else max(-math.log1p(-r) / beta, 0.0)


class Track:
    """The exact trajectory on one table segment under one control, anchored at the state
    where the segment was entered: any number of looks inside it cost a few exponentials
    and give the same state however the time is split."""

    __slots__ = ("c", "key", "t0", "p0", "n0", "ch0", "dis0", "v0", "seg", "t_bd", "side",
                 "s_bd")

    def _anchor_at(self, c: Circuit, st: CellState, key: tuple, seg: Segment) -> None:
        self.c, self.key, self.seg = c, key, seg
        self.t0, self.p0, self.n0 = st.t, st.p, st.n
        self.ch0, self.dis0, self.v0 = st.thr_ch, st.thr_dis, tuple(st.v)

    def anchor(self) -> dict:
        return {"t": self.t0, "p": self.p0, "n": self.n0, "thr_ch": self.ch0,
                "thr_dis": self.dis0, "v": list(self.v0)}

    def _put(self, st: CellState, tau: float, ds: float, boundary: str | None,
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


class CurrentTrack(Track):
    """Constant current I: s(τ) = cs·φ(β, τ) with cs = I − E0/R_leak and β = b/R_leak,
    each slow branch I·R + (v0 − I·R)·e^(−τ/τ_k), so V(τ) = base + Σ amp·e^(−τ/τ_k)
    + gain·φ(β, τ), a sum of monotone terms."""

    __slots__ = ("I", "cs", "beta", "amp", "gain", "base")

    def __init__(self, c: Circuit, st: CellState, key: tuple, current: float, pref: bool):
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
            v += a * exp_scalar(-tau / tk)
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
            e = a * exp_scalar(-span / tk)
            lo, hi = lo + min(a, e), hi + max(a, e)
        g = self.gain * phi(self.beta, span)
        lo, hi = lo + min(0.0, g), hi + max(0.0, g)
        if not ((v_max is not None and hi >= v_max) or (v_min is not None and lo <= v_min)):
            return None
        f = ExpSum(self.base, [(a, 1.0 / tk) for a, tk in zip(self.amp, self.seg.tau,
                                                             strict=True)],
                   [(self.gain, self.beta)])
        return voltage_hit(f, v_min, v_max, span)

    def place(self, st: CellState, tau: float, boundary: str | None) -> None:
        seg, current = self.seg, self.I
        for k, i in enumerate(seg.slow):
            st.v[i] = current * seg.R[k] + self.amp[k] * exp_scalar(-tau / seg.tau[k])
        self._put(st, tau, self.cs * phi(self.beta, tau), boundary, current)


def current_tracks_many(pieces: list, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CurrentTrack.terminal_many over consecutive tracks, (track, count) each, in one
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


class NetworkTrack(Track):
    """A voltage source v_src behind r_extra (an applied voltage, or an applied current
    with a shunt in its Thevenin form): the source voltage u and the slow branch voltages
    form a passive RC network, C·x' = −G·x + v_src/R_s, whose modes (symmetric once scaled
    by C^½) give x(τ) = x∞ + Σ w·e^(−λτ). The terminals are affine in the cell current:
    V = v0 + kv·i, I = i0 + ki·i."""

    __slots__ = ("u", "vs", "i_cell", "b", "E0", "affine")

    def __init__(self, c: Circuit, st: CellState, key: tuple, v_src: float, r_extra: float,
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
            hits.append(voltage_hit(volts, v_min, v_max, span))
        if i_min is not None:
            amps = ExpSum(i0 + ki * cell.c0, [(ki * a, lam) for a, lam in cell.exps])
            start = amps(0.0)
            if abs(start) <= i_min:
                return 0.0
            level = i_min * (1 - OVERSHOOT)
            hits.append(first_hit(amps, level if start > 0 else -level, start < 0, span))
        hits = [h for h in hits if h is not None]
        return min(hits) if hits else None

    def place(self, st: CellState, tau: float, boundary: str | None) -> None:
        for k, i in enumerate(self.seg.slow):
            st.v[i] = self.vs[k](tau)
        self._put(st, tau, (self.u(tau) - self.E0) / self.b, boundary, self.i_cell(tau))
