"""A screening run's cells as one table, its bins and its yield, and their files.

- `results_frame(store, run_id)`: a pyarrow Table, one row per measured cell: sheet_id,
  cell_id (the cell's sample id), row and col (from 1), x_mm and y_mm (the cell's centre:
  cell (1, 1) at the origin, x along the columns, y down the rows, at the sheet's pitch),
  site, touchdown, t_s, attempts, contact, then every metric as its own float column
  (`metrics.ordered`; null where a cell has none), then the bins (soft_bin, soft_bin_name,
  hard_bin, hard_bin_name, passed, rule).
- `write_frame(frame, path, fmt)`: that table as CSV (csv module: floats as repr, null as
  an empty field) or Parquet.
- `bin_defs(cells, bins)`: the bin definitions as `Bin`s — the recipe's list of dicts
  when given, completed by any bin a cell holds that the list lacks; without a list, the
  bins the cells hold (a soft bin is the tester-fault bin when every cell in it lost
  contact).
- `yield_table(cells, bins)`: count and percent per hard bin and per soft bin, and the
  yield: passed over measured, and — tester faults (cells the prober could not contact)
  set apart — passed over the cells whose test was valid. `YieldTable.lines()` is the
  printed form, `write_yield_csv` its file, `run_yield` each sheet's table.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lipon_hw.errors import InputError
from lipon_hw.screening import metrics as metric_names
from lipon_hw.store import Store
from lipon_hw.store_schema import ScreenCell, Sheet
from lipon_hw.store_screening import cell_id

HEAD_COLUMNS = ("sheet_id", "cell_id", "row", "col", "x_mm", "y_mm", "site", "touchdown",
                "t_s", "attempts", "contact")
BIN_COLUMNS = ("soft_bin", "soft_bin_name", "hard_bin", "hard_bin_name", "passed", "rule")
_TYPES = {"sheet_id": pa.string(), "cell_id": pa.string(), "row": pa.int32(),
          "col": pa.int32(), "x_mm": pa.float64(), "y_mm": pa.float64(), "site": pa.int32(),
          "touchdown": pa.int32(), "t_s": pa.float64(), "attempts": pa.int32(),
          "contact": pa.string(), "soft_bin": pa.int32(), "soft_bin_name": pa.string(),
          "hard_bin": pa.int32(), "hard_bin_name": pa.string(), "passed": pa.bool_(),
          "rule": pa.string()}


# --- the results table -------------------------------------------------------------------
def sheets_of(store: Store, cells: Sequence[ScreenCell]) -> dict[str, Sheet]:
    """Each sheet the cells lie on, by id (InputError for a sheet the store lacks)."""
    out = {}
    for sid in dict.fromkeys(c.sheet_id for c in cells):
        sheet = store.sheet(sid)
        if sheet is None:
            raise InputError(f"sheet {sid!r} of the screened cells is not in the store")
        out[sid] = sheet
    return out


def run_cells(store: Store, run_id: int) -> list[ScreenCell]:
    """The run's cells; InputError for an unknown run or one that screened nothing."""
    run = store.run(run_id)  # InputError for an unknown run
    cells = store.screen_cells(run_id)
    if not cells:
        raise InputError(f"run {run_id} ({run.kind}) has no screened cells")
    return cells


def results_frame(store: Store, run_id: int) -> pa.Table:
    """Every cell the run measured, one row each (see the module's docstring)."""
    cells = run_cells(store, run_id)
    return cells_frame(cells, sheets_of(store, cells))


