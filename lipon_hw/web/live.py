"""Live updates: running engines publish their events here, browsers watch them over
WebSockets — without any browser reading the database while it watches.

The engine (`lipon_hw.engine.publish`) POSTs batches of events to
`/api/engine/runs/{id}/events` (engine role). The `Hub` keeps, per run, a ring of the last
`RING` events by seq (each stored once, as the JSON text every watcher is sent), drops an
event whose seq it has already passed (a batch sent again after a timeout) and notes gaps.

A ring holds at most `RING` events and `RING_BYTES` of their JSON (its newest event always).
A browser watches `/ws/runs/{id}?since_seq=N` (viewer role): N is the last seq it has (0:
none). Each WebSocket message is a JSON list of events, in seq order: first the buffered
ones after N, then live ones as they come. Every watcher has only a cursor (the last seq
sent to it) into the shared ring, so a slow browser costs no memory of its own and never
holds up the others or the engine; its sends wait on its own socket only.

Whenever the next event a watcher should get is not the one after its cursor — the
engine lost events (its queue overflowed while the server was away), the server restarted
(its ring starts after N), a resumed engine went on from a later seq, or the watcher was so
slow that the ring moved past it — it is sent, in place of the missing events, one event

    {"seq": null, "t_s": <t_s of the next event it gets, or null>, "kind": "resync",
     "data": {"after_seq": N, "next_seq": <seq of that event, or null>,
              "reason": "gap" | "not buffered"}}

and then the events from `next_seq` on. The browser then reads the run's history once from
the REST API (up to the `t_s` given, merging by time so a reading is never shown twice) and
carries on with the live events. A run's ring is created by the first event or watcher;
the least recently active rings without watchers are let go beyond `MAX_RUNS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter, Depends, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, Field

RING = 20_000
#: a ring's bound in bytes of JSON too (a cell test's events carry many samples each)
RING_BYTES = 8_000_000
MAX_RUNS = 16
#: the most events in one WebSocket message
MESSAGE_EVENTS = 500


class Event(BaseModel):
    seq: int = Field(ge=1)
    t_s: float | None = None
    kind: Literal["readings", "cell", "spectrum", "cycle", "screen_cells", "alarm", "step",
                  "status"]
    data: dict[str, Any]


class EventBatch(BaseModel):
    events: list[Event] = Field(max_length=10_000)
    dropped: int = Field(0, ge=0)
    resync_from_seq: int | None = None


class Stream:
    """One run's ring of events (seqs increasing, not always contiguous)."""

    def __init__(self, size: int, max_bytes: int = RING_BYTES):
        self.size, self.max_bytes = size, max_bytes
        self.bytes = 0
        self.seqs: list[int] = []
        self.times: list[float | None] = []
        self.texts: list[str] = []
        self.start = 0  # the ring is seqs[start:]; the head is cut off now and then
        self.last_seq = 0
        self.received = self.duplicates = self.gaps = 0
        self.engine_dropped = 0
        self.watchers = 0
        self._wake: asyncio.Event | None = None

    def add(self, events: list[dict]) -> tuple[int, int]:
        """Append the events after `last_seq` in seq order; (accepted, duplicates)."""
        accepted = duplicates = 0
        for event in sorted(events, key=lambda e: e["seq"]):
            seq = event["seq"]
            if seq <= self.last_seq:
                duplicates += 1
                continue
            if self.last_seq and seq != self.last_seq + 1:
                self.gaps += 1
            self.seqs.append(seq)
            self.times.append(event.get("t_s"))
            text = json.dumps(event, separators=(",", ":"))
            self.texts.append(text)
            self.bytes += len(text)
            self.last_seq = seq
            accepted += 1
        while self.start < len(self.seqs) - 1 and (
                len(self.seqs) - self.start > self.size or self.bytes > self.max_bytes):
            self.bytes -= len(self.texts[self.start])
            self.start += 1
        if self.start >= self.size:  # cut the head off now and then: amortised O(1)
            del self.seqs[:self.start], self.times[:self.start], self.texts[:self.start]
            self.start = 0
        self.received += accepted
        self.duplicates += duplicates
        if accepted and self._wake is not None:
            self._wake.set()
            self._wake = None
        return accepted, duplicates

    @property
    def first_seq(self) -> int | None:
        return self.seqs[self.start] if self.start < len(self.seqs) else None

    def after(self, cursor: int, most: int) -> tuple[str | None, list[str], int]:
        """(resync text or None, event texts, new cursor) for a watcher at `cursor`."""
        i = bisect_right(self.seqs, cursor, lo=self.start)
        if i >= len(self.seqs):
            return None, [], cursor
        resync = None
        nxt = self.seqs[i]
        if nxt != cursor + 1:
            first = self.first_seq or nxt
            reason = "not buffered" if cursor + 1 < first else "gap"
            resync = resync_text(cursor, nxt, self.times[i], reason)
        end = self._contiguous_end(i, min(i + most, len(self.seqs)))
        return resync, self.texts[i:end], self.seqs[end - 1]

    def _contiguous_end(self, i: int, hi: int) -> int:
        """The end of the run of consecutive seqs from index `i` (before `hi`): a message
        stops at a gap, so the next one opens with its resync."""
        base = self.seqs[i] - i  # seqs[j] - j grows with j, and equals base while contiguous
        if self.seqs[hi - 1] - (hi - 1) == base:
            return hi
        lo = i + 1
        while lo < hi:
            mid = (lo + hi) // 2
            if self.seqs[mid] - mid == base:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def wake(self) -> asyncio.Event:
        if self._wake is None:
            self._wake = asyncio.Event()
        return self._wake


