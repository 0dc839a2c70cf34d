"""Simulated cells on the potentiostat channels (PHYSICS.md §6).

- `BlockingCell`  Cu/LiPON/Cu: (R1‖CPE1) film + (R2‖CPE2) interface + blocking double layer,
  electronic leakage through σ_e across it (DC polarization settles to picoamps).
- `PlatingCell`   Li/LiPON/Cu: galvanostatic plating on Cu with the ~−1 V nucleation dip,
  stripping, coulombic efficiency that depends on stack pressure.
- `FullCell`      LNMO/LiPON/Li and LCO/LiPON/(Li or anodeless): OCV(SOC) tables, R_LiPON
  from thickness and σ(T), (R_ct‖CPE), a finite-length diffusion term, capacity fade and
  coulombic efficiency per cycle, Li plating on the first charge of an anodeless cell.

Every cell follows the contract of `cell_models.Cell` (set_control, voltage_V, current_A,
impedance_ohm, next_crossing, snapshot/restore) and is integrated exactly, segment by
segment, by `cell_models.CellModel`. Numbers come from the seeds; every number no source
gives is a dataclass field marked "assumption".

Build cells with `cell_from_films(kind, layers, area_cm2, …)` from a sample's film stack
(the simulated lab's truth format: dicts with material and thickness_nm, LiPON layers with
sigma_S_cm, activation_eV, sigma_electronic_S_cm) or `cell_from_spec(dict)` for cells a
station declares. `cell.spec` is a dict that `cell_from_spec` turns back into the same cell.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from lipon_hw.sim.cell_models import (
    Branch,
    Cell,
    CellModel,
    Circuit,
    PiecewiseLinear,
    as_fault,
    cpe,
    draw_faults,
    parallel,
    warburg_reflective_excess,
    zarc,
)
from lipon_hw.sim.physics import arrhenius

__all__ = [
    "BlockingCell", "BlockingParams", "Cell", "CellParams", "FullCell", "FullParams",
    "LiponLayer", "PlatingCell", "PlatingParams", "cell_from_films", "cell_from_spec",
    "default_layers", "draw_faults", "lco_params", "lnmo_params", "KINDS",
]

EPS0_F_CM = 8.8541878128e-14
UAH_C = 3.6e-3  # one µAh in coulombs
LI_UAH_CM2_PER_UM = 1000 / 4.85  # seeds 000/002: 1 mAh/cm² ≈ 4.85 µm of Li
REFERENCE_C = 25.0
KINDS = ("blocking", "plating", "lnmo", "lco", "lco_anodeless", "full")


# --- the electrolyte film --------------------------------------------------------------------
@dataclass
class LiponLayer:
    """One LiPON (or Li3PO4) layer of a sample, as the simulated sputter tool records it."""

    thickness_nm: float
    sigma_S_cm: float = 2.6e-6  # seed 002 Table 6.1 (RF sputtering), at 25 °C
    activation_eV: float = 0.55  # seeds 003/000/002
    sigma_electronic_S_cm: float = 1.2e-14  # seed 000 (DC polarization at 1 V)
    material: str = "LiPON"

    def area_resistance_ohm_cm2(self, temperature_C: float) -> float:
        sigma = arrhenius(self.sigma_S_cm, self.activation_eV, temperature_C, REFERENCE_C)
        return self.thickness_nm * 1e-7 / sigma

    def to_dict(self) -> dict:
        return asdict(self)


def _lipon_R(layers: Sequence[LiponLayer], area_cm2: float, temperature_C: float) -> float:
    return sum(x.area_resistance_ohm_cm2(temperature_C) for x in layers) / area_cm2


def _electronic_R(layers: Sequence[LiponLayer], area_cm2: float) -> float:
    """σ_e is taken as temperature-independent (assumption: no source gives its Ea)."""
    return sum(x.thickness_nm * 1e-7 / x.sigma_electronic_S_cm for x in layers) / area_cm2


# --- parameters ------------------------------------------------------------------------------
@dataclass
class CellParams:
    """What every cell shares. Fields marked assumption have no source."""

    contact_ohm: float = 5.0  # assumption: probes and leads in series
    lipon_permittivity: float = 15.0  # assumption: εr of LiPON (geometric capacitance, CPE1)
    film_alpha: float = 0.92  # assumption: CPE exponent of the film arc
    soft_short_ohm: float | None = 1.0e8  # assumption: a pinhole; 1 V → 10 nA, not σ_e's pA
    hard_short_ohm: float = 10.0  # assumption: terminals collapse onto this
    open_ohm: float = 1.0e14  # assumption: an open contact (fA at 1 V, below σ_e's pA)
    high_interface_factor: float = 20.0  # assumption: voids at the collector (004) × R_int
    spread_log: float = 0.10  # assumption: cell-to-cell lognormal spread of R_int (with rng)


@dataclass
class BlockingParams(CellParams):
    """Cu/LiPON/Cu, as the seed fits it: (R1‖CPE1)(R2‖CPE2) plus the blocking double layer."""

    interface_ohm_cm2: float = 50.0  # assumption: R2·A (seed 000 names R2, gives no value)
    interface_tau_s: float = 5.0e-5  # assumption: R2‖CPE2 apex near 3 kHz ("medium frequency")
    interface_alpha: float = 0.85  # assumption
    double_layer_F_cm2: float = 2.5e-6  # assumption: CPE_dl Q per area (F·s^(α−1))
    double_layer_alpha: float = 0.90  # assumption
    space_charge_tau_s: float = 60.0  # assumption: slow interfacial relaxation of a 1 V step


@dataclass
class PlatingParams(CellParams):
    """Li/LiPON/Cu under −50 nA (seed 000): nucleation dip, plateau, stripping, CE(pressure)."""

    bare_collector_V: float = 2.8  # assumption: OCV of Li against bare Cu
    collector_double_layer_F_cm2: float = 10e-6  # assumption: charge before Li deposits
    reference_current_A_cm2: float = 1.25e-6  # assumption: −50 nA (seed) on the 0.04 cm² pad
    nucleation_overpotential_V: float = 1.0  # seed 000: "~−1 V" dip at nucleation
    growth_overpotential_V: float = 0.08  # assumption: the stable plateau after the dip
    stripping_overpotential_V: float = 0.05  # assumption
    nucleation_charge_uAh_cm2: float = 0.3  # assumption: charge to the bottom of the dip
    recovery_charge_uAh_cm2: float = 2.0  # assumption: charge back up to the plateau
    renucleation_factor: float = 0.5  # assumption: later platings dip less (Li residues)
    au_seed_factor: float = 0.3  # assumption: a ≥ 1 nm Au seed (000) lowers nucleation
    li_interface_ohm_cm2: float = 20.0  # assumption: Li/LiPON charge transfer
    li_interface_tau_s: float = 2.0e-4  # assumption
    li_interface_activation_eV: float = 0.6  # assumption
    li_interface_alpha: float = 0.85  # assumption
    stripped_wall_V: float = 0.7  # assumption: how far past bare Cu the voltage climbs once
    #                               the active Li is gone (then the table's slope continues)
    li_slope_V: float = 0.002  # assumption: drift of Li-on-Cu potential over 1 mAh/cm²
    #                           (a numerical nicety: tables must be strictly monotone)
    pressure_kPa: float = 87.5  # seed 000: stack pressure of the 82.7 % cell
    ce_at_anchor: float = 0.827  # seed 000: CE at the anchor pressure
    anchor_pressure_kPa: float = 87.5  # seed 000
    ce_no_pressure: float = 0.60  # assumption: "worse with no pressure" (000 gives no number)
    ce_max: float = 0.90  # assumption: CE saturates with pressure
    plated_capacity_mAh_cm2: float = 0.31  # seed 000: one plating; sets the cycle count scale

    def coulombic_efficiency(self) -> float:
        """CE(P) = CE0 + (CEmax − CE0)·P/(P + P½), with P½ put through the seed's anchor
        (assumption on the shape: saturating in pressure)."""
        frac = (self.ce_at_anchor - self.ce_no_pressure) / (self.ce_max - self.ce_no_pressure)
        p_half = self.anchor_pressure_kPa * (1 - frac) / frac
        p = max(self.pressure_kPa, 0.0)
        return self.ce_no_pressure + (self.ce_max - self.ce_no_pressure) * p / (p + p_half)


@dataclass
class FullParams(CellParams):
    """A thin-film full cell. Defaults are LNMO's (seed 002); see `lco_params` for LCO."""

    cathode: str = "LNMO"
    # OCV of the cathode vs Li, against SOC of its practical capacity (shape: assumption
    # anchored on the seed's plateaus and window)
    ocv_soc: tuple[float, ...] = (-0.040, -0.035, -0.030, -0.010, 0.000, 0.010, 0.030, 0.060,
                                  0.090, 0.110, 0.130, 0.160, 0.300, 0.480, 0.520, 0.700,
                                  0.850, 0.930, 0.970, 0.990, 1.000, 1.010)
    ocv_V: tuple[float, ...] = (2.50, 2.75, 2.85, 2.92, 3.30, 3.80, 3.98, 4.03, 4.08, 4.20,
                                4.55, 4.64, 4.675, 4.695, 4.715, 4.735, 4.750, 4.770, 4.800,
                                4.870, 4.950, 5.150)
    capacity_uAh_cm2_per_um: float = 30.0 / 0.65  # seed 002: 0.03 mAh/cm² for 650 nm
    utilisation: float = 1.0  # the LNMO figure above is already a measured capacity
    utilisation_range: tuple[float, float] = (0.97, 1.03)  # seed 002: ~3 % (area estimate)
    initial_soc: float = -0.03  # seed 002: ~3 % overlithiated surface → 2.9 V, 1st charge only
    charge_transfer_ohm_cm2: float = 100.0  # assumption
    charge_transfer_alpha: float = 0.80  # assumption
    charge_transfer_activation_eV: float = 0.60  # assumption
    double_layer_F_cm2: float = 10e-6  # assumption: τ_ct = R_ct·C_dl
    formation_ct_factor: float = 1.0  # R_ct(first cycle)/R_ct(formed); LNMO none (assumption)
    formation_cycles: float = 7.0  # e-folds of that decay (LCO: ~20 cycles = 3 e-folds, 003)
    # assumption: Li diffusivity in the cathode film, at the low end of thin-film LNMO
    # reports (1e-10 to 1e-9 cm²/s); 1e-11 made every ~2C charge from the discharged state
    # climb an unphysical hump to ~5.05 V (R_diff = τ_d/3 · dE/dQ on the steep low-SOC OCV)
    diffusion_cm2_s: float = 1.0e-10
    diffusion_activation_eV: float = 0.40  # assumption
    diffusion_window_soc: float = 0.10  # assumption: the surface runs ahead of the bulk by
    #                                     up to this; the DC diffusion term sees the OCV slope
    #                                     averaged over it, not a narrow steep step
    ce_first: float = 0.990  # assumption: CE of the very first charge (LNMO: as ce_initial;
    #                          its first-cycle loss is the 2.9 V plateau, seed 002)
    ce_initial: float = 0.990  # assumption: CE(n) = final − (final − initial)·e^(−n/cycles)
    ce_final: float = 0.9990  # → > 99.70 % after 100 cycles, > 99.85 % after 400 (seed 002)
    ce_cycles: float = 50.0  # assumption (see ce_final)
    fade_per_cycle: float = 1.0e-5  # assumption: "no obvious degradation after 535 cycles"
    anode_bare_V: float = 2.9  # assumption: bare Cu/SS collector against Li
    anode_double_layer_F_cm2: float = 10e-6  # assumption
    stripped_wall_V: float = 0.5  # assumption: anode climbs past bare collector once Li is gone
    # assumption: past the wall the bare collector itself dissolves, near 3.4–3.6 V vs Li,
    # so an emptied anode holds there instead of driving the cell far below 0 V
    collector_dissolution_rise_V: float = 0.2
    li_slope_V: float = 0.001  # assumption: Li metal potential drift (strict monotonicity)
    reference_current_A_cm2: float = 6.0e-5  # assumption: ~C/10 of 0.6 mAh/cm² (nucleation)
    nucleation_overpotential_V: float = 0.15  # assumption: anodeless first-charge spike
    growth_overpotential_V: float = 0.02  # assumption
    nucleation_charge_uAh_cm2: float = 0.5  # assumption
    recovery_charge_uAh_cm2: float = 3.0  # assumption
    renucleation_factor: float = 0.3  # assumption: later charges re-nucleate on residues
    # assumption: the last plated Li strips through a shrinking contact (voids open at the
    # Li/LiPON interface as the film thins), so the stripping resistance climbs from 0 to
    # stripping_tail_ohm_cm2 over the last stripping_tail_uAh_cm2 (~15 nm of Li): the end
    # of an anodeless discharge is a knee of a few tens of mV/s at C/2, not the double
    # layer's 3 V in 0.1 s
    stripping_tail_uAh_cm2: float = 3.0
    stripping_tail_ohm_cm2: float = 5000.0
    soft_short_ohm: float | None = None  # None: the resistance that drains the cell in
    soft_short_drain_h: float = 100.0  # ~100 h at its mean OCV (assumption)

    def validate(self) -> None:
        table = PiecewiseLinear(self.ocv_soc, self.ocv_V)
        if not all(s > 0 for s in table.slopes):
            raise ValueError(f"the {self.cathode} OCV table must rise strictly with SOC")


