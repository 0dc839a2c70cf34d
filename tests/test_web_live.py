"""Live updates: the engine's publisher (`engine.publish`), the server's hub and its
endpoints (`web.live`): ordering, duplicates, gaps, bounds, slow watchers, reconnects, a
server that is down, slow or restarted while a real simulated deposition runs."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
# FastAPI's TestClient takes httpx2 (the dev extra), httpx below Python 3.11
pytest.importorskip("httpx2" if sys.version_info >= (3, 11) else "httpx")

from fastapi import FastAPI, HTTPException, WebSocketException  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from served import ThreadServer  # noqa: E402
from starlette.requests import HTTPConnection  # noqa: E402

from lipon_hw.celltest.session import start_cycling  # noqa: E402
from lipon_hw.deposition.session import resume_run, start_run  # noqa: E402
from lipon_hw.engine import publish  # noqa: E402
from lipon_hw.errors import RunAborted  # noqa: E402
from lipon_hw.store import Store  # noqa: E402
from lipon_hw.web.live import Hub, make_router  # noqa: E402

from recipes import LNMO, short_recipe  # noqa: E402

TOKENS = {"engine-secret": "engine", "viewer-secret": "viewer"}
ENGINE = {"Authorization": "Bearer engine-secret"}
VIEWER = {"Authorization": "Bearer viewer-secret"}


def requirer(role: str):
    """A stand-in for the server's `security.require(role)`: a bearer token of that role."""

    def require(conn: HTTPConnection) -> str:
        token = conn.headers.get("authorization", "").removeprefix("Bearer ")
        if TOKENS.get(token) != role:
            if conn.scope["type"] == "websocket":
                raise WebSocketException(code=1008)
            raise HTTPException(401 if token not in TOKENS else 403, "not allowed")
        return role

    return require


def make_app(hub: Hub) -> FastAPI:
    app = FastAPI()
    app.include_router(make_router(hub, requirer("engine"), requirer("viewer")))
    return app


def event(seq: int, t_s: float | None = None, kind: str = "readings", **data) -> dict:
    return {"seq": seq, "t_s": float(seq) if t_s is None else t_s, "kind": kind,
            "data": data or {"pressure_torr": seq * 1e-3}}


def seqs_of(message: str) -> list:
    return [e["seq"] for e in json.loads(message)]


# --- the hub --------------------------------------------------------------------------
def test_hub_orders_drops_duplicates_and_notes_gaps():
    hub = Hub(ring=100)
    assert hub.publish(1, [event(2), event(1), event(3)]) == {
        "accepted": 3, "duplicates": 0, "last_seq": 3}
    assert hub.publish(1, [event(2), event(3), event(4)])["duplicates"] == 2
    assert hub.publish(1, [event(7)])["accepted"] == 1
    stats = hub.stats(1)
    assert (stats["first_seq"], stats["last_seq"], stats["received"]) == (1, 7, 5)
    assert (stats["duplicates"], stats["gaps"]) == (2, 1)

    async def watch():
        async with hub.watch(1, since_seq=0) as next_message:
            return json.loads(await next_message()) + json.loads(await next_message())

    got = asyncio.run(watch())
    hub.publish(1, [event(8)])
    assert [e["seq"] for e in got] == [1, 2, 3, 4, None, 7]
    resync = got[4]
    assert resync["kind"] == "resync" and resync["t_s"] == 7.0
    assert resync["data"] == {"after_seq": 4, "next_seq": 7, "reason": "gap"}


