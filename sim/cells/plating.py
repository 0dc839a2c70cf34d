"""The plating cell, Li/LiPON/Cu (seed 000): galvanostatic plating with the nucleation
dip, stripping, coulombic efficiency that depends on stack pressure."""

from __future__ import annotations

import math
from collections.abc import Sequence

from lipon_hw.sim.cells.circuit import Branch, Circuit
from lipon_hw.sim.cells.film import FilmCell, resistance_at
from lipon_hw.sim.cells.impedance import parallel, zarc
from lipon_hw.sim.cells.li_profiles import nucleation_profile
from lipon_hw.sim.cells.params import LI_UAH_CM2_PER_UM, UAH_C, LiponLayer, PlatingParams
from lipon_hw.sim.cells.tables import PiecewiseLinear


class PlatingCell(FilmCell):
    """Li/LiPON/Cu, voltage of Cu against Li. Negative current plates Li on Cu: the double
    layer charges from the bare-Cu OCV to 0 V, the nucleation overpotential dips to ~−1 V
    (at −50 nA on 4 mm²) and recovers to a stable plateau. Positive current strips; a
    fraction 1 − CE(pressure) of what was plated stays behind as inactive Li, so stripping
    ends early and the voltage climbs back to the bare-Cu potential.

    The overpotentials are current-proportional resistances against plated charge (exact
    in current mode; in voltage mode taken at the start of each table segment)."""

    kind = "plating"

    def __init__(self, lipon: Sequence[LiponLayer], area_cm2: float = 0.04,
                 params: PlatingParams | None = None, au_seed_nm: float = 0.0,
                 temperature_C: float = 25.0, faults=(), name: str = "Li/LiPON/Cu"):
        super().__init__(lipon, area_cm2, params or PlatingParams(), name, faults,
                         temperature_C)
        self.au_seed_nm = float(au_seed_nm)
        self.nucleated = False
        self._st.v = [0.0, 0.0]

    @property
    def nominal_capacity_C(self) -> float:
        return self.params.plated_capacity_mAh_cm2 * 1000 * UAH_C * self.area_cm2

    @property
    def coulombic_efficiency(self) -> float:
        return self.params.coulombic_efficiency()

    def _dl_charge_C(self) -> float:
        p = self.params
        return p.collector_double_layer_F_cm2 * self.area_cm2 * p.bare_collector_V

    def _on_control(self) -> None:
        p = self.params
        if self._st.p >= self._dl_charge_C() + p.nucleation_charge_uAh_cm2 * UAH_C * \
                self.area_cm2:
            self.nucleated = True

    def _extra_state(self) -> dict:
        return {"nucleated": self.nucleated}

    def _restore_extra(self, extra: dict) -> None:
        self.nucleated = bool(extra.get("nucleated", False))

    def _circuit(self, direction: int, active) -> Circuit:
        p, a = self.params, self.area_cm2
        q_dl = self._dl_charge_C()
        big = 1000 * UAH_C * a  # 1 mAh/cm² of Li
        pos = PiecewiseLinear([-q_dl, 0.0, q_dl, q_dl + big],
                              [p.bare_collector_V + p.stripped_wall_V, p.bare_collector_V, 0.0,
                               -p.li_slope_V])
        i_ref = p.reference_current_A_cm2 * a
        r_series = self._series(active)
        kinetic = None
        if direction > 0:  # stripping
            kappa = -1.0
            r_series += p.stripping_overpotential_V / i_ref
        else:  # plating
            kappa = -p.coulombic_efficiency()
            r_g = p.growth_overpotential_V / i_ref
            excess = (p.nucleation_overpotential_V - p.growth_overpotential_V) / i_ref
            if self.au_seed_nm >= 1.0:
                excess *= p.au_seed_factor
            if self.nucleated:
                excess *= p.renucleation_factor
            kinetic = ("p", nucleation_profile(
                q_dl, p.nucleation_charge_uAh_cm2 * UAH_C * a,
                p.recovery_charge_uAh_cm2 * UAH_C * a, r_g, r_g + excess, 10 * big))
        r_li = resistance_at(p.li_interface_ohm_cm2, p.li_interface_activation_eV,
                             self.temperature_C) / a * self._interface_factor(active)
        branches = (self._film_branch(),
                    Branch(r_li, p.li_interface_tau_s, p.li_interface_alpha))
        return Circuit(pos=pos, neg=None, kappa_p=kappa, kappa_n=0.0, r_series_ohm=r_series,
                       r_leak_ohm=self.electronic_resistance_ohm(),
                       r_shunt_ohm=self._shunt_ohm(active, p.soft_short_ohm), branches=branches,
                       kinetic=kinetic, short_ohm=self._short(active))

    def _impedance(self, f_Hz: float, st, c: Circuit) -> complex:
        w = 2 * math.pi * f_Hz
        film, li = c.branches
        z = c.r_series_ohm + zarc(film.R_ohm, film.tau_s, film.alpha, w) + \
            zarc(li.R_ohm, li.tau_s, li.alpha, w)
        return z + parallel(self._source_slope(st, c) / (1j * w), c.r_leak_ohm)

    def plated_li_um(self, t: float) -> float:
        """Thickness of the active Li on the Cu at t (1 mAh/cm² ≈ 4.85 µm)."""
        q = max(self.state_C(t)[0] - self._dl_charge_C(), 0.0)
        return q / UAH_C / self.area_cm2 / LI_UAH_CM2_PER_UM

    @property
    def spec(self) -> dict:
        layers = [x.to_dict() for x in self.lipon]
        if self.au_seed_nm:
            layers.append({"material": "Au", "thickness_nm": self.au_seed_nm})
        return {**self._spec_common("plating"), "layers": layers}
