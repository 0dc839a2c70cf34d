"""Equivalent-circuit fits of impedance spectra and the ionic conductivity they give.

Model: Z(ω) = R0 + Σ_k R_k / (1 + R_k Q_k (jω)^α_k)  [+ 1 / (Q_b (jω)^α_b)]
— a series resistance, a chain of (R‖CPE) arcs and, for blocking electrodes (Cu/LiPON/Cu),
a CPE tail. Each arc is fitted as (R, τ, α) with R·Q = τ^α, its characteristic frequency
f_c = 1/(2πτ) being the apex of the arc.

Fitting: bounded `scipy.optimize.least_squares` on the real and imaginary residuals, each
divided by |Z| (so every decade of the spectrum counts, not only the large low-frequency
impedances), R and τ and Q in log10. Initial guesses come from the spectrum: the tail's
exponent from the phase of the lowest frequencies and its Q from |Z| there; after the tail
is subtracted, the apexes of −Z'' give each arc's τ and, through the ZARC apex height
−Z''max = (R/2)·tan(απ/4), its R; R0 from the high-frequency intercept. Arcs the apexes do
not reveal (a shoulder under the tail) are seeded at several places and the best fit kept.

The film's resistance: the arc with the highest characteristic frequency. In the seeds'
model (film + interface + blocking tail) the film arc is the bulk resistance in parallel
with the geometric capacitance of the film (~0.1 nF for mm² pads), whose time constant is
orders of magnitude shorter than the interface's or the double layer's, so the fastest arc
is the film. σ = t / (R·A).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import least_squares

from lipon_hw.errors import InputError

DEFAULT_ALPHA = 0.9


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
    """The blocking electrodes' CPE: Z = 1 / (Q (jω)^α)."""

    Q: float
    alpha: float

    def impedance(self, w) -> np.ndarray:
        return 1.0 / (self.Q * (1j * np.asarray(w)) ** self.alpha)


@dataclass(frozen=True)
class EisFit:
    """A fitted spectrum. `arcs` are ordered by time constant, fastest (highest
    characteristic frequency) first; `rms_relative` is the root mean square of the
    |Z|-weighted real and imaginary residuals (0.01 ≈ a 1 % misfit)."""

    R0_ohm: float
    arcs: tuple[Arc, ...]
    tail: BlockingTail | None
    rms_relative: float
    success: bool
    n_points: int
    message: str = ""
    extra: dict = field(default_factory=dict)

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
        return {"R0_ohm": self.R0_ohm,
                "arcs": [{"R_ohm": a.R_ohm, "Q": a.Q, "alpha": a.alpha, "tau_s": a.tau_s,
                          "f_peak_Hz": a.f_peak_Hz} for a in self.arcs],
                "tail": None if self.tail is None else {"Q": self.tail.Q,
                                                        "alpha": self.tail.alpha},
                "rms_relative": self.rms_relative, "success": self.success,
                "n_points": self.n_points}


