"""The blocking cell, Cu/LiPON/Cu (seed 000): film and interface arcs, the blocking double
layer, σ_e leakage."""

from __future__ import annotations

import math
from collections.abc import Sequence

from lipon_hw.sim.cells.circuit import Branch, Circuit
from lipon_hw.sim.cells.film import FilmCell, resistance_at
from lipon_hw.sim.cells.impedance import cpe, parallel, zarc
from lipon_hw.sim.cells.params import BlockingParams, LiponLayer
from lipon_hw.sim.cells.tables import PiecewiseLinear


class BlockingCell(FilmCell):
    """Cu/LiPON/Cu. Impedance: contact + (R1‖CPE1) + (R2‖CPE2) + (R_sc‖C_sc)
    + (CPE_dl ‖ R_e). R1 = t/(σ(T)·A), CPE1 from the geometric capacitance; R_e = t/(σ_e·A)
    carries the DC current that a 1 V hold settles to (picoamps for mm² pads). In the time
    domain each CPE is its capacitor at 1 rad/s; R_sc‖C_sc (C_sc = C_dl) is the slow part of
    the double-layer charging transient, below the 100 mHz end of the spectrum."""

    kind = "blocking"

    def __init__(self, lipon: Sequence[LiponLayer], area_cm2: float = 0.04,
                 params: BlockingParams | None = None, temperature_C: float = 25.0,
                 faults=(), name: str = "Cu/LiPON/Cu"):
        super().__init__(lipon, area_cm2, params or BlockingParams(), name, faults,
                         temperature_C)
        self._st.v = [0.0, 0.0, 0.0]

    @property
    def double_layer_F(self) -> float:
        return self.params.double_layer_F_cm2 * self.area_cm2

    def _branches(self, active) -> tuple[Branch, ...]:
        p = self.params
        r2 = resistance_at(p.interface_ohm_cm2, self.lipon[0].activation_eV, self.temperature_C) \
            / self.area_cm2 * self._interface_factor(active)
        r_sc = p.space_charge_tau_s / self.double_layer_F
        return (self._film_branch(), Branch(r2, p.interface_tau_s, p.interface_alpha),
                Branch(r_sc, p.space_charge_tau_s))

    def _circuit(self, direction: int, active) -> Circuit:
        c_dl = self.double_layer_F
        return Circuit(pos=PiecewiseLinear([0.0, 1.0], [0.0, 1.0 / c_dl]), neg=None,
                       kappa_p=1.0, kappa_n=0.0, r_series_ohm=self._series(active),
                       r_leak_ohm=self.electronic_resistance_ohm(),
                       r_shunt_ohm=self._shunt_ohm(active, self.params.soft_short_ohm),
                       branches=self._branches(active), short_ohm=self._short(active))

    def _impedance(self, f_Hz: float, st, c: Circuit) -> complex:
        w = 2 * math.pi * f_Hz
        p = self.params
        film, interface, space = c.branches
        z = c.r_series_ohm + zarc(film.R_ohm, film.tau_s, film.alpha, w) + \
            zarc(interface.R_ohm, interface.tau_s, interface.alpha, w) + \
            zarc(space.R_ohm, space.tau_s, 1.0, w)
        return z + parallel(cpe(self.double_layer_F, p.double_layer_alpha, w), c.r_leak_ohm)

    @property
    def spec(self) -> dict:
        return {**self._spec_common("blocking"),
                "layers": [x.to_dict() for x in self.lipon]}