def test_ring_is_bounded_and_a_late_watcher_is_told_to_resync():
    hub = Hub(ring=50, message_events=1000)
    for start in range(1, 1001, 10):
        hub.publish(3, [event(s) for s in range(start, start + 10)])
    stream = hub.streams[3]
    assert hub.stats(3)["buffered"] == 50 and stream.first_seq == 951
    assert len(stream.seqs) < 2 * 50 + 10  # the head is cut off, not kept
    assert stream.bytes == sum(map(len, stream.texts[stream.start:]))
    small = Hub(ring=1000, ring_bytes=2000)
    small.publish(3, [event(s) for s in range(1, 201)])
    size = len(small.streams[3].texts[-1])
    assert 2000 - 2 * size < small.stats(3)["bytes"] <= 2000
    assert small.stats(3)["last_seq"] == 200

    async def watch(since):
        async with hub.watch(3, since_seq=since) as next_message:
            return json.loads(await next_message())

    got = asyncio.run(watch(100))
    assert got[0]["kind"] == "resync"
    assert got[0]["data"] == {"after_seq": 100, "next_seq": 951, "reason": "not buffered"}
    assert [e["seq"] for e in got[1:]] == list(range(951, 1001))
    assert [e["seq"] for e in asyncio.run(watch(990))] == list(range(991, 1001))


def test_a_slow_watcher_is_resynced_and_holds_up_no_one():
    """Two watchers: one takes every message as it comes, one takes none while 500 events
    pass through a ring of 100; the fast one got all of them in order, the slow one is
    told to resync (its backlog is the shared ring: it costs no memory of its own)."""
    hub = Hub(ring=100, message_events=20)

    async def scenario():
        async with hub.watch(5) as fast, hub.watch(5) as slow:
            got = []
            for start in range(1, 501, 10):
                hub.publish(5, [event(s) for s in range(start, start + 10)])
                got += seqs_of(await asyncio.wait_for(fast(), 1))
            assert hub.stats(5)["watchers"] == 2
            return got, json.loads(await asyncio.wait_for(slow(), 1))

    got, late = asyncio.run(scenario())
    assert got == list(range(1, 501))
    assert late[0]["kind"] == "resync" and late[0]["data"]["next_seq"] == 401
    assert [e["seq"] for e in late[1:]] == list(range(401, 421))
    assert hub.stats(5)["watchers"] == 0


def test_a_waiting_watcher_wakes_on_the_next_batch():
    hub = Hub()

    async def scenario():
        async with hub.watch(9, since_seq=0) as next_message:
            waiting = asyncio.ensure_future(next_message())
            await asyncio.sleep(0.01)
            assert not waiting.done()
            hub.publish(9, [event(1), event(2)])
            return seqs_of(await asyncio.wait_for(waiting, 1))

    assert asyncio.run(scenario()) == [1, 2]


# --- the endpoints ----------------------------------------------------------------------
def test_engine_endpoint_needs_the_engine_role_and_a_valid_batch():
    client = TestClient(make_app(Hub()))
    url = "/api/engine/runs/1/events"
    body = {"events": [event(1)]}
    assert client.post(url, json=body).status_code == 401
    assert client.post(url, json=body, headers=VIEWER).status_code == 403
    bad = {"events": [{"seq": 0, "kind": "readings", "data": {}}]}
    assert client.post(url, json=bad, headers=ENGINE).status_code == 422
    bad = {"events": [{"seq": 1, "kind": "gossip", "data": {}}]}
    assert client.post(url, json=bad, headers=ENGINE).status_code == 422
    answer = client.post(url, json=body, headers=ENGINE)
    assert answer.status_code == 200 and answer.json()["accepted"] == 1
    with pytest.raises(Exception), client.websocket_connect("/ws/runs/1"):  # noqa: B017
        pass


def test_websocket_live_then_reconnect_gets_exactly_the_missed_events():
    hub = Hub()
    client = TestClient(make_app(hub))

    def post(seqs):
        answer = client.post("/api/engine/runs/4/events", headers=ENGINE,
                             json={"events": [event(s) for s in seqs]})
        assert answer.status_code == 200

    post(range(1, 6))
    seen: list[int] = []
    with client.websocket_connect("/ws/runs/4?since_seq=0", headers=VIEWER) as ws:
        seen += seqs_of(ws.receive_text())
        post(range(6, 9))
        seen += seqs_of(ws.receive_text())
    assert seen == list(range(1, 9))
    post(range(9, 13))
    post(range(7, 13))  # an engine's batch sent again: dropped
    with client.websocket_connect("/ws/runs/4?since_seq=8", headers=VIEWER) as ws:
        again = seqs_of(ws.receive_text())
        post([13])
        again += seqs_of(ws.receive_text())
    assert again == [9, 10, 11, 12, 13]
    assert client.get("/api/runs/4/live", headers=VIEWER).json()["duplicates"] == 6