def ionic_conductivity_S_cm(R_ohm: float, thickness_nm: float, area_cm2: float) -> float:
    """σ = t / (R·A), thickness in nm, area in cm², result in S/cm."""
    for name, value in (("R_ohm", R_ohm), ("thickness_nm", thickness_nm),
                        ("area_cm2", area_cm2)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise InputError(f"ionic conductivity needs a positive {name}, not {value!r}")
    return thickness_nm * 1e-7 / (R_ohm * area_cm2)


# --- the model in fitting coordinates ------------------------------------------------------------
def _model(x: np.ndarray, w: np.ndarray, n_arcs: int, blocking: bool) -> np.ndarray:
    z = np.full(w.shape, x[0], dtype=complex)
    for k in range(n_arcs):
        lr, lt, a = x[1 + 3 * k: 4 + 3 * k]
        z = z + 10.0 ** lr / (1.0 + (1j * w * 10.0 ** lt) ** a)
    if blocking:
        lq, a = x[1 + 3 * n_arcs: 3 + 3 * n_arcs]
        z = z + 1.0 / (10.0 ** lq * (1j * w) ** a)
    return z


def _residuals(x, w, z, weight, n_arcs, blocking):
    d = (_model(x, w, n_arcs, blocking) - z) * weight
    return np.concatenate((d.real, d.imag))


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
def _tail_guess(w: np.ndarray, z: np.ndarray) -> tuple[float, float]:
    """(log10 Q, α) of the blocking tail from the lowest-frequency points."""
    low = slice(len(w) - max(3, len(w) // 15), len(w))
    phase = -np.angle(z[low])
    alpha = float(np.clip(np.median(phase) / (np.pi / 2), 0.5, 1.0))
    q = np.median(1.0 / (np.abs(z[low]) * w[low] ** alpha))
    return float(np.log10(q)), alpha


def _apexes(w: np.ndarray, neg_im: np.ndarray) -> list[tuple[float, float]]:
    """Local maxima of a lightly smoothed −Z'' as (height, ω), highest first."""
    y = neg_im.copy()
    if len(y) >= 5:
        y[1:-1] = (neg_im[:-2] + 2 * neg_im[1:-1] + neg_im[2:]) / 4
    top = np.max(y) if len(y) else 0.0
    peaks = [(float(y[k]), float(w[k])) for k in range(1, len(y) - 1)
             if y[k] > y[k - 1] and y[k] >= y[k + 1] and y[k] > 0.02 * top]
    return sorted(peaks, reverse=True)


def _starts(w, z, n_arcs: int, blocking: bool) -> list[np.ndarray]:
    """Initial parameter vectors: the apex-based guess plus a few placements of the arcs
    the apexes do not show."""
    tail = _tail_guess(w, z) if blocking else None
    zr = z - (1.0 / (10 ** tail[0] * (1j * w) ** tail[1]) if blocking else 0.0)
    peaks = _apexes(w, -zr.imag)[:n_arcs]
    t_apex = DEFAULT_ALPHA * np.pi / 4
    arcs = [(2 * h / math.tan(t_apex), 1.0 / wp) for h, wp in peaks]
    span = max(float(np.max(zr.real) - np.min(zr.real)), float(np.min(np.abs(z))))
    lw_min, lw_max = math.log10(w[-1]), math.log10(w[0])
    missing = n_arcs - len(arcs)
    placements: list[list[tuple[float, float]]] = [[]]
    if missing > 0:
        known = [math.log10(1 / t) for _, t in arcs]
        grid = np.linspace(lw_min + 0.5, lw_max - 0.5, 7)
        free = [g for g in grid if all(abs(g - k) > 0.7 for k in known)] or list(grid)
        r_each = max(span - sum(r for r, _ in arcs), 0.1 * span) / missing
        placements = []
        for j in range(len(free)):
            picks = [free[(j + m * 2) % len(free)] for m in range(missing)]
            placements.append([(r_each, 10 ** -g) for g in picks])
    starts = []
    for extra in placements:
        chosen = sorted(arcs + extra, key=lambda a: a[1])
        r0 = max(float(np.min(z.real)) - sum(
            float(np.real(r / (1 + (1j * w[0] * t) ** DEFAULT_ALPHA))) for r, t in chosen), 0.0)
        x = [r0]
        for r, t in chosen:
            x += [math.log10(max(r, 1e-6)), math.log10(t), DEFAULT_ALPHA]
        if blocking:
            x += list(tail)
        starts.append(np.array(x, dtype=float))
    return starts


def _bounds(w, z, n_arcs: int, blocking: bool, x0: np.ndarray):
    zmax = float(np.max(np.abs(z)))
    lr = (math.log10(float(np.min(np.abs(z)))) - 4, math.log10(zmax) + 3)
    lt = (-math.log10(w[0]) - 3, -math.log10(w[-1]) + 3)
    lo, hi = [0.0], [max(float(np.max(z.real)), 1e-9)]
    for _ in range(n_arcs):
        lo += [lr[0], lt[0], 0.4]
        hi += [lr[1], lt[1], 1.0]
    if blocking:
        lo += [-25.0, 0.3]
        hi += [5.0, 1.0]
    lo, hi = np.array(lo), np.array(hi)
    return lo, hi, np.clip(x0, lo + 1e-9 * (hi - lo), hi - 1e-9 * (hi - lo))


def fit_spectrum(f_Hz, z_ohm, n_arcs: int = 2, blocking: bool = True) -> EisFit:
    """Fit R0 + n_arcs (R‖CPE) [+ blocking CPE tail] to a spectrum.

    f_Hz: frequencies (any order); z_ohm: complex impedances (Z' + jZ'', Z'' < 0 for a
    capacitive cell). At least 3 points per fitted parameter are expected."""
    f, z = _validate(f_Hz, z_ohm, n_arcs)
    n_par = 1 + 3 * n_arcs + (2 if blocking else 0)
    if len(f) < n_par + 2:
        raise InputError(f"EIS fit: {len(f)} points cannot fit {n_par} parameters")
    w = 2 * np.pi * f
    weight = 1.0 / np.abs(z)
    best = None
    for x0 in _starts(w, z, n_arcs, blocking):
        lo, hi, x0 = _bounds(w, z, n_arcs, blocking, x0)
        res = least_squares(_residuals, x0, bounds=(lo, hi), x_scale="jac",
                            args=(w, z, weight, n_arcs, blocking), max_nfev=2000)
        if best is None or res.cost < best.cost:
            best = res
    x = best.x
    arcs = []
    for k in range(n_arcs):
        lr, lt, a = x[1 + 3 * k: 4 + 3 * k]
        R, tau = 10.0 ** lr, 10.0 ** lt
        arcs.append(Arc(R_ohm=float(R), Q=float(tau ** a / R), alpha=float(a), tau_s=float(tau)))
    arcs.sort(key=lambda a: a.tau_s)
    tail = BlockingTail(Q=float(10.0 ** x[-2]), alpha=float(x[-1])) if blocking else None
    rms = float(np.sqrt(np.mean(best.fun ** 2)))
    return EisFit(R0_ohm=float(x[0]), arcs=tuple(arcs), tail=tail, rms_relative=rms,
                  success=bool(best.success), n_points=len(f), message=str(best.message))


def film_conductivity_S_cm(fit: EisFit, thickness_nm: float, area_cm2: float) -> float:
    """σ of the film from a fit: its fastest arc's R (see the module docstring)."""
    return ionic_conductivity_S_cm(fit.film_resistance_ohm, thickness_nm, area_cm2)
