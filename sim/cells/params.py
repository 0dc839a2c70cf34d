"""The simulated cells' parameters, from the seeds: the LiPON layer, what every cell
shares, and the blocking, plating and full (LNMO, LCO) cells' numbers. Every number no
source gives is a field marked "assumption"."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from lipon_hw.sim.cells.tables import PiecewiseLinear
from lipon_hw.sim.physics import arrhenius

UAH_C = 3.6e-3  # one µAh in coulombs
LI_UAH_CM2_PER_UM = 1000 / 4.85  # seeds 000/002: 1 mAh/cm² ≈ 4.85 µm of Li
REFERENCE_C = 25.0


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
