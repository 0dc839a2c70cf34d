"""What a screening run leaves behind, and what `lipon-hw export` writes of it.

`write_screening_outputs` (the kind calls it at a run's end, `lipon-hw report` again):
per sheet, in `out_dir/<sheet id>/`, a heat map per metric (`maps`), the bin map, the
cells' results as CSV and Parquet, the yield table as CSV, and the STDF wafer map
(`stdf`), each file named after the sheet; the data files first, so an install without the
`[plots]` extra still gets them before it is told what to install for the maps. They are
the run's own derived files and are replaced when drawn again.

`export_screening` writes one file of the run — its results table (`csv`, `parquet`) or
its STDF — where the user says, refusing the store's own files, anything but a regular
file, and an existing file without `force` (`safe_output`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from lipon_hw.errors import InputError, OutputError
from lipon_hw.extras import needs
from lipon_hw.safe_output import atomic_file, check_not_store, check_outputs, protected_paths
from lipon_hw.screening import metrics as metric_names
from lipon_hw.screening.stdf import write_stdf
from lipon_hw.screening.tables import (
    bin_defs,
    cells_frame,
    run_cells,
    sheets_of,
    write_frame,
    write_yield_csv,
    yield_table,
)
from lipon_hw.store import Store

EXPORT_FORMATS = ("csv", "parquet", "stdf")


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("lipon-hw")
    except metadata.PackageNotFoundError:
        return ""


def recipe_bins(run) -> list[dict] | None:
    """The bin definitions of the run's own recipe (the copy stored with the run; its bins
    and tests only, so no station is needed), or None when they no longer read: the cells'
    own bins then serve (`tables.bin_defs`)."""
    from pydantic import ValidationError

    from lipon_hw.errors import LiponError
    from lipon_hw.screening.bins import compile_rules
    from lipon_hw.screening.recipe import ScreeningModel, metric_names
    from lipon_hw.yamlfile import loads

    try:
        m = ScreeningModel.model_validate(loads(run.sequence_text, run.sequence_path).data)
        rules = compile_rules([b.model_dump() for b in m.bins.fail],
                              [b.model_dump() for b in m.bins.grades],
                              m.bins.tester_fault.model_dump(), metric_names(m.tests))
    except (LiponError, ValidationError, ValueError):
        return None
    return rules.definitions()


def map_metrics(names, brief: bool) -> list[str]:
    """The metrics that get a heat map: all of them; `brief`, all but the phases (OCV,
    |Z| at each frequency, resistances and the rest)."""
    ordered = metric_names.ordered(names)
    return [n for n in ordered if not (brief and n.startswith("phase_"))]


def write_screening_outputs(store: Store, run_id: int, out_dir: Path | str,
                            bins: Sequence[Mapping] | None = None,
                            brief: bool = False) -> list[Path]:
    """Every output of the run (see the module's docstring); returns the files written.
    `bins`: the bin definitions (`tables.bin_defs`); by default the run's recipe's."""
    cells = run_cells(store, run_id)
    run = store.run(run_id)
    bins = recipe_bins(run) if bins is None else bins
    sheets = sheets_of(store, cells)
    out = Path(out_dir)
    check_not_store(out, protected_paths(store.data_dir, store.path))
    files: list[Path] = []
    for sid, sheet in sheets.items():
        mine = [c for c in cells if c.sheet_id == sid]
        defs = bin_defs(mine, bins)
        faults = {b.soft_bin for b in defs if b.tester_fault}
        where = out / sid
        frame = cells_frame(mine, {sid: sheet})
        table = yield_table(mine, bins, on_sheet=sheet.rows * sheet.cols)
        for path in (where / f"{sid}-cells.csv", where / f"{sid}-cells.parquet",
                     where / f"{sid}-yield.csv", where / f"{sid}.stdf"):
            with atomic_file(path) as tmp:
                if path.name.endswith("-yield.csv"):
                    write_yield_csv(table, tmp)
                elif path.suffix == ".stdf":
                    write_stdf(tmp, run, {sid: sheet}, mine, bins, _version())
                else:
                    write_frame(frame, tmp, path.suffix[1:])
            files.append(path)
        with needs("plots", "drawing the sheet's maps"):
            from lipon_hw.screening.maps import bin_map, heat_map

            for name in map_metrics((k for c in mine for k in c.metrics), brief):
                files.append(heat_map(sheet, mine, name, where / f"{sid}-{name}.png",
                                      faults, run_id))
            files.append(bin_map(sheet, mine, defs, where / f"{sid}-bins.png", run_id))
    return files


def _write(path: Path, write) -> Path:
    with atomic_file(path) as tmp:
        write(tmp)
    return path


def export_screening(store: Store, run_id: int, fmt: str, out: Path | str,
                     force: bool = False, bins: Sequence[Mapping] | None = None) -> list[Path]:
    """The run's results table (`csv`, `parquet`) or STDF wafer map (`stdf`) at `out`: a
    file, or a directory (an existing one, or a path ending in a separator) in which the
    file is `run<id>-cells.<fmt>` or `run<id>.stdf`."""
    key = str(fmt).strip().lower()
    if key not in EXPORT_FORMATS:
        raise InputError(f"format {fmt} is unknown for a screening run (use "
                         f"{', '.join(EXPORT_FORMATS)})")
    cells = run_cells(store, run_id)  # an unknown or empty run says so before any check
    sheets = sheets_of(store, cells)
    protected = protected_paths(store.data_dir, store.path)
    raw = Path(out).expanduser()
    check_not_store(raw, protected)
    looks_like_dir = isinstance(out, str) and out.endswith(("/", os.sep))
    if looks_like_dir or raw.is_dir():
        raw = raw / (f"run{run_id}.stdf" if key == "stdf" else f"run{run_id}-cells.{key}")
    check_outputs([raw], protected, force)
    try:
        raw.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"--out {raw.parent} cannot be created ({exc.strerror})") from None
    if key == "stdf":
        run = store.run(run_id)
        bins = recipe_bins(run) if bins is None else bins
        return [_write(raw, lambda p: write_stdf(p, run, sheets, cells, bins, _version()))]
    frame = cells_frame(cells, sheets)
    return [_write(raw, lambda p: write_frame(frame, p, key))]
