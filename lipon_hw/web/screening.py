"""The REST API of a sheet-screening run: its sheet and the cells screened so far.

- `GET /api/runs/{id}/sheet`: the sheet as stored (id, roll, rows × cols, pitch), and what
  the run's own recipe (the copy stored with the run: no station needed) says of it — the
  block of probe sites in use, the touchdowns in stepping order, the bins in the recipe's
  order (grades best first, fail rules, the tester-fault bin) and the metrics its tests
  give, each with the quantity and unit a person reads. A recipe that no longer reads
  leaves those empty: the cells' own bins and metrics then serve.
- `GET /api/runs/{id}/cells?since=&limit=`: the cells stored after the cursor `since` (0:
  all), in the order stored, each as `ScreenCell.to_dict()` (the live `screen_cells`
  event's shape too); `cursor` is where the page ends (the `since` of the next read) and
  `next` the URL of the following page (None: nothing more yet).

Viewer role, read-only (`runs.reading`); a run not stored or not a screening is a 404 in
one sentence.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query, Request

from lipon_hw.screening import metrics as metric_names
from lipon_hw.screening.layout import CardSpec, SheetSpec, touchdowns
from lipon_hw.store import Run, Store
from lipon_hw.web.runs import _run, reading, viewer
from lipon_hw.web.security import User

router = APIRouter(prefix="/api")

#: cells per page: default, and the most a request may ask
PAGE_CELLS = 10_000
MAX_PAGE_CELLS = 100_000
#: the most touchdowns listed (a sheet of a million cells probed one by one lists none)
MAX_TOUCHDOWNS = 20_000


def _screening(store: Store | None, run_id: int) -> Run:
    run = _run(store, run_id)
    if run.kind != "screening":
        raise HTTPException(404, f"run {run_id} is a {run.kind} run, which screens no sheet")
    return run


def _recipe(run: Run) -> dict:
    """The sites in use, bins and metrics of the run's stored recipe ({} when it no longer
    reads)."""
    from pydantic import ValidationError

    from lipon_hw.errors import LiponError
    from lipon_hw.screening.bins import compile_rules
    from lipon_hw.screening.recipe import ScreeningModel, metric_names
    from lipon_hw.yamlfile import loads

    try:
        m = ScreeningModel.model_validate(loads(run.sequence_text, run.sequence_path).data)
        metrics = metric_names(m.tests)
        rules = compile_rules([b.model_dump() for b in m.bins.fail],
                              [b.model_dump() for b in m.bins.grades],
                              m.bins.tester_fault.model_dump(), metrics)
    except (LiponError, ValidationError, ValueError):
        return {}
    return {"sheet_id": m.sheet.id, "sites": m.prober.sites, "bins": rules.definitions(),
            "metrics": metrics}


def _metric(name: str) -> dict:
    m = metric_names.parse(name)
    return {"name": name, "quantity": m.quantity, "unit": m.unit}


@router.get("/runs/{run_id}/sheet")
def sheet(run_id: int, request: Request, _user: User = viewer) -> dict:
    """The run's sheet, its probe-site block and touchdowns, bins and metrics."""
    with reading(request) as store:
        run = _screening(store, run_id)
        recipe = _recipe(run)
        sheet_id = recipe.get("sheet_id") or run.sample_id or (run.summary or {}).get("sheet")
        found = store.sheet(sheet_id) if sheet_id else None
    if found is None:
        raise HTTPException(404, f"run {run_id} has no sheet stored yet")
    card = steps = None
    if "sites" in recipe:
        rows, cols = recipe["sites"]
        card = {"rows": rows, "cols": cols, "sites": rows * cols}
        n = -(-found.rows // rows) * -(-found.cols // cols)
        if n <= MAX_TOUCHDOWNS:
            spec = SheetSpec(found.id, found.roll_id, found.rows, found.cols,
                             found.pitch_x_mm, found.pitch_y_mm)
            steps = [[td.index, td.row, td.col, len(td.touches)]
                     for td in touchdowns(spec, CardSpec(rows, cols, cols))]
    return {"run_id": run_id,
            "sheet": {"id": found.id, "roll": found.roll_id, "rows": found.rows,
                      "cols": found.cols, "pitch_x_mm": found.pitch_x_mm,
                      "pitch_y_mm": found.pitch_y_mm, "first_run": found.run_id},
            "cells": found.rows * found.cols,
            "card": card,
            "touchdowns": steps,
            "bins": recipe.get("bins", []),
            "metrics": [_metric(n) for n in metric_names.ordered(recipe.get("metrics", []))]}


@router.get("/runs/{run_id}/cells")
def cells(run_id: int, request: Request, _user: User = viewer,
          since: int = Query(0, ge=0, description="the cursor of a previous read (0: all)"),
          limit: int = Query(PAGE_CELLS, ge=1, le=MAX_PAGE_CELLS)) -> dict:
    """A page of the cells the run screened after `since`, in the order stored."""
    with reading(request) as store:
        _screening(store, run_id)
        rows = store.screen_cells_after(run_id, since, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    cursor = rows[-1][0] if rows else since
    following = f"/api/runs/{run_id}/cells?since={cursor}&limit={limit}" if more else None
    return {"run_id": run_id, "cells": [c.to_dict() for _, c in rows], "cursor": cursor,
            "next": following}
