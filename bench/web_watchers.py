"""Benchmark: what browsers watching a run live cost the engine (issue 14: 50 watchers
must cost it less than 5 % of its throughput).

The shipped 1 µm LiPON recipe in virtual time (as `bench/sputter_run.py`), three ways:
- `none`: no server (no `serve.json`: nothing published);
- `0`: `lipon-hw serve` on the run's data directory (its own process, a token file, as an
  operator would start it), the run publishing to it, no one watching;
- `N` (default 50): the same with N WebSocket watchers holding a viewer's token (in a third
  process, as browsers would be), each of which must receive every event of the run.
The server sends WebSocket messages uncompressed (`lipon-hw serve` turns per-message
deflate off: with it, one compression per watcher and message cost 10.9 % of the run's
throughput with 50 watchers, against 2.0 % without, when this bench measured both).
Each way runs `--repeat` times, interleaved; the figures are medians of the engine's
throughput (readings stored per wall second; the server and the watchers share the
machine with it) and of its own process's CPU time per reading (what publishing costs the
engine itself, less sensitive to a busy machine), and their cost against `none`; one JSON
line at the end.

    python bench/web_watchers.py [--watchers 50] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
#: where an event starts in a message (nested records may have a "seq" of their own)
EVENT_START = re.compile(r'\{"seq":(?:\d+|null),"t_s":')


# --- the server process ---------------------------------------------------------------
VIEWER = "bench-viewer-token"


def serve(data: Path) -> tuple[subprocess.Popen, str]:
    """`lipon-hw serve` on `data` (any free loopback port, a viewer's token in a token
    file); (its process, its URL) once it has announced itself in `serve.json`."""
    tokens = data.parent / f"{data.name}.tokens"
    tokens.write_text(f"bench viewer {VIEWER}\n")
    tokens.chmod(0o600)
    code = "import sys; from lipon_hw.cli import main; sys.exit(main())"
    proc = subprocess.Popen([sys.executable, "-c", code, "serve", "--bind", "127.0.0.1:0",
                             "--token-file", str(tokens), "--data", str(data)],
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    announced = data / "serve.json"
    deadline = time.monotonic() + 60
    while not announced.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"lipon-hw serve did not start: {proc.communicate()[1]}")
        time.sleep(0.05)
    return proc, json.loads(announced.read_text())["url"]


# --- the watchers' process ------------------------------------------------------------------
async def _watcher(url: str, ready: asyncio.Event, opened: list) -> dict:
    import websockets

    got = {"events": 0, "resyncs": 0, "status": None}
    async with websockets.connect(url, max_size=None) as ws:
        opened.append(1)
        await ready.wait()
        while got["status"] is None:
            # counted from the text: parsing is the browsers' cost, on their own machines
            text = await ws.recv()
            resyncs = text.count('"kind":"resync"')
            got["resyncs"] += resyncs
            got["events"] += len(EVENT_START.findall(text)) - resyncs
            for end in ("completed", "failed", "aborted"):
                if f'"kind":"status","data":{{"status":"{end}"' in text:
                    got["status"] = end
    return got


async def _watch(port: int, run_id: int, n: int) -> list[dict]:
    url = f"ws://127.0.0.1:{port}/ws/runs/{run_id}?since_seq=0&access_token={VIEWER}"
    ready, opened = asyncio.Event(), []
    tasks = [asyncio.ensure_future(_watcher(url, ready, opened)) for _ in range(n)]
    while len(opened) < n:
        await asyncio.sleep(0.01)
    ready.set()
    print("ready", flush=True)
    return await asyncio.gather(*tasks)


def watch(port: int, run_id: int, n: int) -> None:
    print(json.dumps(asyncio.run(_watch(port, run_id, n))), flush=True)


# --- the bench --------------------------------------------------------------------------------
def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
        str(REPO), os.environ.get("PYTHONPATH")]))}


def _child(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, *map(str, args)], env=_env(),
                            stdout=subprocess.PIPE, text=True)


def cpu_s(proc: subprocess.Popen) -> float:
    """A child's CPU seconds so far (Linux: /proc/PID/stat utime + stime)."""
    fields = Path(f"/proc/{proc.pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def once(watchers: int | None) -> dict:
    """One run of the recipe; `watchers` None: no server."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        procs: list[subprocess.Popen] = []
        try:
            return _measured(data, watchers, procs)
        finally:  # stopped before their data directory goes
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()
                    proc.wait(10)


def _measured(data: Path, watchers: int | None, procs: list) -> dict:
    from lipon_hw.deposition.session import start_run
    from lipon_hw.engine import publish

    recipe = REPO / "sequences" / "lipon_rf_sputter.yaml"
    server = watching = None
    made = []
    attach = publish.attach
    publish.attach = lambda *a, **k: made.append(attach(*a, **k)) or made[-1]
    try:
        if watchers is not None:
            server, url = serve(data)
            procs.append(server)
            server_cpu0 = cpu_s(server)  # its start (imports) is not the run's
            if watchers:
                watching = _child("--watch", urlsplit(url).port, 1, watchers)
                procs.insert(0, watching)
                assert watching.stdout.readline().strip() == "ready"
                watching_cpu0 = cpu_s(watching)
        wall, cpu = time.perf_counter(), time.process_time()
        result = start_run(str(recipe), data)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        publish.attach = attach
    with sqlite3.connect(data / "lipon.db") as con:
        readings = con.execute("SELECT COUNT(*) FROM readings").fetchone()[0]
    figures = {"status": result.status, "wall_s": round(wall, 3),
               "cpu_s": round(cpu, 3), "readings": readings,
               "readings_per_s": round(readings / wall),
               "readings_per_cpu_s": round(readings / cpu)}
    pub = made[-1] if made else None
    if pub is not None:
        figures.update(events=pub.seqs.next - pub.first_seq, sent=pub.sent,
                       dropped=pub.dropped, batches=pub.batches)
    if server is not None:
        figures["server_cpu_s"] = round(cpu_s(server) - server_cpu0, 2)
    if watching is not None:
        figures["watchers_cpu_s"] = round(cpu_s(watching) - watching_cpu0, 2)
        out, _ = watching.communicate(timeout=60)
        got = json.loads(out)
        figures["watchers_got_all"] = all(
            g["events"] == figures["sent"] and g["resyncs"] == 0 for g in got)
        figures["watcher_events_min"] = min(g["events"] for g in got)
    return figures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--watchers", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--watch", nargs=3, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.watch:
        watch(*args.watch)
        return 0
    ways = {"none": None, "0": 0, str(args.watchers): args.watchers}
    runs: dict[str, list[dict]] = {k: [] for k in ways}
    once(None)  # warm-up: the first run in a process pays for its imports
    for _ in range(max(1, args.repeat)):
        for name, watchers in ways.items():
            runs[name].append(once(watchers))
            print(f"{name:>5}: {runs[name][-1]}", flush=True)
    rate = {k: statistics.median(r["readings_per_s"] for r in v) for k, v in runs.items()}
    cost = {k: round(100 * (1 - rate[k] / rate["none"]), 1) for k in ways if k != "none"}
    cpu_rate = {k: statistics.median(r["readings_per_cpu_s"] for r in v)
                for k, v in runs.items()}
    cpu_cost = {k: round(100 * (1 - cpu_rate[k] / cpu_rate["none"]), 1)
                for k in ways if k != "none"}
    last = runs[str(args.watchers)][-1]
    figures = {"bench": "web_watchers", "watchers": args.watchers, "runs": args.repeat,
               "server": "lipon-hw serve", "readings_per_s": rate, "cost_percent": cost,
               "readings_per_cpu_s": cpu_rate, "cpu_cost_percent": cpu_cost,
               "readings_per_s_each": {k: [r["readings_per_s"] for r in v]
                                       for k, v in runs.items()},
               "events": last.get("events"), "dropped": last.get("dropped"),
               "server_cpu_s": {k: statistics.median(r["server_cpu_s"] for r in v)
                                for k, v in runs.items() if k != "none"},
               "watchers_got_all": all(r.get("watchers_got_all") for r in
                                       runs[str(args.watchers)])}
    print(f"engine: {rate['none']:.0f} readings/s alone; with a server "
          f"{cost['0']} % slower; with {args.watchers} watchers {cost[str(args.watchers)]} %"
          f" slower (medians of {args.repeat}); the engine process's own CPU per reading: "
          f"+{cpu_cost['0']} % with a server, +{cpu_cost[str(args.watchers)]} % with "
          f"{args.watchers} watchers")
    print(json.dumps(figures))
    ok = all(r["status"] == "completed" for v in runs.values() for r in v)
    return 0 if ok and figures["watchers_got_all"] else 1


if __name__ == "__main__":
    sys.exit(main())
