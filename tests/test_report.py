"""Layer plots: one PNG per step that lays down a film, from synthetic and real runs.

A synthetic run stores the description of its steps a run stores as it starts
(`Store.add_run_steps`), made by the step kinds' own describers."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

from lipon_hw.deposition.evaporation import evaporate_film
from lipon_hw.deposition.recipe import Deposit, Evaporate
from lipon_hw.deposition.report import layer_readings, write_layer_plots
from lipon_hw.deposition.sputtering import deposit_film
from lipon_hw.store import RunStep, StepFilm, Store

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EVAPORATE = {"evaporate": {"rate_A_s": 1.5, "until_thickness_nm": 3, "control": "host"}}
EVAPORATE_FILM = evaporate_film(Evaporate.model_validate(EVAPORATE["evaporate"]), {}, "Au")


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "data")
    yield s
    s.close()


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def assert_sensible_png(path: Path) -> None:
    assert path.is_file()
    width, height = png_size(path)
    assert 600 <= width <= 2000 and 400 <= height <= 1500, (width, height)
    assert 10_000 < path.stat().st_size < 2_000_000


def make_evaporation_run(store: Store, after_s: float = 0.0) -> int:
    """Source step (Au), then a 90 s evaporate step: rate loop settles, the shutter opens at
    60 s and 3 nm grow at 1.5 Å/s in the last 20 s. `after_s` of readings follow the step."""
    run_id = store.create_run("Au seed", "deposition", "au.yaml", "tool: evaporator\n",
                              "name: sim\n", seed=1, sample_id=None)
    store.add_run_steps(run_id, [RunStep(0, "source", "evaporator", None),
                                 RunStep(1, "evaporate", "evaporator", EVAPORATE_FILM),
                                 RunStep(2, "source_off", "evaporator", None)])
    store.begin_step(run_id, 0, "source", {"source": {"boat": 2, "film": "Au"}}, 0.0)
    store.end_step(run_id, 0, "done", 10.0)
    store.begin_step(run_id, 1, "evaporate", EVAPORATE, 10.0)
    thickness = 0.0
    for i in range(181):
        t = 10.0 + 0.5 * i
        shutter = t >= 70.0
        rate = 1.5 + 0.1 * ((i % 7) - 3) / 3 if t > 30 else 0.05 * i
        if shutter:
            thickness += rate * 0.05
        store.add_readings(run_id, t, {
            "loop.rate_A_s": rate, "loop.filtered_rate_A_s": min(rate, 1.5),
            "loop.current_A": 40.0 + 0.02 * i, "loop.thickness_nm": thickness,
            "loop.shutter_open": float(shutter)})
    store.end_step(run_id, 1, "done", 100.0)
    store.begin_step(run_id, 2, "source_off", {"source_off": {"ramp_s": 20}}, 100.0)
    for i in range(int(after_s)):
        store.add_readings(run_id, 100.0 + i, {"loop.rate_A_s": 0.0, "loop.current_A": 0.0})
    store.end_step(run_id, 2, "done", 100.0 + after_s)
    store.set_status(run_id, "done")
    return run_id


def test_evaporate_step_gives_one_png(store, tmp_path):
    run_id = make_evaporation_run(store)
    paths = write_layer_plots(store, run_id, tmp_path / "plots")
    assert paths == [tmp_path / "plots" / "layer-1-Au.png"]
    assert_sensible_png(paths[0])


def test_readings_are_streamed_and_stop_after_the_last_layer(store, tmp_path):
    run_id = make_evaporation_run(store, after_s=2000)
    seen: list[tuple[str, ...] | None] = []
    consumed = 0
    readings = store.readings

    def counting(rid, names=None):
        nonlocal consumed
        seen.append(None if names is None else tuple(names))
        for row in readings(rid, names):
            consumed += 1
            yield row

    store.readings = counting
    write_layer_plots(store, run_id, tmp_path / "plots")
    assert len(seen) == 1 and seen[0] is not None and all(n.startswith("loop.") for n in seen[0])
    assert consumed < 181 * 5 + 10  # the step's readings, not the 4000 after it


def test_deposit_step_with_a_hold_and_no_layer_steps(store, tmp_path):
    station = "name: s\ntools: {sputter: {thickness_monitor: qcm}}\n"
    run_id = store.create_run("LiPON", "deposition", "l.yaml", "tool: sputter\n", station,
                              seed=1, sample_id="S-1")
    deposit = Deposit(film="LiPON", until_thickness_nm=10)
    store.add_run_steps(run_id, [RunStep(0, "deposit", "sputter", deposit_film(
        deposit, {"thickness_monitor": "qcm"}, None))])
    store.begin_step(run_id, 0, "deposit",
                     {"deposit": {"film": "LiPON", "until_thickness_nm": 10}}, 0.0)
    for i in range(300):
        t = 5.0 * i
        store.add_readings(run_id, t, {"qcm.rate_A_s": 0.46 + 0.05 * ((i % 5) - 2),
                                       "qcm.thickness_nm": 0.046 * t,
                                       "other_qcm.rate_A_s": 9.0, "other_qcm.thickness_nm": 9.0})
    store.add_alarm(run_id, 400.0, "hold", "interlock", "reflected high: shutter closed, RF off")
    store.add_alarm(run_id, 460.0, "info", "interlock", "reflected high: cleared, process restored")
    store.end_step(run_id, 0, "done", 1495.0)
    store.ensure_sample("S-1")
    store.add_layer("S-1", run_id, "LiPON", 68.8, 0.46, "sputter", 1495.0)
    paths = write_layer_plots(store, run_id, tmp_path / "plots")
    assert [p.name for p in paths] == ["layer-1-LiPON.png"]
    assert_sensible_png(paths[0])

    other = store.create_run("pump", "deposition", "p.yaml", "tool: sputter\n", station,
                             seed=1, sample_id=None)
    store.add_run_steps(other, [RunStep(0, "pump_down", "sputter", None)])
    store.begin_step(other, 0, "pump_down", {"pump_down": {"below_torr": 1e-6}}, 0.0)
    store.end_step(other, 0, "done", 10.0)
    assert write_layer_plots(store, other, tmp_path / "none") == []


def test_a_step_cut_short_still_gets_its_plot(store, tmp_path):
    """A run killed mid-layer: the step has no end time and no film-stack entry."""
    run_id = store.create_run("Au", "deposition", "au.yaml", "", "", seed=1, sample_id=None)
    no_source = evaporate_film(Evaporate.model_validate(EVAPORATE["evaporate"]), {}, None)
    store.add_run_steps(run_id, [RunStep(0, "evaporate", "evaporator", no_source)])
    store.begin_step(run_id, 0, "evaporate", EVAPORATE, 0.0)
    for i in range(40):
        store.add_readings(run_id, 0.5 * i, {"loop.rate_A_s": 1.4, "loop.thickness_nm": 0.0,
                                             "loop.shutter_open": 0.0})
    paths = write_layer_plots(store, run_id, tmp_path / "plots")
    assert [p.name for p in paths] == ["layer-1-layer.png"]
    assert_sensible_png(paths[0])


def test_plots_of_a_real_au_seed_run(tmp_path):
    data = tmp_path / "data"
    proc = subprocess.run([sys.executable, "-m", "lipon_hw.cli", "run",
                           str(ROOT / "sequences" / "au_seed.yaml"), "--data", str(data)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    store = Store(data)
    try:
        paths = write_layer_plots(store, 1, tmp_path / "plots")
    finally:
        store.close()
    assert [p.name for p in paths] == ["layer-1-Au.png"]
    assert_sensible_png(paths[0])


def test_the_layers_are_the_ones_the_run_stored_whatever_their_names(store, tmp_path):
    """Which steps lay a film and where their readings are is what the run stored at its
    start: a step kind of another name, and quantities of other names, are drawn, while
    the names a text-reading report went by (`deposit`, `loop.*`, the station's monitor)
    are not taken for them."""
    station = "name: s\ntools: {sputter: {thickness_monitor: qcm}}\n"
    run_id = store.create_run("renamed", "deposition", "r.yaml", "tool: sputter\n", station,
                              seed=1, sample_id=None)
    lipon = StepFilm("LiPON", rate="mon2.rate", thickness="mon2.thick", shutter=None,
                     target_nm=8.0, smooth_rate=True)
    au = StepFilm("Au", rate="ctl.rate", thickness="ctl.thick", shutter="ctl.open",
                  rate_setpoint_A_s=1.5, target_nm=3.0, rate_control="host")
    store.add_run_steps(run_id, [RunStep(0, "sputter_deposit", "sputter", lipon),
                                 RunStep(1, "deposit", "sputter", None),
                                 RunStep(2, "flash_evaporate", "evaporator", au),
                                 RunStep(3, "evaporate", "evaporator", None)])
    store.begin_step(run_id, 0, "sputter_deposit", {}, 0.0)
    for i in range(100):
        t = 5.0 * i
        store.add_readings(run_id, t, {"mon2.rate": 0.16, "mon2.thick": 0.016 * t,
                                       "qcm.rate_A_s": 9.0, "qcm.thickness_nm": 900.0})
    store.end_step(run_id, 0, "done", 500.0)
    store.begin_step(run_id, 1, "deposit", {"deposit": {"film": "LiPON"}}, 500.0)
    store.add_readings(run_id, 550.0, {"qcm.rate_A_s": 9.0, "qcm.thickness_nm": 900.0})
    store.end_step(run_id, 1, "done", 600.0)
    store.begin_step(run_id, 2, "flash_evaporate", {}, 600.0)
    for i in range(80):
        t = 600.0 + 0.5 * i
        store.add_readings(run_id, t, {"ctl.rate": 1.5, "ctl.thick": 0.075 * max(i - 40, 0),
                                       "ctl.open": float(i >= 40), "loop.rate_A_s": 7.0,
                                       "loop.thickness_nm": 70.0, "loop.shutter_open": 0.0})
    store.end_step(run_id, 2, "done", 640.0)
    store.begin_step(run_id, 3, "evaporate", {"evaporate": {"rate_A_s": 1.5}}, 640.0)
    store.add_readings(run_id, 645.0, {"loop.rate_A_s": 7.0, "loop.thickness_nm": 70.0})
    store.end_step(run_id, 3, "done", 650.0)

    paths = write_layer_plots(store, run_id, tmp_path / "plots")
    assert [p.name for p in paths] == ["layer-1-LiPON.png", "layer-2-Au.png"]
    for path in paths:
        assert_sensible_png(path)
    first, second = layer_readings(store, run_id)
    assert (first.step["idx"], first.material, second.step["idx"], second.material) == (
        0, "LiPON", 2, "Au")
    assert set(first.series) == {"rate", "thickness"}
    assert max(first.series["thickness"][1]) == pytest.approx(0.016 * 495)
    assert set(first.series["rate"][1]) == {0.16}
    assert set(second.series) == {"rate", "thickness", "shutter"}
    assert set(second.series["rate"][1]) == {1.5}
    assert max(second.series["thickness"][1]) == pytest.approx(0.075 * 39)
    assert sum(second.series["shutter"][1]) == 40
