"""BDF exports read back by the format's reference reader (`batterydf`, imported as `bdf`):
CSV and Parquet, numeric and named step ids, several batches, an empty file, a bare `.bdf`
name, and a cell run's export through the CLI (issue 12, item 4)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from bdf.normalize import REQUIRED
from bdf_check import BEYOND_READER_TABLE, READER_TABLE, check_with_reference

import lipon_hw.analysis.bdf as bdf_module
from lipon_hw.analysis.bdf import BDF_COLUMNS, BdfMetadata, write_bdf
from lipon_hw.celltest.session import start_cycling

from recipes import LNMO

UNIX_START_S = 1_767_225_600.25


def cycled_rows(ids):
    """Two cycles of charge, rest and discharge, a sample a second; `ids` name the steps."""
    t, step_count = 0.0, 0
    for cycle in (1, 2):
        for step_id, kind, current in zip(ids, ("CC_CHG", "REST", "CC_DCHG"),
                                          (3e-6, 0.0, -3e-6), strict=True):
            step_count += 1
            for k in range(6):
                v = 3.9 + (0.02 * k if current > 0 else -0.02 * k if current < 0 else 0.0)
                yield (t, v, current, cycle, step_count, step_id, kind)
                t += 1.0
            t += 0.5  # the open circuit between two steps


def test_the_reader_flags_only_columns_the_module_documents():
    assert set(REQUIRED) <= set(BDF_COLUMNS)
    flagged = [c for c in BDF_COLUMNS if c not in READER_TABLE]
    assert set(flagged) <= set(BEYOND_READER_TABLE)
    doc = " ".join(bdf_module.__doc__.split())
    for label in BEYOND_READER_TABLE:  # each kept column is justified in the docstring
        assert label in doc, label


@pytest.mark.parametrize("suffix", [".bdf.csv", ".bdf.parquet"])
@pytest.mark.parametrize("ids", [(1, 2, 3), ("charge", "rest", "discharge")])
def test_exports_pass_the_reference_validator(tmp_path, suffix, ids):
    meta = BdfMetadata(cell_name="A0001", unix_start_s=UNIX_START_S, institution="LAB")
    leads = dict.fromkeys(ids, 1.0)
    path = write_bdf(cycled_rows(ids), tmp_path / f"LAB__A0001{suffix}", meta, batch_rows=4,
                     leads=leads)
    frame = check_with_reference(path)
    rows = list(cycled_rows(ids))
    assert len(frame) == len(rows) == 36
    assert frame["Unix Time / s"].iloc[7] == pytest.approx(UNIX_START_S + rows[7][0],
                                                           abs=1e-6)
    # positive current charges: charge only grows on the charging steps
    charging = np.diff(frame["Charging Capacity / Ah"].to_numpy())
    grew = frame["Current / A"].to_numpy()[1:] > 0
    assert np.all(charging[grew] > 0) and np.all(charging[~grew] == 0)
    assert frame["Cycle Discharging Capacity / Ah"].iloc[-1] > 0
    # cycle 2 opens on a step's first sample, which carries its 1 s measurement interval
    assert frame["Cycle Charging Capacity / Ah"].iloc[18] == pytest.approx(3e-6 / 3600,
                                                                           rel=1e-9)


@pytest.mark.parametrize("suffix", [".bdf.csv", ".bdf.parquet"])
def test_an_empty_export_passes_the_reference_validator(tmp_path, suffix):
    path = write_bdf([], tmp_path / f"empty{suffix}", BdfMetadata("X", UNIX_START_S))
    assert len(check_with_reference(path)) == 0


def test_a_bare_bdf_name_holds_the_bytes_the_reader_validated(tmp_path):
    meta = BdfMetadata(cell_name="A0001", unix_start_s=UNIX_START_S)
    bare = write_bdf(cycled_rows((1, 2, 3)), tmp_path / "A0001.bdf", meta)
    named = write_bdf(cycled_rows((1, 2, 3)), tmp_path / "A0001.bdf.csv", meta)
    assert bare.read_bytes() == named.read_bytes()
    check_with_reference(named)


def test_a_cell_runs_parquet_export_through_the_cli_passes(tmp_path):
    protocol = tmp_path / "protocol.yaml"
    protocol.write_text(LNMO.format(channels="1", cycles=2), encoding="utf-8")
    result = start_cycling(str(protocol), tmp_path / "data", workers=1)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "lipon_hw.cli", "export", str(result.run_id),
                           "--data", str(tmp_path / "data"), "--format", "bdf-parquet",
                           "--out", str(out)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert sorted(f.name for f in out.glob("*.bdf.*")) == [
        f"run{result.run_id}-ch1.bdf.parquet", f"run{result.run_id}-ch1.bdf.parquet.json"]
    frame = check_with_reference(out / f"run{result.run_id}-ch1.bdf.parquet")
    assert frame["Cycle Count / 1"].max() == 2
    assert set(frame["Step Type"]) == {"CC_CHG", "CC_DCHG"}
