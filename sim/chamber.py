"""What every simulated chamber's state holds: its clock, its vacuum and its crystal.

Tools extend `ChamberState` with their own fields; `vacuum` and `crystal` work on
these names, so a tool's whole state (and so its checkpoint) is one dataclass.
"""

from __future__ import annotations

from dataclasses import dataclass

from lipon_hw.sim.vacuum import ATMOSPHERE_TORR


@dataclass
class ChamberState:
    t: float = 0.0
    # vacuum (sim.vacuum)
    rough_on: bool = False
    vent_open: bool = False
    atm_torr: float = ATMOSPHERE_TORR
    outgas_torr: float = 0.0
    gas_torr: float = 0.0
    gas_flow_sccm: float = 0.0
    leak_torr_L_s: float = 0.0
    # substrate shutter and QCM crystal (sim.crystal)
    shutter_open: bool = False
    crystal_f0_Hz: float = 6.0e6
    crystal_mass_g_cm2: float = 0.0
    crystal_fail_Hz: float = 5.25e6
    crystal_failed: bool = False
    crystal_z: float = 1.0
    last_change: float = 0.0
