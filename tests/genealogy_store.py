"""A store holding one genealogy, built through the Store API: a roll with two layers
from a deposition run, a 4×5 sheet cut from it, its cells screened into bins, and a
cycling run whose channels 1 and 2 cycled two of those cells."""

from __future__ import annotations

from pathlib import Path

from lipon_hw.store import Store
from lipon_hw.store_schema import ScreenCell, Sheet

ROLL, SHEET, ROWS, COLS = "ROLL-0001", "SHEET-0001", 4, 5
#: hard bin of each cell, row by row: 1 pass, 2 marginal, 5 short, 9 tester fault
BINS = ((1, 1, 2, 1, 1),
        (1, 5, 1, 2, 1),
        (2, 1, 1, 1, 9),
        (1, 1, 2, 5, 1))
BIN_NAMES = {1: "pass", 2: "marginal", 5: "short", 9: "tester fault"}
CYCLED = ((1, 3), (2, 1))  # (row, col) on channels 1 and 2


def screen_cell(run_id: int, row: int, col: int, hard_bin: int, sheet: str = SHEET
                ) -> ScreenCell:
    name = BIN_NAMES[hard_bin]
    return ScreenCell(run_id, sheet, row, col, site=(col - 1) % 4 + 1, touchdown=row,
                      t_s=10.0 * row + col, attempts=2 if hard_bin == 9 else 1,
                      contact="lost" if hard_bin == 9 else "ok",
                      metrics={"ocv_V": 0.01 if hard_bin == 5 else 4.05 - 0.01 * col,
                               "r_bulk_ohm": 150.0 + row + col},
                      soft_bin=hard_bin * 10, soft_bin_name=name, hard_bin=hard_bin,
                      hard_bin_name=name, passed=hard_bin == 1,
                      rule="pass" if hard_bin == 1 else f"{name} rule")


def build(data: Path) -> dict[str, int]:
    """The store in `data`; the run ids by role."""
    store = Store(data)
    runs = {}
    runs["lco"] = store.create_run("LCO on the roll", "deposition", "lco.yaml", "x", "", 1, ROLL)
    runs["lipon"] = store.create_run("LiPON on the roll", "deposition", "lipon.yaml", "x", "",
                                     1, ROLL)
    store.ensure_sample(ROLL, "stainless steel web")
    store.add_layer(ROLL, runs["lco"], "LCO", 10000.0, 2.0, "sputter", 100.0, {"step": 3})
    store.add_layer(ROLL, runs["lipon"], "LiPON", 1000.0, 0.45, "sputter", 200.0, {"step": 4})
    runs["screen"] = store.create_run("sheet screening", "screening", "sheet.yaml", "x", "",
                                      1, SHEET)
    store.add_sheet(Sheet(SHEET, ROLL, ROWS, COLS, 5.0, 5.0, runs["screen"]))
    store.add_screen_cells(screen_cell(runs["screen"], r + 1, c + 1, b)
                           for r, row in enumerate(BINS) for c, b in enumerate(row))
    for run_id in runs.values():
        store.set_status(run_id, "completed")
    runs["cycling"] = store.create_run("screened cells", "cycling", "cyc.yaml", "x", "", 1,
                                       None)
    for channel, (row, col) in enumerate(CYCLED, start=1):
        store.add_channel(runs["cycling"], channel, "mes4", f"{SHEET}-R{row:02d}C{col:02d}",
                          "screened cells")
        for cycle in (1, 2, 3):
            store.add_cycle(runs["cycling"], channel, cycle, {
                "cycle": cycle, "charge_Ah": 1.0e-4, "discharge_Ah": (1.0 - 0.01 * cycle) * 1e-4,
                "charge_Wh": 4e-4, "discharge_Wh": 3.8e-4,
                "coulombic_efficiency": 0.99 - 0.001 * channel, "retention": None,
                "t_end_s": 3600.0 * cycle})
        store.update_channel(runs["cycling"], channel, "completed", "", 4, 12, 3 * 3600.0, {})
    store.set_status(runs["cycling"], "completed")
    store.close()
    return runs
