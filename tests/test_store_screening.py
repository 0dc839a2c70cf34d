"""The store's sheets, screened cells and sample links (layout 6), on both back ends."""

from __future__ import annotations

import pytest

from lipon_hw.errors import InputError
from lipon_hw.store import Store
from lipon_hw.store_schema import ScreenCell, Sheet
from lipon_hw.store_screening import CELL_OF_SHEET, SHEET_OF_ROLL, cell_id


def _cell(run_id, row, col, bin_=1):
    return ScreenCell(run_id, "SH-1", row, col, site=1, touchdown=1, t_s=2.0, attempts=1,
                      contact="ok", metrics={"ocv_V": 3.9, "z_1000Hz_ohm": 160.0},
                      soft_bin=bin_, soft_bin_name="good", hard_bin=bin_, hard_bin_name="pass",
                      passed=True, rule="pass")


def test_sheet_cells_and_links_round_trip(tmp_path, backend):
    store = Store(tmp_path)
    run = store.create_run("screen", "screening", "s.yaml", "kind: screening", "", 1, None)
    store.add_sheet(Sheet("SH-1", "ROLL-1", 2, 3, 5.0, 5.0, run))
    store.add_screen_cells([_cell(run, 1, 1), _cell(run, 2, 3, bin_=2)])
    store.flush()
    again = Store(tmp_path, read_only=True)
    assert again.sheet("SH-1") == Sheet("SH-1", "ROLL-1", 2, 3, 5.0, 5.0, run)
    cells = again.screen_cells(run)
    assert [(c.row, c.col, c.hard_bin) for c in cells] == [(1, 1, 1), (2, 3, 2)]
    assert cells[0].metrics == {"ocv_V": 3.9, "z_1000Hz_ohm": 160.0}
    assert again.screened_positions(run) == {(1, 1), (2, 3)}
    assert [(lk.child, lk.relation) for lk in again.parents("SH-1")] == \
        [("SH-1", SHEET_OF_ROLL)]
    assert [lk.child for lk in again.children("SH-1")] == [cell_id("SH-1", 1, 1),
                                                          cell_id("SH-1", 2, 3)]
    assert again.parents("SH-1-R02C03")[0].relation == CELL_OF_SHEET
    assert again.sample("SH-1-R02C03").substrate == "cell"
    assert again.screen_results_of("SH-1", 2, 3)[0].soft_bin == 2


def test_a_sheet_stored_with_another_geometry_is_refused(tmp_path, backend):
    store = Store(tmp_path)
    run = store.create_run("screen", "screening", "s.yaml", "kind: screening", "", 1, None)
    store.add_sheet(Sheet("SH-1", None, 2, 3, 5.0, 5.0, run))
    store.add_sheet(Sheet("SH-1", None, 2, 3, 5.0, 5.0, run + 1))  # the same: fine
    with pytest.raises(InputError, match="stored as 2×3 cells"):
        store.add_sheet(Sheet("SH-1", None, 20, 30, 5.0, 5.0, run))
