"""A sample's genealogy both ways (`lipon_hw.genealogy`, `lipon-hw sample`), and cell
tests that pick their cells from a sheet's screening (`celltest.screened`)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from genealogy_store import BIN_NAMES, BINS, COLS, CYCLED, ROLL, ROWS, SHEET, build, screen_cell

from lipon_hw.celltest import screened
from lipon_hw.celltest.kind import KIND
from lipon_hw.celltest.plan import load
from lipon_hw.cli import main
from lipon_hw.engine.lifecycle import load_to_resume
from lipon_hw.errors import InputError
from lipon_hw.genealogy import lineage
from lipon_hw.station import load_station
from lipon_hw.store import Store
from lipon_hw.store_screening import CELL_OF_SHEET, SHEET_OF_ROLL, cell_id

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "sequences/screened_cells_cycling.yaml"
STATION = load_station(None)
BIN_COUNTS = Counter(b for row in BINS for b in row)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    data = tmp_path_factory.mktemp("genealogy") / "d"
    return data, build(data)


@pytest.fixture
def store(made):
    s = Store(made[0], read_only=True)
    yield s
    s.close()


def bin_of(cid: str) -> int:
    row, col = int(cid[-5:-3]), int(cid[-2:])
    return BINS[row - 1][col - 1]


# --- the lineage -------------------------------------------------------------------------
def test_a_cell_goes_up_to_its_roll_and_its_deposition_runs(made, store):
    _, runs = made
    cell = cell_id(SHEET, *CYCLED[0])
    lin = lineage(store, cell)
    assert [(lk.child, lk.relation, lk.parent, lk.run_id) for lk in lin.ancestors] == [
        (cell, CELL_OF_SHEET, SHEET, runs["screen"]), (SHEET, SHEET_OF_ROLL, ROLL, runs["screen"])]
    assert lin.stack_of == ROLL and lin.sample.layers == ()
    assert [(la.material, la.run_id) for la in lin.stack] == [("LCO", runs["lco"]),
                                                              ("LiPON", runs["lipon"])]
    assert {lin.runs[runs[k]].kind for k in ("lco", "lipon")} == {"deposition"}
    assert lin.runs[runs["lco"]].name == "LCO on the roll"
    (screened_once,) = lin.screening
    assert (screened_once.run_id, screened_once.hard_bin) == (runs["screen"], bin_of(cell))
    assert screened_once.metrics["r_bulk_ohm"] == pytest.approx(150.0 + sum(CYCLED[0]))
    (test,) = lin.tests
    assert (test.run_id, test.channel, test.sample_id, test.status, test.cycles) == (
        runs["cycling"], 1, cell, "completed", 3)
    assert test.last_discharge_uAh == pytest.approx(97.0)
    assert test.mean_coulombic_efficiency == pytest.approx(0.989)  # cycles 2-3: 1 is formation
    assert (test.hard_bin, test.hard_bin_name) == (bin_of(cell), BIN_NAMES[bin_of(cell)])
    assert lin.sheet is None and lin.descendants == ()


def test_a_roll_goes_down_to_its_sheets_bins_and_every_cycled_cell(made, store):
    _, runs = made
    lin = lineage(store, ROLL)
    assert lin.ancestors == () and lin.stack_of == ROLL and len(lin.stack) == 2
    (sheet,) = lin.descendants
    assert (sheet.id, sheet.relation, sheet.depth) == (SHEET, SHEET_OF_ROLL, 1)
    assert sheet.sheet.cells == ROWS * COLS and sheet.sheet.screenings == (runs["screen"],)
    assert {b.hard_bin: b.cells for b in sheet.sheet.bins} == BIN_COUNTS
    assert {b.hard_bin: b.name for b in sheet.sheet.bins} == BIN_NAMES
    assert sheet.sheet.listed is None  # counted, not listed, unless asked
    assert [(t.channel, t.sample_id) for t in lin.tests] == [
        (n, cell_id(SHEET, *rc)) for n, rc in enumerate(CYCLED, start=1)]
    assert set(lin.runs) == set(runs.values())


def test_a_sheet_counts_its_cells_per_bin_or_lists_them_all(store):
    lin = lineage(store, SHEET)
    assert [lk.parent for lk in lin.ancestors] == [ROLL] and lin.stack_of == ROLL
    assert {b.hard_bin: b.cells for b in lin.sheet.bins} == BIN_COUNTS
    assert lin.sheet.listed is None and lin.descendants == ()
    assert len(lin.tests) == len(CYCLED)
    listed = lineage(store, SHEET, cells=True).sheet.listed
    assert [(c.row, c.col, c.hard_bin) for c in listed] == [
        (r + 1, c + 1, b) for r, row in enumerate(BINS) for c, b in enumerate(row)]


def test_a_plain_sample_keeps_its_document(tmp_path):
    s = Store(tmp_path / "d")
    s.ensure_sample("P-1", "glass")
    s.add_layer("P-1", 1, "LiPON", 500.0, 0.4, "sputter", 10.0, {"step": 4})
    s.flush()
    lin = lineage(s, "P-1")
    assert lin.plain and lin.to_dict() == s.sample("P-1").to_dict()
    s.close()


def test_an_unknown_sample_is_refused_naming_it_and_the_store(store, made):
    with pytest.raises(InputError, match=f"sample 'NOPE' is not in {made[0]}"):
        lineage(store, "NOPE")


# --- the command -------------------------------------------------------------------------
def sample_cli(data, *args):
    return CliRunner().invoke(main, ["sample", *args, "--data", str(data)])


def test_sample_prints_up_films_bins_and_cycler_results(made):
    data, runs = made
    cell = cell_id(SHEET, *CYCLED[1])
    result = sample_cli(data, cell)
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"{cell} patterned on {SHEET}  (run {runs['screen']})" in out
    assert f"{SHEET} cut from {ROLL}" in out
    assert f"films (of {ROLL}):" in out and "LCO        10000.0 nm" in out
    assert f"run {runs['screen']}: hard bin 1 pass" in out
    assert f"run {runs['cycling']} ch  2  {cell} (bin 1 pass)  completed, 3 cycles" in out
    assert "mean CE 98.800 %" in out
    assert f"{runs['lco']:>6}  deposition  completed   LCO on the roll" in out


def test_sample_of_a_sheet_counts_bins_and_lists_every_cell_when_asked(made):
    data, _ = made
    counted = sample_cli(data, SHEET).output.splitlines()
    assert f"  {ROWS * COLS} cells of {ROWS}×{COLS} at 5×5 mm, screened by run 3; " \
           "bins of run 3:" in counted
    assert "    bin   5 short                2" in counted
    assert not any(line.strip().startswith(f"{SHEET}-R") for line in counted)
    listed = sample_cli(data, SHEET, "--cells").output.splitlines()
    cells = [line.split()[0] for line in listed if line.strip().startswith(f"{SHEET}-R")]
    assert cells == [cell_id(SHEET, r, c) for r in range(1, ROWS + 1)
                     for c in range(1, COLS + 1)]


def test_sample_json_is_the_whole_lineage(made):
    data, runs = made
    doc = json.loads(sample_cli(data, ROLL, "--json", "--cells").output)
    assert list(doc)[:4] == ["id", "substrate", "created_at", "layers"]
    assert [la["material"] for la in doc["layers"]] == ["LCO", "LiPON"]
    assert "film_stack" not in doc  # its own
    (sheet,) = doc["descendants"]
    assert {b["hard_bin"]: b["cells"] for b in sheet["sheet"]["bins"]} == BIN_COUNTS
    assert len(sheet["sheet"]["listed"]) == ROWS * COLS
    assert [t["sample_id"] for t in doc["tests"]] == [cell_id(SHEET, *rc) for rc in CYCLED]
    assert doc["runs"][str(runs["cycling"])]["kind"] == "cycling"
    cell = json.loads(sample_cli(data, cell_id(SHEET, 1, 1), "--json").output)
    assert cell["film_stack"]["of"] == ROLL and cell["screening"][0]["hard_bin"] == 1
    assert [a["parent"] for a in cell["ancestors"]] == [SHEET, ROLL]
    assert "tests" not in cell  # never cycled


def test_an_unknown_sample_is_one_sentence_and_exit_2(made, tmp_path):
    data, _ = made
    proc = subprocess.run([sys.executable, "-m", "lipon_hw.cli", "sample", "NOPE", "--data",
                           str(data)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [f"error: sample 'NOPE' is not in "
                                                f"{data / 'lipon.db'}"]


# --- picking cells for a cycler ----------------------------------------------------------
def test_shares_are_even_over_the_bins_as_far_as_their_cells_allow():
    assert screened.shares({1: 13, 2: 4}, 8) == {1: 4, 2: 4}
    assert screened.shares({1: 13, 2: 4}, 7) == {1: 4, 2: 3}  # the first bin the remainder
    assert screened.shares({1: 13, 2: 2}, 8) == {1: 6, 2: 2}  # bin 2's shortfall to bin 1
    assert screened.shares({2: 0, 1: 13}, 5) == {2: 0, 1: 5}
    assert screened.shares({1: 3, 2: 3, 5: 3}, 9) == {1: 3, 2: 3, 5: 3}


def _cells(run_id=1):
    return [screen_cell(run_id, r + 1, c + 1, b) for r, row in enumerate(BINS)
            for c, b in enumerate(row)]


def test_a_pick_takes_the_count_from_the_bins_seeded():
    picked = screened.pick(_cells(), [1, 2], 8, seed=1)
    assert len(picked) == 8 and len({(c.row, c.col) for c in picked}) == 8
    assert [c.hard_bin for c in picked] == [1] * 4 + [2] * 4
    again = screened.pick(_cells(), [1, 2], 8, seed=1)
    assert [(c.row, c.col) for c in again] == [(c.row, c.col) for c in picked]
    others = {seed: [(c.row, c.col) for c in screened.pick(_cells(), [1, 2], 8, seed=seed)]
              for seed in range(2, 6)}
    assert any(p != [(c.row, c.col) for c in picked] for p in others.values())
    # a bin's pick does not hang on the other bins listed
    alone = screened.pick(_cells(), [1], 4, seed=1)
    assert [(c.row, c.col) for c in alone] == [(c.row, c.col) for c in picked[:4]]
    fives = screened.pick(_cells(), [5], 2, seed=7)
    assert sorted((c.row, c.col) for c in fives) == [(2, 2), (4, 4)]


def test_a_pick_of_more_cells_than_the_bins_hold_is_refused():
    with pytest.raises(screened.PickError, match="2 in bin 5, 1 in bin 9: too few for 4 "
                                                 "channels") as info:
        screened.pick(_cells(), [5, 9], 4, seed=1)
    assert info.value.field == "hard_bins"


PROTOCOL = """name: picked
kind: cycling
potentiostat: mes4
channels:
  "1-4": {{from_screening: {{sheet: {sheet}, hard_bins: {bins}, seed: 3{run}}}}}
  "5-6": {{from_screening: {{sheet: SHEET-0001, hard_bins: [1, 2], seed: 3}}}}