def cells_frame(cells: Sequence[ScreenCell], sheets: Mapping[str, Sheet]) -> pa.Table:
    names = metric_names.ordered(k for c in cells for k in c.metrics)
    clashes = [n for n in names if n in HEAD_COLUMNS or n in BIN_COLUMNS]
    if clashes:
        raise InputError(f"a screened cell has a metric named {clashes[0]!r}, which clashes "
                         "with the results table's column of that name")
    cols: dict[str, list] = {name: [] for name in (*HEAD_COLUMNS, *names, *BIN_COLUMNS)}
    for c in cells:
        sheet = sheets[c.sheet_id]
        head = (c.sheet_id, cell_id(c.sheet_id, c.row, c.col), c.row, c.col,
                (c.col - 1) * sheet.pitch_x_mm, (c.row - 1) * sheet.pitch_y_mm, c.site,
                c.touchdown, c.t_s, c.attempts, c.contact)
        for name, value in zip(HEAD_COLUMNS, head, strict=True):
            cols[name].append(value)
        for name in names:
            value = c.metrics.get(name)
            cols[name].append(None if value is None else float(value))
        for name in BIN_COLUMNS:
            cols[name].append(getattr(c, name))
    schema = pa.schema([pa.field(n, _TYPES.get(n, pa.float64())) for n in cols])
    return pa.table([pa.array(v, type=schema.field(n).type) for n, v in cols.items()],
                    schema=schema)


def write_frame(frame: pa.Table, path: Path, fmt: str) -> Path:
    """The table as `fmt` ("csv" or "parquet") at `path` (the caller writes atomically)."""
    if fmt == "parquet":
        pq.write_table(frame, path)
        return path
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(frame.column_names)
        columns = [frame.column(n).to_pylist() for n in frame.column_names]
        writer.writerows(zip(*columns, strict=True))
    return path


# --- bins --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bin:
    soft_bin: int
    name: str
    hard_bin: int
    hard_name: str
    passed: bool
    tester_fault: bool


_BIN_KEYS = ("soft_bin", "name", "hard_bin", "hard_name", "passed")


def bin_defs(cells: Iterable[ScreenCell], bins: Sequence[Mapping] | None = None) -> list[Bin]:
    """The bins by soft bin number (see the module's docstring)."""
    cells = list(cells)
    out: dict[int, Bin] = {}
    for i, d in enumerate(bins or (), start=1):
        missing = [k for k in _BIN_KEYS if k not in d]
        if missing:
            raise InputError(f"screening bin {i} has no {missing[0]!r}")
        b = Bin(int(d["soft_bin"]), str(d["name"]), int(d["hard_bin"]), str(d["hard_name"]),
                bool(d["passed"]), bool(d.get("tester_fault", False)))
        if b.soft_bin in out:
            raise InputError(f"screening bin {i}: soft bin {b.soft_bin} is defined twice")
        out[b.soft_bin] = b
    lost: dict[int, list[bool]] = {}
    for c in cells:
        lost.setdefault(c.soft_bin, []).append(c.contact == "lost")
    for c in cells:
        if c.soft_bin not in out:
            out[c.soft_bin] = Bin(c.soft_bin, c.soft_bin_name, c.hard_bin, c.hard_bin_name,
                                  c.passed, all(lost[c.soft_bin]))
    return sorted(out.values(), key=lambda b: b.soft_bin)


def hard_bins(defs: Sequence[Bin], cells: Iterable[ScreenCell] = ()
              ) -> list[tuple[int, str, bool, bool]]:
    """(hard bin, name, passed, tester fault) per hard bin, by number: a hard bin passes
    (or holds tester faults) when every soft bin in it does. A hard bin a cell holds that
    no definition names (a recipe that mapped the soft bin elsewhere) is added as the cell
    names it."""
    out: dict[int, tuple[int, str, bool, bool]] = {}
    for b in defs:
        if b.hard_bin in out:
            n, name, passed, fault = out[b.hard_bin]
            out[b.hard_bin] = (n, name, passed and b.passed, fault and b.tester_fault)
        else:
            out[b.hard_bin] = (b.hard_bin, b.hard_name, b.passed, b.tester_fault)
    for c in cells:
        if c.hard_bin not in out:
            out[c.hard_bin] = (c.hard_bin, c.hard_bin_name, c.passed, c.contact == "lost")
    return [out[k] for k in sorted(out)]


# --- yield -------------------------------------------------------------------------------
@dataclass(frozen=True)
class BinCount:
    level: str  # "hard" or "soft"
    bin: int
    name: str
    hard_bin: int
    passed: bool
    tester_fault: bool
    count: int
    percent: float  # of the cells measured