def lnmo_params(**overrides) -> FullParams:
    """LNMO/LiPON/Li (seed 002): 650 nm LNMO, 0.03 mAh/cm², 4.7 V plateau, 3.5–5.1 V."""
    return replace(FullParams(), **overrides)


def lco_params(anodeless: bool = True, **overrides) -> FullParams:
    """LCO/LiPON/(Li or anodeless) (003, 004): 69 µAh/cm² per µm, 80–95 % utilisation,
    3.0–4.2 V, R_ct falling over ~20 cycles, ~95 % retention after 150 cycles.

    004's utilisation is of what the cells deliver (0.55–0.66 mAh/cm² = 80–95 % of 0.69),
    so an anodeless cathode gives that over the first charge's CE: it also supplies the Li
    the first charge loses."""
    ce_first = 0.97 if anodeless else 0.95  # see the field below
    base = FullParams(
        cathode="LCO",
        ocv_soc=(-0.020, 0.000, 0.010, 0.030, 0.080, 0.200, 0.400, 0.520, 0.600, 0.700, 0.800,
                 0.900, 1.000, 1.100),
        ocv_V=(2.50, 3.30, 3.70, 3.84, 3.89, 3.915, 3.93, 3.95, 3.99, 4.04, 4.08, 4.13, 4.20,
               4.30),
        capacity_uAh_cm2_per_um=69.0,  # seed 004: 0.69 mAh/cm² at 10 µm, in theory
        # assumption: middle of the seed's 80–95 % (anodeless: over the first-charge CE)
        utilisation=0.875 / (ce_first if anodeless else 1.0),
        utilisation_range=tuple(u / (ce_first if anodeless else 1.0) for u in (0.80, 0.95)),
        initial_soc=0.0,
        charge_transfer_ohm_cm2=60.0,  # assumption (formed)
        formation_ct_factor=5.0,  # assumption: R_ct falls over the first ~20 cycles (003)
        diffusion_cm2_s=1.0e-9,  # assumption (10 µm cathodes cycle well at C/5)
        # anodeless: lost Li is lost capacity; 0.9997/cycle → ~95 % after 150 cycles (004)
        # assumption (moved from 0.88, issue 9): CE of the first charge. 004 quotes the
        # cells' delivered 0.55–0.66 mAh/cm² as 80–95 % of the 0.69 theoretical, so its
        # utilisation already contains the first-charge loss, and a cathode cannot give
        # more than its theoretical capacity on that charge: at the 95 % end the loss is
        # ≤ 5 %. Against LiPON the plated Li meets a self-limiting, nm-thick interphase
        # (003 §3), not a liquid electrolyte's SEI (whose 10–20 % loss 0.88 resembled);
        # 0.97 delivers ~0.58 mAh/cm² at C/2 from the nominal cell. A discharge ends on
        # the emptied anode's stripping knee (stripping_tail_*), within one measurement
        # of its 3.0 V cut-off.
        ce_first=ce_first,
        ce_initial=0.9985,  # assumption
        ce_final=0.9997,  # assumption (see above)
        ce_cycles=10.0,  # assumption
        # with a Li excess the loss comes from the cathode instead (assumption: same 95 %)
        fade_per_cycle=0.0 if anodeless else 3.3e-4,
    )
    return replace(base, **overrides)


