"""A running engine's events, published to the operator's web server (`lipon-hw serve`)
while the run goes on, so browsers watch it live without reading the database.

When `<data>/serve.json` exists (written by `lipon-hw serve`: `{"url": ..., "engine_token":
...}`), the run's lifecycle attaches a `Publisher` to the run's store (`attach`): the store
tells its taps of everything it is given (`Store.taps`), whichever part of the engine made
it, so this is the one place the run is tapped. Without the file nothing is attached and
the store's cost is one empty-list check per write; a thread looks for the file once a wall
second (`follow`), so a server started while a run goes on gets it from then on, and its
watchers the history before from the store (the late publisher leaves a seq out: a gap).

Events: `{"seq": int, "t_s": float | None, "kind": str, "data": {...}}`, kinds
- `readings`: one sample of a deposition, `data` = {quantity: value} (finite values only,
  as stored);
- `cell`: a cell-test channel's samples, `data` = {"channel", "t", "V", "I", "cycle"}
  (lists, one entry per sample);
- `screen_cells`: a screening touchdown's cells, `data` = {"cells": [`ScreenCell` as a
  dict, ...]};
- `spectrum`: impedance points of a channel as measured (a spectrum comes in pieces),
  `data` = {"channel", "t", "cycle", "step_count", "f_Hz", "z_re_ohm", "z_im_ohm"} (lists);
- `cycle`: a channel's finished cycle as stored, `data` = {"channel", "stats"} (the
  `cycles` table's stats; a non-finite number as null);
- `alarm`: `data` = {"severity", "source", "message", "rule", "reaction"};
- `step`: a deposition step starts or ends, `data` = {"idx", "status"[, "kind", "params"]};
- `status`: the run's status, `data` = {"status", "message"[, "summary"]}.

Sequence numbers: per run, from 1, contiguous within one engine process and strictly
increasing across resumes. They are reserved in blocks of `SEQ_BLOCK` in
`<data>/runs/<id>/live_seq.json` before they are used, so a resumed engine (or one
restarted after kill -9) starts after the last block reserved: never a number used before,
even when the run rewinds to a checkpoint and measures again (neither the store's counts
nor the checkpoint could promise that, as both roll back). The jump this leaves is a gap
the server tells browsers as a resync — which a resume needs anyway, as its history was
rewound.

Sending: a daemon thread takes batches from a bounded queue (every `EVERY_S` of wall time,
or at once when `BATCH_N` are waiting) and POSTs them as JSON to
`{url}/api/engine/runs/{id}/events` with `Authorization: Bearer <engine_token>`, on one
kept-alive HTTP connection (standard library only). A server that is down, refuses or is
slow never slows or fails the run: the engine only appends to the queue; when the queue is
full the oldest event is dropped and counted; a batch that failed to arrive is sent again
(the server drops what it already has by seq); a batch the server refuses (4xx) is dropped
and counted. The next batch that arrives carries `dropped` (the total so far) and
`resync_from_seq` (the first seq lost since the last batch that arrived) so the server
knows to send browsers to the store for those. While the server is unreachable the thread
retries with a growing pause (up to `MAX_BACKOFF_S`), reading `serve.json` again each time
(a restarted server may listen elsewhere, with another token).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import math
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

SERVE_FILE = "serve.json"
SEQ_FILE = "live_seq.json"
SEQ_BLOCK = 10_000
EVERY_S = 0.2
BATCH_N = 500
MAX_BATCH = 2_000
MAX_QUEUE = 20_000
TIMEOUT_S = 2.0
MAX_BACKOFF_S = 5.0
#: how long the end of a run waits for its last events to reach a server that answers
CLOSE_WAIT_S = 1.0
#: a request pending this long at the end of a run: the server is slow, not waited for
STUCK_S = 0.5
#: how often a run not yet published looks for a `serve.json` (one stat)
WATCH_S = 1.0


@dataclass(frozen=True)
class Target:
    url: str
    token: str


def serve_target(data_dir: Path | str) -> Target | None:
    """The server `lipon-hw serve` announced in `<data>/serve.json`, or None (no file, or
    one that does not say where: logged, never the run's problem)."""
    path = Path(data_dir) / SERVE_FILE
    try:
        found = json.loads(path.read_text())
        url, token = found["url"], found.get("engine_token") or ""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url {url!r} is not http(s)://host[:port]")
        return Target(url.rstrip("/"), str(token))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("live view: %s is unusable (%s); the run is not published", path, exc)
        return None


def attach(store, run_id: int, late: bool = False, **options) -> Publisher | None:
    """A started `Publisher` tapping `store` for `run_id` when `serve.json` names a server;
    else None. Never raises: the run goes on unpublished. `late`: the run went on for a
    while unpublished, so its first seq is left out: the gap sends every watcher to the
    store for the history before it (`Publisher.lost`)."""
    if serve_target(store.data_dir) is None:
        return None
    try:
        publisher = Publisher(store.data_dir, run_id, **options)
    except OSError as exc:
        log.warning("live view: run %d is not published (%s)", run_id, exc)
        return None
    if late:
        publisher.lost(run_id)
    publisher.start()
    store.taps.append(publisher)
    publisher.emit("status", None, {"status": "running", "message": "engine publishing"})
    return publisher


def detach(store, publisher: Publisher | None, wait_s: float = CLOSE_WAIT_S) -> None:
    """Untap and close: the last events get at most `wait_s` to reach the server."""
    if publisher is None:
        return
    with contextlib.suppress(ValueError):
        store.taps.remove(publisher)
    publisher.close(wait_s)


class Follower:
    """A run's publishing from its start to its end (`follow`): a `Publisher` at once when
    `serve.json` names a server, else a daemon thread that looks for the file every
    `watch_s` of wall time (one stat; a file it could not use is read again only once it
    changes) and attaches one late when a server is started while the run goes on."""

    def __init__(self, store, run_id: int, watch_s: float | None = None):
        self.store, self.run_id = store, run_id
        self.watch_s = watch_s or WATCH_S
        self.publisher: Publisher | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unusable: float | None = None  # mtime of a serve.json found unusable

    def start(self) -> Follower:
        if not self._try(late=False):
            self._thread = threading.Thread(target=self._watch, daemon=True,
                                            name=f"serve.json watch run {self.run_id}")
            self._thread.start()
        return self

    def _try(self, late: bool) -> bool:
        """Attach if a server is announced: True once there is nothing more to look for."""
        path = Path(self.store.data_dir) / SERVE_FILE
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return False
        if mtime == self._unusable:
            return False
        with self._lock:
            if self._stop.is_set():
                return True
            self.publisher = attach(self.store, self.run_id, late=late)
        if self.publisher is None:
            self._unusable = mtime
            return False
        if late:
            log.info("live view: run %d published from now on (%s appeared)", self.run_id,
                     path.name)
        return True

    def _watch(self) -> None:
        while not self._stop.wait(self.watch_s):
            if self._try(late=True):
                return

    def close(self, wait_s: float = CLOSE_WAIT_S) -> None:
        """Stop looking, then untap and close the publisher (`detach`)."""
        with self._lock:
            self._stop.set()
        detach(self.store, self.publisher, wait_s)
        self.publisher = None


def follow(store, run_id: int, watch_s: float | None = None) -> Follower:
    """The run published now, or from when a server is announced (`Follower`)."""
    return Follower(store, run_id, watch_s).start()


class SeqBook:
    """Sequence numbers of one run, reserved in blocks in `<data>/runs/<id>/live_seq.json`
    (`{"reserved": N}`: every seq below N may have been used)."""

    def __init__(self, data_dir: Path | str, run_id: int, block: int = SEQ_BLOCK):
        self.path = Path(data_dir) / "runs" / str(run_id) / SEQ_FILE
        self.block = block
        self.next = self._read() or 1
        self.reserved = self.next
        self.reserve()

    def _read(self) -> int:
        try:
            return max(int(json.loads(self.path.read_text())["reserved"]), 1)
        except FileNotFoundError:
            return 1
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise OSError(f"{self.path} is unreadable ({exc})") from None

    def reserve(self) -> None:
        """The next block, written (atomically) before any number of it is used."""
        reserved = self.reserved + self.block
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"reserved": reserved}))
        tmp.replace(self.path)
        self.reserved = reserved

    def take(self) -> int:
        seq = self.next
        if seq >= self.reserved:
            self.reserve()
        self.next = seq + 1
        return seq


