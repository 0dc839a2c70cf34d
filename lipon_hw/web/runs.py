"""The REST API over the store: runs, their readings, channels and alarms, samples' lineage,
and the operator's actions on a running run.

Every read opens the store read-only for that request (`Store(read_only=True)`: it never
writes, not even to migrate an older layout, and reads beside a running engine); only an
operator's action opens it to write, and writes one row: the request, with its author, in
the table every running engine reads (`store_requests`). No route takes a path: what is
read or written is the data directory's store, nothing else.

Errors are `{"detail": one sentence}`: 404 for a run or sample not stored, 409 for an
action on a run that no engine is driving, 503 for a store that cannot be read now.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from lipon_hw.errors import InputError
from lipon_hw.store import Run, Store
from lipon_hw.store_location import has_store
from lipon_hw.web.security import User, require

log = logging.getLogger("lipon_hw.web")

router = APIRouter(prefix="/api")
viewer = Depends(require("viewer"))
operator = Depends(require("operator"))

#: readings per page: default, and the most a request may ask
PAGE_ROWS = 10_000
MAX_PAGE_ROWS = 100_000
ACTIONS = ("pause", "continue", "abort")
MAX_SAMPLES = 5_000


@contextlib.contextmanager
def reading(request: Request) -> Iterator[Store | None]:
    """The data directory's store, read-only, for this request (None: no run yet)."""
    data: Path = request.app.state.data_dir
    if not has_store(data):
        yield None
        return
    store = Store(data, read_only=True)
    try:
        yield store
    finally:
        store.close()


def _run(store: Store | None, run_id: int) -> Run:
    if store is not None:
        with contextlib.suppress(InputError):
            return store.run(run_id)
    raise HTTPException(404, f"run {run_id} is not in this data directory")


def run_row(run: Run) -> dict:
    return {"id": run.id, "name": run.name, "kind": run.kind, "status": run.status,
            "message": run.message, "started_at": run.started_at, "ended_at": run.ended_at,
            "sample": run.sample_id}


@router.get("/runs")
def list_runs(request: Request, _user: User = viewer) -> list[dict]:
    """Every run of the data directory, oldest first."""
    with reading(request) as store:
        return [] if store is None else [run_row(r) for r in store.runs()]


@router.get("/runs/{run_id}")
def run_detail(run_id: int, request: Request, _user: User = viewer) -> dict:
    """The run, its summary, its steps as planned and as they went (where it stands: the
    step running and the run clock of its last checkpoint), and its alarms."""
    with reading(request) as store:
        run = _run(store, run_id)
        steps = store.steps(run_id)
        checkpoint = store.last_checkpoint(run_id)
        running = [s["idx"] for s in steps if s["status"] == "running"]
        return {**run_row(run), "summary": run.summary,
                "planned": [asdict(s) for s in store.run_steps(run_id)],
                "steps": steps,
                "at": {"step": running[-1] if running else None,
                       "t_s": checkpoint.t_s if checkpoint else None},
                "alarms": [a.to_dict() for a in store.alarms(run_id)]}


@router.get("/runs/{run_id}/readings")
def readings(run_id: int, request: Request, _user: User = viewer,
             since_t: float | None = Query(None, description="run clock (s) to start from"),
             quantities: str | None = Query(None, description="comma-separated names"),
             after: str | None = Query(None, description="the cursor of a previous page"),
             limit: int = Query(PAGE_ROWS, ge=1, le=MAX_PAGE_ROWS)) -> dict:
    """A page of the run's readings, per quantity (`t_s` and `value` arrays), in time
    order; `next` is the URL of the page after it (None: nothing more yet)."""
    names = [n.strip() for n in (quantities or "").split(",") if n.strip()] or None
    cursor = _cursor(after) if after is not None else None
    with reading(request) as store:
        _run(store, run_id)
        rows, more = store.readings_page(run_id, limit, since_t, cursor, names)
    series: dict[str, dict[str, list]] = {}
    for t_s, name, value in rows:
        one = series.setdefault(name, {"t_s": [], "value": []})
        one["t_s"].append(t_s)
        one["value"].append(value)
    following = None
    if more is not None:
        query = {"after": f"{more[0]!r}:{more[1]}", "limit": limit}
        if since_t is not None:
            query["since_t"] = since_t
        if quantities is not None:
            query["quantities"] = quantities
        following = f"/api/runs/{run_id}/readings?{urlencode(query)}"
    return {"run_id": run_id, "rows": len(rows), "series": series, "next": following}


