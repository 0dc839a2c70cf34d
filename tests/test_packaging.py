"""The wheel carries the shipped sequences, and a wheel install runs the quick start.

The wheel is built from a copy of the source tree (`pip wheel . --no-deps`, so the
repository gets no build/ folder), unpacked alone on PYTHONPATH, and run from an empty
directory: `lipon-hw run lipon_rf_sputter` then can only find the recipe inside the
wheel. The dependencies come from the test's own environment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from click.testing import CliRunner

from lipon_hw.cli import main
from lipon_hw.shipped import find_sequence, shipped_names

ROOT = Path(__file__).parent.parent
SOURCES = ("pyproject.toml", "README.md", "lipon_hw", "drivers", "sim", "sequences")


def test_the_wheel_holds_the_sequences_and_runs_the_quick_start(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, src / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-q",
                            "-w", str(tmp_path / "dist")], cwd=src, capture_output=True,
                           text=True, timeout=180)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("lipon_hw-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        inside = set(zf.namelist())
        zf.extractall(tmp_path / "site")
    shipped = sorted(p.name for p in (ROOT / "sequences").glob("*.yaml"))
    assert shipped and {f"lipon_hw/sequences/{n}" for n in shipped} <= inside
    assert "lipon_hw/data/sim_lab.yaml" in inside
    static = sorted(p.name for p in (ROOT / "lipon_hw/web/static").iterdir())  # the pages
    assert static and {f"lipon_hw/web/static/{n}" for n in static} <= inside

    work = tmp_path / "elsewhere"  # no sequences/ here: the bare name must find the wheel's
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    where = subprocess.run([sys.executable, "-c", "import lipon_hw; print(lipon_hw.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=60)
    assert Path(where.stdout.strip()).is_relative_to(tmp_path / "site"), where.stdout
    done = subprocess.run([sys.executable, "-m", "lipon_hw.cli", "run", "lipon_rf_sputter",
                           "--json"], cwd=work, env=env, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["status"] == "completed" and summary["thickness_nm"] >= 1000


def test_a_bare_name_finds_a_shipped_sequence_and_a_path_stays_a_path(tmp_path, monkeypatch):
    assert "lipon_rf_sputter" in shipped_names()
    monkeypatch.chdir(tmp_path)
    assert Path(find_sequence("lnmo_cycling")).name == "lnmo_cycling.yaml"
    assert find_sequence("lnmo_cycling.yaml") == find_sequence("lnmo_cycling")
    assert find_sequence("sequences/lnmo_cycling.yaml") == "sequences/lnmo_cycling.yaml"
    assert find_sequence("no_such_recipe") == "no_such_recipe"
    mine = tmp_path / "lnmo_cycling.yaml"  # a file of that name here is the user's
    mine.write_text("name: mine\n", encoding="utf-8")
    assert find_sequence("lnmo_cycling.yaml") == "lnmo_cycling.yaml"
    result = CliRunner().invoke(main, ["validate", "au_seed", "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["name"].startswith("Au seed")
    result = CliRunner().invoke(main, ["validate", "no_such_recipe"])
    assert result.exit_code == 2 and "no_such_recipe" in result.output


def test_the_readme_quick_start_path_still_runs():
    result = CliRunner().invoke(main, ["validate", str(ROOT / "sequences/lipon_rf_sputter.yaml")])
    assert result.exit_code == 0, result.output
