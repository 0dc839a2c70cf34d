"""Equivalent-circuit fits of impedance spectra and the ionic conductivity they give.

Model: Z(ω) = R0 + Σ_k R_k / (1 + R_k Q_k (jω)^α_k)  [+ tail]
— a series resistance, a chain of (R‖CPE) arcs and, unless `blocking=False`, a
low-frequency tail: blocking electrodes' CPE plus a series capacitor (Cu/LiPON/Cu), or a
full cell's finite-length diffusion plus its storage capacitance, whichever fits better.
Each arc is fitted as (R, τ, α) with R·Q = τ^α, its characteristic frequency
f_c = 1/(2πτ) being the apex of the arc.

Fitting: bounded least squares (`lsq.levenberg_marquardt`) on the real and imaginary residuals, each
divided by |Z| (so every decade of the spectrum counts, not only the large low-frequency
impedances), R and τ and Q in log10. Initial guesses come from the spectrum: the tail's
exponent from the phase of the lowest frequencies and its Q from |Z| there; after the tail
is subtracted, the apexes of −Z'' give each arc's τ and, through the ZARC apex height
−Z''max = (R/2)·tan(απ/4), its R; R0 from the high-frequency intercept. Arcs the apexes do
not reveal (a shoulder under the tail) are seeded at several places, and a start puts the
fastest arc above the top frequency (a hot film's apex can lie beyond 3 MHz: its
low-frequency side and the intercept with the next arc still fix R); the best fit is kept.

The starts (both tails × the arc seeds: 18–34 for two arcs and a tail) are scouted, all of
one tail at once: each until a step lowers the cost by less than SCOUT_FTOL, or for
SCOUT_NFEV evaluations. The FINALISTS scouts with the lowest cost are then fitted to
convergence (FINAL_FTOL), again those of a tail together, and the best of them is kept.
The Jacobian is analytic, and the model's pieces at a point serve both the residuals and
the Jacobian there. (Until 2026-12 scipy's `least_squares` fitted each start alone: the
same minima on 102 validation spectra, at four times the CPU, and 0.5 s to import it.)

The fit reports each R's uncertainty (covariance s²·(JᵀJ)⁻¹ at the optimum) and whether
the film's arc is resolved (`judge_film`): a σ is given only then, else a sentence why.

The film's resistance: the arc with the highest characteristic frequency. In the seeds'
model (film + interface + blocking tail) the film arc is the bulk resistance in parallel
with the geometric capacitance of the film (~0.1 nF for mm² pads), whose time constant is
orders of magnitude shorter than the interface's or the double layer's, so the fastest arc
is the film. σ = t / (R·A).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from lipon_hw.analysis.lsq import levenberg_marquardt
from lipon_hw.errors import InputError

DEFAULT_ALPHA = 0.9
SCOUT_NFEV = 60  # evaluations each start gets before the starts are compared
SCOUT_FTOL = 1e-4  # a scout stops when a step lowers the cost by less than this fraction
FINALISTS = 8  # scouts fitted to convergence (with 4, 2 of 102 validation spectra missed the best)
FINAL_FTOL = 1e-8  # a finalist converges when a step lowers the cost by less than this fraction
FINAL_NFEV = 2000  # evaluations a finalist may take


@dataclass(frozen=True)
class Arc:
    """One (R‖CPE) element: Z = R / (1 + R·Q·(jω)^α) = R / (1 + (jωτ)^α)."""

    R_ohm: float
    Q: float  # F·s^(α−1)
    alpha: float
    tau_s: float

    @property
    def f_peak_Hz(self) -> float:
        return 1.0 / (2 * math.pi * self.tau_s)

    def impedance(self, w) -> np.ndarray:
        return self.R_ohm / (1.0 + (1j * np.asarray(w) * self.tau_s) ** self.alpha)


@dataclass(frozen=True)
class BlockingTail:
    """The blocking electrodes: a CPE in series with a capacitor,
    Z = 1 / (Q (jω)^α) + 1 / (jω C). The capacitor is the slow part of the double layer's
    charging (space charge); a single CPE cannot bend from one to the other, and the |Z|
    weighting gives the tail's decades as much say as the film's, so a CPE-only tail
    dragged the film's R by 2–8 % (issue 9)."""

    Q: float
    alpha: float
    C_series_F: float = math.inf

    def impedance(self, w) -> np.ndarray:
        jw = 1j * np.asarray(w)
        return 1.0 / (self.Q * jw ** self.alpha) + 1.0 / (self.C_series_F * jw)


