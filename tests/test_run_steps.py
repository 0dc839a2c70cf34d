"""A run's steps as planned at its start (`planned_steps`, store layout 4): written by a
new run from its recipe's step kinds, inferred once by the migration for older runs, and
what the layer plots read."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from stores import committed as query
from stores import digest

from lipon_hw import store_run_steps
from lipon_hw.deposition.recipe import load_recipe
from lipon_hw.deposition.report import write_layer_plots
from lipon_hw.deposition.session import start_run
from lipon_hw.deposition.steps import describe_steps
from lipon_hw.station import load_station
from lipon_hw.store import DB_NAME, Store
from lipon_hw.store_schema import AT_START

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "store-0.1.0" / DB_NAME

TWO_TOOLS = """\
name: LiPON then Au, two tools
tool: sputter
sample: {id: TT-1, substrate: glass}
record_every_s: 5
checkpoint_every_s: 30
steps:
  - pump_down: {below_torr: 2.0e-5, timeout_min: 60}
  - gas: {n2_sccm: 20, pressure_mtorr: 15, settle_s: 10}
  - rf: {power_W: 50, ramp_W_per_s: 5, regulation: load}
  - deposit: {film: LiPON, until_thickness_nm: 4, max_h: 8}
  - rf: {power_W: 0, ramp_W_per_s: 10}
  - gas: {n2_sccm: 0}
  - vent: {}
  - transfer: {to: evaporator}
  - pump_down: {below_torr: 2.5e-8, timeout_min: 480}
  - source: {boat: 2, film: Au}
  - precondition: {ramp_to_A: 44, ramp_s: 60, soak_s: 120}
  - evaporate: {rate_A_s: 1.5, until_thickness_nm: 3, control: CONTROL, max_current_A: 70,
                stable_s: 15}
  - source_off: {ramp_s: 20}
  - vent: {timeout_min: 30}
"""


@pytest.mark.parametrize("control", ["host", "controller"])
def test_a_run_stores_the_steps_of_its_recipe(tmp_path, control):
    path = tmp_path / "two.yaml"
    path.write_text(TWO_TOOLS.replace("CONTROL", control), encoding="utf-8")
    result = start_run(str(path), tmp_path / "d")
    assert result.status == "completed"
    station = load_station(None)
    recipe = load_recipe(str(path), station)
    store = Store(tmp_path / "d", read_only=True)
    try:
        planned = store.run_steps(result.run_id)
        names = set(store.quantity_names(result.run_id))
        stack = store.film_stack("TT-1")
    finally:
        store.close()
    assert planned == describe_steps(recipe)
    assert [(s.idx, s.kind, s.tool) for s in planned] == [
        (i, step.kind, step.tool) for i, step in enumerate(recipe.steps)]
    assert {s.recorded for s in planned} == {AT_START}
    films = [s for s in planned if s.film is not None]
    assert [(s.idx, s.kind, s.tool, s.film.material) for s in films] == [
        (3, "deposit", "sputter", "LiPON"), (11, "evaporate", "evaporator", "Au")]
    # the film stack the run made says the same films
    assert [la.material for la in stack] == ["LiPON", "Au"]
    deposit, evaporate = films[0].film, films[1].film
    monitor = station.spec.tools["sputter"]["thickness_monitor"]
    assert (deposit.rate, deposit.thickness, deposit.shutter, deposit.target_nm) == (
        f"{monitor}.rate_A_s", f"{monitor}.thickness_nm", None, 4.0)
    assert (evaporate.rate_setpoint_A_s, evaporate.target_nm, evaporate.rate_control) == (
        1.5, 3.0, control)
    assert (evaporate.filtered_rate is None) == (control == "controller")
    # every quantity the description names is one the run recorded
    for film in (deposit, evaporate):
        assert set(film.readings().values()) <= names, film
    # and the plots read them
    plots = write_layer_plots(Store(tmp_path / "d", read_only=True), result.run_id,
                              tmp_path / "plots")
    assert [p.name for p in plots] == ["layer-1-LiPON.png", "layer-2-Au.png"]
    # the migration's reading of an older run (texts, steps as run, quantities recorded)
    # finds the same, for a run that recorded what runs before layout 4 did
    con = sqlite3.connect(tmp_path / "d" / DB_NAME)
    try:
        inferred = store_run_steps.inferred(con, result.run_id)
    finally:
        con.close()
    assert inferred == [replace(s, recorded=store_run_steps.INFERRED) for s in planned]


@pytest.fixture
def old(tmp_path) -> Path:
    data = tmp_path / "old-data"
    data.mkdir()
    shutil.copyfile(FIXTURE, data / DB_NAME)
    return data


def test_the_migration_infers_the_steps_of_0_1_0_runs_once(old, tmp_path):
    reader = Store(old, read_only=True)  # layout 1, read as it is: answers as the fill would
    assert reader.layout == 1
    answered = {r: reader.run_steps(r) for r in (1, 2, 3)}
    runs = {r.id: r for r in reader.runs()}
    reader.close()

    Store(old).close()  # the writer migrates
    db = old / DB_NAME
    assert query(db, "SELECT count(*) FROM planned_steps WHERE run_id = 3") == [(0,)]
    store = Store(old, read_only=True)
    stored = {r: store.run_steps(r) for r in (1, 2, 3)}
    assert stored == answered and stored[3] == []  # a cell test lays no film
    station = load_station(None)
    for run_id in (1, 2):
        steps = stored[run_id]
        assert {s.recorded for s in steps} == {store_run_steps.INFERRED}
        recipe = load_recipe(runs[run_id].sequence_path, station,
                             text=runs[run_id].sequence_text)
        # what the migration inferred from the texts is what this version describes
        assert steps == [replace(s, recorded=store_run_steps.INFERRED)
                         for s in describe_steps(recipe)]
        (deposit,) = [s for s in steps if s.film is not None]
        assert deposit.kind == "deposit" and deposit.film.material == "LiPON"
        assert deposit.film.thickness in store.quantity_names(run_id)
    store.close()

    # once: a later writer leaves the rows as they are
    before = digest(db)
    Store(old).close()
    assert digest(db) == before


def test_plots_of_migrated_and_unmigrated_0_1_0_runs_draw(old, tmp_path):
    def report(data: Path, run_id: int) -> list[str]:
        proc = subprocess.run([sys.executable, "-m", "lipon_hw.cli", "report", str(run_id),
                               "--data", str(data)], cwd=tmp_path, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        paths = [Path(line) for line in proc.stdout.split()]
        for png in paths:
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        return [png.name for png in paths]

    as_is = tmp_path / "as-is"
    shutil.copytree(old, as_is)
    before = digest(as_is / DB_NAME)
    assert report(as_is, 1) == ["layer-1-LiPON.png"]  # read-only: layout 1 stays
    assert digest(as_is / DB_NAME) == before

    Store(old).close()  # migrated
    assert report(old, 1) == ["layer-1-LiPON.png"]
    assert report(old, 2) == ["layer-1-LiPON.png"]  # killed inside its deposit