@dataclass(frozen=True)
class YieldTable:
    measured: int
    passed: int
    tester_faults: int
    on_sheet: int | None
    bins: tuple[BinCount, ...]

    @property
    def valid(self) -> int:
        """Cells whose test was valid: measured, less the tester faults."""
        return self.measured - self.tester_faults

    @property
    def yield_percent(self) -> float:
        return 100.0 * self.passed / self.measured if self.measured else 0.0

    @property
    def valid_yield_percent(self) -> float:
        return 100.0 * self.passed / self.valid if self.valid else 0.0

    def lines(self) -> list[str]:
        """The printed form: the yield, then one line per hard bin with its soft bins."""
        sheet = "" if self.on_sheet is None else f" of {self.on_sheet} on the sheet"
        out = [f"yield {self.yield_percent:.1f} % ({self.passed} passed of {self.measured} "
               f"measured{sheet}); {self.valid_yield_percent:.1f} % of the {self.valid} "
               f"validly tested ({self.tester_faults} tester faults set apart)"]
        soft = [b for b in self.bins if b.level == "soft"]
        for h in (b for b in self.bins if b.level == "hard"):
            tag = "pass" if h.passed else "tester fault" if h.tester_fault else "fail"
            out.append(f"  hard bin {h.bin:>3} {h.name:<16} {h.count:>6} "
                       f"{h.percent:6.2f} %  ({tag})")
            out += [f"      soft bin {s.bin:>3} {s.name:<16} {s.count:>6} {s.percent:6.2f} %"
                    for s in soft if s.hard_bin == h.bin]
        return out


def yield_table(cells: Sequence[ScreenCell], bins: Sequence[Mapping] | None = None,
                on_sheet: int | None = None) -> YieldTable:
    """Counts and yield of the cells (see the module's docstring); `on_sheet`, the number
    of cells on the sheet, is only said."""
    defs = bin_defs(cells, bins)
    fault_bins = {b.soft_bin for b in defs if b.tester_fault}
    soft = Counter(c.soft_bin for c in cells)
    hard = Counter(c.hard_bin for c in cells)
    n = len(cells)

    def pct(k: int) -> float:
        return 100.0 * k / n if n else 0.0

    rows = [BinCount("hard", h, name, h, passed, fault, hard[h], pct(hard[h]))
            for h, name, passed, fault in hard_bins(defs, cells)]
    rows += [BinCount("soft", b.soft_bin, b.name, b.hard_bin, b.passed, b.tester_fault,
                      soft[b.soft_bin], pct(soft[b.soft_bin])) for b in defs]
    return YieldTable(measured=n, passed=sum(1 for c in cells if c.passed),
                      tester_faults=sum(1 for c in cells if c.soft_bin in fault_bins),
                      on_sheet=on_sheet, bins=tuple(rows))


def run_yield(store: Store, run_id: int, bins: Sequence[Mapping] | None = None
              ) -> dict[str, YieldTable]:
    """The yield of each sheet the run screened, by sheet id (for the run's summary)."""
    cells = run_cells(store, run_id)
    return {sid: yield_table([c for c in cells if c.sheet_id == sid], bins,
                             on_sheet=sheet.rows * sheet.cols)
            for sid, sheet in sheets_of(store, cells).items()}


YIELD_COLUMNS = ("level", "bin", "name", "hard_bin", "passed", "tester_fault", "count",
                 "percent")


def write_yield_csv(table: YieldTable, path: Path) -> Path:
    """One row per hard bin, then per soft bin, then the totals as rows of level `total`
    (name: measured, passed, tester_faults, valid; and yield_percent,
    valid_yield_percent in `percent`)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(YIELD_COLUMNS)
        for b in table.bins:
            writer.writerow((b.level, b.bin, b.name, b.hard_bin, int(b.passed),
                             int(b.tester_fault), b.count, round(b.percent, 4)))
        for name, count in (("measured", table.measured), ("passed", table.passed),
                            ("tester_faults", table.tester_faults), ("valid", table.valid)):
            writer.writerow(("total", "", name, "", "", "", count, ""))
        writer.writerow(("total", "", "yield_percent", "", "", "", "",
                         round(table.yield_percent, 4)))
        writer.writerow(("total", "", "valid_yield_percent", "", "", "", "",
                         round(table.valid_yield_percent, 4)))
    return path
