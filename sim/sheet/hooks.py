"""`SimSheets` (`lab.sheets` on a simulated station): a sheet onto the simulated lab."""

from __future__ import annotations

from dataclasses import asdict

from lipon_hw.errors import InputError
from lipon_hw.sim.cells.factories import default_layers
from lipon_hw.sim.lab_hooks import true_films
from lipon_hw.sim.sheet.sheet import SheetParams, SimSheet

#: the store's `sim_truth` kinds: a sheet's cells (position = (row − 1)·cols + (col − 1)),
#: and the sheet itself (position 0: when it was ready, its settings and thickness maps)
SHEET_CELL, SHEET = "sheet_cell", "sheet"


class SimSheets:
    """`lab.sheets`: builds the sheet a screening run tests, records its cells' truth, and
    leaves it on the simulated lab (`sim_lab.sheet`) for the prober's chuck."""

    def __init__(self, sim_lab):
        self._lab = sim_lab

    def load(self, store, run_id: int, spec, seed: int | None) -> None:
        """Build the sheet `spec` describes (id, roll, rows, cols, pitch_x_mm, pitch_y_mm,
        cell_kind, area_cm2, dwell_h, and optionally `sim`: a mapping over `SheetParams`):
        its films are the roll's true films when the store holds its layers, else the
        seeds' stack of its kind. Every cell's truth goes to the store apart from
        measurements. A sheet loaded again by the same run (a resume) is the one first
        loaded, ready at the same lab time (unless the clock now reads earlier).
        InputError (one sentence) for a spec the simulator cannot build."""
        now = self._lab.world.clock()
        first = store.sim_truths(SHEET, str(spec.id)).get((run_id, 0))
        t_ready = now if first is None else min(float(first["t_ready_s"]), now)
        kind = getattr(spec, "cell_kind", None) or "lco_anodeless"
        roll = getattr(spec, "roll", None)
        try:
            layers = _roll_films(store, roll) if roll else None
            layers = layers or default_layers(kind)
            params = SheetParams.from_mapping(getattr(spec, "sim", None))
            sheet = SimSheet(spec.id, spec.rows, spec.cols, (spec.pitch_x_mm, spec.pitch_y_mm),
                             layers, kind, getattr(spec, "area_cm2", None),
                             getattr(spec, "dwell_h", None) or 0.0, seed, params,
                             t_ready_s=t_ready)
        except (ValueError, TypeError) as exc:
            raise InputError(f"sheet {spec.id}: the simulated lab cannot build it ({exc})") \
                from None
        store.put_sim_truth(SHEET, run_id, sheet.id, 0, {
            "t_ready_s": t_ready, "rows": sheet.rows, "cols": sheet.cols,
            "pitch_mm": list(sheet.pitch_mm), "area_cm2": sheet.area_cm2,
            "dwell_h": sheet.dwell_h, "seed": seed, "params": asdict(params),
            "kind": kind, "layers": [dict(x) for x in layers], "summary": sheet.summary()})
        for truth in sheet.truths():
            store.put_sim_truth(SHEET_CELL, run_id, sheet.id,
                                sheet.position(truth["row"], truth["col"]), truth)
        self._lab.sheet = sheet


def _roll_films(store, roll: str) -> list[dict] | None:
    """The roll's true films, or None for a roll this store holds no layers of (made
    before or outside its records: the seeds' stack of the kind stands in)."""
    try:
        return true_films(store, roll)
    except InputError:
        return None


def sheet_cell(store, sheet_id: str, row: int, col: int, now: float):
    """The cell at (row, col) of a sheet the simulated lab screened, rebuilt from the
    sheet's stored record (the newest run that loaded it: its films, settings and seed),
    formed and rested as it was on the prober, ready at the lab time `now` (a cycler
    mounting a cell picked from a screening gets that same cell: its films, its defects).
    None for a sheet no simulated run loaded, or one stored before its films were kept."""
    records = store.sim_truths(SHEET, sheet_id)
    if not records:
        return None
    record = records[max(records)]
    if "layers" not in record:
        return None
    sheet = SimSheet(sheet_id, record["rows"], record["cols"], tuple(record["pitch_mm"]),
                     record["layers"], record["kind"], record["area_cm2"], record["dwell_h"],
                     record["seed"], SheetParams.from_mapping(record["params"]), t_ready_s=now)
    return sheet.cell(row, col)
