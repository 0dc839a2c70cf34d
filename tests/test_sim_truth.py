"""The simulated lab's ground truth is kept apart from what was measured.

A layer's true film goes to the store's `sim_truth` table through the lab's `film_truth`
hook, never into the layer's properties; only `lipon_hw.sim` reads it back (to build cells
from a sample's films). What lipon-hw 0.1.0 stored keeps working: a layer whose truth
rode in its properties, and a checkpoint whose simulated world sat under "sim".
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import yaml

from lipon_hw.deposition.recipe import load_recipe
from lipon_hw.deposition.session import resume_run, start_run
from lipon_hw.engine.lifecycle import Interrupted
from lipon_hw.errors import InputError
from lipon_hw.sim.lab_hooks import FILM, true_films
from lipon_hw.station import default_station_text, load_station
from lipon_hw.store import Store

from recipes import short_recipe

DEPOSIT = 4
REPO = Path(__file__).resolve().parent.parent


def test_a_layers_true_film_is_stored_apart_from_its_measurement(tmp_path):
    data = tmp_path / "data"
    start_run(str(short_recipe(tmp_path, thickness_nm=100)), data)
    store = Store(data)
    (layer,) = store.film_stack("T-1")
    assert set(layer.properties) == {"step", "process"}  # what the engine measured, only
    truths = store.sim_truths(FILM, "T-1")
    assert list(truths) == [(1, DEPOSIT)]  # run 1, the deposit step
    truth = truths[(1, DEPOSIT)]
    assert truth["material"] == "LiPON" and truth["sigma_S_cm"] > 0
    # the monitor reads through its tooling factor: the truth is the World's, not a copy
    assert truth["thickness_nm"] != layer.thickness_nm
    assert truth["thickness_nm"] == pytest.approx(layer.thickness_nm, rel=0.2)
    assert true_films(store, "T-1") == [truth]


def test_a_sample_without_recorded_truth_is_built_as_measured_or_as_0_1_0_stored_it(tmp_path):
    store = Store(tmp_path)
    store.ensure_sample("S-1", "glass")
    old = {"material": "LiPON", "thickness_nm": 980.0, "sigma_S_cm": 2.1e-6}
    store.add_layer("S-1", 1, "LiPON", 1000.0, 0.5, "sputter", 10.0,
                    {"step": 4, "sim_truth": old})  # lipon-hw 0.1.0 kept the truth here
    store.add_layer("S-1", 2, "Cu", 200.0, 1.0, "evaporator", 20.0, {"step": 3})  # hardware
    store.add_layer("S-1", 3, "Au", 3.0, 0.1, "evaporator", 30.0, {"step": 5})
    store.put_sim_truth(FILM, 3, "S-1", 5, {"material": "Au", "thickness_nm": 2.9})
    store.put_sim_truth(FILM, 3, "S-2", 5, {"material": "Au", "thickness_nm": 7.0})  # another
    assert true_films(store, "S-1") == [old, {"material": "Cu", "thickness_nm": 200.0},
                                        {"material": "Au", "thickness_nm": 2.9}]


def test_a_checkpoint_written_by_0_1_0_restores_the_simulated_world(tmp_path):
    """A run stopped mid-layer whose checkpoints hold the World under the old key "sim"
    finishes the layer as the run that never stopped did; were the World not restored,
    the resumed run would start from a fresh one at atmosphere, with no film."""
    recipe = str(short_recipe(tmp_path, thickness_nm=60))
    whole = start_run(recipe, tmp_path / "whole").summary["thickness_nm"]

    data = tmp_path / "stopped"

    def stop_mid_layer(ctx) -> None:
        if ctx.step_idx == DEPOSIT and ctx.latest.get("qcm.thickness_nm", 0) > 10:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        start_run(recipe, data, on_sample=stop_mid_layer)
    con = sqlite3.connect(data / "lipon.db")
    states = con.execute("SELECT rowid, state FROM checkpoints").fetchall()
    for rowid, text in states:
        state = json.loads(text)
        state["sim"] = state.pop("physics")
        con.execute("UPDATE checkpoints SET state=? WHERE rowid=?", (json.dumps(state), rowid))
    con.commit()
    con.close()
    assert any(json.loads(t).get("step_idx") == DEPOSIT for _, t in states)
    resumed = resume_run(1, data)
    assert resumed.status == "completed"
    assert resumed.summary["thickness_nm"] == pytest.approx(whole, rel=1e-6)


def test_only_the_simulated_lab_measures_a_film_by_itself(tmp_path):
    """`calibrate_tooling` without `measured_nm` asks the lab's profilometer: the simulated
    lab's film truth. A station of real addresses has none (no instrument role measures a
    film's thickness yet), so the reading is required there, before anything moves."""
    recipe = tmp_path / "li.yaml"
    recipe.write_text((REPO / "sequences" / "li_anode.yaml").read_text(encoding="utf-8")
                      .replace("  - vent:", "  - calibrate_tooling: {film: Li}\n  - vent:"),
                      encoding="utf-8")
    spec = yaml.safe_load(default_station_text())
    del spec["sim"]
    for port, inst in enumerate(spec["instruments"].values(), start=5000):
        inst["address"] = f"socket://127.0.0.1:{port}"  # never opened: validation only
        inst.pop("sim", None)
    station = tmp_path / "station.yaml"
    station.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")

    load_recipe(str(recipe), load_station(None))  # the simulated lab measures it
    with pytest.raises(InputError) as refused:
        load_recipe(str(recipe), load_station(station))
    assert f"{recipe}:14" in str(refused.value) and "measured_nm" in str(refused.value)
    recipe.write_text(recipe.read_text(encoding="utf-8").replace(
        "{film: Li}", "{film: Li, measured_nm: 560}"), encoding="utf-8")
    load_recipe(str(recipe), load_station(station))
