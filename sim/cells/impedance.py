"""Impedance building blocks of the simulated cells: (R ‖ CPE), CPE, parallel, the
finite-length reflective Warburg."""

from __future__ import annotations

import cmath
import math

INF = math.inf


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
