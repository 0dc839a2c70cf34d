"""Current-proportional resistance profiles of lithium on a collector: the nucleation
dip while plating and the stripping knee as the last Li goes (PlatingCell, FullCell)."""

from __future__ import annotations

from lipon_hw.sim.cells.tables import PiecewiseLinear


def nucleation_profile(x0: float, q_nuc: float, q_rec: float, r_growth: float,
                        r_peak: float, far: float) -> PiecewiseLinear:
    """Resistance (Ω) against Li deposited (C) from bare collector: rises to the growth value
    while the double layer charges (up to x0), peaks after q_nuc (the dip), recovers over
    q_rec, then stays flat."""
    x = [-far, 0.0, x0, x0 + q_nuc, x0 + q_nuc + q_rec, x0 + q_nuc + q_rec + far]
    return PiecewiseLinear(x, [0.0, 0.0, r_growth, r_peak, r_growth, r_growth])


def stripping_profile(x0: float, q_tail: float, r_max: float, far: float) -> PiecewiseLinear:
    """Resistance (Ω) against Li on the collector (C) while stripping: 0 down to x0 + q_tail,
    rising linearly to r_max at x0 (Li gone, the double layer left), flat below."""
    return PiecewiseLinear([x0 - far, x0, x0 + q_tail, x0 + q_tail + far],
                           [r_max, r_max, 0.0, 0.0])