# --- shared helpers ----------------------------------------------------------------------------
def _arr(value: float, ea_eV: float, temperature_C: float) -> float:
    """A resistance at temperature_C from its 25 °C value (activation ea_eV)."""
    return value / arrhenius(1.0, ea_eV, temperature_C, REFERENCE_C)


def _nucleation_profile(x0: float, q_nuc: float, q_rec: float, r_growth: float,
                        r_peak: float, far: float) -> PiecewiseLinear:
    """Resistance (Ω) against Li deposited (C) from bare collector: rises to the growth value
    while the double layer charges (up to x0), peaks after q_nuc (the dip), recovers over
    q_rec, then stays flat."""
    x = [-far, 0.0, x0, x0 + q_nuc, x0 + q_nuc + q_rec, x0 + q_nuc + q_rec + far]
    return PiecewiseLinear(x, [0.0, 0.0, r_growth, r_peak, r_growth, r_growth])


def _stripping_profile(x0: float, q_tail: float, r_max: float, far: float) -> PiecewiseLinear:
    """Resistance (Ω) against Li on the collector (C) while stripping: 0 down to x0 + q_tail,
    rising linearly to r_max at x0 (Li gone, the double layer left), flat below."""
    return PiecewiseLinear([x0 - far, x0, x0 + q_tail, x0 + q_tail + far],
                           [r_max, r_max, 0.0, 0.0])


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