class Publisher:
    """One run's events to the server (see the module docstring); a store tap."""

    def __init__(self, data_dir: Path | str, run_id: int, *, every_s: float | None = None,
                 batch_n: int | None = None, max_batch: int | None = None,
                 max_queue: int | None = None, timeout_s: float | None = None,
                 max_backoff_s: float | None = None, seq_block: int | None = None):
        """Each option left None is the module's constant of its name (read now)."""
        self.data_dir, self.run_id = Path(data_dir), run_id
        self.every_s = every_s or EVERY_S
        self.batch_n, self.max_batch = batch_n or BATCH_N, max_batch or MAX_BATCH
        self.timeout_s = timeout_s or TIMEOUT_S
        self.max_backoff_s = max_backoff_s or MAX_BACKOFF_S
        max_queue = max_queue or MAX_QUEUE
        self.seqs = SeqBook(data_dir, run_id, seq_block or SEQ_BLOCK)
        self.first_seq = self.seqs.next
        self._queue: deque[tuple] = deque()
        self._max_queue = max_queue
        self._lock = threading.Lock()
        self._kick = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"publish run {run_id}",
                                        daemon=True)
        self._conn: http.client.HTTPConnection | None = None
        self._target: Target | None = None
        self._retry: list[tuple] | None = None
        self._lost_from: int | None = None
        self._last_t: float | None = None
        self._sending_since: float | None = None
        #: events dropped (queue full, or refused by the server), batches and events sent
        self.dropped = 0
        self.batches = 0
        self.sent = 0
        self.failures = 0
        self.last_error = ""

    # --- the store's taps (the engine's thread: cheap, never blocking) ---------------
    def readings(self, run_id: int, t_s: float, values) -> None:
        if run_id != self.run_id:
            return
        data = {k: float(v) for k, v in values.items()
                if v is not None and math.isfinite(v)}
        if data and math.isfinite(t_s):
            self.emit("readings", t_s, data)

    def cell_samples(self, run_id: int, channel: int, rows: list[tuple]) -> None:
        """`rows` as the store buffers them: (run, channel, t, V, I, cycle, ...)."""
        if run_id != self.run_id or not rows:
            return
        cols = list(zip(*rows, strict=False))
        self.emit("cell", rows[-1][2], {"channel": channel, "t": list(cols[2]),
                                        "V": list(cols[3]), "I": list(cols[4]),
                                        "cycle": list(cols[5])})

    def screen_cells(self, run_id: int, cells: list) -> None:
        """A touchdown's screened cells (`ScreenCell`s), as the store was given them."""
        if run_id == self.run_id and cells:
            self.emit("screen_cells", cells[-1].t_s, {"cells": [c.to_dict() for c in cells]})

    def spectrum(self, run_id: int, channel: int, rows: list[tuple]) -> None:
        """`rows` as the store buffers them: (run, channel, t, cycle, step, f, Re, Im)."""
        if run_id == self.run_id and rows:
            cols = list(zip(*rows, strict=False))
            self.emit("spectrum", rows[-1][2], {
                "channel": channel, "t": list(cols[2]), "cycle": list(cols[3]),
                "step_count": list(cols[4]), "f_Hz": list(cols[5]),
                "z_re_ohm": list(cols[6]), "z_im_ohm": list(cols[7])})

    def cycle(self, run_id: int, channel: int, cycle: int, stats) -> None:
        if run_id == self.run_id:
            stats = {k: v if not isinstance(v, float) or math.isfinite(v) else None
                     for k, v in dict(stats).items()}
            t_end = stats.get("t_end_s")
            self.emit("cycle", self._last_t if t_end is None else t_end,
                      {"channel": channel, "stats": {**stats, "cycle": cycle}})

    def alarm(self, alarm) -> None:
        if alarm.run_id == self.run_id:
            self.emit("alarm", alarm.t_s, {
                "severity": alarm.severity, "source": alarm.source, "message": alarm.message,
                "rule": alarm.rule, "reaction": alarm.reaction})

    def step(self, run_id: int, idx: int, status: str, t_s: float, kind: str | None = None,
             params=None) -> None:
        if run_id == self.run_id:
            data = {"idx": idx, "status": status}
            if kind is not None:
                data.update(kind=kind, params=dict(params or {}))
            self.emit("step", t_s, data)

    def status(self, run_id: int, status: str, message: str, summary=None) -> None:
        if run_id == self.run_id:
            data = {"status": status, "message": message}
            if summary is not None:
                data["summary"] = dict(summary)
            self.emit("status", self._last_t, data)

    def lost(self, run_id: int) -> None:
        """Events of the run were lost before they reached this publisher (it attached
        late, or a worker process could not pass them on): one seq is left out, so the
        server tells every watcher to read the history from the store."""
        if run_id == self.run_id:
            with self._lock:
                self.seqs.take()

    def emit(self, kind: str, t_s: float | None, data: dict) -> None:
        """Queue one event (the oldest dropped and counted when the queue is full)."""
        with self._lock:
            seq = self.seqs.take()
            if len(self._queue) >= self._max_queue:
                lost = self._queue.popleft()
                self.dropped += 1
                if self._lost_from is None:
                    self._lost_from = lost[0]
            self._queue.append((seq, t_s, kind, data))
            waiting = len(self._queue)
        if t_s is not None:
            self._last_t = t_s
        if waiting >= self.batch_n and not self._kick.is_set():
            self._kick.set()

    # --- the sending thread ------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def close(self, wait_s: float = CLOSE_WAIT_S) -> None:
        """Send what is queued if the server takes it within `wait_s`, then stop. A server
        that failed before gets no wait; one that has not answered a request within
        `STUCK_S` gets its request cut short."""
        self._stop.set()
        self._kick.set()
        deadline = time.monotonic() + (0.0 if self.failures else wait_s)
        while self._thread.is_alive() and time.monotonic() < deadline:
            sending = self._sending_since
            if sending is not None and time.monotonic() - sending > STUCK_S:
                break
            self._thread.join(0.02)
        if self._thread.is_alive():  # cut the request short (a silent server)
            conn = self._conn
            with contextlib.suppress(Exception):
                conn.sock.shutdown(socket.SHUT_RDWR)
            self._thread.join(0.5)
        with self._lock:
            self.dropped += len(self._queue) + len(self._retry or ())
            self._queue.clear()
            self._retry = None
        self._disconnect()

    def _take(self) -> list[tuple]:
        with self._lock:
            n = min(len(self._queue), self.max_batch)
            return [self._queue.popleft() for _ in range(n)]

    def _run(self) -> None:
        backoff = 0.0
        while True:
            self._kick.wait(backoff or self.every_s)
            self._kick.clear()
            stopping = self._stop.is_set()
            batch = self._retry or self._take()
            self._retry = None
            if not batch:
                if stopping:
                    return
                continue
            outcome = self._send(batch)
            if outcome == "sent":
                backoff = 0.0
                if self._queue_len() >= self.batch_n or stopping:
                    self._kick.set()  # more waiting: no pause
                continue
            stopping = self._stop.is_set()  # the run may have ended while it was sent
            if outcome == "refused":
                self._lose(batch)
            elif stopping:
                self._retry = batch
                return
            else:
                self._retry = batch
                self._target = None  # read serve.json again: a server restarted elsewhere
            backoff = min(max(backoff * 2, self.every_s * 2), self.max_backoff_s)
            if stopping:
                return

    def _queue_len(self) -> int:
        with self._lock:
            return len(self._queue)

    def _lose(self, batch: list[tuple]) -> None:
        with self._lock:
            self.dropped += len(batch)
            if self._lost_from is None or batch[0][0] < self._lost_from:
                self._lost_from = batch[0][0]

    def _send(self, batch: list[tuple]) -> str:
        """POST one batch: "sent", "refused" (the server will not take it) or "failed"."""
        target = self._target or serve_target(self.data_dir)
        if target is None:
            self._failed("no server in serve.json")
            return "failed"
        self._target = target
        with self._lock:
            dropped, lost_from = self.dropped, self._lost_from
        try:
            body = json.dumps({"events": [
                {"seq": e[0], "t_s": e[1], "kind": e[2], "data": e[3]} for e in batch],
                "dropped": dropped, "resync_from_seq": lost_from},
                separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            log.warning("live view: a batch of run %d cannot be sent (%s)", self.run_id, exc)
            return "refused"
        try:
            self._sending_since = time.monotonic()
            status, text = self._post(target, body)
        except (OSError, http.client.HTTPException) as exc:
            self._disconnect()
            self._failed(f"{target.url} unreachable ({exc})")
            return "failed"
        finally:
            self._sending_since = None
        if 200 <= status < 300:
            if self.failures:
                log.info("live view: %s takes run %d's events again", target.url, self.run_id)
            self.failures, self.last_error = 0, ""
            self.batches += 1
            self.sent += len(batch)
            with self._lock:
                if self._lost_from == lost_from:
                    self._lost_from = None
            return "sent"
        self._failed(f"{target.url} answered {status}: {text[:200]}")
        return "failed" if status >= 500 else "refused"

    def _post(self, target: Target, body: bytes) -> tuple[int, str]:
        if self._conn is None:
            parts = urlsplit(target.url)
            cls = (http.client.HTTPSConnection if parts.scheme == "https"
                   else http.client.HTTPConnection)
            self._conn = cls(parts.hostname, parts.port, timeout=self.timeout_s)
        path = urlsplit(target.url).path + f"/api/engine/runs/{self.run_id}/events"
        headers = {"Content-Type": "application/json"}
        if target.token:
            headers["Authorization"] = f"Bearer {target.token}"
        self._conn.request("POST", path, body, headers)
        response = self._conn.getresponse()
        text = response.read().decode("utf-8", "replace")
        if response.will_close:
            self._disconnect()
        return response.status, text

    def _failed(self, why: str) -> None:
        if not self.failures:
            log.warning("live view: run %d's events are not reaching the server: %s; the run "
                        "goes on (events are kept up to %d, then the oldest dropped)",
                        self.run_id, why, self._max_queue)
        self.failures += 1
        self.last_error = why

    def _disconnect(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
