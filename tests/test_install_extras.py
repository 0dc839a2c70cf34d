"""A core install (`pip install lipon-hw`, no extras) runs a station, real or simulated.

Nothing is uninstalled: the commands run in subprocesses whose every import of a module
an extra brings (matplotlib, bluesky, ophyd-async, the dev tools; read from the installed
distribution's metadata) is refused by a `sys.meta_path` finder, installed at start-up by
a `sitecustomize` on PYTHONPATH so that the processes a run starts (its guard, its
workers) refuse them too. The served lab of the hardware test runs here, in the parent.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest
from served import served_hardware
from stores import committed

from lipon_hw.errors import MissingExtra
from lipon_hw.extras import needs

#: the modules only an extra's stack needs (everything else must import on a core install)
EXTRA_ONLY = ("lipon_hw.bluesky", "lipon_hw.analysis.plots", "lipon_hw.deposition.report",
              "lipon_hw.screening.maps", "lipon_hw.web.app", "lipon_hw.web.runs",
              "lipon_hw.web.security", "lipon_hw.web.server", "lipon_hw.web.live",
              "lipon_hw.web.queue", "lipon_hw.web.pages", "lipon_hw.web.screening",
              "lipon_hw.web.cells")

PLOTS = "matplotlib is not installed: drawing plots needs `pip install 'lipon-hw[plots]'`"

SPEED = 300.0  # the served lab's clock and the engine's: a 60 s step lasts 0.2 s

PROTOCOL = """\
name: cycles on a core install
kind: cycling
potentiostat: mes4
channels: 1-2
record: {every_s: 10}
safety: {min_V: 2.5, max_V: 5.2}
steps:
  - tag: cycle
  - cc: {current_A: 3.0e-6, until: {voltage_V: 5.1, time_s: 60}}
  - cc: {current_A: -3.0e-6, until: {voltage_V: 3.5, time_s: 60}}
  - loop: {to: cycle, times: 2}
"""


def _dist(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement)[0]).lower()


def refused_modules() -> set[str]:
    """Top-level modules of the distributions the extras require and the core does not."""
    requires = metadata.requires("lipon-hw") or []
    core = {_dist(r) for r in requires if "extra ==" not in r}
    extra = {_dist(r) for r in requires if "extra ==" in r} - core - {"lipon-hw"}
    return {module for module, dists in metadata.packages_distributions().items()
            if any(_dist(d) in extra for d in dists)}


@pytest.fixture(scope="module")
def core_env(tmp_path_factory) -> dict:
    refused = refused_modules()
    assert {"matplotlib", "bluesky", "ophyd_async", "pytest", "fastapi", "uvicorn"} <= refused, \
        refused
    site = tmp_path_factory.mktemp("core_only")
    (site / "sitecustomize.py").write_text(textwrap.dedent(f"""\
        import sys

        REFUSED = frozenset({sorted(refused)!r})


        class RefuseExtras:
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] in REFUSED:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None


        sys.meta_path.insert(0, RefuseExtras())
        """), encoding="utf-8")
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "LIPON_HW_REFUSED": ",".join(sorted(refused))}


def core(env: dict, *args, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """`lipon-hw ARGS` in a core-only process; no traceback, whatever its exit."""
    done = subprocess.run([sys.executable, "-m", "lipon_hw.cli", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in done.stderr, done.stderr
    return done


CHECK_IMPORTS = """\
import importlib, os, pkgutil, sys

refused = set(os.environ["LIPON_HW_REFUSED"].split(","))
extra_only = {extra_only!r}

def modules(name):
    yield name
    for info in pkgutil.iter_modules(importlib.import_module(name).__path__, name + "."):
        if info.name in extra_only:
            continue
        yield from modules(info.name) if info.ispkg else [info.name]

done = [m for pkg in ("lipon_hw", "lipon_hw.drivers", "lipon_hw.sim")
        for m in modules(pkg) if importlib.import_module(m)]
from lipon_hw.errors import MissingExtra

