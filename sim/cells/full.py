"""The full cell, cathode/LiPON/(Li or anodeless) (seeds 002, 003, 004): OCV tables,
charge transfer, finite-length diffusion, capacity fade and coulombic efficiency per cycle,
Li plating on the first charge of an anodeless cell."""

from __future__ import annotations

import math
from collections.abc import Sequence

from lipon_hw.sim.cells.circuit import Branch, Circuit
from lipon_hw.sim.cells.film import FilmCell, resistance_at
from lipon_hw.sim.cells.impedance import parallel, warburg_reflective_excess, zarc
from lipon_hw.sim.cells.li_profiles import nucleation_profile, stripping_profile
from lipon_hw.sim.cells.params import (
    LI_UAH_CM2_PER_UM,
    REFERENCE_C,
    UAH_C,
    FullParams,
    LiponLayer,
    lnmo_params,
)
from lipon_hw.sim.cells.tables import PiecewiseLinear
from lipon_hw.sim.physics import arrhenius


def _window_slopes(table: PiecewiseLinear, window: float) -> list[float]:
    """Per segment of table (extensions included), the mean slope over a window around the
    segment's middle, kept inside the table (the extensions are steep walls, not data)."""
    xs = table.x
    mids = [xs[0]] + [0.5 * (a + b) for a, b in zip(xs, xs[1:], strict=False)] + [xs[-1]]
    out = []
    for m in mids:
        lo = min(max(m - 0.5 * window, xs[0]), xs[-1] - window)
        out.append((table(lo + window) - table(lo)) / window)
    return out


