"""The run queue's REST API: submit a sequence to its lanes, list, move, cancel.

    POST /api/queue              operator; {"name": "short.yaml", "text": YAML,
                                 "options": {"seed": N, "speed": X}} → 201, the entry
    GET  /api/queue              viewer; every entry (newest ended ones last) and each
                                 lane's running and queued entries in order
    GET  /api/queue/shipped      viewer; the sequences shipped with lipon-hw (name, text),
                                 for a page to submit one (a browser away from the
                                 server's machine has no copy of them)
    POST /api/queue/{id}/move    operator; {"position": P}: P-th (from 1) of its lane's
                                 queued entries
    POST /api/queue/{id}/cancel  operator; a queued entry is taken out, a running one's
                                 run aborted (the engine's abort request, with who asked)

A submission is at most `MAX_BYTES` (413 past it, read no further) and is validated
before anything is stored or written: its kind's loader, against the server's station
(`--station`, default the built-in lab) and, where the data directory holds a store,
what it holds, exactly as `lipon-hw validate NAME --data DIR` would; a refusal is 422 with
the sentence `validate` prints (file:line: field: what is wrong, the file named by the
submitted name). The name is a bare file name (no directory), used for the file the run
reads: `<data>/queue/<id>/<name>` (`queue_runner`). Every change is stored with who made
it, and logged.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from lipon_hw.errors import InputError
from lipon_hw.shipped import shipped_dir, shipped_names
from lipon_hw.store import Store
from lipon_hw.store_location import has_store
from lipon_hw.store_queue import QueueEntry
from lipon_hw.web.runs import reading
from lipon_hw.web.security import User, require

log = logging.getLogger("lipon_hw.web")

router = APIRouter(prefix="/api/queue")
viewer = Depends(require("viewer"))
operator = Depends(require("operator"))

#: the largest submission (the JSON body, the sequence's text in it)
MAX_BYTES = 256 * 1024
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
SEED_MAX = 2**32 - 1
SPEED_RANGE = (0.01, 1e6)
#: ended entries listed by GET, the newest
ENDED_LISTED = 200


def file_name(name) -> str:
    """The submitted name as the file the run reads: a bare name, `.yaml` added unless it
    ends in .yaml or .yml; InputError otherwise."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise InputError(f"name {str(name)[:60]!r} must be a bare file name: letters, digits, "
                         "., _ and -, starting with a letter or digit, at most 100 characters")
    return name if name.endswith((".yaml", ".yml")) else f"{name}.yaml"


def options_of(raw) -> dict:
    """The run's options, checked as `lipon-hw run` checks them; InputError otherwise."""
    raw = {} if raw is None else raw
    if not isinstance(raw, dict) or set(raw) - {"seed", "speed"}:
        raise InputError("options may hold seed and speed only")
    out = {}
    seed, speed = raw.get("seed"), raw.get("speed")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
            raise InputError(f"options: seed must be an integer from 0 to {SEED_MAX}, "
                             f"not {seed!r}")
        out["seed"] = seed
    if speed is not None:
        low, high = SPEED_RANGE
        if isinstance(speed, bool) or not isinstance(speed, int | float) or \
                not low <= speed <= high:
            raise InputError(f"options: speed must be a number from {low:g} to {high:g}, "
                             f"not {speed!r}")
        out["speed"] = float(speed)
    return out


def validate(name: str, text: str, station_path: str | None, data: Path):
    """(kind, plan) of a submitted sequence, as `lipon-hw validate NAME --data DATA` loads
    it; InputError (its sentence) when it is refused."""
    from lipon_hw.kinds import for_sequence
    from lipon_hw.station import load_station

    kind = for_sequence(name, text)
    store = Store(data, read_only=True) if has_store(data) else None
    try:
        station = load_station(station_path)
        return kind, kind.load(name, station, store, text=text)
    finally:
        if store is not None:
            store.close()