for name in extra_only:  # each needs its extra: the finder is at work and the list is true
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        assert exc.name.partition(".")[0] in refused, (name, exc.name)
    except MissingExtra as exc:  # said in one sentence naming the extra
        assert "pip install 'lipon-hw[" in str(exc), (name, str(exc))
    else:
        raise AssertionError(name + " imports without its extra: drop it from EXTRA_ONLY")
leaked = sorted(m for m in sys.modules if m.partition(".")[0] in refused)
assert not leaked, leaked
print(len(done))
"""


def test_every_core_module_imports_without_the_extras(core_env, tmp_path):
    script = CHECK_IMPORTS.format(extra_only=EXTRA_ONLY)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=core_env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert int(done.stdout) > 100  # the cli, drivers, links, engine, store, kinds, the sim


def test_a_hardware_cell_test_runs_and_exports_on_a_core_install(core_env, tmp_path):
    protocol = tmp_path / "cycles.yaml"
    protocol.write_text(PROTOCOL, encoding="utf-8")
    data = tmp_path / "data"
    db = data / "lipon.db"
    with served_hardware(SPEED, tmp_path / "station.yaml") as lab:
        done = core(core_env, "run", protocol, "--station", lab.station_path, "--speed", SPEED,
                    "--data", data, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert f"warning: plots of run 1 were not written ({PLOTS})" in done.stderr
    assert committed(db, "SELECT status FROM runs") == [("completed",)]
    assert committed(db, "SELECT channel, status FROM channels ORDER BY channel") == \
        [(1, "completed"), (2, "completed")]
    assert committed(db, "SELECT channel, COUNT(*) FROM cycles GROUP BY channel") == \
        [(1, 2), (2, 2)]
    assert committed(db, "SELECT COUNT(*) FROM sim_truth") == [(0,)]  # it was hardware

    done = core(core_env, "export", 1, "--data", data, "--format", "bdf-parquet", "--out",
                tmp_path / "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "out").glob("*.parquet"))) == 2

    done = core(core_env, "report", 1, "--data", data, cwd=tmp_path)  # the plots, asked for
    assert (done.returncode, done.stderr) == (2, f"error: {PLOTS}\n")


def test_the_simulated_lab_runs_on_a_core_install_and_plots_name_their_extra(core_env,
                                                                               tmp_path):
    data = tmp_path / "data"
    done = core(core_env, "run", "au_seed", "--data", data, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "run 1 completed: 3.0 nm" in done.stdout, done.stdout
    assert f"warning: plots of run 1 were not written ({PLOTS})" in done.stderr
    assert not any(data.rglob("*.png"))


def test_serving_the_web_view_names_its_extra_on_a_core_install(core_env, tmp_path):
    done = core(core_env, "serve", "--data", tmp_path / "data", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (
        2, "error: fastapi is not installed: `lipon-hw serve` needs "
           "`pip install 'lipon-hw[web]'`\n")
    assert not (tmp_path / "data").exists()


def test_only_a_missing_module_of_the_extra_is_explained():
    with pytest.raises(MissingExtra, match=re.escape(PLOTS)), needs("plots", "drawing plots"):
        raise ModuleNotFoundError("No module named 'matplotlib.figure'",
                                  name="matplotlib.figure")
    with pytest.raises(ModuleNotFoundError) as caught, needs("plots", "drawing plots"):
        raise ModuleNotFoundError("No module named 'numpy'", name="numpy")
    assert caught.value.name == "numpy"


def test_a_cluster_names_its_extra_on_a_core_install(core_env, tmp_path):
    protocol = tmp_path / "protocol.yaml"
    protocol.write_text(PROTOCOL, encoding="utf-8")
    done = core(core_env, "run", protocol, "--data", tmp_path / "data", "--cluster", "local",
                cwd=tmp_path)
    assert (done.returncode, done.stderr) == (
        2, "error: distributed is not installed: --cluster needs "
           "`pip install 'lipon-hw[cluster]'`\n")
    assert not (tmp_path / "data").exists()