cell: {{kind: lco_anodeless, area_cm2: 0.16}}
safety: {{min_V: 2.5, max_V: 4.3}}
steps:
  - cv: {{voltage_V: 4.2, until: {{rate_C: 0.05, time_h: 4}}}}
  - cc: {{rate_C: -0.5, until: {{voltage_V: 3.0, time_h: 3}}}}
"""


def protocol(tmp_path, sheet=SHEET, bins="[1, 2]", run=""):
    path = tmp_path / "picked.yaml"
    path.write_text(PROTOCOL.format(sheet=sheet, bins=bins, run=run))
    return path


def test_a_second_run_picks_cells_no_run_has_named_and_a_resume_keeps_its_own(tmp_path):
    """A run's channels name the cells it picked; the same protocol loaded for a new run
    then picks others (none a channel of any run names: on a cycler already, or reserved by
    a run that may resume), while the first run read back to resume it (`resuming`) picks
    exactly its own again. When too few are left, the refusal says they are taken."""
    data = tmp_path / "d"
    build(data)
    s = Store(data)
    path = str(protocol(tmp_path))
    first = {p.channel: p.sample for p in load(path, STATION, s).channels}
    cycled = {cell_id(SHEET, *rc) for rc in CYCLED}
    assert len(set(first.values())) == 6 and not cycled & set(first.values())
    run_id = s.create_run("picked", "cycling", path, Path(path).read_text(), STATION.text, 1,
                          None)
    for channel, cell in first.items():
        s.add_channel(run_id, channel, "mes4", cell, "picked")
    second = {p.channel: p.sample for p in load(path, STATION, s).channels}
    assert len(set(second.values())) == 6
    assert not (set(first.values()) | cycled) & set(second.values())
    assert {p.channel: p.sample for p in load(path, STATION, s, resuming=run_id).channels} \
        == first
    # as the engine reads it back to resume it
    resumed = load_to_resume(KIND, s.run(run_id), STATION, s)
    assert {p.channel: p.sample for p in resumed.channels} == first
    # bins 1 and 2 hold 17 cells: 2 cycled and the first run's 6 left 9 for the second,
    # whose 6 leave 3, too few for the next run's first entry of 4
    again = s.create_run("picked again", "cycling", path, "x", "", 1, None)
    for channel, cell in second.items():
        s.add_channel(again, channel, "mes4", cell, "picked")
    # nor do a later run's cells (here the first of bin 1, ahead of the first run's picks
    # in the order the draw indexes) change what the first picked when it is read back
    assert cell_id(SHEET, 1, 1) not in first.values()
    s.add_channel(s.create_run("later", "cycling", path, "x", "", 1, None), 1, "mes4",
                  cell_id(SHEET, 1, 1), "picked")
    assert {p.channel: p.sample for p in load(path, STATION, s, resuming=run_id).channels} \
        == first
    with pytest.raises(InputError, match="not yet taken by a channel: too few for 4 "
                                         "channels"):
        load(path, STATION, s)
    s.close()


def test_a_run_read_back_takes_the_cells_its_channels_name_though_a_run_began_between(
        tmp_path):
    """Two runs started at once: run B's channels are stored between run A's pick and A's
    own row, so B has the lower id. A's workers, reading A back, take the cells A's channels
    name, not a new draw that counts B (B's cell, a bin-1 cell A did not pick, shifts the
    draw: counted, it gives other cells)."""
    data = tmp_path / "d"
    build(data)
    s = Store(data)
    path = str(protocol(tmp_path))
    picks = {p.channel: p.sample for p in load(path, STATION, s).channels}  # A's load
    assert cell_id(SHEET, 2, 3) not in picks.values()
    b = s.create_run("B", "cycling", path, "x", "", 1, None)
    s.add_channel(b, 1, "mes4", cell_id(SHEET, 2, 3), "picked")
    shifted = {p.channel: p.sample for p in load(path, STATION, s).channels}
    assert shifted != picks  # what A's workers would draw again, counting B
    a = s.create_run("A", "cycling", path, Path(path).read_text(), STATION.text, 1, None)
    for channel, cell in picks.items():
        s.add_channel(a, channel, "mes4", cell, "picked")
    assert b < a
    assert {p.channel: p.sample for p in load(path, STATION, s, resuming=a).channels} == picks
    assert {p.channel: p.sample for p in load_to_resume(KIND, s.run(a), STATION, s).channels} \
        == picks
    s.close()


def test_a_protocol_picks_its_channels_cells_from_the_store(made, store, tmp_path):
    proto = load(str(protocol(tmp_path)), STATION, store)
    samples = {p.channel: p.sample for p in proto.channels}
    assert len(set(samples.values())) == 6  # the second entry takes none the first took
    assert [bin_of(samples[n]) for n in range(1, 7)] == [1, 1, 2, 2, 1, 2]
    # the capacity for C-rates comes from the roll's cathode: 10 µm LCO on 0.16 cm²
    assert proto.channels[0].capacity_Ah == pytest.approx(69 * 10 * 0.16 * 1e-6)
    again = load(str(protocol(tmp_path)), STATION, store)
    assert {p.channel: p.sample for p in again.channels} == samples


@pytest.mark.parametrize("patch, field, words", [
    ({"sheet": "SHEET-0009"}, "from_screening.sheet", "sheet 'SHEET-0009' is not a sheet in"),
    ({"bins": "[5]"}, "from_screening.hard_bins",
     "screening run 3: the screening has 2 in bin 5: too few for 4 channels"),
    ({"run": ", run: 1"}, "from_screening.run", "run 1 did not screen sheet 'SHEET-0001'"),
])
def test_a_pick_that_cannot_be_made_names_file_line_and_field(store, tmp_path, patch, field,
                                                              words):
    path = protocol(tmp_path, **patch)
    with pytest.raises(InputError) as info:
        load(str(path), STATION, store)
    message = str(info.value)
    assert message.startswith(f"{path}:5: channels.1-4.{field}: "), message
    assert words in message and "\n" not in message


def test_a_sheet_known_but_never_screened_says_so(tmp_path):
    from lipon_hw.store_schema import Sheet

    s = Store(tmp_path / "d")
    run = s.create_run("cut", "screening", "s.yaml", "x", "", 1, None)
    s.add_sheet(Sheet(SHEET, ROLL, ROWS, COLS, 5.0, 5.0, run))
    with pytest.raises(InputError, match="channels.1-4.from_screening.sheet: sheet "
                                         "'SHEET-0001' has no screening in"):
        load(str(protocol(tmp_path)), STATION, s)
    s.close()


def test_on_the_simulated_lab_a_picked_cell_needs_films_to_be_built(tmp_path):
    """A screened sheet whose roll holds no layers: its cells cannot be simulated."""
    from lipon_hw.store_schema import Sheet

    s = Store(tmp_path / "d")
    run = s.create_run("screen", "screening", "s.yaml", "x", "", 1, None)
    s.add_sheet(Sheet(SHEET, ROLL, ROWS, COLS, 5.0, 5.0, run))
    s.add_screen_cells(_cells(run))
    path = protocol(tmp_path)
    assert STATION.in_process
    with pytest.raises(InputError) as info:
        load(str(path), STATION, s)
    message = str(info.value)
    assert message.startswith(f"{path}:5: channels.1-4.from_screening: cell {SHEET}-R")
    assert "nor has its sheet's roll" in message
    s.close()


def test_a_sample_and_a_pick_on_one_entry_are_refused(store, tmp_path):
    path = tmp_path / "both.yaml"
    path.write_text(PROTOCOL.format(sheet=SHEET, bins="[1]", run="").replace(
        '{from_screening', '{sample: X-1, from_screening', 1))
    with pytest.raises(InputError, match=r"both.yaml:5: channels.1-4: .*a sample or "
                                         "from_screening, not both"):
        load(str(path), STATION, store)


def test_without_a_store_the_pick_waits_for_the_run(tmp_path):
    proto = load(str(protocol(tmp_path)), STATION, None)
    assert all(p.sample is None and p.screening.sheet == SHEET for p in proto.channels)
    doc, line = KIND.describe(proto, "picked.yaml", STATION)
    assert doc["unpicked_from"] == [SHEET] and doc["samples"] == {}
    assert "its cells come from the screening of SHEET-0001, picked when it runs" in line


def test_the_shipped_protocol_validates_once_the_sheet_is_screened(made, tmp_path):
    data, _ = made
    result = CliRunner().invoke(main, ["validate", str(SHIPPED), "--data", str(data),
                                       "--json"])
    assert result.exit_code == 0, result.output
    samples = json.loads(result.output)["samples"]
    assert list(samples) == [str(n) for n in range(1, 9)]
    # bin 2's four cells less the one a run cycled already (CYCLED): three, bin 1 the rest
    assert Counter(bin_of(c) for c in samples.values()) == {1: 5, 2: 3}
    assert not {cell_id(SHEET, *rc) for rc in CYCLED} & set(samples.values())
    empty = tmp_path / "e"
    Store(empty).close()
    refused = CliRunner().invoke(main, ["validate", str(SHIPPED), "--data", str(empty)])
    assert refused.exit_code == 2
    (line,) = refused.output.strip().splitlines()
    assert line.startswith(f"error: {SHIPPED}:") and "from_screening.sheet: sheet " \
        "'SHEET-0001' is not a sheet in" in line


def test_cycling_picked_cells_on_the_simulated_lab_shows_in_their_genealogy(tmp_path):
    """Two channels, three cycles of the shipped protocol on cells it picks: the cells
    are built from the roll's films, and `lipon-hw sample SHEET` finds the run. Once the
    sheet is screened again with other bins, the run cannot resume on the cells the
    protocol now picks: refused in one sentence, the run left as it was."""
    data = tmp_path / "d"
    build(data)
    text = SHIPPED.read_text().replace('"1-8"', '"1-2"').replace(
        "times: 29", "times: 2").replace("cycles: 30", "cycles: 3")
    short = tmp_path / "short.yaml"
    short.write_text(text)
    proc = subprocess.run([sys.executable, "-m", "lipon_hw.cli", "run", str(short), "--data",
                           str(data), "--json"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    run_id = json.loads(proc.stdout.strip().splitlines()[-1])["run_id"]
    s = Store(data, read_only=True)
    tests = [t for t in lineage(s, SHEET).tests if t.run_id == run_id]
    s.close()
    assert [t.channel for t in tests] == [1, 2]
    assert [t.hard_bin for t in tests] == [1, 2] and all(t.cycles == 3 for t in tests)
    assert all(t.status == "completed" and 50 < t.last_discharge_uAh < 110 for t in tests)
    s = Store(data)
    s.set_status(run_id, "interrupted", "a test's stop")
    for ch in s.channels(run_id):
        s.update_channel(run_id, ch.channel, "interrupted", "", ch.cycle, ch.step_count,
                         ch.t_s, ch.state)
    again = s.create_run("screened again", "screening", "sheet.yaml", "x", "", 1, SHEET)
    s.add_screen_cells(screen_cell(again, r + 1, c + 1, {1: 2, 2: 1}.get(b, b))
                       for r, row in enumerate(BINS) for c, b in enumerate(row))
    s.close()
    proc = subprocess.run([sys.executable, "-m", "lipon_hw.cli", "resume", str(run_id),
                           "--data", str(data)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert f"run {run_id} channel 1 tested {tests[0].sample_id}, but its protocol now " \
        "picks" in line and "from a newer screening of the sheet" in line
    s = Store(data, read_only=True)
    assert s.run(run_id).status == "interrupted"
    s.close()
