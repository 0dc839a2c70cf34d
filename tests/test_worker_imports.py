"""A cell test's worker process starts quickly: loading the cell-test engine and the
built-in simulated station (which imports the simulated lab) pulls in no scipy, whose
import costs a worker about half a second before its first sample (the simulated QCM
imports its root finder only when a crystal carries a film)."""

from __future__ import annotations

import subprocess
import sys

import pytest

WORKER_START = """
import sys
from lipon_hw.celltest import session
from lipon_hw.station import load_station
station = load_station()
lab = station.connect(lambda: 0.0, seed=1)
lab.close()
print(sorted(m for m in sys.modules if m == "scipy" or m.startswith("scipy.")))
"""


def test_a_cell_test_worker_starts_without_scipy(tmp_path):
    # from a directory of its own: from the source tree `python -c` would import the
    # checkout's lipon_hw, not the installed package (whose drivers and sim are mapped in)
    out = subprocess.run([sys.executable, "-c", WORKER_START], capture_output=True, text=True,
                         check=True, timeout=120, cwd=tmp_path)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout[-500:]


FIT = """
import sys
import numpy as np
from lipon_hw.analysis.eis import fit_spectrum
from lipon_hw.sim.cells.factories import cell_from_spec
cell = cell_from_spec({"kind": "lnmo", "temperature_C": 25})
f = np.logspace(6, -1, 50)
fit = fit_spectrum(f, np.array([cell.impedance_ohm(0.0, x) for x in f]))
assert fit.film_resolved, fit.film_note
print(sorted(m for m in sys.modules if m == "scipy" or m.startswith("scipy.")))
"""


def test_fitting_a_spectrum_loads_no_scipy(tmp_path):
    out = subprocess.run([sys.executable, "-c", FIT], capture_output=True, text=True,
                         check=True, timeout=120, cwd=tmp_path)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout[-500:]


def test_the_qcm_still_finds_a_loaded_crystal_frequency():
    from lipon_hw.sim import qcm

    f = qcm.frequency_for_areal_mass_Hz(6.0e6, 1e-4, 1.0)
    assert 3.0e6 < f < 6.0e6
    assert qcm.zmatch_areal_mass_g_cm2(6.0e6, f, 1.0) == pytest.approx(1e-4, rel=1e-9)