class _FilmCell(CellModel):
    """A cell with a LiPON separator: film resistance, geometric capacitance, σ_e leak."""

    def __init__(self, lipon: Sequence[LiponLayer], area_cm2: float, params: CellParams,
                 name: str, faults, temperature_C: float):
        if area_cm2 <= 0:
            raise ValueError(f"cell {name}: area must be positive, not {area_cm2!r} cm²")
        if not lipon or sum(x.thickness_nm for x in lipon) <= 0:
            raise ValueError(f"cell {name}: the film stack has no LiPON layer")
        self.lipon = [x if isinstance(x, LiponLayer) else LiponLayer(**x) for x in lipon]
        self.area_cm2 = float(area_cm2)
        self.params = params
        super().__init__(name, faults, temperature_C)

    @property
    def lipon_thickness_nm(self) -> float:
        return sum(x.thickness_nm for x in self.lipon)

    def film_resistance_ohm(self) -> float:
        """R_LiPON = Σ t/(σ(T)·A): what the high-frequency arc of the spectrum measures."""
        return _lipon_R(self.lipon, self.area_cm2, self.temperature_C)

    def electronic_resistance_ohm(self) -> float:
        return _electronic_R(self.lipon, self.area_cm2)

    def _film_branch(self) -> Branch:
        R = self.film_resistance_ohm()
        c_geo = EPS0_F_CM * self.params.lipon_permittivity * self.area_cm2 / \
            (self.lipon_thickness_nm * 1e-7)
        return Branch(R, R * c_geo, self.params.film_alpha)

    def _series(self, active) -> float:
        extra = self._fault_param(active, "open", "ohm", self.params.open_ohm)
        return self.params.contact_ohm + (extra or 0.0)

    def _shunt_ohm(self, active, soft_default: float) -> float:
        soft = self._fault_param(active, "soft_short", "ohm", soft_default)
        return math.inf if soft is None else soft

    def _interface_factor(self, active) -> float:
        return self._fault_param(active, "high_interface", "factor",
                                 self.params.high_interface_factor) or 1.0

    def _short(self, active) -> float | None:
        return self._fault_param(active, "hard_short", "ohm", self.params.hard_short_ohm)

    def _source_slope(self, st, c: Circuit) -> float:
        """|dE/ds| at the state: the inverse of the source's differential capacitance."""
        b = abs(c.pos.slope(c.pos.locate(st.p, False)))
        if c.neg is not None:
            b += abs(c.neg.slope(c.neg.locate(st.n, False)))
        return b

    def _spec_common(self, kind: str) -> dict:
        return {"kind": kind, "name": self.name, "area_cm2": self.area_cm2,
                "temperature_C": self.temperature_C,
                "faults": [f.to_dict() for f in self.faults],
                "params": _jsonable(asdict(self.params))}