class FullCell(FilmCell):
    """Cathode / LiPON / Li metal (or anodeless collector).

    Source: E = OCV_cathode(q) − E_anode(n), q the charge taken out of the cathode and n the
    Li on the anode side (both C). E_anode is 0 V while Li covers the collector and climbs to
    the bare-collector potential as the last Li is stripped. Charging moves q by κ_q·s and
    n by CE·s: with a Li excess the inefficiency is a parasitic current (κ_q = CE); anodeless
    it is lost Li inventory (κ_q = 1), which is what fades an anodeless cell.

    Time domain: contact + R_LiPON(T) + R_ct(T, cycle)‖C_dl (quasi-static while faster than
    10 ms) + a diffusion
    branch R = τ_d·(dOCV/dq)/3 with time constant τ_d/15 (the two leading terms of the
    finite-length Warburg), τ_d = L²/D(T). Impedance adds the CPE shapes and the full
    Warburg. Capacity fades by fade_per_cycle; CE rises from ce_initial to ce_final.
    """

    kind = "full"

    def __init__(self, lipon: Sequence[LiponLayer], area_cm2: float, cathode_nm: float,
                 params: FullParams | None = None, li_nm: float | None = None,
                 temperature_C: float = 25.0, faults=(), name: str | None = None):
        params = params or lnmo_params()
        params.validate()
        if cathode_nm <= 0:
            raise ValueError(f"a {params.cathode} cell needs a cathode thickness above 0 nm")
        anode = "Li" if li_nm else "anodeless"
        super().__init__(lipon, area_cm2, params, name or f"{params.cathode}/LiPON/{anode}",
                         faults, temperature_C)
        self.cathode_nm = float(cathode_nm)
        self.li_nm = float(li_nm) if li_nm else 0.0
        self.anodeless = not li_nm
        self._ocv = PiecewiseLinear(params.ocv_soc, params.ocv_V)
        self._smooth_slopes = _window_slopes(self._ocv, params.diffusion_window_soc)
        self._mean_ocv_V = sum(params.ocv_V) / len(params.ocv_V)
        self.nucleated = False
        st = self._st
        st.p = params.initial_soc * self.design_capacity_C
        st.n = self._li_inventory_C()
        st.v = [0.0, 0.0, 0.0]

    # --- numbers a protocol or a test wants -------------------------------------------------
    @property
    def design_capacity_C(self) -> float:
        """Practical capacity of the fresh cathode (thickness × areal capacity × area)."""
        p = self.params
        return p.capacity_uAh_cm2_per_um * self.cathode_nm * 1e-3 * p.utilisation * \
            UAH_C * self.area_cm2

    @property
    def capacity_Ah(self) -> float:
        return self.design_capacity_C / 3600

    @property
    def nominal_capacity_C(self) -> float:
        return self.design_capacity_C

    def coulombic_efficiency(self, cycles: float) -> float:
        p = self.params
        if cycles < 0.5:
            return p.ce_first
        return p.ce_final - (p.ce_final - p.ce_initial) * math.exp(-cycles / p.ce_cycles)

    def charge_transfer_ohm(self, cycles: float | None = None) -> float:
        p = self.params
        n = self.age_cycles if cycles is None else cycles
        r = p.charge_transfer_ohm_cm2 * (1 + (p.formation_ct_factor - 1) *
                                         math.exp(-n / p.formation_cycles))
        return resistance_at(r, p.charge_transfer_activation_eV, self.temperature_C) / self.area_cm2

    def diffusion_tau_s(self) -> float:
        p = self.params
        d = arrhenius(p.diffusion_cm2_s, p.diffusion_activation_eV, self.temperature_C,
                      REFERENCE_C)
        return (self.cathode_nm * 1e-7) ** 2 / d

    def soc(self, t: float) -> float:
        self._advance(t)
        return self._st.p / self._capacity_now()

    def _capacity_now(self) -> float:
        return self.design_capacity_C * max(1 - self.params.fade_per_cycle * self.age_cycles,
                                            0.05)

    # --- circuit -------------------------------------------------------------------------------
    def _on_control(self) -> None:
        if self._st.n > self._dl_charge_C() + self.params.nucleation_charge_uAh_cm2 * \
                UAH_C * self.area_cm2:
            self.nucleated = True

    def _extra_state(self) -> dict:
        return {"nucleated": self.nucleated}

    def _restore_extra(self, extra: dict) -> None:
        self.nucleated = bool(extra.get("nucleated", False))

    def _li_inventory_C(self) -> float:
        """Charge of the evaporated Li anode (1 mAh/cm² ≈ 4.85 µm)."""
        return self.li_nm * 1e-3 * LI_UAH_CM2_PER_UM * UAH_C * self.area_cm2

    def _dl_charge_C(self) -> float:
        p = self.params
        return p.anode_double_layer_F_cm2 * self.area_cm2 * p.anode_bare_V

    def _circuit(self, direction: int, active) -> Circuit:
        p, a = self.params, self.area_cm2
        cap = self._capacity_now()
        pos = self._ocv.scaled(fx=cap)
        n_dl = self._dl_charge_C()
        far = 10 * (self.design_capacity_C + self._li_inventory_C()) + 1.0
        wall_V = p.anode_bare_V + p.stripped_wall_V
        neg = PiecewiseLinear([-n_dl - far, -n_dl, 0.0, n_dl, n_dl + far],
                              [wall_V + p.collector_dissolution_rise_V, wall_V,
                               p.anode_bare_V, 0.0, -p.li_slope_V])
        kinetic = None
        if direction > 0:
            ce = self.coulombic_efficiency(self.age_cycles)
            kappa_p, kappa_n = (1.0, ce) if self.anodeless else (ce, ce)
            if self.anodeless:
                i_ref = p.reference_current_A_cm2 * a
                r_g = p.growth_overpotential_V / i_ref
                excess = (p.nucleation_overpotential_V - p.growth_overpotential_V) / i_ref
                if self.nucleated:
                    excess *= p.renucleation_factor
                kinetic = ("n", nucleation_profile(
                    n_dl, p.nucleation_charge_uAh_cm2 * UAH_C * a,
                    p.recovery_charge_uAh_cm2 * UAH_C * a, r_g, r_g + excess, far))
        else:
            kappa_p = kappa_n = 1.0
            if self.anodeless:
                kinetic = ("n", stripping_profile(
                    n_dl, p.stripping_tail_uAh_cm2 * UAH_C * a, p.stripping_tail_ohm_cm2 / a,
                    far))
        r_ct = self.charge_transfer_ohm() * self._interface_factor(active)
        tau_d = self.diffusion_tau_s()
        branches = (self._film_branch(),
                    Branch(r_ct, r_ct * p.double_layer_F_cm2 * a, p.charge_transfer_alpha),
                    Branch(0.0, tau_d / 15, 1.0, slope_coeff_s=tau_d / 3))
        soft = p.soft_short_ohm or \
            p.soft_short_drain_h * 3600 * self._mean_ocv_V / self.design_capacity_C
        return Circuit(pos=pos, neg=neg, kappa_p=kappa_p, kappa_n=kappa_n,
                       r_series_ohm=self._series(active),
                       r_leak_ohm=self.electronic_resistance_ohm(),
                       r_shunt_ohm=self._shunt_ohm(active, soft),
                       branches=branches, kinetic=kinetic, short_ohm=self._short(active),
                       branch_slopes=[s / cap for s in self._smooth_slopes])

    def _impedance(self, f_Hz: float, st, c: Circuit) -> complex:
        w = 2 * math.pi * f_Hz
        film, ct, diff = c.branches
        slope_pos = c.pos.slope(c.pos.locate(st.p, False))
        tau_d = diff.slope_coeff_s * 3
        z = c.r_series_ohm + zarc(film.R_ohm, film.tau_s, film.alpha, w) + \
            zarc(ct.R_ohm, ct.tau_s, ct.alpha, w) + \
            warburg_reflective_excess(tau_d * slope_pos, tau_d, w)
        return z + parallel(self._source_slope(st, c) / (1j * w), c.r_leak_ohm)

    @property
    def spec(self) -> dict:
        layers = [{"material": self.params.cathode, "thickness_nm": self.cathode_nm}]
        layers += [x.to_dict() for x in self.lipon]
        if self.li_nm:
            layers.append({"material": "Li", "thickness_nm": self.li_nm})
        kind = {"LNMO": "lnmo"}.get(self.params.cathode,
                                    "lco_anodeless" if self.anodeless else "lco")
        return {**self._spec_common(kind), "layers": layers}
