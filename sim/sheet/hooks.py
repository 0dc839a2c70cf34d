"""`SimSheets` (`lab.sheets` on a simulated station): a sheet onto the simulated lab."""

from __future__ import annotations

from lipon_hw.errors import InputError
from lipon_hw.sim.cells.factories import default_layers
from lipon_hw.sim.lab_hooks import true_films
from lipon_hw.sim.sheet.sheet import SheetParams, SimSheet

#: the store's `sim_truth` kind of a sheet's cells (position = (row − 1)·cols + (col − 1))
SHEET_CELL = "sheet_cell"


class SimSheets:
    """`lab.sheets`: builds the sheet a screening run tests, records its cells' truth, and
    leaves it on the simulated lab (`sim_lab.sheet`) for the prober's chuck."""

    def __init__(self, sim_lab):
        self._lab = sim_lab

    def load(self, store, run_id: int, spec, seed: int | None) -> None:
        """Build the sheet `spec` describes (id, roll, rows, cols, pitch_x_mm, pitch_y_mm,
        cell_kind, area_cm2, dwell_h, and optionally `sim`: a mapping over `SheetParams`):
        its films are the roll's true films when it has a roll, else the seeds' stack of
        its kind. Every cell's truth goes to the store apart from measurements. InputError
        (one sentence) for a spec the simulator cannot build."""
        kind = getattr(spec, "cell_kind", None) or "lco_anodeless"
        roll = getattr(spec, "roll", None)
        try:
            layers = true_films(store, roll) if roll else default_layers(kind)
            params = SheetParams.from_mapping(getattr(spec, "sim", None))
            sheet = SimSheet(spec.id, spec.rows, spec.cols, (spec.pitch_x_mm, spec.pitch_y_mm),
                             layers, kind, getattr(spec, "area_cm2", None),
                             getattr(spec, "dwell_h", None) or 0.0, seed, params,
                             t_ready_s=self._lab.world.clock())
        except (ValueError, TypeError) as exc:
            raise InputError(f"sheet {spec.id}: the simulated lab cannot build it ({exc})") \
                from None
        for truth in sheet.truths():
            store.put_sim_truth(SHEET_CELL, run_id, sheet.id,
                                sheet.position(truth["row"], truth["col"]), truth)
        self._lab.sheet = sheet
