"""A screening run's outputs: results table, yield, maps, STDF wafer map, exports.

The sheet is built through the real store: a 20×30 sheet (5 mm pitch) whose LiPON thickness
falls off from the centre by the cosine law (about −9 % at the corners), so the bulk
resistance — |Z| at 100 kHz — follows it; a few hard shorts (OCV ≈ 0), soft shorts and
high-impedance cells, and two cells the prober never contacted (tester faults).
"""

from __future__ import annotations

import csv
import math
import struct
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from lipon_hw.errors import InputError, MissingExtra
from lipon_hw.screening.maps import bin_map_figure, colour_limits, heat_map_figure
from lipon_hw.screening.metrics import ordered, parse
from lipon_hw.screening.outputs import (
    export_screening,
    map_metrics,
    recipe_bins,
    write_screening_outputs,
)
from lipon_hw.screening.stdf import FAR, PRR, Body, record
from lipon_hw.screening.tables import (
    HEAD_COLUMNS,
    bin_defs,
    results_frame,
    run_yield,
    write_yield_csv,
    yield_table,
)
from lipon_hw.store import Store
from lipon_hw.store_schema import ScreenCell, Sheet

ROWS, COLS, PITCH = 20, 30, 5.0
CARD = (4, 8)
BINS = [
    {"soft_bin": 1, "name": "good", "hard_bin": 1, "hard_name": "pass", "passed": True,
     "tester_fault": False},
    {"soft_bin": 2, "name": "soft short", "hard_bin": 2, "hard_name": "short", "passed": False,
     "tester_fault": False},
    {"soft_bin": 3, "name": "hard short", "hard_bin": 2, "hard_name": "short", "passed": False,
     "tester_fault": False},
    {"soft_bin": 4, "name": "high impedance", "hard_bin": 3, "hard_name": "impedance",
     "passed": False, "tester_fault": False},
    {"soft_bin": 5, "name": "thin electrolyte", "hard_bin": 3, "hard_name": "impedance",
     "passed": False, "tester_fault": False},
    {"soft_bin": 9, "name": "tester fault", "hard_bin": 9, "hard_name": "tester fault",
     "passed": False, "tester_fault": True},
]
HARD_SHORTS = {(3, 4), (10, 15), (18, 29)}
SOFT_SHORTS = {(7, 22), (15, 2)}
HIGH_Z = {(12, 8)}
LOST = {(5, 5), (20, 30)}
FREQS = (100000, 1000, 10)


def thickness_factor(row: int, col: int) -> float:
    """Cosine-law fall-off of a point source 400 mm above the sheet's centre."""
    x = (col - 1 - (COLS - 1) / 2) * PITCH
    y = (row - 1 - (ROWS - 1) / 2) * PITCH
    return (1 + (x * x + y * y) / 400.0 ** 2) ** -2


