"""Export one run's readings as a wide table (CSV or Parquet) plus a JSON sidecar.

The store keeps readings long (t_s, quantity, value). An export pivots them wide:
one row per distinct timestamp, `t_s` first, then one float column per quantity
(sorted by name), then `step` (index of the step running at that time) and
`step_kind`. A quantity with no value at a time is an empty CSV cell / a Parquet
null.

Exports stream: readings come from an SQLite cursor and are written a chunk of
timestamps at a time (CSV through the csv module, Parquet as one record batch
per chunk with a fixed schema), so memory follows the chunk size and the number
of quantities, never the length of the run. The file is written under a
temporary name and renamed when complete, so a failed export never leaves a
half-written file under the requested name; an output that is a file of the store, is
not a regular file, or exists without `force` is refused before anything is written.

The run's metadata (id, name, status, sequence path, seed, sample id, steps and
alarms) goes into `<out>.json` next to the data file, for both formats; the CSV
itself stays a plain header-plus-rows file.
"""

from __future__ import annotations

import bisect
import csv
import json
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from lipon_hw.errors import InputError
from lipon_hw.safe_output import atomic_file, check_not_store, check_outputs, protected_paths
from lipon_hw.store import Store

FORMATS = {"csv": "csv", "parquet": "parquet"}  # format name -> file extension
CHUNK_ROWS = 10_000
RESERVED_COLUMNS = ("t_s", "step", "step_kind")


def export_run(store: Store, run_id: int, fmt: str, out_path: Path | str,
               chunk_rows: int = CHUNK_ROWS, force: bool = False) -> Path:
    """Write run `run_id` as `fmt` ("csv" or "parquet") to `out_path`; return the data file.

    `out_path` may be an existing directory (or a path ending in a separator): the
    file is then `run<id>.<ext>` inside it. Missing parent directories are created.
    The metadata sidecar is `<data file>.json`. Neither may be a file of the store or
    anything but a regular file, nor exist unless `force` (`safe_output.check_outputs`).
    """
    fmt_key = str(fmt).strip().lower()
    if fmt_key not in FORMATS:
        raise InputError(f"format {fmt} is unknown (use csv or parquet)")
    if chunk_rows < 1:
        raise InputError(f"chunk_rows must be at least 1, not {chunk_rows}")
    run = store.run(run_id)  # InputError for an unknown run, before anything is written
    names = sorted(store.quantity_names(run_id))
    clashes = [n for n in names if n in RESERVED_COLUMNS]
    if clashes:
        raise InputError(f"run {run_id} has a quantity named {clashes[0]!r}, which clashes with"
                         f" the export column of that name")
    steps = store.steps(run_id)

    protected = protected_paths(store.data_dir, store.path)
    check_not_store(Path(out_path).expanduser(), protected)  # the data directory as --out
    out = _resolve_out_path(out_path, run_id, FORMATS[fmt_key])
    sidecar_path = out.with_name(out.name + ".json")
    check_outputs([out, sidecar_path], protected, force)
    chunks = _wide_chunks(store, run_id, names, _StepLocator(steps), chunk_rows)
    with atomic_file(out) as tmp:
        if fmt_key == "csv":
            n_rows = _write_csv(tmp, names, chunks)
        else:
            n_rows = _write_parquet(tmp, names, chunks)

    sidecar = {
        "run_id": run.id,
        "name": run.name,
        "kind": run.kind,
        "status": run.status,
        "message": run.message,
        "sequence_path": run.sequence_path,
        "seed": run.seed,
        "sample_id": run.sample_id,
        "started_at": run.started_at,
        "ended_at": run.ended_at,
        "summary": run.summary,
        "format": fmt_key,
        "file": out.name,
        "columns": ["t_s", *names, "step", "step_kind"],
        "rows": n_rows,
        "steps": steps,
        "alarms": [a.to_dict() for a in store.alarms(run_id)],
    }
    with atomic_file(sidecar_path) as tmp:
        tmp.write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
    return out


