"""Seeded defects of a sheet's cells, and the class a cell's truth carries.

Kinds (the rates and magnitudes are assumptions: 004 names the failure modes of a
production line, not their frequencies):

- `soft_short`: a pinhole through the LiPON, a resistance in parallel with the cell
  (log-normal ohms); it self-discharges the formed cell during the dwell, so its OCV
  reads low (the cell model's `soft_short` fault).
- `hard_short`: the terminals collapse onto a few ohms; it reads ~0 V (`hard_short`).
- `high_impedance`: voids at the collector interface (004), the charge-transfer
  resistance × a factor (log-uniform); the cell model's `high_interface` fault.
- `thin_electrolyte`: the LiPON locally thinner, a fraction of the map's thickness; it
  lowers the bulk resistance (|Z| at the high frequencies: R_LiPON ∝ thickness).

Every cell draws the same count of numbers whatever the rates, so changing one rate
moves no other cell's draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEFECT_KINDS = ("hard_short", "soft_short", "high_impedance", "thin_electrolyte")
CLASSES = ("good", *DEFECT_KINDS)  # a cell of several defects takes the first in DEFECT_KINDS
#: the cell model's fault (sim/cells/faults.py) behind each defect that is one
CELL_FAULT = {"soft_short": "soft_short", "hard_short": "hard_short",
              "high_impedance": "high_interface"}


@dataclass(frozen=True)
class DefectRates:
    """Per-cell probabilities and magnitudes (all assumptions); the defaults give, on a
    20×30 sheet, ~18 soft shorts, ~6 hard shorts, ~12 high-impedance cells, ~6 thin ones."""

    soft_short: float = 0.03  # assumption: a few % pinholes
    hard_short: float = 0.01  # assumption: ~1 %
    high_impedance: float = 0.02  # assumption: ~2 %
    thin_electrolyte: float = 0.01  # assumption: ~1 %
    soft_short_ohm_median: float = 3.0e6  # assumption: 4.1 V → 1.4 µA, a third of a
    #                                       0.16 cm² cell's charge in a day
    soft_short_ohm_sigma_ln: float = 1.0  # assumption: log-normal spread (99 % below 3e7 Ω:
    #                                       still ~25 mV down after a day)
    high_impedance_factor: tuple[float, float] = (3.0, 10.0)  # assumption: × R_ct,
    #                                                           log-uniform between these
    thin_fraction: tuple[float, float] = (0.4, 0.7)  # assumption: local LiPON / map's

    def validate(self) -> None:
        for kind in DEFECT_KINDS:
            p = getattr(self, kind)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"defect rate {kind} must be a probability in [0, 1], "
                                 f"not {p!r}")
        if self.soft_short_ohm_median <= 0 or self.soft_short_ohm_sigma_ln < 0:
            raise ValueError("soft_short_ohm_median must be positive and "
                             "soft_short_ohm_sigma_ln not negative")
        lo, hi = self.high_impedance_factor
        if not 1.0 < lo <= hi:
            raise ValueError("high_impedance_factor must be [low, high] with 1 < low ≤ high")
        lo, hi = self.thin_fraction
        if not 0.0 < lo <= hi < 1.0:
            raise ValueError("thin_fraction must be [low, high] with 0 < low ≤ high < 1")

    def draw(self, rng: np.random.Generator) -> list[dict]:
        """One cell's defects: [{kind, and ohm | factor | fraction}], in DEFECT_KINDS order."""
        u = rng.random(len(DEFECT_KINDS))
        z, v = rng.normal(), rng.random(2)
        magnitude = {
            "hard_short": {},
            "soft_short": {"ohm": self.soft_short_ohm_median *
                           math.exp(self.soft_short_ohm_sigma_ln * float(z))},
            "high_impedance": {"factor": _log_uniform(self.high_impedance_factor, v[0])},
            "thin_electrolyte": {"fraction": float(self.thin_fraction[0] + v[1] *
                                                   (self.thin_fraction[1] -
                                                    self.thin_fraction[0]))},
        }
        return [{"kind": kind, **magnitude[kind]}
                for kind, x in zip(DEFECT_KINDS, u, strict=True) if x < getattr(self, kind)]


def _log_uniform(bounds: tuple[float, float], v: float) -> float:
    lo, hi = bounds
    return float(math.exp(math.log(lo) + v * (math.log(hi) - math.log(lo))))


def cell_class(defects: list[dict]) -> str:
    """The class a cell's truth names: its most severe defect, or "good"."""
    kinds = {d["kind"] for d in defects}
    return next((k for k in DEFECT_KINDS if k in kinds), "good")


def cell_faults(defects: list[dict]) -> list[dict]:
    """The cell model's faults behind the defects (thin electrolyte is in the films)."""
    out = []
    for d in defects:
        kind = CELL_FAULT.get(d["kind"])
        if kind is not None:
            out.append({"kind": kind, **{k: v for k, v in d.items() if k in ("ohm", "factor")}})
    return out
