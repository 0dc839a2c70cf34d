"""A seeded simulation gives the same figures on every x86-64 CPU, to a stated tolerance.

numpy chooses its exp/expm1 kernels by the CPU's SIMD width (AVX-512 differs from AVX2 and
from libm by one ulp in a few % of values). The simulated cells read the same number to the
bit whichever path (bulk or one by one) computes it on one CPU — both call the same ufunc
(sim/cells/expsums.py) — but across CPUs numbers may differ by an ulp. Here the same seeded
cell test runs under every kernel set numpy can be limited to on this machine
(NPY_DISABLE_CPU_FEATURES); the figures a user reads must agree to TOLERANCE.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

#: relative agreement of reported figures across CPUs (capacities, CE, retention)
TOLERANCE = 1e-6

PROTOCOL = """
name: LNMO, every CPU
kind: cycling
potentiostat: mes4
channels: 1-2
cell: {kind: lnmo, area_cm2: 0.049, capacity_uAh: 1.47}
record: {every_s: 30, every_mV: 5}
safety: {min_V: 2.5, max_V: 5.2}
steps:
  - tag: cycle
  - cc: {current_A: 3.0e-6, until: {voltage_V: 5.1, time_h: 2}}
  - cc: {current_A: -3.0e-6, until: {voltage_V: 3.5, time_h: 2}}
  - loop: {to: cycle, times: 6}
"""

#: what numpy may be told to leave out (unknown names are ignored by numpy with a warning)
KERNEL_SETS = {
    "all": "",
    "no AVX-512": "X86_V4 AVX512_ICL AVX512_SPR AVX512_SKX",
}


def _figures(tmp_path: Path, label: str, disable: str) -> list[dict]:
    work = tmp_path / label.replace(" ", "_")
    work.mkdir()
    (work / "p.yaml").write_text(PROTOCOL, encoding="utf-8")
    env = dict(os.environ, NPY_DISABLE_CPU_FEATURES=disable)
    proc = subprocess.run([sys.executable, "-W", "ignore", "-m", "lipon_hw.cli", "run", "p.yaml",
                           "--json", "--workers", "1"], cwd=work, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])["channels"]


@pytest.mark.skipif(sys.platform != "linux", reason="numpy's CPU dispatch names are x86 Linux")
def test_seeded_figures_agree_whatever_simd_numpy_uses(tmp_path):
    runs = {label: _figures(tmp_path, label, disable) for label, disable in KERNEL_SETS.items()}
    reference = runs.pop("all")
    assert [c["cycles"] for c in reference] == [6, 6]
    for label, channels in runs.items():
        for ref, other in zip(reference, channels, strict=True):
            assert other["cycles"] == ref["cycles"], label
            for key in ("last_discharge_uAh", "mean_coulombic_efficiency", "retention"):
                if ref.get(key) is None:
                    assert other.get(key) is None, (label, key)
                    continue
                assert other[key] == pytest.approx(ref[key], rel=TOLERANCE), (label, key)