@dataclass(frozen=True)
class DiffusionTail:
    """A full cell's finite-length (reflective) diffusion and its storage capacitance:
    Z = R_d·[coth(√(jωτ))/√(jωτ) − 1/(jωτ)] + 1/(jω C): a Warburg line (45°) bending
    into a capacitor below 1/τ."""

    R_d_ohm: float
    tau_s: float
    C_series_F: float

    def impedance(self, w) -> np.ndarray:
        w = np.asarray(w, dtype=float)
        return self.R_d_ohm * _coth_w(np.sqrt(1j * w * self.tau_s)) + \
            1.0 / (self.C_series_F * 1j * w)


@dataclass(frozen=True)
class EisFit:
    """A fitted spectrum. `arcs` are ordered by time constant, fastest (highest
    characteristic frequency) first; `rms_relative` is the root mean square of the
    |Z|-weighted real and imaginary residuals (0.01 ≈ a 1 % misfit).
    `R_rel_uncertainty[k]`: relative standard uncertainty of arcs[k].R_ohm (see
    `fit_spectrum`). `film_resolved` is False when the spectrum cannot give the film's
    resistance, `film_note` then says why in one sentence."""

    R0_ohm: float
    arcs: tuple[Arc, ...]
    tail: BlockingTail | DiffusionTail | None
    rms_relative: float
    success: bool
    n_points: int
    message: str = ""
    extra: dict = field(default_factory=dict)
    R_rel_uncertainty: tuple[float, ...] = ()
    R0_uncertainty_ohm: float | None = None
    f_band_Hz: tuple[float, float] = (0.0, math.inf)
    film_resolved: bool = True
    film_note: str = ""

    @property
    def film_R_rel_uncertainty(self) -> float | None:
        return self.R_rel_uncertainty[0] if self.R_rel_uncertainty else None

    @property
    def film(self) -> Arc:
        """The film's arc: the one with the highest characteristic frequency."""
        return self.arcs[0]

    @property
    def film_resistance_ohm(self) -> float:
        return self.film.R_ohm

    def impedance(self, f_Hz) -> np.ndarray:
        """The fitted model at f_Hz (array)."""
        w = 2 * np.pi * np.asarray(f_Hz, dtype=float)
        z = np.full(w.shape, self.R0_ohm, dtype=complex)
        for arc in self.arcs:
            z = z + arc.impedance(w)
        if self.tail is not None:
            z = z + self.tail.impedance(w)
        return z

    def to_dict(self) -> dict:
        return {"R0_ohm": self.R0_ohm, "R0_uncertainty_ohm": self.R0_uncertainty_ohm,
                "arcs": [{"R_ohm": a.R_ohm, "Q": a.Q, "alpha": a.alpha, "tau_s": a.tau_s,
                          "f_peak_Hz": a.f_peak_Hz} for a in self.arcs],
                "R_rel_uncertainty": list(self.R_rel_uncertainty),
                "tail": None if self.tail is None else
                {"kind": type(self.tail).__name__, **vars(self.tail)},
                "rms_relative": self.rms_relative, "success": self.success,
                "n_points": self.n_points, "film_resolved": self.film_resolved,
                "film_note": self.film_note}


