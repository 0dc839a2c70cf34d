"""The simulated thermal evaporator: chamber, boats on one source supply, substrate
shutter, QCM crystal, and the substrate's temperature.

Physics (PHYSICS.md §4): each boat is a first-order thermal body,
C·dT/dt = I²R(T) − εσA(T⁴ − Tw⁴) − G(T − Tw), with R(T) = R0(1 + α(T − T0));
its charge evaporates at the Hertz–Knudsen flux Γ = P_v·√(M/2πRT) from the melt
area, with log10(P_v/Pa) = A − B/T; the flux reaches the substrate and the
crystal by the cosine law at their own distances and angles, so the tooling
factor (substrate/crystal) is a property of the geometry, calibratable as on a
real tool. The supply feeds the selected boat in constant-current mode, falling
back to constant voltage at its voltage limit, like a Genesys.

Instruments that close a loop inside themselves (a deposition controller's PID)
attach a callback with `attach_controller`; it runs every sub-step, so the loop
is sampled at the controller's own period however lazily the World is advanced.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from lipon_hw.sim import crystal as xtal
from lipon_hw.sim import vacuum
from lipon_hw.sim.chamber import ChamberState
from lipon_hw.sim.crystal import CrystalParams
from lipon_hw.sim.state import state_dict
from lipon_hw.sim.vacuum import VacuumParams

R_GAS = 8.314462618
STEFAN_BOLTZMANN = 5.670374e-8
WALL_K = 300.0
NEGLIGIBLE_RATE_A_S = 1e-4  # below a monolayer a day: no film, no crystal load


@dataclass(frozen=True)
class Evaporant:
    """Vapour pressure fit and film constants (PHYSICS.md §4, §5)."""

    a: float  # log10(P/Pa) = a − b/T
    b_K: float
    molar_kg: float
    density_g_cm3: float
    z_ratio: float
    melt_area_cm2: float = 1.0  # assumption: molten charge in a standard boat


EVAPORANTS = {
    "Li": Evaporant(10.06, 8015.0, 6.94e-3, 0.53, 5.90),
    "Cu": Evaporant(10.93, 16491.0, 63.55e-3, 8.93, 0.437),
    "Au": Evaporant(10.80, 17775.0, 196.97e-3, 19.3, 0.381),
}


def evaporator_vacuum() -> VacuumParams:
    """Cryo/turbo-pumped evaporator: 2.5e-8 Torr after several hours (assumptions)."""
    return VacuumParams(ultimate_torr=1.0e-8, outgas_torr=5.0e-6, outgas_tau_s=2400.0)


@dataclass
class BoatParams:
    """A resistively heated tungsten boat (all assumptions, documented ranges)."""

    r0_ohm: float = 0.010  # at 300 K
    alpha_per_K: float = 0.0045  # tungsten
    heat_capacity_J_K: float = 6.0  # boat + clamps + charge: τ ≈ 25 s near operating T
    emissivity: float = 0.3
    area_cm2: float = 5.0
    conductance_W_K: float = 0.05  # through the electrodes


@dataclass
class EvaporatorParams:
    throw_cm: float = 30.0  # assumption: source to substrate, on axis
    crystal_distance_cm: float = 25.0  # assumption
    crystal_angle_deg: float = 20.0  # assumption: off the source axis, facing it
    substrate_heating_K_per_W: float = 0.25  # assumption: radiative load on the sample
    substrate_tau_s: float = 300.0  # assumption
    outgas_torr_per_W: float = 2.0e-11  # assumption: hot boats outgas a little
    supply_max_A: float = 200.0  # a 6 V / 200 A source supply (Genesys GEN6-200 class)
    supply_max_V: float = 6.0
    boats: tuple[str, ...] = ("Cu", "Au", "Li")
    charges_g: tuple[float, ...] = (5.0, 1.0, 2.0)  # assumption: a full load of each boat


@dataclass
class EvaporatorState(ChamberState):
    boat_T_K: list[float] = field(default_factory=list)
    boat_charge_g: list[float] = field(default_factory=list)
    selected: int = 1  # 1-based boat number
    supply_on: bool = False
    current_set_A: float = 0.0
    voltage_limit_V: float = 6.0
    substrate_C: float = 25.0
    # faults (lipon_hw.sim.fault_catalogue)
    open_boats: list[int] = field(default_factory=list)  # burnt out: an open circuit
    substrate_fault_C: float = 0.0  # extra heating of the substrate (a runaway heater)

class EvaporatorTool:
    """The physical state of the evaporator, shared by its emulators."""

    def __init__(self, world, params: EvaporatorParams | None = None,
                 boat: BoatParams | None = None, vacuum_params: VacuumParams | None = None,
                 crystal_params: CrystalParams | None = None):
        self.world = world
        self.p = params or EvaporatorParams()
        self.bp = boat or BoatParams()
        self.vac = vacuum_params or evaporator_vacuum()
        self.xp = crystal_params or CrystalParams()
        n = len(self.p.boats)
        self.s = EvaporatorState(outgas_torr=self.vac.outgas_torr, boat_T_K=[WALL_K] * n,
                                 boat_charge_g=list(self.p.charges_g),
                                 voltage_limit_V=self.p.supply_max_V)
        xtal.fresh(self.s, self.xp, world.rng)
        self._controllers: list[tuple[Callable[[float, float], None], Callable[[], bool]]] = []
        #: boats whose vapour at the wall's temperature makes no film (every boat of the
        #: shipped materials): such a boat at exactly that temperature, unheated, stays
        #: there and makes none, so a step passes it by (the same numbers, none computed)
        self._cold_is_idle = [self._rate_at_wall_A_s(k) < NEGLIGIBLE_RATE_A_S
                              for k in range(n)]

    def snapshot(self) -> dict:
        return state_dict(self.s)

    def restore(self, state: dict) -> None:
        self.s = EvaporatorState(**state)

    def attach_controller(self, callback: Callable[[float, float], None],
                          active: Callable[[], bool] = lambda: True) -> None:
        """`callback(t, dt)` runs after every sub-step (an instrument's own control loop);
        while `active()` is true the tool integrates in short steps for it."""
        self._controllers.append((callback, active))

    # --- integration ------------------------------------------------------------
    def advance(self, t1: float) -> None:
        s = self.s
        while s.t < t1:
            active = (s.supply_on or max(s.boat_T_K) > WALL_K + 5
                      or any(is_active() for _, is_active in self._controllers))
            dt = min(t1 - s.t, 0.1 if active else 5.0)
            self._step(dt)

    def _step(self, dt: float) -> None:
        s, p = self.s, self.p
        vacuum.advance(s, self.vac, dt)
        i = s.selected - 1
        idle = self._cold_is_idle
        for k in range(len(s.boat_T_K)):
            if k != i and idle[k] and s.boat_T_K[k] == WALL_K:
                continue  # no heat in, no loss out: _boat_temperature would give WALL_K
            heat = self._electrical(k)[2] if k == i else 0.0
            s.boat_T_K[k] = self._boat_temperature(s.boat_T_K[k], heat, dt)
        power = self._electrical(i)[2]
        s.outgas_torr += p.outgas_torr_per_W * power * dt / self.vac.outgas_tau_s
        target_C = 25.0 + p.substrate_heating_K_per_W * power + s.substrate_fault_C
        s.substrate_C = target_C + (s.substrate_C - target_C) * math.exp(-dt / p.substrate_tau_s)
        s.t += dt
        for k, material in enumerate(p.boats):
            if idle[k] and s.boat_T_K[k] == WALL_K:
                continue  # its rate is below NEGLIGIBLE_RATE_A_S (`_cold_is_idle`)
            rate = self._substrate_rate_A_s(k)
            if rate < NEGLIGIBLE_RATE_A_S:  # a cold boat's vapour makes no film
                continue
            ev = EVAPORANTS[material]
            xtal.load(s, rate * self._crystal_ratio() * dt * 1e-8 * ev.density_g_cm3, ev.z_ratio)
            s.boat_charge_g[k] = max(0.0, s.boat_charge_g[k] - self._evaporation_g_s(k) * dt)
            if s.shutter_open:
                self.world.grow(material, rate * dt / 10, s.t, {"mean_rate_A_s": rate})
        for control, is_active in self._controllers:
            if is_active():
                control(s.t, dt)

    def _boat_temperature(self, T: float, heat_W: float, dt: float) -> float:
        bp = self.bp
        loss = (bp.emissivity * STEFAN_BOLTZMANN * bp.area_cm2 * 1e-4 * (T**4 - WALL_K**4)
                + bp.conductance_W_K * (T - WALL_K))
        return max(WALL_K, T + (heat_W - loss) * dt / bp.heat_capacity_J_K)

    def _electrical(self, k: int) -> tuple[float, float, float]:
        """(current A, voltage V, power W) of boat k: CC until the voltage limit, then CV."""
        s = self.s
        if not s.supply_on or s.selected == 0 or k != s.selected - 1:
            return 0.0, 0.0, 0.0
        if k + 1 in s.open_boats:  # no load: the supply sits at its voltage limit
            return 0.0, min(s.voltage_limit_V, self.p.supply_max_V), 0.0
        r = self.bp.r0_ohm * (1 + self.bp.alpha_per_K * (s.boat_T_K[k] - WALL_K))
        current = min(s.current_set_A, self.p.supply_max_A)
        if current * r > s.voltage_limit_V:
            current = s.voltage_limit_V / r
        return current, current * r, current * current * r

    def _evaporation_g_s(self, k: int) -> float:
        """Hertz–Knudsen: total evaporated mass per second from boat k's melt."""
        if self.s.boat_charge_g[k] <= 0:
            return 0.0
        return _melt_evaporation_g_s(EVAPORANTS[self.p.boats[k]], self.s.boat_T_K[k])

    def _rate_at_wall_A_s(self, k: int) -> float:
        """Boat k's substrate rate with a charge in it at the wall's temperature."""
        return self._substrate_rate_of(k, _melt_evaporation_g_s(EVAPORANTS[self.p.boats[k]],
                                                                WALL_K))

    def _substrate_rate_A_s(self, k: int) -> float:
        return self._substrate_rate_of(k, self._evaporation_g_s(k))

    def _substrate_rate_of(self, k: int, evaporation_g_s: float) -> float:
        """On-axis film rate: a small planar source emits Q/(π h²) per unit area."""
        ev = EVAPORANTS[self.p.boats[k]]
        h_cm = self.p.throw_cm
        g_cm2_s = evaporation_g_s / (math.pi * h_cm**2)
        return g_cm2_s / ev.density_g_cm3 * 1e8

    def _crystal_ratio(self) -> float:
        """Crystal/substrate flux: (h/d)² · cos θ (emission) · cos θ (incidence, faces source)."""
        p = self.p
        theta = math.radians(p.crystal_angle_deg)
        return (p.throw_cm / p.crystal_distance_cm) ** 2 * math.cos(theta)

    # --- accessors for emulators (each syncs the world first) ------------------------
    def pressure_torr(self) -> float:
        self.world.sync()
        return vacuum.pressure_torr(self.s, self.vac)

    def set_pumping(self, on: bool) -> None:
        self.world.sync()
        self.s.rough_on = on

    def set_vent(self, open_: bool) -> None:
        self.world.sync()
        self.s.vent_open = open_

    def select_boat(self, number: int) -> None:
        """Route the supply to boat `number` (1-based), as a source switch does; 0 opens
        every contactor, so no boat carries current whatever the supply does."""
        self.world.sync()
        if not 0 <= number <= len(self.p.boats):
            raise ValueError(f"boat {number} does not exist (1..{len(self.p.boats)})")
        self.s.selected = number

    def selected_boat(self) -> int:
        return self.s.selected

    def set_supply_output(self, on: bool) -> None:
        self.world.sync()
        self.s.supply_on = on

    def set_supply_current_A(self, current_A: float) -> None:
        self.world.sync()
        self.s.current_set_A = max(0.0, current_A)

    def set_supply_voltage_limit_V(self, volts: float) -> None:
        self.world.sync()
        self.s.voltage_limit_V = max(0.0, volts)

    def supply_readings(self) -> dict:
        self.world.sync()
        s = self.s
        current, voltage, power = self._electrical(s.selected - 1)
        if not s.supply_on:
            mode = "OFF"
        elif current < min(s.current_set_A, self.p.supply_max_A) - 1e-9:
            mode = "CV"
        else:
            mode = "CC"
        return {"current_A": current, "voltage_V": voltage, "power_W": power, "mode": mode,
                "output_on": s.supply_on, "current_set_A": s.current_set_A,
                "voltage_limit_V": s.voltage_limit_V}

    def set_shutter(self, open_: bool) -> None:
        self.world.sync()
        self.s.shutter_open = open_

    def shutter_open(self) -> bool:
        self.world.sync()
        return self.s.shutter_open

    def crystal(self) -> dict:
        self.world.sync()
        mass_rate = sum(self._substrate_rate_A_s(k) * self._crystal_ratio() * 1e-8
                        * EVAPORANTS[m].density_g_cm3 for k, m in enumerate(self.p.boats))
        return xtal.reading(self.s, mass_rate)

    def crystal_frequency_Hz(self) -> float:
        """`crystal()`'s frequency, 0 Hz when the crystal has failed: what a monitor's
        frequency and life readings need, without the mass rate."""
        self.world.sync()
        return 0.0 if self.s.crystal_failed else xtal.frequency_Hz(self.s)

    def fail_crystal(self) -> None:
        """Fault injection: the crystal dies now (mode-hops, stops oscillating)."""
        self.world.sync()
        self.s.crystal_failed = True

    def replace_crystal(self) -> None:
        self.world.sync()
        xtal.fresh(self.s, self.xp, self.world.rng)

    def boat_temperature_K(self, number: int) -> float:
        self.world.sync()
        return self.s.boat_T_K[number - 1]

    def substrate_temperature_C(self) -> float:
        self.world.sync()
        return self.s.substrate_C

    def substrate_rate_A_s(self) -> float:
        """True on-axis rate at the substrate from all boats (for tests and calibration)."""
        self.world.sync()
        return sum(self._substrate_rate_A_s(k) for k in range(len(self.p.boats)))

    @property
    def true_tooling_pct(self) -> float:
        return 100.0 / self._crystal_ratio()

    def film_stack(self) -> list[dict]:
        return self.world.film_stack()


def _melt_evaporation_g_s(ev, T: float) -> float:
    """Hertz–Knudsen mass per second from a melt of evaporant `ev` at temperature T."""
    p_vap = 10 ** (ev.a - ev.b_K / T)
    flux_kg_m2_s = p_vap * math.sqrt(ev.molar_kg / (2 * math.pi * R_GAS * T))
    return flux_kg_m2_s * ev.melt_area_cm2 * 1e-4 * 1e3
