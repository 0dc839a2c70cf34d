"""Bounded nonlinear least squares for many starting points at once: Levenberg–Marquardt
on every row of a matrix of parameter vectors (`xs`) together.

The EIS fit (`eis.fit_spectrum`) starts each spectrum's search from 9–34 points and keeps
the best; its model takes every start in one array evaluation. A solver that takes the
starts one by one (scipy's `least_squares`) spends several times the model's work on its
own bookkeeping at each step of these small problems (≤ 13 parameters), and importing
scipy.optimize costs 0.5 s in every process that fits. Here each step of every start is a
few array operations (a stack of normal equations solved together).

Method (Marquardt 1963; damping update of Nielsen 1999, as in Madsen, Nielsen & Tingleff,
"Methods for non-linear least squares problems", 2004, §3.2): the step solves
(JᵀJ + λ·D) δ = −Jᵀr with D the diagonal of JᵀJ (Marquardt's scaling: each parameter in
the units its own slope gives, as scipy's x_scale="jac"). A step that lowers the cost is
taken and λ shrinks by max(1/3, 1 − (2ρ − 1)³), ρ being the cost's fall over the fall the
quadratic model predicted; a step that does not is refused and λ grows by ν (2, 4, 8 …).
Bounds: a step is clipped to them (to 1e-9 of the range inside), and a parameter at a
bound that the descent pushes further out is held there for that step (removed from the
equations), so the others find their best with it fixed.

A row stops, converged, when a step the model predicted well (ρ > 0.25) lowers its cost
by less than `ftol` of it (scipy's ftol test), when a taken step moves it by less than
`xtol` of its length, or when no step lowers its cost (λ past 1e16: it sits at a minimum
to the arithmetic's precision); and unconverged after `max_nfev` evaluations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

MAX_DAMPING = 1e16  # past this no step lowers the cost: the point is a minimum
MIN_DAMPING = 1e-10  # keeps the equations solvable where JᵀJ is singular


@dataclass(frozen=True)
class Reached:
    """Where every row stopped: its parameters `x` (k × n), cost ½Σr² `cost` (k), its
    residuals `fun` (k × m) and Jacobian `jac` (k × m × n) there, which parameters sit at a
    bound (`at_bound`, k × n), whether it `converged` (k), and the evaluations made (each
    an evaluation of every row still going)."""

    x: np.ndarray
    cost: np.ndarray
    fun: np.ndarray
    jac: np.ndarray
    at_bound: np.ndarray
    converged: np.ndarray
    nfev: int


def levenberg_marquardt(residuals_of: Callable[[np.ndarray], np.ndarray],
                        jacobian_of: Callable[[np.ndarray], np.ndarray],
                        xs: np.ndarray, lo: np.ndarray, hi: np.ndarray, *,
                        ftol: float = 1e-8, xtol: float = 1e-8,
                        max_nfev: int = 2000) -> Reached:
    """Minimise ½Σr² from every row of xs (k × n) within lo ≤ x ≤ hi (n each).

    residuals_of(xs) → k × m; jacobian_of(xs) → k × m × n, asked for right after the
    residuals at the same xs (a model may keep its pieces for it). A row whose starting
    residuals are not finite stays where it is, with an infinite cost."""
    inner_lo, inner_hi = lo + 1e-9 * (hi - lo), hi - 1e-9 * (hi - lo)
    xs = np.clip(np.array(xs, dtype=float), inner_lo, inner_hi)
    r = np.array(residuals_of(xs))
    cost = 0.5 * np.einsum("ij,ij->i", r, r)
    J = np.array(jacobian_of(xs))
    k_all = len(xs)
    lam = np.full(k_all, 1e-3)
    nu = np.full(k_all, 2.0)
    going = np.isfinite(cost)
    converged = ~going
    cost[~going] = np.inf
    eye = np.eye(xs.shape[1])
    nfev = 1
    while nfev < max_nfev:
        k = np.flatnonzero(going)
        if not len(k):
            break
        Jk, rk, xk = J[k], r[k], xs[k]
        Jt = Jk.transpose(0, 2, 1)
        A = Jt @ Jk
        g = (Jt @ rk[:, :, np.newaxis])[:, :, 0]
        d = np.diagonal(A, axis1=1, axis2=2)
        d = np.maximum(d, 1e-12 * d.max(axis=1, keepdims=True) + 1e-300)
        M = A + (lam[k, np.newaxis] * d)[:, :, np.newaxis] * eye
        descent = -g
        held = ((xk <= inner_lo) & (g > 0)) | ((xk >= inner_hi) & (g < 0))
        if held.any():
            i, j = np.nonzero(held)
            M[i, j, :] = 0.0
            M[i, :, j] = 0.0
            M[i, j, j] = 1.0
            descent[i, j] = 0.0
        with np.errstate(all="ignore"):
            step = np.linalg.solve(M, descent[:, :, np.newaxis])[:, :, 0]
            xn = np.clip(xk + step, inner_lo, inner_hi)
            s = xn - xk
            rn = residuals_of(xn)
            cn = 0.5 * np.einsum("ij,ij->i", rn, rn)
            As = (A @ s[:, :, np.newaxis])[:, :, 0]
            predicted = -np.einsum("ij,ij->i", s, g + 0.5 * As)
            rho = (cost[k] - cn) / predicted
        nfev += 1
        better = np.isfinite(cn) & (cn < cost[k]) & (predicted > 0)
        kb = k[better]
        if len(kb):
            Jn = jacobian_of(xn)  # right after the residuals at xn
            fell = cost[kb] - cn[better]
            small_fall = (fell < ftol * cost[kb]) & (rho[better] > 0.25)
            short = (np.linalg.norm(s[better], axis=1) <
                     xtol * (xtol + np.linalg.norm(xn[better], axis=1)))
            done = small_fall | short
            going[kb] = ~done
            converged[kb] = done
            xs[kb], r[kb], cost[kb], J[kb] = xn[better], rn[better], cn[better], Jn[better]
            lam[kb] = np.maximum(MIN_DAMPING, lam[kb] * np.maximum(
                1.0 / 3.0, 1.0 - (2.0 * rho[better] - 1.0) ** 3))
            nu[kb] = 2.0
        kw = k[~better]
        lam[kw] *= nu[kw]
        nu[kw] *= 2.0
        stuck = kw[lam[kw] > MAX_DAMPING]
        going[stuck] = False
        converged[stuck] = True
    at_bound = (xs <= inner_lo) | (xs >= inner_hi)
    return Reached(x=xs, cost=cost, fun=r, jac=J, at_bound=at_bound, converged=converged,
                   nfev=nfev)