def resync_text(after_seq: int, next_seq: int | None, t_s: float | None, reason: str) -> str:
    return json.dumps({"seq": None, "t_s": t_s, "kind": "resync",
                       "data": {"after_seq": after_seq, "next_seq": next_seq,
                                "reason": reason}}, separators=(",", ":"))


class Hub:
    """Every run's ring, fed by engines, watched by browsers (one event loop)."""

    def __init__(self, ring: int = RING, max_runs: int = MAX_RUNS,
                 message_events: int = MESSAGE_EVENTS, ring_bytes: int = RING_BYTES):
        self.ring, self.max_runs, self.message_events = ring, max_runs, message_events
        self.ring_bytes = ring_bytes
        self.streams: OrderedDict[int, Stream] = OrderedDict()

    def stream(self, run_id: int) -> Stream:
        stream = self.streams.get(run_id)
        if stream is None:
            stream = self.streams[run_id] = Stream(self.ring, self.ring_bytes)
            self._let_go()
        self.streams.move_to_end(run_id)
        return stream

    def _let_go(self) -> None:
        for run_id in list(self.streams):
            if len(self.streams) <= self.max_runs:
                return
            if self.streams[run_id].watchers == 0:
                del self.streams[run_id]

    def publish(self, run_id: int, events: list[dict], dropped: int = 0) -> dict:
        """An engine's batch; what the engine is answered."""
        stream = self.stream(run_id)
        accepted, duplicates = stream.add(events)
        stream.engine_dropped = max(stream.engine_dropped, dropped)
        return {"accepted": accepted, "duplicates": duplicates, "last_seq": stream.last_seq}

    def stats(self, run_id: int) -> dict:
        s = self.stream(run_id)
        return {"first_seq": s.first_seq, "last_seq": s.last_seq, "buffered":
                len(s.seqs) - s.start, "bytes": s.bytes, "received": s.received,
                "duplicates": s.duplicates,
                "gaps": s.gaps, "engine_dropped": s.engine_dropped, "watchers": s.watchers}

    @contextlib.asynccontextmanager
    async def watch(self, run_id: int, since_seq: int = 0):
        """A watcher of one run from `since_seq`: yields `next_message()`, an awaitable
        of the next WebSocket message (a JSON list of events)."""
        stream = self.stream(run_id)
        stream.watchers += 1
        cursor = max(since_seq, 0)

        async def next_message() -> str:
            nonlocal cursor
            while True:
                resync, texts, cursor = stream.after(cursor, self.message_events)
                if texts:
                    return "[" + ",".join(([resync] if resync else []) + texts) + "]"
                await stream.wake().wait()

        try:
            yield next_message
        finally:
            stream.watchers -= 1


def make_router(hub: Hub, require_engine: Callable, require_viewer: Callable) -> APIRouter:
    """The engine's endpoint and the browsers' WebSocket, guarded by the two FastAPI
    dependencies given (`security.require("engine")`, `require("viewer")`; the viewer's
    runs on a WebSocket too, so it must take an `HTTPConnection`, not a `Request`)."""
    router = APIRouter()

    @router.post("/api/engine/runs/{run_id}/events", dependencies=[Depends(require_engine)])
    async def engine_events(run_id: int, batch: EventBatch) -> dict:
        return hub.publish(run_id, [e.model_dump() for e in batch.events], batch.dropped)

    @router.get("/api/runs/{run_id}/live", dependencies=[Depends(require_viewer)])
    async def live_stats(run_id: int) -> dict:
        return hub.stats(run_id)

    @router.websocket("/ws/runs/{run_id}", dependencies=[Depends(require_viewer)])
    async def watch_run(websocket: WebSocket, run_id: int, since_seq: int = 0) -> None:
        await websocket.accept()
        async with hub.watch(run_id, since_seq) as next_message:
            pump = asyncio.ensure_future(_pump(websocket, next_message))
            listen = asyncio.ensure_future(_until_closed(websocket))
            try:
                await asyncio.wait({pump, listen}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (pump, listen):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect,
                                             RuntimeError):
                        await task

    return router


async def _pump(websocket: WebSocket, next_message) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            await websocket.send_text(await next_message())


async def _until_closed(websocket: WebSocket) -> None:
    """Browsers send nothing that matters; this notices when one goes away."""
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