# --- the publisher against a live server, a real deposition --------------------------------
class LiveServer(ThreadServer):
    """uvicorn in a thread on `port` (0: a free one), serving a hub."""

    def __init__(self, hub: Hub, port: int = 0):
        self.hub = hub
        super().__init__(make_app(hub), port)


def announce(data: Path, port: int) -> None:
    """`serve.json` written whole or not at all, as `lipon-hw serve` writes it: a run that
    looks for it meanwhile never reads it half written."""
    data.mkdir(parents=True, exist_ok=True)
    part = data / ".serve.json.part"
    part.write_text(json.dumps({"url": f"http://127.0.0.1:{port}",
                                "engine_token": "engine-secret"}))
    os.replace(part, data / "serve.json")


@pytest.fixture
def publishers(monkeypatch):
    """The publishers the lifecycle attaches, kept for the test to look at."""
    made = []
    attach = publish.attach

    def keep(*args, **kwargs):
        made.append(attach(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(publish, "attach", keep)
    return made


def hub_events(hub: Hub, run_id: int) -> list[dict]:
    stream = hub.streams[run_id]
    return [json.loads(t) for t in stream.texts[stream.start:]]


def stored_readings(data: Path, run_id: int) -> Counter:
    store = Store(data, read_only=True)
    try:
        return Counter((t, q, v) for t, q, v in store.readings(run_id))
    finally:
        store.close()


def published_readings(events: list[dict]) -> Counter:
    return Counter((e["t_s"], q, v) for e in events if e["kind"] == "readings"
                   for q, v in e["data"].items())


def test_a_deposition_published_live_every_reading_once(tmp_path, publishers):
    hub = Hub(ring=100_000)
    server = LiveServer(hub)
    data = tmp_path / "data"
    announce(data, server.port)
    watched: list[dict] = []
    try:
        result = start_run(str(short_recipe(tmp_path)), data)
        with TestClient(make_app(hub)) as client, client.websocket_connect(
                f"/ws/runs/{result.run_id}", headers=VIEWER) as ws:
            while not watched or watched[-1]["seq"] < hub.streams[result.run_id].last_seq:
                watched += json.loads(ws.receive_text())
    finally:
        server.stop()
    assert result.status == "completed"
    pub = publishers[0]
    assert pub.dropped == 0 and pub.failures == 0 and pub.sent > 300
    events = hub_events(hub, result.run_id)
    assert [e["seq"] for e in events] == list(range(1, pub.sent + 1))
    assert hub.stats(result.run_id)["duplicates"] == 0
    assert published_readings(events) == stored_readings(data, result.run_id)
    kinds = Counter(e["kind"] for e in events)
    assert kinds["step"] == 16 and kinds["alarm"] >= 0
    statuses = [e["data"]["status"] for e in events if e["kind"] == "status"]
    assert statuses[0] == "running" and statuses[-1] == "completed"
    assert watched == events  # a browser watching got the same, in order


def test_seq_goes_on_after_the_last_reserved_block(tmp_path):
    """A resumed (or killed and restarted) engine never reuses a seq: it starts after the
    last block reserved in runs/<id>/live_seq.json."""
    first = publish.SeqBook(tmp_path, 7, block=100)
    used = [first.take() for _ in range(250)]
    assert used == list(range(1, 251))
    again = publish.SeqBook(tmp_path, 7, block=100)
    assert again.take() > used[-1]
    (tmp_path / "runs" / "7" / publish.SEQ_FILE).write_text("{not json")
    with pytest.raises(OSError, match="live_seq.json is unreadable"):
        publish.SeqBook(tmp_path, 7)


def run_wall(tmp_path: Path, name: str, data: Path) -> tuple[float, object]:
    t0 = time.perf_counter()
    result = start_run(str(short_recipe(tmp_path, name=f"{name}.yaml")), data)
    return time.perf_counter() - t0, result


def test_a_server_down_or_silent_never_slows_the_run(tmp_path, publishers, monkeypatch):
    """Nothing listening (refused at once) and a server that accepts but never answers
    (each request times out): the run completes, the events it could not send counted as
    dropped, and the engine's own time in the publisher (every event it hands over, and
    the close at the run's end) stays far below one request's timeout, which a publisher
    that waited on the server would spend per batch. Timed per call, not as the run's wall
    time, which a loaded machine stretches whatever the publisher does."""
    monkeypatch.setattr(publish, "MAX_QUEUE", 50)
    spent = {"emit": [], "close": []}
    for name in spent:
        monkeypatch.setattr(publish.Publisher, name, timed(getattr(publish.Publisher, name),
                                                           spent[name]))
    with socket.socket() as refused, socket.socket() as silent:
        refused.bind(("127.0.0.1", 0))  # bound, not listening: connections refused
        silent.bind(("127.0.0.1", 0))
        silent.listen(100)  # connections accepted by the kernel, never answered
        for name, sock in (("refused", refused), ("silent", silent)):
            data = tmp_path / name
            announce(data, sock.getsockname()[1])
            _wall, result = run_wall(tmp_path, name, data)
            assert result.status == "completed"
    assert len(publishers) == 2
    for pub in publishers:
        assert pub.sent == 0 and pub.failures >= 1 and pub.dropped >= 300
    assert len(spent["emit"]) >= 2 * 300 and len(spent["close"]) == 2
    assert sum(spent["emit"]) < publish.TIMEOUT_S / 2, sum(spent["emit"])
    # close waits at most CLOSE_WAIT_S, cutting a request stuck past STUCK_S short
    assert max(spent["close"]) < publish.CLOSE_WAIT_S + 1.0, spent["close"]


def timed(method, durations: list[float]):
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            durations.append(time.perf_counter() - t0)
    return wrapper


def test_a_server_restarted_mid_run(tmp_path, publishers, monkeypatch):
    """The server stops after it got a batch (from the 100th sample on) and comes back on
    the same port 120 samples later, the run going on meanwhile, so the engine's queue (80
    events) overflows. After the restart the publisher delivers again (first the batch that
    failed, then the queue); the new hub has no duplicates and knows of the drops; a
    browser that reconnects with the last seq it saw gets every event after it once, with
    one resync in place of exactly the events dropped."""
    monkeypatch.setattr(publish, "MAX_QUEUE", 80)
    monkeypatch.setattr(publish, "MAX_BACKOFF_S", 0.3)
    first = LiveServer(Hub(ring=100_000))
    servers = [first]
    data = tmp_path / "data"
    announce(data, first.port)
    samples, stopped = 0, None

    def on_sample(_context) -> None:
        nonlocal samples, stopped
        samples += 1
        time.sleep(0.003)  # a run nearer real time: a few batches before the stop
        if stopped is None and samples >= 100 and first.hub.streams:
            stopped = samples
            first.stop()
        elif stopped is not None and samples == stopped + 120:
            servers.append(LiveServer(Hub(ring=100_000), port=first.port))
            deadline = time.monotonic() + 10  # the publisher finds it before the run ends
            while not servers[1].hub.streams and time.monotonic() < deadline:
                time.sleep(0.01)

    try:
        result = start_run(str(short_recipe(tmp_path)), data, on_sample=on_sample)
    finally:
        for server in servers:
            server.stop()
    assert result.status == "completed" and len(servers) == 2
    pub = publishers[0]
    before = hub_events(first.hub, result.run_id)
    after = hub_events(servers[1].hub, result.run_id)
    stats = servers[1].hub.stats(result.run_id)
    assert stats["duplicates"] == 0 and stats["engine_dropped"] == pub.dropped > 0
    seen = {e["seq"] for e in before} | {e["seq"] for e in after}
    assert len(seen) + pub.dropped == pub.seqs.next - 1
    assert after[-1]["data"]["status"] == "completed"

    async def reconnect():
        got, last = [], after[-1]["seq"]
        async with servers[1].hub.watch(result.run_id, since_seq=before[-1]["seq"]) as nxt:
            while not got or got[-1]["seq"] != last:
                got += json.loads(await asyncio.wait_for(nxt(), 1))
        return got

    got = asyncio.run(reconnect())
    resyncs = [e for e in got if e["kind"] == "resync"]
    assert len(resyncs) == 1 and resyncs[0]["data"]["reason"] == "gap"
    missed = range(resyncs[0]["data"]["after_seq"] + 1, resyncs[0]["data"]["next_seq"])
    assert len(missed) == pub.dropped and not seen & set(missed)
    live = [e["seq"] for e in got if e["kind"] != "resync"]
    assert live == sorted(set(live)) and set(live) == {e["seq"] for e in after} - {
        e["seq"] for e in after if e["seq"] <= before[-1]["seq"]}


def test_no_server_no_publisher(tmp_path, publishers):
    wall, result = run_wall(tmp_path, "none", tmp_path / "none")
    assert result.status == "completed" and publishers == []
    with sqlite3.connect(tmp_path / "none" / "lipon.db") as con:
        assert con.execute("SELECT COUNT(*) FROM readings").fetchone()[0] > 0
    assert not (tmp_path / "none" / "runs" / str(result.run_id) / publish.SEQ_FILE).exists()


def assert_published_as_stored(events: list[dict], data: Path, run_id: int,
                               channels: tuple[int, ...]) -> None:
    """Each channel's samples in the `cell` events are the stored ones, in order, once."""
    store = Store(data, read_only=True)
    try:
        for channel in channels:
            cells = [e["data"] for e in events if e["kind"] == "cell"
                     and e["data"]["channel"] == channel]
            published = [(t, v, i, c) for d in cells
                         for t, v, i, c in zip(d["t"], d["V"], d["I"], d["cycle"], strict=True)]
            stored = [r[:4] for r in store.cell_samples(run_id, channel)]
            assert len(stored) > 50 and published == stored
    finally:
        store.close()


def test_a_cell_test_publishes_every_channels_samples_once(tmp_path, publishers):
    """A cell test whose channels run in the run's own process (one group: a real-time
    run's, or one worker) publishes each channel's samples as stored."""
    hub = Hub(ring=100_000)
    server = LiveServer(hub)
    data = tmp_path / "data"
    announce(data, server.port)
    protocol = tmp_path / "protocol.yaml"
    protocol.write_text(LNMO.format(channels="[1, 2]", cycles=2), encoding="utf-8")
    try:
        result = start_cycling(str(protocol), data, workers=1)
    finally:
        server.stop()
    assert result.status == "completed" and publishers[0].dropped == 0
    events = hub_events(hub, result.run_id)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert_published_as_stored(events, data, result.run_id, (1, 2))


def test_a_cell_test_in_worker_processes_publishes_every_channels_samples_once(
        tmp_path, publishers):
    """Channels in two worker processes, each with its own store: their samples reach the
    run's publisher through the relay, each once, as stored."""
    hub = Hub(ring=100_000)
    server = LiveServer(hub)
    data = tmp_path / "data"
    announce(data, server.port)
    protocol = tmp_path / "protocol.yaml"
    protocol.write_text(LNMO.format(channels="[1, 2, 3]", cycles=2), encoding="utf-8")
    try:
        result = start_cycling(str(protocol), data, workers=2)
    finally:
        server.stop()
    assert result.status == "completed" and publishers[0].dropped == 0
    events = hub_events(hub, result.run_id)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert_published_as_stored(events, data, result.run_id, (1, 2, 3))


def test_a_server_started_mid_run_gets_the_run_from_then_on(tmp_path, publishers,
                                                            monkeypatch):
    """`serve.json` appears at the 100th sample: the run looks for it (here every 20 ms),
    publishes from then on, and leaves its first seq out, so a watcher from the start is
    sent to the store for the history before; what is published is what is stored."""
    monkeypatch.setattr(publish, "WATCH_S", 0.02)
    hub = Hub(ring=100_000)
    server = LiveServer(hub)
    data = tmp_path / "data"
    samples = 0

    def on_sample(_context) -> None:
        nonlocal samples
        samples += 1
        if samples == 100:
            announce(data, server.port)
            deadline = time.monotonic() + 10  # the run goes on once it is published
            while not publishers and time.monotonic() < deadline:
                time.sleep(0.005)

    try:
        result = start_run(str(short_recipe(tmp_path)), data, on_sample=on_sample)
    finally:
        server.stop()
    assert result.status == "completed" and len(publishers) == 1
    pub = publishers[0]
    assert pub.dropped == 0 and pub.first_seq == 1
    events = hub_events(hub, result.run_id)
    assert [e["seq"] for e in events] == list(range(2, len(events) + 2))
    assert events[0]["kind"] == "status" and events[0]["data"]["status"] == "running"

    async def watch_from_start():
        got = []
        async with hub.watch(result.run_id, since_seq=0) as nxt:
            while not got or got[-1]["seq"] != events[-1]["seq"]:
                got += json.loads(await asyncio.wait_for(nxt(), 1))
        return got

    got = asyncio.run(watch_from_start())
    assert got[0]["kind"] == "resync" and got[0]["data"]["reason"] == "not buffered"
    assert got[1:] == events
    published = published_readings(events)
    stored = stored_readings(data, result.run_id)
    first_t = min(t for t, _q, _v in published)
    assert first_t > 0 and published == Counter(
        {k: n for k, n in stored.items() if k[0] >= first_t})


def test_the_engine_side_needs_no_web_stack(tmp_path):
    """`engine.publish` is the engine's: the standard library only, no server module.
    (Run away from the checkout: from its root, `-c` would import the source folder,
    which an installed lipon-hw maps differently: `lipon_hw.drivers` is `drivers/`.)"""
    code = ("import sys, lipon_hw.engine.publish, lipon_hw.engine.lifecycle; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('fastapi', 'starlette', 'uvicorn', 'websockets', 'httpx', 'httpx2') "
            "or m.startswith('lipon_hw.web')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr


def test_a_resumed_run_goes_on_with_later_seqs_and_watchers_resync(tmp_path, publishers):
    """Aborted in its deposit step and resumed: the resumed engine's seqs go on after every
    seq the first one could have used; a watcher that saw the first engine's last event
    is told to resync (the run's history was rewound to its checkpoint) and then gets the
    resumed events once each; every stored reading was published."""
    hub = Hub(ring=100_000)
    server = LiveServer(hub)
    data = tmp_path / "data"
    announce(data, server.port)

    asked: list[float] = []

    def abort_in_the_deposit(ctx):
        if ctx.step_idx == 4 and not asked:
            asked.append(ctx.now)
            ctx.store.requests.make(ctx.run_id, "abort")

    try:
        with pytest.raises(RunAborted):
            start_run(str(short_recipe(tmp_path)), data, on_sample=abort_in_the_deposit)
        first = hub_events(hub, 1)
        result = resume_run(1, data)
    finally:
        server.stop()
    assert result.status == "completed"
    assert first[-1]["data"]["status"] == "aborted" and publishers[0].dropped == 0
    resumed = publishers[1].first_seq
    assert resumed > publishers[0].seqs.next - 1 and resumed == publish.SEQ_BLOCK + 1
    events = hub_events(hub, 1)
    assert [e["seq"] for e in events] == [e["seq"] for e in first] + list(
        range(resumed, publishers[1].seqs.next))
    assert hub.stats(1)["duplicates"] == 0 and hub.stats(1)["gaps"] == 1

    async def reconnect():
        async with hub.watch(1, since_seq=first[-1]["seq"]) as nxt:
            return json.loads(await asyncio.wait_for(nxt(), 1))

    got = asyncio.run(reconnect())
    assert got[0]["kind"] == "resync" and got[0]["data"]["next_seq"] == resumed
    assert [e["seq"] for e in got[1:]] == list(range(resumed, resumed + len(got) - 1))
    assert set(stored_readings(data, 1)) <= set(published_readings(events))