@router.get("/runs/{run_id}/channels")
def channels(run_id: int, request: Request, _user: User = viewer) -> list[dict]:
    """A cell test's channels: status, cycle, the last sample's V and I, the last
    finished cycle's coulombic efficiency."""
    with reading(request) as store:
        run = _run(store, run_id)
        found = store.channels(run_id)
        if not found:
            raise HTTPException(404, f"run {run_id} is a {run.kind} run, which has no "
                                     "channels")
        out = []
        for ch in found:
            last = store.last_cell_sample(run_id, ch.channel)
            cycle = store.last_cycle(run_id, ch.channel)
            out.append({"channel": ch.channel, "instrument": ch.instrument,
                        "sample": ch.sample_id, "protocol": ch.protocol, "status": ch.status,
                        "message": ch.message, "cycle": ch.cycle, "step_count": ch.step_count,
                        "t_s": ch.t_s,
                        "last": None if last is None else
                        {"t_s": last[0], "voltage_V": last[1], "current_A": last[2]},
                        "last_ce": None if cycle is None else cycle.get("coulombic_efficiency")})
        return out


@router.get("/runs/{run_id}/alarms")
def alarms(run_id: int, request: Request, _user: User = viewer,
           since_t: float | None = Query(None, description="run clock (s) to start from")
           ) -> list[dict]:
    with reading(request) as store:
        _run(store, run_id)
        return [a.to_dict() for a in store.alarms(run_id, since_t)]


@router.get("/samples")
def samples(request: Request, _user: User = viewer,
            containing: str = Query("", max_length=200,
                                    description="only the ids containing this (any case)"),
            limit: int = Query(200, ge=1, le=MAX_SAMPLES),
            offset: int = Query(0, ge=0, le=10**9)) -> dict:
    """The data directory's samples, newest first, a page at a time: each with its
    substrate (a sheet, a roll, a cell...), when it was first stored, its layers and their
    total thickness (its own: a cell's film stack is its sheet's)."""
    with reading(request) as store:
        total, rows = (0, []) if store is None else store.samples(limit, offset, containing)
    return {"total": total, "offset": offset, "samples": [
        {"id": r[0], "substrate": r[1], "created_at": r[2], "layers": r[3],
         "thickness_nm": r[4]} for r in rows]}


@router.get("/samples/{sample_id}")
def sample(sample_id: str, request: Request, _user: User = viewer) -> dict:
    """The sample's film stack and genealogy both ways (`genealogy.lineage`)."""
    from lipon_hw.genealogy import lineage

    with reading(request) as store:
        if store is not None:
            with contextlib.suppress(InputError):
                store.sample(sample_id)
                return lineage(store, sample_id).to_dict()
    raise HTTPException(404, f"sample {sample_id!r} is not in this data directory")


def _action(action: str):
    def act(run_id: int, request: Request, user: User = operator) -> dict:
        from lipon_hw.engine import claims
        from lipon_hw.engine.ownership import held_by

        data: Path = request.app.state.data_dir
        with reading(request) as store:
            run = _run(store, run_id)
        if run.status != "running":
            raise HTTPException(409, f"run {run_id} is {run.status}, not running")
        if held_by(data, claims.run(run_id)) is None:
            raise HTTPException(409, f"run {run_id} is marked running but no engine is "
                                     f"driving it; nothing would act on {action}")
        store = Store(data)
        try:
            store.requests.make(run_id, action, author=user.name)
        finally:
            store.close()
        client = request.client.host if request.client else "?"
        log.info("run %d: %s requested by %s (%s) from %s", run_id, action, user.name,
                    user.role, client)
        return {"run_id": run_id, "action": action, "author": user.name,
                "detail": f"run {run_id}: {action} requested by {user.name}; the engine acts "
                          "on it at its next sample"}

    act.__name__ = f"{action}_run"
    act.__doc__ = f"Ask the run's engine to {action} (operators only), recorded with who asked."
    return act


for _name in ACTIONS:
    router.post(f"/runs/{{run_id}}/{_name}", status_code=202)(_action(_name))


def _cursor(text: str) -> tuple[float, int]:
    t, _, row = text.partition(":")
    try:
        cursor = (float(t), int(row))
    except ValueError:
        raise HTTPException(422, f"after {text!r} is not a cursor this server gave") from None
    if cursor[0] != cursor[0]:
        raise HTTPException(422, f"after {text!r} is not a cursor this server gave")
    return cursor
