"""Film thickness over a roll-to-roll sheet: the cosine law integrated over the coater.

A roll-to-roll coater (seed 004: LCO and LiPON on stainless steel web) sputters from a
rectangular cathode that spans the web: a line source of length L at height h (the
throw) above the web, its long axis across the web (x), the web moving under it along y.
Each element ds of the target deposits on the web by the cosine law of a small source
facing a flat substrate (`sim.physics.cosine_law_factor`: (1 + (r/h)²)⁻²). A point of the
web at cross-web offset x collects, while it passes under the target,

    t(x) ∝ ∫ds ∫dy (1 + ((x−s)² + y²)/h²)⁻²  =  (πh⁴/2) ∫ds (h² + (x−s)²)^(−3/2)
         ∝ F(L/2 − x) + F(L/2 + x),       F(u) = u / √(h² + u²),

so the web is thickest on the target's centre line and thins towards its edges (the
test suite checks the closed form against the double integral of `cosine_law_factor`).
Down the web the source does not vary in space, only in time: the rate drifts slowly
as the target wears (PHYSICS.md §3: target wear lowers the rate), so the later a stretch
of web was coated the thinner it is, linearly in its distance along the web.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Coater:
    """One film's source on the roll-to-roll line; every number is an assumption (004
    gives none). The defaults give the ±5–10 % centre-to-edge fall-off PHYSICS.md §3
    assumes on a 15 cm wide sheet (30 cells at 5 mm pitch)."""

    throw_cm: float = 7.0  # assumption: target face to web
    target_length_cm: float = 28.0  # assumption: rectangular cathode across a ~15 cm web
    axis_offset_mm: float = 0.0  # assumption: the sheet's centre line runs under the
    #                              target's centre (x of the axis from the sheet centre)
    wear_drift_per_m: float = 0.01  # assumption: relative rate lost per metre of web coated
    #                                 (target wear), i.e. 0.1 % down a 10 cm sheet

    def validate(self, name: str) -> None:
        if self.throw_cm <= 0 or self.target_length_cm <= 0:
            raise ValueError(f"{name}: throw_cm and target_length_cm must be positive")
        if not 0 <= self.wear_drift_per_m < 10:
            raise ValueError(f"{name}: wear_drift_per_m must be in [0, 10)")

    def cross_web(self, x_mm) -> np.ndarray:
        """Thickness at cross-web offsets x_mm from the sheet centre, relative to the
        sheet centre (the integrated cosine law above)."""
        h, half = self.throw_cm, 0.5 * self.target_length_cm

        def profile(x_cm):
            return _f(half - x_cm, h) + _f(half + x_cm, h)

        a = self.axis_offset_mm / 10.0
        return profile(np.asarray(x_mm, dtype=float) / 10.0 - a) / profile(-a)

    def down_web(self, y_mm) -> np.ndarray:
        """Thickness at y_mm down the web from the sheet centre (coated later for y > 0),
        relative to the sheet centre: the rate's wear drift."""
        return 1.0 - self.wear_drift_per_m * np.asarray(y_mm, dtype=float) / 1000.0

    def factor_map(self, rows: int, cols: int, pitch_mm: tuple[float, float]) -> np.ndarray:
        """rows × cols thickness factors of the cells' centres, relative to the sheet
        centre (x along columns, across the web; y along rows, down the web)."""
        x = (np.arange(cols) - 0.5 * (cols - 1)) * pitch_mm[0]
        y = (np.arange(rows) - 0.5 * (rows - 1)) * pitch_mm[1]
        return np.outer(self.down_web(y), self.cross_web(x))


def _f(u, h):
    return u / np.sqrt(h * h + u * u)


#: the cathode (LCO) and LiPON sources: two coaters of the line, each its own map
CATHODE_COATER = Coater(throw_cm=7.0, target_length_cm=30.0)  # ≈ 6.4 % at the 30-col edge
LIPON_COATER = Coater(throw_cm=7.0, target_length_cm=28.0)  # ≈ 8.1 % at the 30-col edge
