"""A sheet's formation charge and dwell, integrated by the cell model itself.

The sheet reaches the prober formed and rested (assumption, 004 does not say: an
anodeless cell has no meaningful OCV before its first charge plates its Li). Each cell
is charged at one constant current (the nominal cell's C-rate: the line does not know a
cell's own capacity) to the formation voltage, held there, then left open for the
dwell, every fault acting throughout: a soft short drains its cell through its leak, a
hard short never charges. The cell's clock is then moved to the moment the sheet is
ready (the lab's clock when it is loaded); nothing about the state changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from lipon_hw.sim.cells.model import CellModel


@dataclass(frozen=True)
class Formation:
    """The formation protocol; every number is an assumption (004 gives none)."""

    voltage_V: float = 4.2  # top of 004's 3.0–4.2 V window: the steepest part of the LCO
    #                         OCV, so a lost charge shows most in the OCV
    c_rate: float = 0.2  # C/5 of the nominal cell, the same current for every cell
    cc_max_h: float = 10.0  # charge time limit (a shorted cell never reaches the voltage)
    cv_h: float = 12.0  # hold at the voltage: long enough that a cell of 10× R_ct (a
    #                     high-impedance defect) also ends within ~30 mV of it
    temperature_C: float = 25.0  # formation, dwell and prober at room temperature

    def validate(self) -> None:
        if not 3.0 < self.voltage_V <= 4.3:
            raise ValueError(f"formation voltage_V must be in (3.0, 4.3] V, not "
                             f"{self.voltage_V!r}")
        if self.c_rate <= 0 or self.cc_max_h <= 0 or self.cv_h < 0:
            raise ValueError("formation c_rate and cc_max_h must be positive, cv_h not negative")


def form_and_dwell(cell: CellModel, formation: Formation, current_A: float,
                   dwell_h: float) -> float:
    """Charge the fresh cell (at its time 0) at current_A to the formation voltage (or
    for cc_max_h), hold the voltage cv_h, leave it open dwell_h; returns the time the
    cell is at then (its state is advanced to it)."""
    t = cell.t
    cell.set_control(t, "current", current_A)
    limit = t + formation.cc_max_h * 3600.0
    hit = cell.next_crossing(t, None, formation.voltage_V, None)
    t = limit if hit is None or hit > limit else hit
    if formation.cv_h > 0:
        cell.set_control(t, "voltage", formation.voltage_V)
        t += formation.cv_h * 3600.0
    cell.set_control(t, "open", 0.0)
    t += dwell_h * 3600.0
    cell.voltage_V(t)
    return t


def move_clock(cell: CellModel, t_s: float) -> None:
    """The cell's present state, at time t_s of its clock instead (through its own
    snapshot, so the emulators can mount it at the lab's time)."""
    state = cell.snapshot()
    state["t"] = float(t_s)
    state["anchor"] = None  # the segment track is rebuilt at the new time
    cell.restore(state)