def _jsonable(d: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


# --- Cu / LiPON / Cu ----------------------------------------------------------------------------
class BlockingCell(_FilmCell):
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
        r2 = _arr(p.interface_ohm_cm2, self.lipon[0].activation_eV, self.temperature_C) \
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


# --- Li / LiPON / Cu ---------------------------------------------------------------------------
class PlatingCell(_FilmCell):
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
            kinetic = ("p", _nucleation_profile(
                q_dl, p.nucleation_charge_uAh_cm2 * UAH_C * a,
                p.recovery_charge_uAh_cm2 * UAH_C * a, r_g, r_g + excess, 10 * big))
        r_li = _arr(p.li_interface_ohm_cm2, p.li_interface_activation_eV,
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


# --- full cells --------------------------------------------------------------------------------
class FullCell(_FilmCell):
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
        return _arr(r, p.charge_transfer_activation_eV, self.temperature_C) / self.area_cm2

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
                kinetic = ("n", _nucleation_profile(
                    n_dl, p.nucleation_charge_uAh_cm2 * UAH_C * a,
                    p.recovery_charge_uAh_cm2 * UAH_C * a, r_g, r_g + excess, far))
        else:
            kappa_p = kappa_n = 1.0
            if self.anodeless:
                kinetic = ("n", _stripping_profile(
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


# --- factories ----------------------------------------------------------------------------------
LIPON_MATERIALS = ("LiPON", "Li3PO4")
CATHODES = {"LNMO": "LNMO", "LiNi0.5Mn1.5O4": "LNMO", "LCO": "LCO", "LiCoO2": "LCO"}


def default_layers(kind: str) -> list[dict]:
    """The seeds' stacks: FS-LiPON 3.7 µm at 2.5e-6 S/cm for blocking and plating cells
    (000), 650 nm LNMO / 1 µm LiPON at 3e-6 S/cm / 570 nm Li (002), 10 µm LCO (004) under
    1 µm LiPON (assumption: 004 gives no LiPON thickness), 5 µm Li for LCO/Li (assumption)."""
    fs = {"material": "LiPON", "thickness_nm": 3700.0, "sigma_S_cm": 2.5e-6}
    stacks = {
        "blocking": [{"material": "Cu", "thickness_nm": 200.0}, fs,
                     {"material": "Cu", "thickness_nm": 200.0}],
        "plating": [{"material": "Cu", "thickness_nm": 200.0}, fs,
                    {"material": "Li", "thickness_nm": 1000.0}],
        "lnmo": [{"material": "LNMO", "thickness_nm": 650.0},
                 {"material": "LiPON", "thickness_nm": 1000.0, "sigma_S_cm": 3.0e-6},
                 {"material": "Li", "thickness_nm": 570.0}],
        "lco": [{"material": "LCO", "thickness_nm": 10000.0},
                {"material": "LiPON", "thickness_nm": 1000.0},
                {"material": "Li", "thickness_nm": 5000.0}],
        "lco_anodeless": [{"material": "LCO", "thickness_nm": 10000.0},
                          {"material": "LiPON", "thickness_nm": 1000.0}],
    }
    return [dict(x) for x in stacks[_kind(kind)]]


DEFAULT_AREA_CM2 = {"blocking": 0.04, "plating": 0.04, "lnmo": 0.049, "lco": 1.0,
                    "lco_anodeless": 1.0}  # 2×2 mm plate (000, assumption), 4.9 mm² (002),
#                                           1 cm² (assumption: 004 gives no cell size)


def _kind(kind: str) -> str:
    k = str(kind).lower().replace("-", "_")
    k = {"anodeless": "lco_anodeless", "li_cu": "plating", "cu_cu": "blocking"}.get(k, k)
    if k not in KINDS:
        raise ValueError(f"cell kind {kind!r} is not one of {', '.join(KINDS)}")
    return k


def _lipon_layers(layers: Iterable[dict]) -> list[LiponLayer]:
    out = []
    for layer in layers:
        if layer.get("material") in LIPON_MATERIALS:
            known = {f.name for f in fields(LiponLayer)}
            out.append(LiponLayer(**{k: v for k, v in layer.items() if k in known}))
    return out


def _thickness(layers: Iterable[dict], materials) -> float:
    return sum(float(x.get("thickness_nm", 0.0)) for x in layers
               if x.get("material") in materials)


def _with_overrides(params, overrides: dict | None):
    if not overrides:
        return params
    known = {f.name for f in fields(params)}
    unknown = set(overrides) - known
    if unknown:
        raise ValueError(f"unknown cell parameters {sorted(unknown)}")
    fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    return replace(params, **fixed)


def cell_from_films(kind: str, layers: Sequence[dict], area_cm2: float,
                    temperature_C: float = 25.0, faults=(), rng: np.random.Generator | None = None,
                    *, name: str | None = None, params: dict | None = None) -> CellModel:
    """A cell whose parameters come from a sample's film stack.

    kind: "blocking" (Cu/LiPON/Cu), "plating" (Li/LiPON/Cu), "lnmo", "lco", "lco_anodeless"
    or "full" (cathode from the stack; Li anode if the stack has Li, else anodeless).
    LiPON layers (LiPON or Li3PO4) add in series, each with its own σ, Ea and σ_e. A full
    cell whose stack has no cathode layer (the simulated lab makes none) gets the seed's.
    rng draws the cell-to-cell scatter (utilisation, interface resistance); without it
    the cell is nominal. params overrides any dataclass field.
    """
    k = _kind(kind)
    layers = [dict(x) for x in layers]
    lipon = _lipon_layers(layers)
    faults = [as_fault(f) for f in faults]
    if k == "blocking":
        p = _with_overrides(BlockingParams(), params)
        if rng is not None:
            p = replace(p, interface_ohm_cm2=p.interface_ohm_cm2 * _spread(rng, p.spread_log))
        return BlockingCell(lipon, area_cm2, p, temperature_C, faults, name or "Cu/LiPON/Cu")
    if k == "plating":
        p = _with_overrides(PlatingParams(), params)
        if rng is not None:
            p = replace(p, li_interface_ohm_cm2=p.li_interface_ohm_cm2 *
                        _spread(rng, p.spread_log))
        return PlatingCell(lipon, area_cm2, p, _thickness(layers, ("Au",)), temperature_C,
                           faults, name or "Li/LiPON/Cu")
    cathodes = [x for x in layers if x.get("material") in CATHODES]
    material = CATHODES[cathodes[0]["material"]] if cathodes else \
        ("LNMO" if k in ("lnmo", "full") else "LCO")
    if k == "lnmo" and material != "LNMO" or k.startswith("lco") and material != "LCO":
        raise ValueError(f"a {k} cell needs an {k[:3].upper()} cathode, "
                         f"the film stack has {material}")
    li_nm = _thickness(layers, ("Li",))
    if k == "lco_anodeless":
        li_nm = 0.0
    cathode_nm = _thickness(layers, tuple(m for m, v in CATHODES.items() if v == material))
    if cathode_nm <= 0:
        cathode_nm = _thickness(default_layers("lnmo" if material == "LNMO" else "lco"),
                                (material,))
    base = lnmo_params() if material == "LNMO" else lco_params(anodeless=not li_nm)
    p = _with_overrides(base, params)
    if rng is not None:
        lo, hi = p.utilisation_range
        p = replace(p, utilisation=p.utilisation * float(rng.uniform(lo, hi)) /
                    (0.5 * (lo + hi)) if material == "LNMO" else float(rng.uniform(lo, hi)),
                    charge_transfer_ohm_cm2=p.charge_transfer_ohm_cm2 *
                    _spread(rng, p.spread_log))
    return FullCell(lipon, area_cm2, cathode_nm, p, li_nm or None, temperature_C, faults, name)


def _spread(rng: np.random.Generator, sigma: float) -> float:
    return float(math.exp(rng.normal(0.0, sigma)))


def cell_from_spec(spec: dict) -> CellModel:
    """A cell a station declares: {kind, [name], [area_cm2], [layers], [temperature_C],
    [faults], [params], [seed]}; missing layers and area are the seeds' (`default_layers`,
    DEFAULT_AREA_CM2). `cell.spec` round-trips through this."""
    unknown = set(spec) - {"kind", "name", "area_cm2", "layers", "temperature_C", "faults",
                           "params", "seed"}
    if unknown:
        raise ValueError(f"cell spec has unknown keys {sorted(unknown)}")
    if "kind" not in spec:
        raise ValueError(f"cell spec needs a kind, one of {', '.join(KINDS)}")
    k = _kind(spec["kind"])
    base_kind = k if k != "full" else "lnmo"
    seed = spec.get("seed")
    return cell_from_films(k, spec.get("layers") or default_layers(base_kind),
                           spec.get("area_cm2", DEFAULT_AREA_CM2[base_kind]),
                           spec.get("temperature_C", 25.0), spec.get("faults", ()),
                           None if seed is None else np.random.default_rng(seed),
                           name=spec.get("name"), params=spec.get("params"))