def _cell(run_id, row, col, rng) -> ScreenCell:
    block = ((row - 1) // CARD[0]) * math.ceil(COLS / CARD[1]) + (col - 1) // CARD[1] + 1
    site = ((row - 1) % CARD[0]) * CARD[1] + (col - 1) % CARD[1] + 1
    r_bulk = 167.0 * thickness_factor(row, col) * (1 + 0.002 * rng.standard_normal())
    ocv = 4.15 + 0.001 * rng.standard_normal()
    soft, rule, attempts, contact = 1, "pass", 1, "ok"
    if (row, col) in HARD_SHORTS:
        soft, rule, ocv, r_bulk = 3, "ocv_below_0.5V", 0.002 * rng.random(), 4.0
    elif (row, col) in SOFT_SHORTS:
        soft, rule, ocv = 2, "ocv_below_4.05V", 3.7
    elif (row, col) in HIGH_Z:
        soft, rule, r_bulk = 4, "z_above_400ohm", 2500.0
    metrics = {"ocv_V": ocv, "r_bulk_ohm": r_bulk, "r_dc_ohm": r_bulk + 35.0}
    for f in FREQS:
        metrics[f"z_{f}Hz_ohm"] = r_bulk + 2.0 + 3e5 / f
        metrics[f"phase_{f}Hz_deg"] = -math.degrees(math.atan2(3e5 / f, r_bulk))
    if (row, col) in LOST:
        soft, rule, attempts, contact = 9, "no_contact", 3, "lost"
        metrics = {"ocv_V": 0.0, "z_100000Hz_ohm": 1e12}
    b = BINS[[d["soft_bin"] for d in BINS].index(soft)]
    return ScreenCell(run_id, "SH-7", row, col, site=site, touchdown=block, t_s=2.5 * block,
                      attempts=attempts, contact=contact, metrics=metrics, soft_bin=soft,
                      soft_bin_name=b["name"], hard_bin=b["hard_bin"],
                      hard_bin_name=b["hard_name"], passed=b["passed"], rule=rule)


@pytest.fixture(scope="module")
def screened(tmp_path_factory):
    root = tmp_path_factory.mktemp("screened")
    store = Store(root / "data")
    run = store.create_run("sheet screening", "screening", "s.yaml", "kind: screening", "",
                           7, None)
    store.add_sheet(Sheet("SH-7", "ROLL-3", ROWS, COLS, PITCH, PITCH, run))
    rng = np.random.default_rng(7)
    store.add_screen_cells([_cell(run, r, c, rng) for r in range(1, ROWS + 1)
                            for c in range(1, COLS + 1)])
    store.set_status(run, "done")
    return store, run, root


def test_results_frame_has_a_row_per_cell_with_position_metrics_and_bins(screened):
    store, run, _ = screened
    frame = results_frame(store, run)
    assert frame.num_rows == ROWS * COLS
    names = frame.column_names
    assert tuple(names[:len(HEAD_COLUMNS)]) == HEAD_COLUMNS
    assert names[len(HEAD_COLUMNS):len(HEAD_COLUMNS) + 4] == \
        ["ocv_V", "z_10Hz_ohm", "z_1000Hz_ohm", "z_100000Hz_ohm"]
    assert names[-6:] == ["soft_bin", "soft_bin_name", "hard_bin", "hard_bin_name", "passed",
                          "rule"]
    rows = frame.to_pylist()
    by_pos = {(r["row"], r["col"]): r for r in rows}
    r = by_pos[(3, 7)]
    assert r["cell_id"] == "SH-7-R03C07" and r["sheet_id"] == "SH-7"
    assert (r["x_mm"], r["y_mm"]) == (30.0, 10.0)
    cell = next(c for c in store.screen_cells(run) if (c.row, c.col) == (3, 7))
    assert r["z_1000Hz_ohm"] == cell.metrics["z_1000Hz_ohm"]
    assert (r["site"], r["touchdown"], r["soft_bin"], r["passed"]) == \
        (cell.site, cell.touchdown, 1, True)
    lost = by_pos[(5, 5)]
    assert lost["contact"] == "lost" and lost["attempts"] == 3
    assert lost["r_bulk_ohm"] is None and lost["soft_bin_name"] == "tester fault"
    assert by_pos[(10, 15)]["rule"] == "ocv_below_0.5V"


def test_yield_counts_tester_faults_apart(screened, tmp_path):
    store, run, _ = screened
    cells = store.screen_cells(run)
    table = yield_table(cells, BINS, on_sheet=ROWS * COLS)
    bad = len(HARD_SHORTS) + len(SOFT_SHORTS) + len(HIGH_Z) + len(LOST)
    assert (table.measured, table.passed, table.tester_faults, table.valid) == \
        (600, 600 - bad, 2, 598)
    assert table.yield_percent == pytest.approx(100 * 592 / 600)
    assert table.valid_yield_percent == pytest.approx(100 * 592 / 598)
    counts = {(b.level, b.bin): (b.count, b.percent) for b in table.bins}
    assert counts[("hard", 2)] == (5, pytest.approx(100 * 5 / 600))
    assert counts[("soft", 3)][0] == 3 and counts[("soft", 2)][0] == 2
    assert counts[("soft", 5)] == (0, 0.0)  # a bin of the recipe no cell fell in
    assert counts[("hard", 9)][0] == 2
    lines = table.lines()
    assert lines[0].startswith("yield 98.7 % (592 passed of 600 measured of 600 on the sheet)")
    assert "99.0 % of the 598 validly tested (2 tester faults set apart)" in lines[0]
    assert any("hard bin   2 short" in ln and "(fail)" in ln for ln in lines)
    assert any("soft bin   3 hard short" in ln for ln in lines)
    with open(write_yield_csv(table, tmp_path / "y.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["name"]: r["count"] for r in rows if r["level"] == "total"}["valid"] == "598"
    assert float(next(r for r in rows if r["name"] == "valid_yield_percent")["percent"]) == \
        pytest.approx(100 * 592 / 598, abs=1e-3)
    # without the recipe's bins: those the cells hold; the one whose cells all lost contact
    # is the tester-fault bin
    derived = bin_defs(cells)
    assert [b.soft_bin for b in derived] == [1, 2, 3, 4, 9]
    assert [b.soft_bin for b in derived if b.tester_fault] == [9]
    assert yield_table(cells).valid == 598
    assert run_yield(store, run, BINS)["SH-7"].lines() == lines


def test_heat_map_follows_the_thickness_gradient(screened):
    store, run, _ = screened
    sheet, cells = store.sheet("SH-7"), store.screen_cells(run)
    fig = heat_map_figure(sheet, cells, "z_100000Hz_ohm", faults={9}, run_id=run)
    ax = fig.axes[0]
    image = ax.images[0]
    shown = np.ma.filled(image.get_array().astype(float), np.nan)
    assert shown.shape == (ROWS, COLS)
    assert np.isnan(shown[4, 4]) and np.isnan(shown[19, 29])  # tester faults: no colour
    truth = np.array([[thickness_factor(r, c) for c in range(1, COLS + 1)]
                      for r in range(1, ROWS + 1)])
    good = np.isfinite(shown)
    for r, c in HARD_SHORTS | HIGH_Z:
        good[r - 1, c - 1] = False
    assert np.corrcoef(shown[good], truth[good])[0, 1] > 0.95
    centre = np.nanmedian(shown[8:12, 12:18])  # the middle of the sheet, and its corners
    assert centre > 1.07 * np.nanmax(shown[[0, 0, -1, -1], [0, -1, 0, -1]])
    lo, hi = image.get_clim()  # a short (4 Ω) or the high-impedance cell set neither limit
    assert 150 < lo < 160 and 170 < hi < 180
    bar_label = fig.axes[-1].get_ylabel()
    assert "|Z| at 100 kHz / Ω" in bar_label and "percentile" in bar_label
    title = fig.get_suptitle()
    assert title.startswith("SH-7: |Z| at 100 kHz\nrun ") and "median 16" in title
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["far below the colour range (3 cells)",  # the hard shorts
                      "far above the colour range (1 cell)",  # the high-impedance cell
                      "tester fault: no contact (2 cells)"]
    ocv = heat_map_figure(sheet, cells, "ocv_V", faults={9}).axes[0].images[0].get_clim()
    assert ocv[0] > 4.0  # three hard shorts at 0 V do not flatten the OCV map
    binned = bin_map_figure(sheet, cells, bin_defs(cells, BINS), run_id=run)
    hard = [t.get_text() for t in binned.legends[0].get_texts()]
    assert hard[:2] == ["1 pass: 592 (98.7 %)", "2 short: 5 (0.8 %)"]
    written = sorted(t.get_text() for t in binned.axes[0].texts)
    assert written == sorted(["2", "2", "3", "3", "3", "4", "9", "9"])


def test_every_output_written_under_the_sheet(tmp_path):
    # a small sheet: each PNG costs the same whatever the cells, so few metrics keep it fast
    store = Store(tmp_path / "data")
    run = store.create_run("small", "screening", "s.yaml", "kind: screening", "", 1, None)
    store.add_sheet(Sheet("SH-2", None, 6, 8, 4.0, 5.0, run))
    rng = np.random.default_rng(2)
    cells = []
    for r, c in ((r, c) for r in range(1, 7) for c in range(1, 9)):
        full = _cell(run, r, c, rng)
        keep = {k: full.metrics[k] for k in ("ocv_V", "z_1000Hz_ohm", "phase_1000Hz_deg")
                if k in full.metrics}
        cells.append(ScreenCell(**{**full.to_dict(), "sheet_id": "SH-2", "metrics": keep}))
    store.add_screen_cells(cells)
    files = write_screening_outputs(store, run, tmp_path / "out", bins=BINS, brief=True)
    assert all(p.parent == tmp_path / "out" / "SH-2" for p in files)
    assert sorted(p.name for p in files) == [
        "SH-2-bins.png", "SH-2-cells.csv", "SH-2-cells.parquet", "SH-2-ocv_V.png",
        "SH-2-yield.csv", "SH-2-z_1000Hz_ohm.png", "SH-2.stdf"]  # brief: no phase maps
    for p in files:
        if p.suffix == ".png":
            head = p.read_bytes()[:24]
            assert head[:8] == b"\x89PNG\r\n\x1a\n"
            width, height = struct.unpack(">II", head[16:24])
            assert width > 800 and height > 500 and p.stat().st_size > 20_000
    frame = pq.read_table(tmp_path / "out" / "SH-2" / "SH-2-cells.parquet")
    assert frame.num_rows == 48 and frame.column("y_mm").to_pylist()[-1] == 25.0
    assert map_metrics(["phase_10Hz_deg", "z_10Hz_ohm", "ocv_V"], brief=False) == \
        ["ocv_V", "z_10Hz_ohm", "phase_10Hz_deg"]
    assert map_metrics(["phase_10Hz_deg", "z_10Hz_ohm", "ocv_V"], brief=True) == \
        ["ocv_V", "z_10Hz_ohm"]


def _parse_stdf(path):
    from pystdf.IO import Parser

    records = []

    class Sink:
        def after_send(self, _source, data):
            kind, fields = data
            records.append((type(kind).__name__.upper(), dict(zip(kind.fieldNames, fields,
                                                                   strict=True))))

    with open(path, "rb") as f:
        parser = Parser(inp=f)
        parser.addSink(Sink())
        parser.parse()
        assert parser.endian == "<"
    return records


def test_stdf_read_back_by_an_independent_reader(screened, tmp_path):
    store, run, _ = screened
    (path,) = export_screening(store, run, "stdf", tmp_path / "sheet.stdf", bins=BINS)
    records = _parse_stdf(path)
    kinds = [k for k, _ in records]
    assert kinds[:3] == ["FAR", "MIR", "SDR"] and kinds[-1] == "MRR"
    for k in ("FAR", "MIR", "SDR", "WCR", "WIR", "WRR", "PCR", "MRR"):
        assert kinds.count(k) == 1, k
    cells = store.screen_cells(run)
    assert kinds.count("PIR") == kinds.count("PRR") == 600
    assert kinds.count("PTR") == sum(len(c.metrics) for c in cells)
    assert kinds.count("TSR") == 9  # ocv, r_bulk, r_dc, |Z| and phase at 3 f
    by_id = {f"SH-7-R{c.row:02d}C{c.col:02d}": c for c in cells}
    for k, f in records:
        if k == "PRR":
            c = by_id[f["PART_ID"]]
            assert (f["X_COORD"], f["Y_COORD"], f["HARD_BIN"], f["SOFT_BIN"], f["SITE_NUM"]) \
                == (c.col, c.row, c.hard_bin, c.soft_bin, c.site)
            assert bool(f["PART_FLG"] & 0x08) == (not c.passed)
            assert bool(f["PART_FLG"] & 0x04) == (c.contact == "lost")
            assert f["NUM_TEST"] == len(c.metrics)
    hbr = {f["HBIN_NUM"]: (f["HBIN_CNT"], f["HBIN_PF"], f["HBIN_NAM"])
           for k, f in records if k == "HBR"}
    assert hbr == {1: (592, "P", "pass"), 2: (5, "F", "short"), 3: (1, "F", "impedance"),
                   9: (2, "F", "tester fault")}
    sbr = {f["SBIN_NUM"]: f["SBIN_CNT"] for k, f in records if k == "SBR"}
    assert sbr == {1: 592, 2: 2, 3: 3, 4: 1, 5: 0, 9: 2}
    wrr = next(f for k, f in records if k == "WRR")
    assert (wrr["WAFER_ID"], wrr["PART_CNT"], wrr["GOOD_CNT"], wrr["ABRT_CNT"]) == \
        ("SH-7", 600, 592, 2)
    wcr = next(f for k, f in records if k == "WCR")
    assert (wcr["DIE_WID"], wcr["DIE_HT"], wcr["WF_UNITS"], wcr["POS_Y"]) == (5.0, 5.0, 3, "D")
    # PTR values: each cell's metrics as 4-byte floats, tied to its part by site and order
    open_parts: dict[int, list] = {}
    seen = 0
    for k, f in records:
        if k == "PIR":
            open_parts[f["SITE_NUM"]] = []
        elif k == "PTR":
            open_parts[f["SITE_NUM"]].append(f)
        elif k == "PRR":
            c = by_id[f["PART_ID"]]
            got = {p["TEST_TXT"]: p["RESULT"] for p in open_parts.pop(f["SITE_NUM"])}
            assert got.keys() == c.metrics.keys()
            for name, value in c.metrics.items():
                assert got[name] == pytest.approx(value, rel=1e-6)
            seen += 1
    assert seen == 600
    units = {f["TEST_TXT"]: f["UNITS"] for k, f in records if k == "PTR" and f["UNITS"]}
    assert units["ocv_V"] == "V" and units["z_1000Hz_ohm"] == "ohm"
    tsr = {f["TEST_NAM"]: f for k, f in records if k == "TSR"}
    r_bulk = [c.metrics["r_bulk_ohm"] for c in cells if c.contact == "ok"]
    assert tsr["r_bulk_ohm"]["EXEC_CNT"] == 598
    assert tsr["r_bulk_ohm"]["TEST_MAX"] == pytest.approx(max(r_bulk), rel=1e-6)


def test_stdf_record_header_is_the_specifications():
    # FAR: REC_LEN 2 (U*2, little-endian), REC_TYP 0, REC_SUB 10, CPU_TYPE 2, STDF_VER 4
    assert record(FAR, Body().u1(2).u1(4)) == bytes([0x02, 0x00, 0x00, 0x0A, 0x02, 0x04])
    prr = record(PRR, Body().u1(1).u1(3).u1(0x08).u2(10).u2(2).u2(3).i2(30).i2(-20).u4(1500)
                 .cn("C1").cn(""))
    assert prr[:4] == struct.pack("<HBB", len(prr) - 4, 5, 20) == b"\x15\x00\x05\x14"
    assert prr[4:] == bytes([1, 3, 0x08, 10, 0, 2, 0, 3, 0, 30, 0, 0xEC, 0xFF,
                             0xDC, 0x05, 0, 0, 2]) + b"C1" + b"\x00"


def test_stdf_file_is_a_chain_of_whole_records(screened, tmp_path):
    store, run, _ = screened
    (path,) = export_screening(store, run, "stdf", tmp_path)
    assert path.name == f"run{run}.stdf"
    data = path.read_bytes()
    at, kinds = 0, []
    while at < len(data):
        length, typ, sub = struct.unpack_from("<HBB", data, at)
        kinds.append((typ, sub))
        at += 4 + length
    assert at == len(data) and kinds[0] == (0, 10) and kinds[-1] == (1, 20)


def test_exports_refuse_to_overwrite_and_the_store(screened, tmp_path):
    store, run, root = screened
    (out,) = export_screening(store, run, "csv", tmp_path / "cells.csv")
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 600 and rows[0]["cell_id"] == "SH-7-R01C01"
    lost = next(r for r in rows if r["cell_id"] == "SH-7-R05C05")
    assert lost["r_bulk_ohm"] == "" and lost["passed"] == "False"
    before = out.read_bytes()
    with pytest.raises(InputError, match="exists; pass --force"):
        export_screening(store, run, "csv", out)
    assert out.read_bytes() == before
    export_screening(store, run, "csv", out, force=True)
    with pytest.raises(InputError, match="of the store"):
        export_screening(store, run, "parquet", store.path, force=True)
    with pytest.raises(InputError, match="format xlsx is unknown"):
        export_screening(store, run, "xlsx", tmp_path / "x")
    other = store.create_run("dep", "deposition", "d.yaml", "", "", 1, None)
    with pytest.raises(InputError, match=f"run {other} .* has no screened cells"):
        export_screening(store, other, "csv", tmp_path / "y.csv")
    (pq_out,) = export_screening(store, run, "parquet", str(tmp_path / "dir") + "/")
    assert pq_out.name == f"run{run}-cells.parquet"
    assert pq.read_table(pq_out).equals(results_frame(store, run))


def test_metric_names_read_as_labels_and_bad_bins_are_one_sentence():
    assert parse("z_100000Hz_ohm").label == "|Z| at 100 kHz / Ω"
    assert parse("phase_0.5Hz_deg").label == "phase at 500 mHz / °"
    assert parse("r_bulk_ohm").label == "R_bulk (fitted) / Ω"
    assert parse("ocv_V").label == "OCV / V" and parse("odd_thing").label == "odd thing"
    assert ordered(["r_dc_ohm", "z_1e+05Hz_ohm", "phase_10Hz_deg", "z_10Hz_ohm", "ocv_V",
                    "extra"]) == ["ocv_V", "z_10Hz_ohm", "z_1e+05Hz_ohm", "phase_10Hz_deg",
                                  "r_dc_ohm", "extra"]
    with pytest.raises(InputError, match="screening bin 2 has no 'hard_bin'"):
        bin_defs([], [BINS[0], {"soft_bin": 2, "name": "x", "hard_name": "y", "passed": 0}])


def test_without_the_plots_extra_the_data_files_are_written_and_the_maps_named(
        screened, tmp_path, monkeypatch):
    store, run, _ = screened
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    monkeypatch.delitem(sys.modules, "lipon_hw.screening.maps", raising=False)
    with pytest.raises(MissingExtra, match=r"drawing the sheet's maps needs .*lipon-hw\[plots\]"):
        write_screening_outputs(store, run, tmp_path, bins=BINS, brief=True)
    assert sorted(p.name for p in (tmp_path / "SH-7").iterdir()) == \
        ["SH-7-cells.csv", "SH-7-cells.parquet", "SH-7-yield.csv", "SH-7.stdf"]



RECIPE = """\
name: bins from the run's own recipe
kind: screening
sheet: {id: SH-R, rows: 3, cols: 4, pitch_mm: [5, 5]}
prober: {sites: [1, 2]}
tests:
  ocv: {}
  eis: {frequencies_Hz: [1000, 10]}
bins:
  fail:
    - {name: hard_short, soft_bin: 10, hard_bin: 5, hard_name: short, when: "ocv_V < 1"}
    - {name: soft_short, soft_bin: 11, hard_bin: 5, when: "ocv_V < 4.1"}
  grades:
    - {name: A, soft_bin: 1, hard_bin: 1}
    - {name: B, soft_bin: 2, hard_bin: 2, when: "z_1000Hz_ohm > 250"}
  tester_fault: {name: no_contact, soft_bin: 98, hard_bin: 8}
"""


def test_without_bins_given_the_runs_recipe_names_them(tmp_path):
    store = Store(tmp_path / "data")
    run = store.create_run("r", "screening", "sheet.yaml", RECIPE, "", 1, None)
    store.add_sheet(Sheet("SH-R", None, 3, 4, 5.0, 5.0, run))
    defs = recipe_bins(store.run(run))
    assert [(d["soft_bin"], d["hard_bin"], d["hard_name"], d["passed"], d["tester_fault"])
            for d in defs] == [(1, 1, "A", True, False), (2, 2, "B", True, False),
                               (10, 5, "short", False, False), (11, 5, "short", False, False),
                               (98, 8, "no_contact", False, True)]

    def cell(row, col, soft, hard, name, hard_name, passed, metrics, rule):
        return ScreenCell(run, "SH-R", row, col, site=col % 2 + 1, touchdown=1, t_s=1.0,
                          attempts=1, contact="ok", metrics=metrics, soft_bin=soft,
                          soft_bin_name=name, hard_bin=hard, hard_bin_name=hard_name,
                          passed=passed, rule=rule)

    good = {"ocv_V": 4.2, "z_1000Hz_ohm": 120.0, "z_10Hz_ohm": 900.0}
    cells = [cell(r, c, 1, 1, "A", "A", True, good, "pass")
             for r in range(1, 4) for c in range(1, 5)]
    cells[5] = cell(2, 2, 10, 5, "hard_short", "short", False, {**good, "ocv_V": 0.01},
                    "hard_short")
    # measured (contact ok), but a value a rule needs is missing: the recipe's tester fault
    cells[6] = cell(2, 3, 98, 8, "no_contact", "no_contact", False, {"ocv_V": 4.2},
                    "z_1000Hz_ohm not measured")
    store.add_screen_cells(cells)
    (path,) = export_screening(store, run, "stdf", tmp_path / "r.stdf")
    records = _parse_stdf(path)
    assert {f["SBIN_NUM"]: f["SBIN_CNT"] for k, f in records if k == "SBR"} == \
        {1: 10, 2: 0, 10: 1, 11: 0, 98: 1}
    fault = next(f for k, f in records if k == "PRR" and f["PART_ID"] == "SH-R-R02C03")
    assert fault["PART_FLG"] & 0x04  # abnormal end: a tester fault, though it touched
    table = yield_table(store.screen_cells(run), defs)
    assert (table.tester_faults, table.valid, table.passed) == (1, 11, 10)
    broken = store.create_run("r2", "screening", "sheet.yaml", "kind: screening\n", "", 1, None)
    assert recipe_bins(store.run(broken)) is None  # then the cells' own bins serve


def test_a_simulated_sheets_heat_map_follows_the_coaters_lipon_map():
    """The acceptance on the simulator's own sheet (cosine-law coaters, seeded defects):
    |Z|'s real part at 10 kHz (the LiPON bulk) as mapped follows the LiPON thickness the
    coater laid, and the colours span the good cells, not the defects."""
    from lipon_hw.sim.sheet import SimSheet

    rows, cols = 10, 30  # the whole width of the web: the gradient runs across it
    sim = SimSheet("SIM-2", rows, cols, (5.0, 5.0), dwell_h=12.0, seed=3)
    cells, good = [], np.zeros((rows, cols), bool)
    t = sim.t_ready_s + 60.0
    for r in range(1, rows + 1):
        for c in range(1, cols + 1):
            cell = sim.cell(r, c)
            m = {"ocv_V": cell.ocv_V(t), "r_hf_ohm": cell.impedance_ohm(t, 1e4).real}
            good[r - 1, c - 1] = sim.truth(r, c)["class"] == "good"
            cells.append(ScreenCell(1, "SIM-2", r, c, 1, 1, 1.0, 1, "ok", m, 1, "A", 1, "A",
                                    True, "pass"))
    assert 0.8 * good.size < good.sum() < good.size  # defects seeded, most cells good
    fig = heat_map_figure(Sheet("SIM-2", None, rows, cols, 5.0, 5.0, 1), cells, "r_hf_ohm")
    image = fig.axes[0].images[0]
    shown = np.ma.filled(image.get_array().astype(float), np.nan)
    lipon = sim.thickness_maps_nm()["lipon_nm"]
    assert np.corrcoef(shown[good], lipon[good])[0, 1] > 0.98
    lo, hi = image.get_clim()
    span = shown[good].max() - shown[good].min()
    assert shown[good].min() - 0.1 * span <= lo and hi <= shown[good].max() + 0.1 * span
    # OCVs of good cells a few µV apart at 4.2 V: drawn as their difference from 4.2 V
    ocv = heat_map_figure(Sheet("SIM-2", None, rows, cols, 5.0, 5.0, 1), cells, "ocv_V")
    assert ocv.axes[-1].get_ylabel().startswith("OCV − 4.2 V / µV\n")
    shown = np.ma.filled(ocv.axes[0].images[0].get_array().astype(float), np.nan)
    truth = np.array([[c.metrics["ocv_V"] for c in cells[r * cols:(r + 1) * cols]]
                      for r in range(rows)])
    assert np.allclose(shown, (truth - 4.2) * 1e6)


def test_colour_limits_hold_to_the_bulk_of_the_cells():
    rng = np.random.default_rng(1)
    bulk = 230 + 20 * rng.random(970)
    thin = 160 + rng.random(30)  # 3 %: more than the 2nd percentile can leave out
    lo, hi = colour_limits(np.concatenate([bulk, thin]))
    assert 215 < lo < 232 and 248 < hi < 251  # the fence, far above the thin cells
    assert colour_limits(np.array([4.2, 4.2, 4.2]))[0] < 4.2 < colour_limits(
        np.array([4.2, 4.2, 4.2]))[1]  # a flat map still has a range
    assert colour_limits(np.array([])) == (0.0, 1.0)
