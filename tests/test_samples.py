"""Samples and runs (issue 9, item 7): a recipe run again never stacks a second layer of
its film on the same sample by accident; `run --sample` names the sample; an aborted
deposition's layer is kept as partial; the summary names the sample, the mean rate and
the plots."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_engine import Bench

from lipon_hw.errors import RunAborted
from lipon_hw.store import Store

from recipes import short_recipe

ROOT = Path(__file__).resolve().parents[1]
SEQUENCES = ROOT / "sequences"


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "lipon_hw.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def last_json(out) -> dict:
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_recipe_run_twice_deposits_on_a_new_sample_and_the_next_film_stacks(tmp_path):
    recipe = short_recipe(tmp_path, 20)
    cu = tmp_path / "cu.yaml"
    cu.write_text((SEQUENCES / "au_seed.yaml").read_text(encoding="utf-8")
                  .replace("id: FS-001", "id: T-1"), encoding="utf-8")
    data = tmp_path / "d"
    first = last_json(cli("run", recipe, "--data", data, "--json", cwd=tmp_path))
    second = cli("run", recipe, "--data", data, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "T-1 already holds LiPON; this run deposits on sample T-1-2" in second.stderr
    assert "on sample T-1-2" in second.stdout
    au = last_json(cli("run", cu, "--data", data, "--json", cwd=tmp_path))
    named = last_json(cli("run", recipe, "--data", data, "--sample", "T-1", "--json",
                          cwd=tmp_path))
    assert (first["sample_id"], au["sample_id"], named["sample_id"]) == ("T-1", "T-1", "T-1")
    store = Store(data)
    assert [la.material for la in store.film_stack("T-1")] == ["LiPON", "Au", "LiPON"]
    assert [la.material for la in store.film_stack("T-1-2")] == ["LiPON"]
    # the summary: sample, thickness, mean rate (thickness over shutter-open time), plots
    assert first["thickness_nm"] == pytest.approx(20, abs=0.3)
    layer = store.film_stack("T-1")[0]
    assert first["mean_rate_A_s"] == pytest.approx(layer.rate_A_s, rel=1e-3)
    assert 0.2 < first["mean_rate_A_s"] < 1.0
    assert first["plots"] and all(Path(p).is_file() for p in first["plots"])
    assert str(data / "runs" / str(first["run_id"])) in first["plots"][0]


@pytest.mark.parametrize("args, message", [
    (("--sample", "no spaces"), "--sample 'no spaces' is not a sample id"),
    (("--sample", "x" * 65), "is not a sample id"),
])
def test_a_bad_sample_name_is_one_sentence(tmp_path, args, message):
    out = cli("run", short_recipe(tmp_path, 20), "--data", tmp_path / "d", *args, cwd=tmp_path)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "d" / "lipon.db").exists() or not Store(tmp_path / "d").runs()


def test_sample_option_is_refused_for_a_cell_test(tmp_path):
    out = cli("run", SEQUENCES / "li_cu_plating.yaml", "--data", tmp_path / "d", "--sample",
              "X-1", cwd=tmp_path)
    assert out.returncode == 2
    assert "(--sample) is for recipes" in out.stderr


def test_an_aborted_deposition_keeps_its_layer_as_partial(tmp_path, backend):
    bench = Bench(tmp_path, thickness_nm=200)
    bench.at_deposit(lambda: bench.store.requests.make(bench.run_id, "abort"), after_s=300)
    with pytest.raises(RunAborted):
        bench.engine.run()
    bench.assert_safe()
    (layer,) = bench.store.film_stack("T-1")
    assert layer.properties["partial"] is True
    assert layer.properties["ended"].startswith("aborted: ")
    # what the monitor read when it stopped: 300 s at ~0.46 Å/s, as the film in the world
    assert 10 < layer.thickness_nm < 200
    assert layer.thickness_nm == pytest.approx(bench.tool.film_stack()[0]["thickness_nm"],
                                              rel=0.05)
    summary = bench.store.run(bench.run_id).summary
    assert summary["sample_id"] == "T-1"
    assert summary["layers"][0]["properties"]["partial"] is True


def test_a_partial_layer_is_replaced_when_its_run_finishes_it(tmp_path, backend):
    store = Store(tmp_path / "d")
    store.ensure_sample("S", "glass")
    store.add_layer("S", 1, "LiPON", 300.0, 0.4, "sputter", 10.0, {"step": 4, "partial": True})
    store.add_layer("S", 1, "LiPON", 1000.0, 0.45, "sputter", 20.0, {"step": 4})
    store.add_layer("S", 2, "Cu", 100.0, 1.0, "evaporator", 30.0,
                    {"step": 3, "partial": True})
    store.add_layer("S", 3, "Cu", 200.0, 1.0, "evaporator", 40.0, {"step": 3})
    stack = store.film_stack("S")
    assert [(la.material, la.thickness_nm, la.run_id) for la in stack] == [
        ("LiPON", 1000.0, 1), ("Cu", 100.0, 2), ("Cu", 200.0, 3)]
    assert "partial" not in stack[0].properties


def test_sample_listing_marks_a_partial_layer(tmp_path, backend):
    store = Store(tmp_path / "d")
    store.ensure_sample("S", "glass")
    store.add_layer("S", 1, "LiPON", 304.8, 0.4, "sputter", 10.0,
                    {"step": 4, "partial": True, "ended": "aborted: by the operator"})
    store.close()
    out = cli("sample", "S", "--data", tmp_path / "d", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "304.8 nm" in out.stdout and "PARTIAL: run aborted: by the operator" in out.stdout


def test_the_sample_search_matches_any_case_and_takes_wildcards_literally(tmp_path, backend):
    store = Store(tmp_path / "d")
    for sample_id in ("Roll-A", "ROLL-B", "sheet_1", "sheet%2"):
        store.ensure_sample(sample_id, "glass")
    store.add_layer("Roll-A", 1, "LiPON", 300.0, 0.4, "sputter", 10.0, {"step": 4})
    store.flush()
    total, rows = store.samples(10, containing="roll")
    assert total == 2 and {r[0] for r in rows} == {"Roll-A", "ROLL-B"}
    assert [r[3:] for r in rows if r[0] == "Roll-A"] == [(1, 300.0)]
    assert [r[0] for r in store.samples(10, containing="_")[1]] == ["sheet_1"]
    assert [r[0] for r in store.samples(10, containing="%")[1]] == ["sheet%2"]
    store.close()
