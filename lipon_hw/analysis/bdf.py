"""Battery Data Format (Battery Data Alliance, ontology 1.2.0) files, streamed.

One cell per file. Column headers are the format's preferred labels, in this order:
required (Test Time / s, Voltage / V, Current / A — positive current charges), recommended
(Unix Time / s as float64, Cycle Count / 1, Step Count / 1 — a step counter that never
resets), then the optional ones a cycler run fills:

- Step ID (the program's step identifier, may recur every cycle), Step Type (CC_CHG, REST,
  EIS, …), Step Index / 1 (1-based point counter within a step), Step Time / s,
  Record Index / 1 (1-based row counter);
- Charging / Discharging Capacity / Ah and Energy / Wh, cumulative since the test start;
  Net Capacity / Ah (charging − discharging), Cumulative Capacity / Ah (their sum);
- Cycle Charging / Discharging Capacity / Ah and Energy / Wh, reset on the row where the
  cycle count changes; Power / W.

Capacities and energies integrate between rows exactly as `cycles.CycleAccumulator` does
(trapezoid on current, split at a sign change; given the steps' leads, the open circuit
between two steps counts nothing), so a file's cycle columns at a cycle's last row equal
the accumulator's CycleStats.

Rows arrive as an iterator of (t_s, voltage_V, current_A, cycle, step_count, step_id,
step_type) and are written a batch at a time — CSV through the csv module, Parquet as one
row group per batch with pyarrow's ParquetWriter — so memory follows the batch size, never
the length of the test. The file is written under a temporary name and renamed when
complete. Metadata (cell, start time, …) go to a JSON sidecar `<file>.json`.
File names: `.bdf.csv` and `.bdf.parquet`, as `lipon-hw export` writes them. The format also
allows a bare `.bdf` for CSV (same bytes), but the reference reader below takes a bare `.bdf`
for a vendor file and re-normalises it, dropping the columns it does not know.

Checked by the reference reader, the format's own package (`batterydf`, imported as `bdf`):
it reads every export back and its validator passes it (tests/test_bdf_reference.py). That
validator (batterydf 0.1.0) checks against a built-in table of 27 quantities, older than
ontology 1.2.0, and lists eight of ours as non-canonical: Step ID, Step Type, Step Time / s,
Record Index / 1, Cycle Charging Capacity / Ah, Cycle Discharging Capacity / Ah, Cycle
Charging Energy / Wh and Cycle Discharging Energy / Wh. They stay,
under these names, because each is a preferred label of ontology 1.2.0 (battery-data-format.ttl
of the battery-data-format-ontology release 1.2.0) and a column of that release's canonical
table schema (schema/schema.json, 56 columns): renaming one would make it less standard, and
dropping it would lose data a user reads (the cycle columns are the per-cycle capacities and
energies, Step ID/Type tie a row to its program step). With that ontology loaded into the
reader (BDF_ONTOLOGY_PATH) only Step ID and Step Type remain flagged, as its loader skips
labels without a unit. The schema types Step ID as a string; a program with numeric ids keeps
them as numbers (int64 in Parquet), which existing Parquet readers of these files rely on.
Ontology 1.3.0 renames Step Index / 1 to Step Record Index / 1 (the old label stays an alias);
these files follow 1.2.0, which the reader knows. Impedance spectra (`write_spectrum_csv`)
use the ontology's EIS labels but are not BDF time series: they have no voltage or current,
and the format defines no spectrum file yet.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lipon_hw.analysis.integrate import interval_integrals, step_leads
from lipon_hw.errors import InputError

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

ONTOLOGY_VERSION = "1.2.0"
TEST_TIME, VOLTAGE, CURRENT = "Test Time / s", "Voltage / V", "Current / A"
UNIX_TIME, CYCLE_COUNT, STEP_COUNT = "Unix Time / s", "Cycle Count / 1", "Step Count / 1"
STEP_ID, STEP_TYPE = "Step ID", "Step Type"
STEP_INDEX, STEP_TIME, RECORD_INDEX = "Step Index / 1", "Step Time / s", "Record Index / 1"
CHARGING_AH, DISCHARGING_AH = "Charging Capacity / Ah", "Discharging Capacity / Ah"
CHARGING_WH, DISCHARGING_WH = "Charging Energy / Wh", "Discharging Energy / Wh"
NET_AH, CUMULATIVE_AH = "Net Capacity / Ah", "Cumulative Capacity / Ah"
CYCLE_CHARGING_AH = "Cycle Charging Capacity / Ah"
CYCLE_DISCHARGING_AH = "Cycle Discharging Capacity / Ah"
CYCLE_CHARGING_WH = "Cycle Charging Energy / Wh"
CYCLE_DISCHARGING_WH = "Cycle Discharging Energy / Wh"
POWER = "Power / W"
FREQUENCY, REAL_Z, IMAG_Z = "Frequency / Hz", "Real Impedance / ohm", "Imaginary Impedance / ohm"
ABS_Z, PHASE = "Absolute Impedance / ohm", "Phase / deg"

REQUIRED = (TEST_TIME, VOLTAGE, CURRENT)
RECOMMENDED = (UNIX_TIME, CYCLE_COUNT, STEP_COUNT)
BDF_COLUMNS = REQUIRED + RECOMMENDED + (
    STEP_ID, STEP_TYPE, STEP_INDEX, STEP_TIME, RECORD_INDEX,
    CHARGING_AH, DISCHARGING_AH, CHARGING_WH, DISCHARGING_WH, NET_AH, CUMULATIVE_AH,
    CYCLE_CHARGING_AH, CYCLE_DISCHARGING_AH, CYCLE_CHARGING_WH, CYCLE_DISCHARGING_WH, POWER)
SPECTRUM_COLUMNS = (TEST_TIME, FREQUENCY, REAL_Z, IMAG_Z, ABS_Z, PHASE, CYCLE_COUNT,
                    STEP_COUNT)
INT_COLUMNS = (CYCLE_COUNT, STEP_COUNT, STEP_INDEX, RECORD_INDEX)
FORMATS = ("csv", "parquet")
BATCH_ROWS = 10_000
AS_PER_AH = 3600.0


@dataclass
class BdfMetadata:
    """What the sidecar says about the file: the cell, when the test started (Unix time,
    UTC seconds), and anything else worth keeping (sample, station, protocol, …)."""

    cell_name: str
    unix_start_s: float
    institution: str = ""
    run_id: int | str | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["start_utc"] = datetime.fromtimestamp(self.unix_start_s, timezone.utc).isoformat()
        return d


def _format_of(path: Path, fmt: str | None) -> str:
    if fmt is not None:
        key = str(fmt).strip().lower()
        if key not in FORMATS:
            raise InputError(f"BDF format {fmt!r} is unknown (use csv or parquet)")
        return key
    return "parquet" if path.suffix.lower() in (".parquet", ".pq") else "csv"


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.part")


class BdfWriter:
    """Write one cell's time series as a BDF file, a batch of rows at a time.

    Use as a context manager; `write_rows` may be called any number of times. The file
    appears under its name only when the writer closes without an error."""

    def __init__(self, path: Path | str, metadata: BdfMetadata, fmt: str | None = None,
                 batch_rows: int = BATCH_ROWS, leads: dict | None = None):
        self.path = Path(path)
        self.leads = leads  # step id → that step's measurement interval (s)
        self.fmt = _format_of(self.path, fmt)
        if batch_rows < 1:
            raise InputError(f"batch_rows must be at least 1, not {batch_rows}")
        if not (isinstance(metadata.unix_start_s, (int, float))
                and math.isfinite(metadata.unix_start_s)):
            raise InputError(f"BDF metadata needs a Unix start time in seconds, not "
                             f"{metadata.unix_start_s!r}")
        self.metadata = metadata
        self.batch_rows = batch_rows
        self.rows = 0
        self._tmp = _tmp_path(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._csv_file = None
        self._csv = None
        self._pq: pq.ParquetWriter | None = None
        self._step_id_is_int: bool | None = None
        # carried from the last row written
        self._last = None  # (t, V, I, cycle, step_count)
        self._totals = np.zeros(4)  # charge_As, discharge_As, charge_Ws, discharge_Ws
        self._cycle_base = np.zeros(4)  # totals at the start of the running cycle
        self._step_t0 = 0.0
        self._step_index = 0
        self._closed = False

    # --- context -----------------------------------------------------------------------------
    def __enter__(self) -> BdfWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def abort(self) -> None:
        """Drop the partial file."""
        self._close_handles()
        self._closed = True
        if self._tmp.exists():
            self._tmp.unlink()

    def close(self) -> Path:
        """Finish the file (rename into place) and write the metadata sidecar."""
        if self._closed:
            return self.path
        if self.rows == 0:
            self._open(step_id_is_int=True)  # an empty file still has its header/schema
        self._close_handles()
        os.replace(self._tmp, self.path)
        sidecar = {"format": "Battery Data Format", "bdf_ontology_version": ONTOLOGY_VERSION,
                   "serialization": self.fmt, "rows": self.rows, "columns": list(BDF_COLUMNS),
                   **self.metadata.to_dict()}
        Path(f"{self.path}.json").write_text(json.dumps(sidecar, indent=2) + "\n")
        self._closed = True
        return self.path

    def _close_handles(self) -> None:
        if self._csv_file is not None:
            self._csv_file.close()
            self._csv_file = None
        if self._pq is not None:
            self._pq.close()
            self._pq = None

    # --- writing -----------------------------------------------------------------------------
    def write_rows(self, rows: Iterable[tuple]) -> None:
        """Append rows of (t_s, voltage_V, current_A, cycle, step_count, step_id, step_type)."""
        batch: list[tuple] = []
        for row in rows:
            batch.append(row)
            if len(batch) >= self.batch_rows:
                self._write_batch(batch)
                batch = []
        if batch:
            self._write_batch(batch)

    def _open(self, step_id_is_int: bool) -> None:
        self._step_id_is_int = step_id_is_int
        if self.fmt == "csv":
            self._csv_file = open(self._tmp, "w", newline="", encoding="utf-8")  # noqa: SIM115
            self._csv = csv.writer(self._csv_file)
            self._csv.writerow(BDF_COLUMNS)
        else:
            import pyarrow.parquet as pq  # here: a run's worker that only fits never loads it

            self._pq = pq.ParquetWriter(self._tmp, self.schema())

    def schema(self) -> pa.Schema:
        import pyarrow as pa

        def typ(name):
            if name in INT_COLUMNS:
                return pa.int64()
            if name == STEP_TYPE or (name == STEP_ID and not self._step_id_is_int):
                return pa.string()
            if name == STEP_ID:
                return pa.int64()
            return pa.float64()
        return pa.schema([pa.field(n, typ(n), nullable=False) for n in BDF_COLUMNS])

    def _write_batch(self, batch: list[tuple]) -> None:
        if self._closed:
            raise InputError(f"BDF file {self.path.name} is already closed")
        cols = self._columns(batch)
        if self._step_id_is_int is None:
            self._open(step_id_is_int=isinstance(batch[0][5], (int, np.integer)))
        if self._step_id_is_int:
            try:
                cols[STEP_ID] = np.array([int(x) for x in cols[STEP_ID]], dtype=np.int64)
            except (TypeError, ValueError):
                raise InputError("BDF rows: Step ID started as a number and later is not "
                                 "one") from None
        else:
            cols[STEP_ID] = [str(x) for x in cols[STEP_ID]]
        if self.fmt == "csv":
            self._write_csv(cols, len(batch))
        else:
            import pyarrow as pa

            arrays = [pa.array(cols[n], type=self.schema().field(n).type) for n in BDF_COLUMNS]
            self._pq.write_table(pa.Table.from_arrays(arrays, schema=self.schema()))
        self.rows += len(batch)

    def _write_csv(self, cols: dict, n: int) -> None:
        lists = []
        for name in BDF_COLUMNS:
            c = cols[name]
            lists.append(c.tolist() if isinstance(c, np.ndarray) else list(c))
        self._csv.writerows(zip(*lists, strict=True))

    def _columns(self, batch: list[tuple]) -> dict:
        """The BDF columns of one batch, continuing the counters of the rows before it."""
        try:
            if any(len(r) != 7 for r in batch):
                raise ValueError
            t = np.array([float(r[0]) for r in batch])
            v = np.array([float(r[1]) for r in batch])
            i = np.array([float(r[2]) for r in batch])
            cyc = np.array([_whole(r[3]) for r in batch], dtype=np.int64)
            stc = np.array([_whole(r[4]) for r in batch], dtype=np.int64)
        except (TypeError, ValueError):
            raise InputError("BDF rows must be (t_s, voltage_V, current_A, cycle, step_count, "
                             "step_id, step_type) with numbers and whole counts") from None
        if not (np.all(np.isfinite(t)) and np.all(np.isfinite(v)) and np.all(np.isfinite(i))):
            raise InputError("BDF rows contain a NaN or infinite time, voltage or current")
        prev = self._last
        checks = (("time", t, None if prev is None else prev[0]),
                  ("cycle count", cyc, None if prev is None else prev[3]),
                  ("step count", stc, None if prev is None else prev[4]))
        for name, a, before in checks:
            a = a if before is None else np.concatenate(([before], a))
            back = np.flatnonzero(np.diff(a) < 0)
            if len(back):
                row = self.rows + int(back[0]) + (2 if before is None else 1)
                raise InputError(f"BDF rows: the {name} goes back at row {row}")
        if np.any(cyc < 0) or np.any(stc < 0):
            raise InputError("BDF rows: cycle and step counts must be ≥ 0")
        n = len(batch)
        joins = None
        if self.leads is not None:  # the previous row's step id is never looked up
            ids = [r[5] for r in batch]
            joins = step_leads(stc if prev is None else np.concatenate(([prev[4]], stc)),
                               self.leads, ids if prev is None else ids[:1] + ids)
        # per-row totals since the test start (each row adds the interval that ends on it)
        if prev is None:
            contrib = np.zeros((4, n))
            if n > 1:
                contrib[:, 1:] = np.array(interval_integrals(t, v, i, joins))
            # the first row opens a cycle and a step; so does every change after it
            new_cycle = np.concatenate(([True], np.diff(cyc) != 0))
            new_step = np.concatenate(([True], np.diff(stc) != 0))
        else:
            contrib = np.array(interval_integrals(np.concatenate(([prev[0]], t)),
                                                  np.concatenate(([prev[1]], v)),
                                                  np.concatenate(([prev[2]], i)), joins))
            new_cycle = np.diff(np.concatenate(([prev[3]], cyc))) != 0
            new_step = np.diff(np.concatenate(([prev[4]], stc))) != 0
        totals = self._totals[:, None] + np.cumsum(contrib, axis=1)
        if prev is None:
            self._cycle_base = np.zeros(4)
        rows = np.arange(n)
        start = np.maximum.accumulate(np.where(new_cycle, rows, -1))
        # a cycle starts before its first row's interval when that interval opens a step
        # (the new step's first measurement), after it otherwise — as the accumulator does
        first = np.maximum(start, 0)
        opening = np.zeros(n, bool) if joins is None else np.concatenate(
            ([False], ~np.isnan(joins))) if prev is None else ~np.isnan(joins)
        base_at = totals[:, first] - np.where(opening[first], contrib[:, first], 0.0)
        base = np.where(start >= 0, base_at, self._cycle_base[:, None])
        cycle_sums = totals - base
        sstart = np.maximum.accumulate(np.where(new_step, rows, -1))
        step_t0 = np.where(sstart >= 0, t[np.maximum(sstart, 0)], self._step_t0)
        step_index = np.where(sstart >= 0, rows - sstart + 1, self._step_index + rows + 1)
        # carry
        self._totals = totals[:, -1].copy()
        self._cycle_base = base[:, -1].copy()
        self._step_t0 = float(step_t0[-1])
        self._step_index = int(step_index[-1])
        self._last = (float(t[-1]), float(v[-1]), float(i[-1]), int(cyc[-1]), int(stc[-1]))
        return {
            TEST_TIME: t, VOLTAGE: v, CURRENT: i,
            UNIX_TIME: float(self.metadata.unix_start_s) + t,
            CYCLE_COUNT: cyc, STEP_COUNT: stc,
            STEP_ID: [r[5] for r in batch], STEP_TYPE: [str(r[6]) for r in batch],
            STEP_INDEX: step_index.astype(np.int64), STEP_TIME: t - step_t0,
            RECORD_INDEX: np.arange(self.rows + 1, self.rows + n + 1, dtype=np.int64),
            CHARGING_AH: totals[0] / AS_PER_AH, DISCHARGING_AH: totals[1] / AS_PER_AH,
            CHARGING_WH: totals[2] / AS_PER_AH, DISCHARGING_WH: totals[3] / AS_PER_AH,
            NET_AH: (totals[0] - totals[1]) / AS_PER_AH,
            CUMULATIVE_AH: (totals[0] + totals[1]) / AS_PER_AH,
            CYCLE_CHARGING_AH: cycle_sums[0] / AS_PER_AH,
            CYCLE_DISCHARGING_AH: cycle_sums[1] / AS_PER_AH,
            CYCLE_CHARGING_WH: cycle_sums[2] / AS_PER_AH,
            CYCLE_DISCHARGING_WH: cycle_sums[3] / AS_PER_AH,
            POWER: v * i,
        }


def _whole(x) -> int:
    if isinstance(x, (bool, np.bool_)):
        raise ValueError
    f = float(x)
    if not f.is_integer():
        raise ValueError
    return int(f)


def write_bdf(rows: Iterable[tuple], path: Path | str, metadata: BdfMetadata,
              fmt: str | None = None, batch_rows: int = BATCH_ROWS,
              leads: dict | None = None) -> Path:
    """Write rows of (t_s, voltage_V, current_A, cycle, step_count, step_id, step_type) as a
    BDF CSV or Parquet file (fmt, or from the suffix: .parquet → Parquet, else CSV);
    leads: step id → measurement interval (see `BdfWriter`)."""
    with BdfWriter(path, metadata, fmt, batch_rows, leads) as w:
        w.write_rows(rows)
    return w.path


def write_spectrum_csv(rows: Iterable[tuple], path: Path | str) -> Path:
    """Write impedance spectra: rows of (t_s, f_Hz, z_re_ohm, z_im_ohm, cycle, step_count)
    with the format's labels (Frequency / Hz, Real / Imaginary / Absolute Impedance / ohm,
    Phase / deg; the imaginary part as measured, negative for a capacitive cell)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            out = csv.writer(fh)
            out.writerow(SPECTRUM_COLUMNS)
            for n, row in enumerate(rows, 1):
                try:
                    t, f, zr, zi, cyc, stc = row
                    t, f, zr, zi = float(t), float(f), float(zr), float(zi)
                    cyc, stc = _whole(cyc), _whole(stc)
                except (TypeError, ValueError):
                    raise InputError(f"spectrum row {n} is not (t_s, f_Hz, z_re_ohm, z_im_ohm, "
                                     f"cycle, step_count)") from None
                if not all(math.isfinite(x) for x in (t, f, zr, zi)) or f <= 0:
                    raise InputError(f"spectrum row {n} has a non-finite value or a "
                                     f"frequency that is not positive")
                out.writerow((t, f, zr, zi, math.hypot(zr, zi),
                              math.degrees(math.atan2(zi, zr)), cyc, stc))
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    return path
