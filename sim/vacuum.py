"""A pumped chamber: pump-down as a sum of exponentials, vent, and gas throughput.

Shared by every simulated tool. The state lives on the tool's state object
(fields `rough_on`, `vent_open`, `atm_torr`, `outgas_torr`, `gas_torr`,
`gas_flow_sccm`, `leak_torr_L_s`) so it is checkpointed with it.
Numbers: PHYSICS.md §2; time constants are assumptions, named per tool.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lipon_hw.sim.physics import SCCM_TORR_L_S

ATMOSPHERE_TORR = 760.0


@dataclass
class VacuumParams:
    ultimate_torr: float
    outgas_torr: float  # water desorption load right after a vent
    outgas_tau_s: float
    rough_tau_s: float = 40.0  # assumption: 760 Torr → 10 mTorr in ~7.5 min
    vent_tau_s: float = 15.0  # assumption: N2 vent fills the chamber in ~1 min
    process_pumping_L_s: float = 17.0  # PHYSICS.md §2: 15 mTorr at 20 sccm ⇒ S ≈ 17 L/s
    volume_L: float = 50.0  # assumption: gas settles with τ = V/S ≈ 3 s


def advance(s, v: VacuumParams, dt: float) -> None:
    if s.vent_open:
        s.atm_torr = ATMOSPHERE_TORR + (s.atm_torr - ATMOSPHERE_TORR) * math.exp(-dt / v.vent_tau_s)
        s.outgas_torr = v.outgas_torr
    elif s.rough_on:
        s.atm_torr *= math.exp(-dt / v.rough_tau_s)
        s.outgas_torr *= math.exp(-dt / v.outgas_tau_s)
    q = s.gas_flow_sccm * SCCM_TORR_L_S + s.leak_torr_L_s
    target = q / v.process_pumping_L_s if s.rough_on and not s.vent_open else 0.0
    tau_gas = v.volume_L / v.process_pumping_L_s
    s.gas_torr = target + (s.gas_torr - target) * math.exp(-dt / tau_gas)


def pressure_torr(s, v: VacuumParams) -> float:
    return v.ultimate_torr + s.atm_torr + s.outgas_torr + s.gas_torr
