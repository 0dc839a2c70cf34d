"""The REST API over one cell-test channel's history: its samples, its cycles' capacities
and coulombic efficiency, its impedance spectra — what the cell-test page reads when it
opens or resyncs, before the live events extend it.

Read-only like every read of `runs` (the store opened read-only for the request). A run
not stored, or a channel the run does not have, is 404 with one sentence.

Samples come in one of two forms:
- paged (the default): up to `limit` samples from `since_t` (to `until_t`), in time
  order, with `next`, the URL of the page after it, as `/readings` pages;
- decimated (`max_points=N`): the whole span in one answer of at most N stored samples.
  The span is cut into N/4 equal time buckets and each keeps its first, last, lowest-V
  and highest-V sample (M4), so a V–t plot drawn per pixel column as min..max looks as
  the full data does while the buckets are no wider than a column (N/4 ≥ the plot's
  width in pixels). The samples kept are stored ones, not averages: merged by time with
  live events, each is still shown once.
A 600-cycle channel holds ~250k samples (~15 MB of JSON); the page reads it decimated for
its V–t plot, and paged, at full resolution, from the start of its last cycles on, for
the V–Q curves integrated from them.
"""

from __future__ import annotations

from urllib.parse import urlencode

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query, Request

from lipon_hw.store import Store
from lipon_hw.web.runs import MAX_PAGE_ROWS, PAGE_ROWS, _cursor, _run, reading
from lipon_hw.web.security import User, require

router = APIRouter(prefix="/api/runs/{run_id}/channels/{channel}")
viewer = Depends(require("viewer"))

#: the fewest and the most samples a decimated answer may be asked to hold
MIN_POINTS, MAX_POINTS = 100, 100_000


def _channel(store: Store | None, run_id: int, channel: int) -> None:
    run = _run(store, run_id)
    stored = [ch for ch, _ in store.channel_cycles(run_id)]
    if channel not in stored:
        has = ("its channels: " + ", ".join(map(str, stored))) if stored else "none stored"
        raise HTTPException(404, f"run {run_id} ({run.kind}) has no channel {channel} "
                                 f"stored ({has})")


@router.get("/samples")
def samples(run_id: int, channel: int, request: Request, _user: User = viewer,
            since_t: float | None = Query(None, description="run clock (s) to start from"),
            until_t: float | None = Query(None, description="run clock (s) to end at"),
            after: str | None = Query(None, description="the cursor of a previous page"),
            limit: int = Query(PAGE_ROWS, ge=1, le=MAX_PAGE_ROWS),
            max_points: int | None = Query(None, ge=MIN_POINTS, le=MAX_POINTS,
                                           description="decimate the span to this many")
            ) -> dict:
    """The channel's samples (`t_s`, `V`, `I`, `cycle` arrays) in time order: a page
    (`next`: the URL of the page after it, None: nothing more yet), or with `max_points`
    the whole span decimated (`total`: how many samples it holds)."""
    cursor = _cursor(after) if after is not None else None
    with reading(request) as store:
        _channel(store, run_id, channel)
        if max_points is not None:
            rows = store.cell_samples_span(run_id, channel, since_t, until_t)
            total = len(rows)
            rows, more = decimate(rows, max_points), None
        else:
            rows, more = store.cell_samples_page(run_id, channel, limit, since_t, until_t,
                                                 cursor)
            total = None
    following = None
    if more is not None:
        query = {"after": f"{more[0]!r}:{more[1]}", "limit": limit}
        query.update({k: v for k, v in (("since_t", since_t), ("until_t", until_t))
                      if v is not None})
        following = f"/api/runs/{run_id}/channels/{channel}/samples?{urlencode(query)}"
    cols = list(zip(*rows, strict=True)) or [(), (), (), ()]
    return {"run_id": run_id, "channel": channel, "rows": len(rows),
            "decimated": max_points is not None and total > len(rows), "total": total,
            "t_s": list(cols[0]), "V": list(cols[1]), "I": list(cols[2]),
            "cycle": list(cols[3]), "next": following}


def decimate(rows: list[tuple], max_points: int) -> list[tuple]:
    """At most `max_points` of `rows` (t_s, V, …, in time order): per time bucket (of
    max_points // 4 equal ones) its first, last, lowest-V and highest-V row, in order."""
    if len(rows) <= max_points:
        return rows
    t = np.fromiter((r[0] for r in rows), float, len(rows))
    v = np.fromiter((r[1] for r in rows), float, len(rows))
    buckets = max_points // 4
    width = (t[-1] - t[0]) / buckets
    which = np.minimum(((t - t[0]) / width).astype(np.int64), buckets - 1) if width > 0 \
        else np.zeros(len(t), np.int64)
    starts = np.flatnonzero(np.r_[True, which[1:] != which[:-1]])  # t sorted: runs
    ends = np.r_[starts[1:], len(t)] - 1
    by_v = np.lexsort((v, which))  # within each bucket, lowest V first
    lowest, highest = by_v[starts], by_v[ends]
    keep = np.unique(np.concatenate([starts, ends, lowest, highest]))
    return [rows[i] for i in keep]


@router.get("/cycles")
def cycles(run_id: int, channel: int, request: Request, _user: User = viewer) -> dict:
    """The channel's finished cycles as the store keeps them (`analysis.cycles`:
    charge/discharge Ah and Wh, coulombic efficiency, retention, t_end_s), by cycle."""
    with reading(request) as store:
        _channel(store, run_id, channel)
        return {"run_id": run_id, "channel": channel,
                "cycles": store.cycles(run_id, channel)}


@router.get("/spectra")
def spectra(run_id: int, channel: int, request: Request, _user: User = viewer) -> dict:
    """The channel's impedance spectra, one per EIS step it ran (its step count), each
    point in the order measured: `f_Hz`, `z_re_ohm`, `z_im_ohm` arrays."""
    with reading(request) as store:
        _channel(store, run_id, channel)
        rows = store.spectra(run_id, channel)
    out: list[dict] = []
    for t_s, cycle, step, f, re, im in rows:
        if not out or out[-1]["step_count"] != step:
            out.append({"t_s": t_s, "cycle": cycle, "step_count": step,
                        "f_Hz": [], "z_re_ohm": [], "z_im_ohm": []})
        one = out[-1]
        one["f_Hz"].append(f)
        one["z_re_ohm"].append(re)
        one["z_im_ohm"].append(im)
    return {"run_id": run_id, "channel": channel, "spectra": out}