def _resolve_out_path(out_path: Path | str, run_id: int, ext: str) -> Path:
    looks_like_dir = isinstance(out_path, str) and out_path.endswith(("/", os.sep))
    out = Path(out_path).expanduser()
    if looks_like_dir or out.is_dir():
        return out / f"run{run_id}.{ext}"
    return out


class _StepLocator:
    """Which step was running at time t: of the steps with t_start_s <= t <= t_end_s
    (an unfinished step runs on forever), the one that started last (ties: higher
    index). So a reading at a boundary belongs to the step that starts there, and a
    reading at the end of a step followed by a gap still belongs to that step."""

    def __init__(self, steps: Sequence[dict]):
        ordered = sorted(steps, key=lambda s: (s["t_start_s"], s["idx"]))
        self._starts = [s["t_start_s"] for s in ordered]
        self._ends = [math.inf if s["t_end_s"] is None else s["t_end_s"] for s in ordered]
        self._steps = [(int(s["idx"]), s["kind"]) for s in ordered]
        # running maximum of the end times: lets the backward scan stop early
        self._max_end: list[float] = []
        top = -math.inf
        for end in self._ends:
            top = max(top, end)
            self._max_end.append(top)

    def at(self, t: float) -> tuple[int | None, str | None]:
        k = bisect.bisect_right(self._starts, t) - 1
        while k >= 0 and self._max_end[k] >= t:
            if self._ends[k] >= t:
                return self._steps[k]
            k -= 1
        return None, None


# A chunk is column-oriented: t_s values, one value list per quantity, step, step_kind.
_Chunk = tuple[list[float], list[list[float | None]], list[int | None], list[str | None]]


def _wide_chunks(store: Store, run_id: int, names: list[str], steps: _StepLocator,
                 chunk_rows: int) -> Iterator[_Chunk]:
    """Pivot the time-ordered long readings into chunks of at most `chunk_rows` rows."""
    col_of = {name: i for i, name in enumerate(names)}
    n = len(names)

    def new_chunk() -> _Chunk:
        return [], [[] for _ in range(n)], [], []

    chunk = new_chunk()
    current_t: float | None = None
    row: list[float | None] = [None] * n

    def close_row() -> None:
        ts, cols, step_col, kind_col = chunk
        ts.append(current_t)
        for col, value in zip(cols, row, strict=True):
            col.append(value)
        idx, kind = steps.at(current_t)
        step_col.append(idx)
        kind_col.append(kind)

    for t, name, value in store.readings(run_id):
        if t != current_t:
            if current_t is not None:
                close_row()
                if len(chunk[0]) >= chunk_rows:
                    yield chunk
                    chunk = new_chunk()
            current_t = t
            row = [None] * n
        row[col_of[name]] = value  # a repeated quantity at one time: the last one wins
    if current_t is not None:
        close_row()
    if chunk[0]:
        yield chunk


def _write_csv(path: Path, names: list[str], chunks: Iterator[_Chunk]) -> int:
    rows = 0
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["t_s", *names, "step", "step_kind"])
        for ts, cols, step_col, kind_col in chunks:
            # csv writes None as an empty field and floats with repr (round-trip exact)
            writer.writerows(zip(ts, *cols, step_col, kind_col, strict=True))
            rows += len(ts)
    return rows


def _write_parquet(path: Path, names: list[str], chunks: Iterator[_Chunk]) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([pa.field("t_s", pa.float64(), nullable=False),
                        *(pa.field(name, pa.float64()) for name in names),
                        pa.field("step", pa.int32()),
                        pa.field("step_kind", pa.string())])
    rows = 0
    with pq.ParquetWriter(path, schema) as writer:
        for ts, cols, step_col, kind_col in chunks:
            arrays = [pa.array(ts, type=pa.float64()),
                      *(pa.array(col, type=pa.float64()) for col in cols),
                      pa.array(step_col, type=pa.int32()),
                      pa.array(kind_col, type=pa.string())]
            writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=schema))
            rows += len(ts)
    return rows