async def _body(request: Request) -> dict:
    """The JSON body, at most MAX_BYTES (413 past it, without reading the rest)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BYTES:
        raise _too_big(int(declared))
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BYTES:
            raise _too_big(None)
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise HTTPException(422, "the body must be JSON: {\"name\": ..., \"text\": ..., "
                                 "\"options\": {...}}") from None
    if not isinstance(doc, dict):
        raise HTTPException(422, "the body must be a JSON object with name and text")
    return doc


def _too_big(size: int | None) -> HTTPException:
    said = f" ({size} bytes)" if size is not None else ""
    return HTTPException(413, f"the submission is larger than {MAX_BYTES // 1024} kB{said}; "
                              "a recipe or protocol is far smaller")


def _writing(request: Request) -> Store:
    return Store(request.app.state.data_dir)


def _wake(request: Request) -> None:
    runner = getattr(request.app.state, "queue_runner", None)
    if runner is not None:
        runner.wake()


def _who(request: Request, user: User) -> str:
    return f"{user.name} ({user.role}) from {request.client.host if request.client else '?'}"


@router.post("", status_code=201)
async def submit(request: Request, user: User = operator) -> dict:
    """Queue a recipe or protocol, validated before anything is stored."""
    doc = await _body(request)
    text = doc.get("text")
    try:
        name = file_name(doc.get("name"))
        if not isinstance(text, str):
            raise InputError("text must be the sequence file's text")
        options = options_of(doc.get("options"))
        kind, plan = await run_in_threadpool(
            validate, name, text, request.app.state.station_path, request.app.state.data_dir)
    except InputError as exc:
        raise HTTPException(422, str(exc)) from None

    def store_it() -> QueueEntry:
        store = _writing(request)
        try:
            entry_id = store.queue_add(kind.lanes(plan), plan.name, kind.name, name, text,
                                       options, user.name)
            return store.queue_entry(entry_id)
        finally:
            store.close()

    entry = await run_in_threadpool(store_it)
    log.info("queue %d: %s (%s) submitted to %s by %s", entry.id, name, kind.name,
             ",".join(entry.lanes), _who(request, user))
    _wake(request)
    return entry.to_dict()


@router.get("")
def listing(request: Request, _user: User = viewer) -> dict:
    """Every entry not ended and the newest ended, and each lane's order."""
    with reading(request) as store:
        entries = [] if store is None else store.queue_entries()
        live = [e for e in entries if e.state in ("running", "queued")]
        # a running entry's run: the operator's last pause or continue of it, and who
        asked = {e.id: store.requests.last_toggle(e.run_id) for e in live
                 if e.state == "running" and e.run_id is not None}
    ended = sorted((e for e in entries if e.state not in ("running", "queued")),
                   key=lambda e: e.changed_at or 0)[-ENDED_LISTED:]
    lanes: dict[str, list[int]] = {}
    for entry in sorted(live, key=lambda e: (e.state != "running", e.position)):
        for lane in entry.lanes:
            lanes.setdefault(lane, []).append(entry.id)
    listed = []
    for e in live + ended:
        d = e.to_dict()
        if asked.get(e.id) is not None:
            d["operator_asked"], d["operator_asked_by"] = asked[e.id]
        listed.append(d)
    return {"entries": listed, "lanes": lanes}


@router.get("/shipped")
def shipped(_user: User = viewer) -> dict:
    """The shipped sequences, each its file name and text (package data read by fixed
    names: the request names no file)."""
    folder = shipped_dir()
    return {"sequences": [{"name": f"{n}.yaml",
                           "text": (folder / f"{n}.yaml").read_text(encoding="utf-8")}
                          for n in shipped_names()]}


@router.get("/{entry_id}")
def one(entry_id: int, request: Request, _user: User = viewer) -> dict:
    """One entry, with its sequence's text."""
    with reading(request) as store:
        return _entry(store, entry_id).to_dict(text=True)


@router.post("/{entry_id}/move")
async def move(entry_id: int, request: Request, user: User = operator) -> dict:
    doc = await _body(request)
    position = doc.get("position")
    if isinstance(position, bool) or not isinstance(position, int) or position < 1:
        raise HTTPException(422, f"position must be a whole number from 1, not {position!r}")

    def move_it() -> QueueEntry:
        store = _writing(request)
        try:
            _entry(store, entry_id)
            try:
                return store.queue_move(entry_id, position, user.name)
            except InputError as exc:
                raise HTTPException(409, str(exc)) from None
        finally:
            store.close()

    entry = await run_in_threadpool(move_it)
    log.info("queue %d: moved to %d of lane %s by %s", entry_id, position, entry.lanes[0],
             _who(request, user))
    _wake(request)
    return entry.to_dict()


@router.post("/{entry_id}/cancel", status_code=202)
def cancel(entry_id: int, request: Request, user: User = operator) -> dict:
    """A queued entry: cancelled. A running one: its run's abort requested (the engine
    acts on it at its next sample; the entry is cancelled when the run has ended)."""
    store = _writing(request)
    try:
        entry = _entry(store, entry_id)
        if entry.state == "queued" and store.queue_set(
                entry_id, "cancelled", user.name, f"cancelled by {user.name}",
                only_from=("queued",)):
            detail = f"queue entry {entry_id} cancelled by {user.name}"
        elif store.queue_entry(entry_id).state == "running":
            detail = _abort(request, store, store.queue_entry(entry_id), user)
        else:
            raise HTTPException(409, f"queue entry {entry_id} is "
                                     f"{store.queue_entry(entry_id).state}; nothing to cancel")
    finally:
        store.close()
    log.info("queue %d: %s (%s)", entry_id, detail, _who(request, user))
    _wake(request)
    return {"id": entry_id, "author": user.name, "detail": detail}


def _abort(request: Request, store: Store, entry: QueueEntry, user: User) -> str:
    note = f"cancel requested by {user.name}"
    runner = getattr(request.app.state, "queue_runner", None)
    run_id = entry.run_id if entry.run_id is not None else (
        runner.run_of(entry) if runner is not None else None)
    try:
        status = None if run_id is None else store.run(run_id).status
    except InputError:
        status = None
    if status == "running":
        store.queue_note(entry.id, run_id=run_id, message=note)
        store.requests.make(run_id, "abort", author=user.name)
        return f"queue entry {entry.id}: abort of run {run_id} requested by {user.name}"
    if runner is not None and runner.stop_unstarted(entry.id):
        store.queue_note(entry.id, message=note)
        return f"queue entry {entry.id}: its run, not yet started, stopped by {user.name}"
    raise HTTPException(409, f"queue entry {entry.id} is running but no run of it is known "
                             "yet; try again in a moment")


def _entry(store: Store | None, entry_id: int) -> QueueEntry:
    if store is not None:
        try:
            return store.queue_entry(entry_id)
        except InputError:
            pass
    raise HTTPException(404, f"queue entry {entry_id} is not in this data directory")