def ionic_conductivity_S_cm(R_ohm: float, thickness_nm: float, area_cm2: float) -> float:
    """σ = t / (R·A), thickness in nm, area in cm², result in S/cm."""
    for name, value in (("R_ohm", R_ohm), ("thickness_nm", thickness_nm),
                        ("area_cm2", area_cm2)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise InputError(f"ionic conductivity needs a positive {name}, not {value!r}")
    return thickness_nm * 1e-7 / (R_ohm * area_cm2)


# --- the model in fitting coordinates ------------------------------------------------------------
CPE_TAIL, DIFFUSION_TAIL = "cpe", "diffusion"
LN10 = math.log(10.0)


def _coth_parts(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(coth(u), coth(u)/u − 1/u²) for complex u with Re u ≥ 0 (the finite-length Warburg
    less its capacitor; a series near 0, where the difference cancels)."""
    e = np.exp(-2 * u)  # |e| ≤ 1; underflows to 0 for a long diffusion length
    coth = (1 + e) / (1 - e)
    v = 1.0 / u
    out = (coth - v) * v
    small = np.abs(u) < 1e-3
    if small.any():
        us = u[small]
        out[small] = 1.0 / 3.0 - us * us / 45.0
    return coth, out


def _coth_w(u: np.ndarray) -> np.ndarray:
    """coth(u)/u − 1/u² for complex u, Re u ≥ 0 (see `_coth_parts`)."""
    return _coth_parts(np.asarray(u, dtype=complex))[1]


def _coth_w_slope_u(u: np.ndarray, coth: np.ndarray) -> np.ndarray:
    """u·d/du of `_coth_w`: 1 − coth²(u) − coth(u)/u + 2/u² (series near 0)."""
    v = 1.0 / u
    out = 1.0 - coth * (coth + v) + 2.0 * v * v
    small = np.abs(u) < 1e-2
    if small.any():
        us = u[small]
        out[small] = -2.0 * us * us / 45.0
    return out


class _Residuals:
    """The real and imaginary residuals of one spectrum against the model (n_arcs, tail),
    each divided by |Z| (interleaved: Re, Im of each point), and their Jacobian, analytic
    (~10× fewer model evaluations than finite differences). Parameters in fitting
    coordinates: R0, then (log10 R, log10 τ, α) per arc, then the tail's three.

    `residuals_of` and `jacobian_of` take several parameter vectors at once (rows of X):
    every start of a spectrum is fitted together. The model's pieces at the last X are
    kept: the Jacobian is asked for where the residuals were just evaluated. Powers of jω
    are exponentials of ln(jω) = ln ω + jπ/2, computed once."""

    def __init__(self, w: np.ndarray, z: np.ndarray, n_arcs: int, tail: str | None):
        self.ln_jw = np.log(w) + 0.5j * np.pi  # ln(jω)
        self.inv_jw = 1.0 / (1j * w)
        self.weight = 1.0 / np.abs(z)
        self.zw = z * self.weight
        self.n_arcs, self.tail = n_arcs, tail
        self._key = b""
        self._parts = ()

    def _evaluate(self, X: np.ndarray) -> tuple:
        """The model's pieces at the rows of X (k × parameters): every array has the k
        parameter vectors as its first axis."""
        key = X.tobytes()
        if key == self._key:
            return self._parts
        n = self.n_arcs
        arcs = X[:, 1: 1 + 3 * n].reshape(len(X), n, 3)
        a = arcs[:, :, 2:3]
        ln_s = self.ln_jw + arcs[:, :, 1:2] * LN10  # ln(jωτ), one row per arc
        u = np.exp(a * ln_s)  # (jωτ)^α
        den = 1.0 + u
        za = 10.0 ** arcs[:, :, 0:1] / den
        z = za.sum(axis=1) + X[:, 0:1]
        tail = ()
        if self.tail == CPE_TAIL:
            lq, at, lc = X[:, -3:-2], X[:, -2:-1], X[:, -1:]
            zq = np.exp(self.ln_jw * -at - lq * LN10)
            zc = self.inv_jw * 10.0 ** -lc
            z += zq
            z += zc
            tail = (zq, zc)
        elif self.tail == DIFFUSION_TAIL:
            lr, lt, lc = X[:, -3:-2], X[:, -2:-1], X[:, -1:]
            ud = np.exp(0.5 * (self.ln_jw + lt * LN10))  # √(jωτ)
            coth, cw = _coth_parts(ud)
            zd = cw * 10.0 ** lr
            zc = self.inv_jw * 10.0 ** -lc
            z += zd
            z += zc
            tail = (ud, coth, zd, zc, lr)
        self._key = key
        self._parts = (z, a, ln_s, u, den, za, tail)
        return self._parts

    def residuals_of(self, X: np.ndarray) -> np.ndarray:
        """The residuals at each row of X: k × (2 · points)."""
        d = self._evaluate(X)[0] * self.weight
        d -= self.zw
        return d.view(np.float64)

    def jacobian_of(self, X: np.ndarray) -> np.ndarray:
        """The Jacobian at each row of X: k × (2 · points) × parameters."""
        _, a, ln_s, u, den, za, tail = self._evaluate(X)
        n = self.n_arcs
        jac = np.empty((len(X), X.shape[1], len(self.zw)), dtype=complex)  # row: parameter
        jac[:, 0] = 1.0
        g = za * u
        g /= den  # −∂za/∂(ln u)
        jac[:, 1: 1 + 3 * n: 3] = za * LN10
        jac[:, 2: 2 + 3 * n: 3] = g * (a * -LN10)
        jac[:, 3: 3 + 3 * n: 3] = g * -ln_s
        if self.tail == CPE_TAIL:
            zq, zc = tail
            jac[:, -3] = zq * -LN10
            jac[:, -2] = zq * -self.ln_jw
            jac[:, -1] = zc * -LN10
        elif self.tail == DIFFUSION_TAIL:
            ud, coth, zd, zc, lr = tail
            jac[:, -3] = zd * LN10
            jac[:, -2] = _coth_w_slope_u(ud, coth) * (0.5 * LN10 * 10.0 ** lr)
            jac[:, -1] = zc * -LN10
        jac *= self.weight
        return jac.view(np.float64).transpose(0, 2, 1)  # rows: Re, Im of each point


def _validate(f_Hz, z_ohm, n_arcs: int) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(f_Hz, dtype=float).ravel()
    z = np.asarray(z_ohm, dtype=complex).ravel()
    if len(f) != len(z):
        raise InputError(f"EIS fit: {len(f)} frequencies but {len(z)} impedances")
    if not (isinstance(n_arcs, int) and n_arcs >= 1):
        raise InputError(f"EIS fit: the number of arcs must be a whole number ≥ 1, not {n_arcs!r}")
    if not (np.all(np.isfinite(f)) and np.all(np.isfinite(z))):
        raise InputError("EIS fit: the spectrum contains a NaN or infinite value")
    if np.any(f <= 0):
        raise InputError("EIS fit: every frequency must be positive")
    if np.any(np.abs(z) == 0):
        raise InputError("EIS fit: the spectrum contains a zero impedance")
    order = np.argsort(f)[::-1]  # high to low frequency
    return f[order], z[order]


# --- initial guesses ------------------------------------------------------------------------------
def _tail_guess(w: np.ndarray, z: np.ndarray) -> tuple[float, float, float]:
    """(log10 Q, α, log10 C) of the blocking tail from the lowest-frequency points; the
    series capacitor starts where it adds a tenth of the lowest point's |Z|."""
    low = slice(len(w) - max(3, len(w) // 15), len(w))
    phase = -np.angle(z[low])
    alpha = float(np.clip(np.median(phase) / (np.pi / 2), 0.5, 1.0))
    q = np.median(1.0 / (np.abs(z[low]) * w[low] ** alpha))
    c = 10.0 / (w[-1] * abs(z[-1]))
    return float(np.log10(q)), alpha, float(np.log10(c))


def _apexes(w: np.ndarray, neg_im: np.ndarray) -> list[tuple[float, float]]:
    """Local maxima of a lightly smoothed −Z'' as (height, ω), highest first."""
    y = neg_im.copy()
    if len(y) >= 5:
        y[1:-1] = (neg_im[:-2] + 2 * neg_im[1:-1] + neg_im[2:]) / 4
    top = np.max(y) if len(y) else 0.0
    peaks = [(float(y[k]), float(w[k])) for k in range(1, len(y) - 1)
             if y[k] > y[k - 1] and y[k] >= y[k + 1] and y[k] > 0.02 * top]
    return sorted(peaks, reverse=True)


def _arc_sets(w, zr, n_arcs: int) -> list[list[tuple[float, float]]]:
    """Candidate (R, τ) sets: the apexes of −Z'', and the same with the fastest arc put
    above the top frequency (its apex unseen, only its low-frequency side in the band;
    R from the real part at the top frequency); arcs neither shows are placed at several
    free spots of the band."""
    t_apex = DEFAULT_ALPHA * np.pi / 4
    peaks = [(2 * h / math.tan(t_apex), 1.0 / wp) for h, wp in _apexes(w, -zr.imag)]
    r_top = max(float(zr.real[0]), 1e-3 * float(np.max(np.abs(zr))))
    known_sets = [peaks[:n_arcs]]
    known_sets += [[(r_top, 1.0 / (w[0] * k))] + peaks[:n_arcs - 1] for k in (1.0, 3.0)]
    if peaks and n_arcs > 1:  # an apex may be the tail's, not an arc's
        known_sets.append([(r_top, 1.0 / w[0])])
    span = max(float(np.max(zr.real) - np.min(zr.real)), float(np.min(np.abs(zr))))
    lw_min, lw_max = math.log10(w[-1]), math.log10(w[0])
    out = []
    for arcs in known_sets:
        missing = n_arcs - len(arcs)
        if missing <= 0:
            out.append(list(arcs))
            continue
        known = [math.log10(1 / t) for _, t in arcs]
        grid = np.linspace(lw_min + 0.5, lw_max - 0.5, 7)
        free = [g for g in grid if all(abs(g - k) > 0.7 for k in known)] or list(grid)
        r_each = max(span - sum(r for r, _ in arcs), 0.1 * span) / missing
        for j in range(len(free)):
            picks = [free[(j + m * 2) % len(free)] for m in range(missing)]
            out.append(list(arcs) + [(r_each, 10 ** -g) for g in picks])
    return out


def _starts(w, z, n_arcs: int, tail: str | None) -> list[np.ndarray]:
    """Initial parameter vectors: each candidate arc set with the tail's guess."""
    if tail == CPE_TAIL:
        lq, a, lc = _tail_guess(w, z)
        guess = [lq, a, lc]
        zr = z - 1.0 / (10 ** lq * (1j * w) ** a)
    elif tail == DIFFUSION_TAIL:
        c = 1.0 / (w[-1] * max(-float(z[-1].imag), 1e-12))
        k = max(len(w) - 21, 0)  # about two decades above the bottom at 10 per decade
        r_d = 3 * max(float(z[-1].real - z[k].real), 1e-3 * abs(z[k]))
        guess = [math.log10(r_d), math.log10(3.0 / w[-1]), math.log10(c)]
        zr = z - 1.0 / (c * 1j * w)
    else:
        guess, zr = [], z
    starts = []
    for arcs in _arc_sets(w, zr, n_arcs):
        chosen = sorted(arcs, key=lambda a: a[1])
        r0 = max(float(np.min(z.real)) - sum(
            float(np.real(r / (1 + (1j * w[0] * t) ** DEFAULT_ALPHA))) for r, t in chosen), 0.0)
        x = [r0]
        for r, t in chosen:
            x += [math.log10(max(r, 1e-6)), math.log10(t), DEFAULT_ALPHA]
        starts.append(np.array(x + guess, dtype=float))
    return starts


def _bounds(w, z, n_arcs: int, tail: str | None) -> tuple[np.ndarray, np.ndarray]:
    zmax = float(np.max(np.abs(z)))
    lr = (math.log10(float(np.min(np.abs(z)))) - 4, math.log10(zmax) + 3)
    lt = (-math.log10(w[0]) - 3, -math.log10(w[-1]) + 3)
    lo, hi = [0.0], [max(float(np.max(z.real)), 1e-9)]
    for _ in range(n_arcs):
        lo += [lr[0], lt[0], 0.4]
        hi += [lr[1], lt[1], 1.0]
    if tail == CPE_TAIL:
        lo += [-25.0, 0.3, -25.0]
        hi += [5.0, 1.0, 5.0]
    elif tail == DIFFUSION_TAIL:
        lo += [lr[0], lt[0], -25.0]
        hi += [lr[1], lt[1] + 3, 5.0]
    return np.array(lo), np.array(hi)


def _covariance(jac: np.ndarray, fun: np.ndarray) -> np.ndarray:
    """s²·(JᵀJ)⁻¹ at the optimum, s² = Σr²/(m − n): the parameters' covariance in fitting
    coordinates (a pseudo-inverse, so a direction the data do not constrain comes out as a
    huge variance, not an error)."""
    m, n = jac.shape
    s2 = float(np.sum(fun ** 2)) / max(m - n, 1)
    return s2 * np.linalg.pinv(jac.T @ jac, rcond=1e-15)


def fit_spectrum(f_Hz, z_ohm, n_arcs: int = 2, blocking: bool = True) -> EisFit:
    """Fit R0 + n_arcs (R‖CPE) [+ blocking tail] to a spectrum, with the parameters'
    uncertainties and a verdict on whether the film's arc is resolved (`film_resolved`,
    `film_note`; see `judge_film`).

    f_Hz: frequencies (any order); z_ohm: complex impedances (Z' + jZ'', Z'' < 0 for a
    capacitive cell). At least 3 points per fitted parameter are expected.

    Uncertainties: from the Jacobian J of the residuals at the optimum, covariance
    C = s²·(JᵀJ)⁻¹ with s² the residuals' variance (Σr²/(m − n)), i.e. the spectrum's
    own scatter around the fit stands for its noise. An arc's R is fitted as log10 R, so
    its relative standard uncertainty is ln 10·√C_RR; σ = t/(R·A) carries the same relative
    uncertainty (thickness and area taken as exact)."""
    f, z = _validate(f_Hz, z_ohm, n_arcs)
    n_par = 1 + 3 * n_arcs + (3 if blocking else 0)
    if len(f) < n_par + 2:
        raise InputError(f"EIS fit: {len(f)} points cannot fit {n_par} parameters")
    w = 2 * np.pi * f
    # every start is scouted briefly (all of a tail at once); only the most promising few
    # are fitted to the end
    scouts, problems = [], {}
    for tail_kind in (CPE_TAIL, DIFFUSION_TAIL) if blocking else (None,):
        p = _Residuals(w, z, n_arcs, tail_kind)
        lo, hi = _bounds(w, z, n_arcs, tail_kind)
        reached = levenberg_marquardt(p.residuals_of, p.jacobian_of,
                                      np.array(_starts(w, z, n_arcs, tail_kind)), lo, hi,
                                      ftol=SCOUT_FTOL, max_nfev=SCOUT_NFEV)
        scouts += [(float(c), len(scouts) + k, tail_kind, x)
                   for k, (c, x) in enumerate(zip(reached.cost, reached.x, strict=True))]
        problems[tail_kind] = p, lo, hi
    finalists = sorted(scouts)[:FINALISTS]
    best_cost, best_tail, best, row = math.inf, None, None, 0
    for tail_kind, (p, lo, hi) in problems.items():
        starts = [x for _, _, t, x in finalists if t == tail_kind]
        if not starts:
            continue
        final = levenberg_marquardt(p.residuals_of, p.jacobian_of, np.array(starts), lo, hi,
                                    ftol=FINAL_FTOL, max_nfev=FINAL_NFEV)
        k = int(np.argmin(final.cost))
        if best is None or final.cost[k] < best_cost:
            best_cost, best_tail, best, row = float(final.cost[k]), tail_kind, final, k
    if not math.isfinite(best_cost):
        raise InputError("EIS fit: the model gives no finite impedance at any starting "
                         "point on this spectrum")
    x = best.x[row]
    cov = _covariance(best.jac[row], best.fun[row])
    arcs, rel_u, at_bound = [], [], []
    for k in range(n_arcs):
        lr, lt, a = x[1 + 3 * k: 4 + 3 * k]
        R, tau = 10.0 ** lr, 10.0 ** lt
        i = 1 + 3 * k
        arcs.append(Arc(R_ohm=float(R), Q=float(tau ** a / R), alpha=float(a), tau_s=float(tau)))
        rel_u.append(float(math.log(10) * math.sqrt(max(cov[i, i], 0.0))))
        at_bound.append(bool(np.any(best.at_bound[row, i: i + 3])))
    order = sorted(range(n_arcs), key=lambda k: arcs[k].tau_s)
    tail = None
    if best_tail == CPE_TAIL:
        tail = BlockingTail(Q=float(10.0 ** x[-3]), alpha=float(x[-2]),
                            C_series_F=float(10.0 ** x[-1]))
    elif best_tail == DIFFUSION_TAIL:
        tail = DiffusionTail(R_d_ohm=float(10.0 ** x[-3]), tau_s=float(10.0 ** x[-2]),
                             C_series_F=float(10.0 ** x[-1]))
    rms = float(np.sqrt(np.mean(best.fun[row] ** 2)))
    fit = EisFit(R0_ohm=float(x[0]), arcs=tuple(arcs[k] for k in order), tail=tail,
                 rms_relative=rms, success=bool(best.converged[row]), n_points=len(f),
                 message="converged" if best.converged[row] else
                 f"not converged after {FINAL_NFEV} evaluations",
                 R_rel_uncertainty=tuple(rel_u[k] for k in order),
                 R0_uncertainty_ohm=float(math.sqrt(max(cov[0, 0], 0.0))),
                 f_band_Hz=(float(f[-1]), float(f[0])))
    return judge_film(fit, at_bound=at_bound[order[0]])


# --- is the film's arc resolved? ---------------------------------------------------------------
MAX_RMS_RELATIVE = 0.03  # a model that misses the data by more than 3 % explains nothing
MAX_R_REL_UNCERTAINTY = 0.02  # 1 s.d.: 2.5 s.d. stays inside the 5 % σ is quoted to
MIN_TAU_RATIO = 4.0  # film and next arc at least 0.6 decade apart
MAX_APEX_ABOVE_BAND = 5.0  # the film's apex at most this factor above the top frequency
MIN_APEX_ABOVE_BOTTOM = 100.0  # ...and two decades above the bottom one
MAX_NEXT_ARC_REL_UNCERTAINTY = 0.5  # the arc after the film's must be seen, not guessed


def judge_film(fit: EisFit, at_bound: bool = False) -> EisFit:
    """The fit with `film_resolved` and, if not, `film_note`: one sentence saying why the
    spectrum cannot give the film's resistance. Checks, in order: the fit converged and
    describes the spectrum; the film's apex lies in the measured band (up to
    MAX_APEX_ABOVE_BAND above its top: past that only the arc's foot is seen); the next
    arc's time constant differs from the film's by MIN_TAU_RATIO (else they merge into one
    arc whose split is arbitrary); that arc (interface or charge transfer) is in the band
    and fitted, not parked in the tail (else the arc seen may be film and interface
    merged, R1 + R2 read as R1); the film's R is known to MAX_R_REL_UNCERTAINTY."""
    film = fit.film
    f_lo, f_hi = fit.f_band_Hz
    u = fit.film_R_rel_uncertainty
    note = ""
    if not fit.success or fit.rms_relative > MAX_RMS_RELATIVE:
        note = (f"the equivalent circuit does not describe the spectrum (misfit "
                f"{fit.rms_relative:.1%}), so no arc can be taken as the film's")
    elif film.f_peak_Hz > MAX_APEX_ABOVE_BAND * f_hi:
        note = (f"the film's arc peaks near {film.f_peak_Hz:.3g} Hz, beyond the top "
                f"frequency {f_hi:.3g} Hz: measure to higher frequency or at a lower "
                "temperature")
    elif film.f_peak_Hz < MIN_APEX_ABOVE_BOTTOM * f_lo:
        note = (f"the fastest arc peaks at {film.f_peak_Hz:.3g} Hz, inside the electrodes' "
                "low-frequency tail, so it cannot be told from it")
    elif len(fit.arcs) > 1 and fit.arcs[1].tau_s / film.tau_s < MIN_TAU_RATIO:
        note = (f"the film's arc ({film.f_peak_Hz:.3g} Hz) and the next one "
                f"({fit.arcs[1].f_peak_Hz:.3g} Hz) overlap (time constants only "
                f"{fit.arcs[1].tau_s / film.tau_s:.2g}× apart), so the spectrum cannot "
                "split their resistances: measure at a higher temperature")
    elif len(fit.arcs) > 1 and not (fit.arcs[1].f_peak_Hz >= f_lo and
                                    fit.R_rel_uncertainty[1] < MAX_NEXT_ARC_REL_UNCERTAINTY):
        note = ("the spectrum shows one arc above the electrodes' tail where the cell has "
                "two (the film's and an interface's), so the arc it shows may be both merged")
    elif at_bound:
        note = "the film's arc sits at the edge of what the fit allows, so its R is not fitted"
    elif u is None or not math.isfinite(u):
        note = "the spectrum does not constrain the film's resistance (no finite uncertainty)"
    elif u > MAX_R_REL_UNCERTAINTY:
        note = (f"the film's resistance is uncertain by ±{u:.1%} (1 s.d.), more than the "
                f"{MAX_R_REL_UNCERTAINTY:.1%} a conductivity is reported with")
    return replace(fit, film_resolved=not note, film_note=note)


def film_conductivity_S_cm(fit: EisFit, thickness_nm: float, area_cm2: float) -> float | None:
    """σ of the film from a fit: its fastest arc's R (see the module docstring), or None
    when the spectrum does not resolve that arc (`fit.film_note` says why)."""
    if not fit.film_resolved:
        return None
    return ionic_conductivity_S_cm(fit.film_resistance_ohm, thickness_nm, area_cm2)
