"""Sums of exponentials, f(τ) = c0 + Σ a·e^(−λτ) + Σ g·φ(β, τ): the exact solution of a
cell's circuit on one table segment, evaluated one reading at a time or in bulk with the
same numbers."""

from __future__ import annotations

import numpy as np


# --- one evaluation path for the exponentials ----------------------------------------------
# numpy picks its exp/expm1 kernels by CPU (on AVX-512 they differ from libm's by one ulp in
# a few % of values). Single readings therefore call the very ufuncs the bulk paths call,
# on a scalar, so a reading is the same number to the bit whichever path computes it, on
# every CPU. Across CPUs the numbers may differ by an ulp, so seeded figures agree to a
# stated tolerance, not to the bit (see tests/test_cells.py).
def exp_scalar(x: float) -> float:
    return float(np.exp(x))


def expm1_scalar(x: float) -> float:
    return float(np.expm1(x))


# --- sums of exponentials ------------------------------------------------------------------
def phi(beta: float, x: float) -> float:
    """(1 − e^{−βx})/β, the integral of e^{−βx}; x itself when β → 0."""
    z = beta * x
    return x if abs(z) < 1e-300 or beta == 0.0 else -expm1_scalar(-z) / beta


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
            v += a * exp_scalar(-lam * x)
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
            f0, f1 = a * exp_scalar(-lam * x0), a * exp_scalar(-lam * x1)
            lo, hi = (lo + f0, hi + f1) if f0 < f1 else (lo + f1, hi + f0)
        for g, beta in self.phis:
            f0, f1 = g * phi(beta, x0), g * phi(beta, x1)
            lo, hi = (lo + f0, hi + f1) if f0 < f1 else (lo + f1, hi + f0)
        return lo, hi

    def monotone_on(self, x0: float, x1: float) -> bool:
        """True when the derivative cannot change sign on [x0, x1]."""
        lo = hi = 0.0
        for a, lam in self.exps:
            d0, d1 = -a * lam * exp_scalar(-lam * x0), -a * lam * exp_scalar(-lam * x1)
            lo, hi = (lo + d0, hi + d1) if d0 < d1 else (lo + d1, hi + d0)
        for g, beta in self.phis:
            d0, d1 = g * exp_scalar(-beta * x0), g * exp_scalar(-beta * x1)
            lo, hi = (lo + d0, hi + d1) if d0 < d1 else (lo + d1, hi + d0)
        return lo >= 0.0 or hi <= 0.0

    def scales(self) -> list[float]:
        return [1 / lam for _, lam in self.exps if lam > 0] + \
               [1 / beta for _, beta in self.phis if beta > 0]
