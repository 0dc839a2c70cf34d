"""The simulated RF sputter tool: chamber, gas, RF generator + match + plasma,
target, substrate shutter, substrate film stack and the QCM crystal.

State advances lazily: every public accessor first calls `world.sync()`, which
integrates from the last update to the clock. Pressure is analytic; deposition,
matching and arcs are integrated in sub-steps short enough to follow the
transients (≤ 0.25 s just after a change, ≤ 5 s in steady state).

Numbers: PHYSICS.md §2 (vacuum, gas), §3 (RF sputtering of LiPON), §5 (QCM).
Every parameter that no source gives is an `assumption` in the dataclasses below.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lipon_hw.sim import crystal as xtal
from lipon_hw.sim import physics, vacuum
from lipon_hw.sim.chamber import ChamberState
from lipon_hw.sim.crystal import CrystalParams
from lipon_hw.sim.state import state_dict
from lipon_hw.sim.vacuum import VacuumParams

#: how close (s) a step comes to the watchdog's deadline before it fires there
TIME_EPS_S = 1e-9


def sputter_vacuum() -> VacuumParams:
    """Turbo-pumped, unbaked sputter chamber: 3e-6 Torr in ~1.1 h (assumptions)."""
    return VacuumParams(ultimate_torr=1.2e-6, outgas_torr=5.0e-5, outgas_tau_s=1200.0)


@dataclass
class SputterParams:
    """RF sputtering of LiPON from a 2-inch Li3PO4 target in N2 (PHYSICS.md §3)."""

    anchor_rate_A_s: float = 0.46  # seed 000/002: 50 W, 15 mTorr N2
    anchor_power_W: float = 50.0
    anchor_pressure_mtorr: float = 15.0
    threshold_power_W: float = 10.0  # assumption: no net deposition below ~10 W
    optimum_pressure_mtorr: float = 10.0  # assumption: rate peaks then falls slowly
    scattering_mtorr: float = 60.0  # assumption: e-fold of the gas-scattering loss
    ignition_min_mtorr: float = 5.0  # PHYSICS.md §3 assumption: ignites at ≥ 5 mTorr
    ignition_max_mtorr: float = 200.0  # assumption: no glow at rough-vacuum pressures
    ignition_min_W: float = 5.0  # assumption
    unmatched_reflection: float = 0.98  # before ignition reflected ≈ forward
    match_initial_reflection: float = 0.5  # assumption: mismatch right after ignition
    match_tau_s: float = 0.4  # assumption: below 2 % of forward in ~1.5 s
    matched_reflection: float = 0.006  # assumption: tuned residual
    dc_bias_V_per_sqrt_W: float = -26.0  # assumption: ≈ −180 V at 50 W
    target_area_cm2: float = 20.27  # 2-inch target: 50 W ≈ 2.47 W/cm² (seed)
    arc_rate_per_h: float = 0.2  # assumption: at 2.47 W/cm² on a fresh target
    arc_spike_s: float = 0.3  # assumption: reflected spike length of one arc
    target_life_kWh: float = 20.0  # assumption
    throw_cm: float = 10.0  # assumption: target–substrate distance (cosine-law map)
    crystal_to_substrate: float = 0.8  # assumption: crystal sees 80 % ⇒ tooling 125 %
    # film property: σ(25 °C) follows N incorporation (003 §4 trends; anchors 000/002/003)
    sigma_anchor_S_cm: float = 2.6e-6  # seeds: 2.3–3.0e-6 S/cm at the reference process
    activation_eV: float = 0.55  # seeds 003/000/002
    sigma_electronic_S_cm: float = 1.2e-14  # seed 000
    n_saturation: float = 0.08  # 004: 5–8 % of O substituted by N
    n_pressure_mtorr: float = 6.0  # assumption: N2 supply saturates above ~15 mTorr
    n_power_half_W: float = 20.0  # assumption: plasma activation of N2 with power
    sigma_per_n_fraction: float = 40.0  # assumption: ln σ rises 0.4 per at.% N
    film_density_g_cm3: float = 2.5  # PHYSICS.md §5 assumption
    film_z_ratio: float = 1.0  # PHYSICS.md §5 assumption


@dataclass
class SputterState(ChamberState):
    """Everything that changes; `asdict` of this is the tool's checkpoint."""

    # rf
    rf_on: bool = False
    setpoint_W: float = 0.0
    regulation: str = "forward"  # or "load"
    forward_limit_W: float = 600.0
    plasma: bool = False
    ignited_at: float = -1e9
    reflection: float = 0.98
    arcs: int = 0
    last_arc_t: float = -1e9
    target_kWh: float = 0.0
    # the generator's host watchdog: RF goes off at `rf_off_at` (virtual s; None: no
    # deadline) unless the generator hears from the host first; the trip is latched
    rf_off_at: float | None = None
    rf_watchdog_tripped_at: float | None = None
    # faults (lipon_hw.sim.fault_catalogue)
    fault_reflection: float = 0.0  # reflected fraction held by a reflected-power fault
    plasma_blocked: bool = False  # the plasma cannot burn (plasma loss)
    gas_supply_lost: bool = False  # the MFC's inlet is empty: its flow bleeds away
    gas_set_sccm: float = 0.0  # the MFC's setpoint while the supply is lost
    gas_fall_s: float = 5.0  # e-fold time of the flow once the supply is lost

