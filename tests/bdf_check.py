"""A BDF export read back by the format's reference reader (the Battery Data Alliance's
`batterydf`, imported as `bdf`): it must take the file for a BDF file (not a vendor file to
re-normalise), its validator must pass it, the columns it calls non-canonical must be the
documented ones, and it must read the numbers that were written."""

from __future__ import annotations

import csv
from pathlib import Path

import bdf
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from bdf.normalize import OPTIONAL, REQUIRED

from lipon_hw.analysis.bdf import BDF_COLUMNS, INT_COLUMNS, STEP_ID, STEP_TYPE

# Preferred labels of ontology 1.2.0 that batterydf 0.1.0's built-in table lacks, so its
# validator lists them as non-canonical; why they stay is in lipon_hw/analysis/bdf.py
BEYOND_READER_TABLE = (
    "Step ID", "Step Type", "Step Time / s", "Record Index / 1",
    "Cycle Charging Capacity / Ah", "Cycle Discharging Capacity / Ah",
    "Cycle Charging Energy / Wh", "Cycle Discharging Energy / Wh")
READER_TABLE = frozenset(REQUIRED + OPTIONAL)


def written(path: Path) -> dict[str, list]:
    """The file's columns as lipon-hw wrote them, read without the reference reader."""
    if path.name.endswith(".parquet"):
        return pq.read_table(path).to_pydict()
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = list(reader)
    return {n: [r[j] for r in rows] for j, n in enumerate(header)}


def check_with_reference(path: Path | str) -> pd.DataFrame:
    """Validate `path` with the reference reader and return what it read."""
    path = Path(path)
    # strict: loaded as a BDF artifact; a file it does not take for one raises here
    report = bdf.validate(path, raise_on_error=True)
    assert report["ok"] and report["missing"] == [], report
    assert report["legacy_labels"] == [], report
    assert report["time_stats"]["monotonic"], report["time_stats"]
    assert report["extras"] == [c for c in BDF_COLUMNS if c not in READER_TABLE]
    assert set(report["extras"]) <= set(BEYOND_READER_TABLE), report["extras"]
    frame = bdf.read(path)  # the reader's own load, validated again
    assert tuple(frame.columns) == BDF_COLUMNS
    ours = written(path)
    assert len(frame) == len(ours[BDF_COLUMNS[0]])
    for name in BDF_COLUMNS:
        theirs = frame[name].tolist()
        if name in (STEP_ID, STEP_TYPE):
            assert [str(x) for x in theirs] == [str(x) for x in ours[name]], name
        elif name in INT_COLUMNS:
            assert len(frame) == 0 or pd.api.types.is_integer_dtype(frame[name]), name
            assert theirs == [int(x) for x in ours[name]], name
        else:
            np.testing.assert_allclose(np.asarray(theirs, float),
                                       np.asarray(ours[name], float), rtol=1e-12, atol=0,
                                       err_msg=name)
    return frame