class SputterTool:
    """The physical state of the sputter chamber, shared by its emulators."""

    def __init__(self, world, vacuum: VacuumParams | None = None,
                 sputter: SputterParams | None = None,
                 crystal_params: CrystalParams | None = None):
        self.world = world
        self.vac = vacuum or sputter_vacuum()
        self.sp = sputter or SputterParams()
        self.xp = crystal_params or CrystalParams()
        self.s = SputterState(outgas_torr=self.vac.outgas_torr, crystal_z=self.sp.film_z_ratio)
        self._anchor: tuple = (None, 0.0)  # (parameters, pressure shape at the anchor)
        xtal.fresh(self.s, self.xp, world.rng)

    # --- snapshot -------------------------------------------------------------
    def snapshot(self) -> dict:
        return state_dict(self.s)

    def restore(self, state: dict) -> None:
        self.s = SputterState(**state)

    # --- integration ----------------------------------------------------------
    def advance(self, t1: float) -> None:
        s = self.s
        while s.t < t1:
            recent = (s.t - s.last_change) < 10.0 or (s.t - s.ignited_at) < 5 * self.sp.match_tau_s
            dt = min(t1 - s.t, 0.25 if recent else 5.0)
            if s.rf_off_at is not None:  # a step ends where the watchdog fires
                if s.rf_off_at - s.t <= TIME_EPS_S:
                    self._watchdog_fires()
                    continue
                dt = min(dt, s.rf_off_at - s.t)
            self._step(dt)
        if s.rf_off_at is not None and s.rf_off_at - s.t <= TIME_EPS_S:
            self._watchdog_fires()

    def _watchdog_fires(self) -> None:
        """The generator heard nothing from the host in time: RF off, the trip latched."""
        s = self.s
        if s.rf_on:
            s.rf_on = False
            s.last_change = s.t
            s.rf_watchdog_tripped_at = s.t
        s.rf_off_at = None

    def _step(self, dt: float) -> None:
        s, sp = self.s, self.sp
        if s.gas_supply_lost:
            s.gas_flow_sccm *= math.exp(-dt / s.gas_fall_s)
        vacuum.advance(self.s, self.vac, dt)
        s.t += dt
        pressure_mtorr = self.pressure_torr_now() * 1e3
        # plasma and match
        in_window = sp.ignition_min_mtorr <= pressure_mtorr <= sp.ignition_max_mtorr
        if s.rf_on and s.setpoint_W >= sp.ignition_min_W and in_window \
                and not s.plasma_blocked:
            if not s.plasma:
                s.plasma, s.ignited_at = True, s.t
        elif s.plasma:
            s.plasma = False
        if s.plasma:
            age = s.t - s.ignited_at
            s.reflection = (sp.matched_reflection
                            + sp.match_initial_reflection * math.exp(-age / sp.match_tau_s))
        else:
            s.reflection = sp.unmatched_reflection
        load_W = self._load_W()
        if s.plasma and load_W > 0:
            s.target_kWh += load_W * dt / 3.6e6
            density = load_W / sp.target_area_cm2
            ref_density = sp.anchor_power_W / sp.target_area_cm2
            wear = 1 + 2 * max(0.0, s.target_kWh / sp.target_life_kWh - 0.8)
            lam = sp.arc_rate_per_h / 3600 * (density / ref_density) ** 2 * wear
            if self.world.rng.random() < -math.expm1(-lam * dt):
                s.arcs += 1
                s.last_arc_t = s.t
        rate = self.deposition_rate_A_s(load_W, pressure_mtorr) if s.plasma else 0.0
        if rate > 0:
            self._deposit(rate, dt, load_W, pressure_mtorr)

    def _deposit(self, rate_A_s: float, dt: float, load_W: float, pressure_mtorr: float) -> None:
        s, sp = self.s, self.sp
        crystal_A = rate_A_s * sp.crystal_to_substrate * dt
        xtal.load(s, crystal_A * 1e-8 * sp.film_density_g_cm3, sp.film_z_ratio)
        if not s.shutter_open:
            return
        material = "LiPON" if s.gas_flow_sccm > 0 else "Li3PO4"
        self.world.grow(material, rate_A_s * dt / 10, s.t, {
            "sigma_S_cm": self.film_sigma_S_cm(load_W, pressure_mtorr),
            "activation_eV": sp.activation_eV,
            "sigma_electronic_S_cm": sp.sigma_electronic_S_cm,
            "mean_power_W": load_W, "mean_pressure_mtorr": pressure_mtorr})

    # --- physics as functions of state ----------------------------------------
    def deposition_rate_A_s(self, load_W: float, pressure_mtorr: float) -> float:
        """Substrate-centre rate: ∝ (P − P_th) · pressure shape · target wear."""
        sp = self.sp
        if load_W <= sp.threshold_power_W or pressure_mtorr <= 0:
            return 0.0
        shape = self._pressure_shape(pressure_mtorr) / self._anchor_shape()
        per_W = sp.anchor_rate_A_s / (sp.anchor_power_W - sp.threshold_power_W)
        worn = (self.s.target_kWh / sp.target_life_kWh - 0.8) / 0.2
        end_of_life = 1 - 0.3 * min(1.0, max(0.0, worn))
        return per_W * (load_W - sp.threshold_power_W) * shape * end_of_life

    def _anchor_shape(self) -> float:
        """`_pressure_shape` at the anchor pressure, kept while the parameters it depends on
        stay as they were."""
        sp = self.sp
        key = (sp.anchor_pressure_mtorr, sp.optimum_pressure_mtorr, sp.scattering_mtorr)
        if self._anchor[0] != key:
            self._anchor = (key, self._pressure_shape(sp.anchor_pressure_mtorr))
        return self._anchor[1]

    def _pressure_shape(self, p_mtorr: float) -> float:
        """Rises to the optimum (more ions), then falls slowly (gas scattering)."""
        sp = self.sp
        rise = 1 - math.exp(-p_mtorr / (sp.optimum_pressure_mtorr / 2))
        return rise * math.exp(-max(0.0, p_mtorr - sp.optimum_pressure_mtorr) / sp.scattering_mtorr)

    def film_sigma_S_cm(self, load_W: float, pressure_mtorr: float) -> float:
        """σ(25 °C) of the film grown now: more N incorporated → higher σ (003 §4)."""
        sp = self.sp
        ref = self._n_fraction(sp.anchor_power_W, sp.anchor_pressure_mtorr)
        n = self._n_fraction(load_W, pressure_mtorr if self.s.gas_flow_sccm > 0 else 0.0)
        return sp.sigma_anchor_S_cm * math.exp(sp.sigma_per_n_fraction * (n - ref))

    def _n_fraction(self, load_W: float, pressure_mtorr: float) -> float:
        sp = self.sp
        return (sp.n_saturation * (1 - math.exp(-pressure_mtorr / sp.n_pressure_mtorr))
                * load_W / (load_W + sp.n_power_half_W))

    def _load_W(self) -> float:
        return self._forward_W() * (1 - self._reflection_now())

    def _forward_W(self) -> float:
        s = self.s
        if not s.rf_on:
            return 0.0
        if s.regulation == "load":
            return min(s.setpoint_W / max(1 - s.reflection, 0.02), s.forward_limit_W)
        return min(s.setpoint_W, s.forward_limit_W)

    def _reflection_now(self) -> float:
        s = self.s
        if s.plasma and s.t - s.last_arc_t < self.sp.arc_spike_s:
            return max(0.6, s.fault_reflection)
        return max(s.reflection, s.fault_reflection)

    def pressure_torr_now(self) -> float:
        s = self.s
        return vacuum.pressure_torr(s, self.vac)

    # --- accessors for emulators (each syncs the world first) -------------------
    def pressure_torr(self) -> float:
        self.world.sync()
        return self.pressure_torr_now()

    def set_pumping(self, on: bool) -> None:
        self.world.sync()
        self.s.rough_on = on
        self.s.last_change = self.s.t

    def set_vent(self, open_: bool) -> None:
        self.world.sync()
        self.s.vent_open = open_
        self.s.last_change = self.s.t

    def set_n2_flow_sccm(self, flow: float) -> None:
        self.world.sync()
        if self.s.gas_supply_lost:  # the valve opens wider; nothing more comes
            self.s.gas_set_sccm = max(0.0, flow)
        else:
            self.s.gas_flow_sccm = max(0.0, flow)
        self.s.last_change = self.s.t

    def n2_flow_sccm(self) -> float:
        """The flow the MFC delivers into the chamber."""
        self.world.sync()
        return self.s.gas_flow_sccm

    def n2_setpoint_sccm(self) -> float:
        """The flow the MFC is asked for (what it delivers, unless its supply is lost)."""
        self.world.sync()
        return self.s.gas_set_sccm if self.s.gas_supply_lost else self.s.gas_flow_sccm

    # --- faults (lipon_hw.sim.fault_catalogue), applied with the tool advanced to now ---
    def lose_gas_supply(self, lost: bool, fall_s: float = 5.0) -> None:
        s = self.s
        if lost and not s.gas_supply_lost:
            s.gas_set_sccm, s.gas_fall_s = s.gas_flow_sccm, fall_s
        elif not lost and s.gas_supply_lost:
            s.gas_flow_sccm = s.gas_set_sccm
        s.gas_supply_lost = lost
        s.last_change = s.t

    def block_plasma(self, blocked: bool) -> None:
        self.s.plasma_blocked = blocked
        if blocked:
            self.s.plasma = False
        self.s.last_change = self.s.t

    def arc(self) -> None:
        """One arc now: counted, and a reflected-power spike of `arc_spike_s`."""
        s = self.s
        if s.plasma:
            s.arcs += 1
            s.last_arc_t = s.t
            s.last_change = s.t

    def set_rf_output(self, on: bool) -> None:
        """RF on or off; switching it on clears a latched watchdog trip."""
        self.world.sync()
        self.s.rf_on = on
        self.s.last_change = self.s.t
        if on:
            self.s.rf_watchdog_tripped_at = None

    def set_rf_deadline(self, t: float | None) -> None:
        """The generator's host watchdog: RF switches off at virtual time `t` unless this is
        called again first (None: no deadline). What came before now is settled first, so
        a deadline already passed has fired."""
        self.world.sync()
        self.s.rf_off_at = t

    def set_rf_setpoint_W(self, power_W: float) -> None:
        self.world.sync()
        self.s.setpoint_W = max(0.0, power_W)
        self.s.last_change = self.s.t

    def set_rf_regulation(self, mode: str) -> None:
        self.world.sync()
        self.s.regulation = mode

    def rf_readings(self) -> dict:
        """forward_W, reflected_W, load_W, dc_bias_V, plasma, rf_on, setpoint_W, arcs,
        watchdog_tripped."""
        self.world.sync()
        s, sp = self.s, self.sp
        fwd = self._forward_W()
        refl = fwd * self._reflection_now()
        load = fwd - refl
        bias = sp.dc_bias_V_per_sqrt_W * math.sqrt(load) if s.plasma else 0.0
        return {"forward_W": fwd, "reflected_W": refl, "load_W": load, "dc_bias_V": bias,
                "plasma": s.plasma, "rf_on": s.rf_on, "setpoint_W": s.setpoint_W,
                "regulation": s.regulation, "arcs": s.arcs,
                "watchdog_tripped": s.rf_watchdog_tripped_at is not None}

    def rf_reading(self, key: str) -> float:
        """One of `rf_readings`' forward_W, reflected_W, load_W or dc_bias_V, worked out as
        it does, without the others after it (a generator answers one query at a time)."""
        self.world.sync()
        fwd = self._forward_W()
        if key == "forward_W":
            return fwd
        refl = fwd * self._reflection_now()
        if key == "reflected_W":
            return refl
        load = fwd - refl
        if key == "load_W":
            return load
        if key == "dc_bias_V":
            return self.sp.dc_bias_V_per_sqrt_W * math.sqrt(load) if self.s.plasma else 0.0
        return self.rf_readings()[key]

    def set_shutter(self, open_: bool) -> None:
        self.world.sync()
        self.s.shutter_open = open_

    def shutter_open(self) -> bool:
        self.world.sync()
        return self.s.shutter_open

    def crystal(self) -> dict:
        """fundamental_Hz, frequency_Hz, failed, and the true mass rate in g/cm²/s."""
        self.world.sync()
        s = self.s
        if s.plasma:
            rate = self.deposition_rate_A_s(self._load_W(), self.pressure_torr_now() * 1e3)
        else:
            rate = 0.0
        mass_rate = rate * self.sp.crystal_to_substrate * 1e-8 * self.sp.film_density_g_cm3
        return xtal.reading(s, mass_rate)

    def crystal_frequency_Hz(self) -> float:
        """`crystal()`'s frequency, 0 Hz when the crystal has failed: what a monitor's
        frequency and life readings need, without the mass rate."""
        self.world.sync()
        return 0.0 if self.s.crystal_failed else xtal.frequency_Hz(self.s)

    def replace_crystal(self) -> None:
        self.world.sync()
        xtal.fresh(self.s, self.xp, self.world.rng)

    def film_stack(self) -> list[dict]:
        return self.world.film_stack()

    def thickness_map_nm(self, radius_cm: float) -> float:
        """Top-layer thickness at a radius on the sheet (cosine law)."""
        stack = self.world.film_stack()
        if not stack:
            return 0.0
        return stack[-1]["thickness_nm"] * physics.cosine_law_factor(radius_cm, self.sp.throw_cm)
