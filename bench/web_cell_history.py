"""Benchmark: what a 600-cycle cell-test channel's history costs the cell-test page.

A real simulated channel's second cycle (LNMO, with its impedance spectrum) is written
`--cycles` times (default 600) into a fresh store as one channel's history (~250k
samples), through the Store API; `lipon-hw serve` serves it. Measured:
- the REST answers the page reads (`web/cells.py`): the samples decimated to the
  page's `max_points`, and the whole channel at full resolution in pages of 100 000
  (what the page would read without decimation), their wall time and bytes;
- with Debian's chromium and Playwright: the page's load, from navigation until the
  chosen channel's history is drawn (and the page's own figure for its history's reads).
One JSON line at the end.

    python bench/web_cell_history.py [--cycles 600] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from lipon_hw.celltest.session import start_cycling  # noqa: E402
from lipon_hw.station import default_station_text  # noqa: E402
from lipon_hw.store import Store  # noqa: E402

from recipes import LNMO_EIS  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")


def one_cycle(tmp: Path):
    """(samples, spectrum, stats) of cycle 2 of a short real run, times from its start."""
    protocol = tmp / "lnmo-eis.yaml"
    protocol.write_text(LNMO_EIS.format(channels="1", cycles=3), encoding="utf-8")
    result = start_cycling(str(protocol), tmp / "source", workers=1)
    store = Store(tmp / "source", read_only=True)
    try:
        samples = [r for r in store.cell_samples(result.run_id, 1) if r[3] == 2]
        spectrum = [r for r in store.spectra(result.run_id, 1) if r[1] == 2]
        stats = next(s for s in store.cycles(result.run_id, 1) if s["cycle"] == 2)
    finally:
        store.close()
    start = spectrum[0][0]
    return ([(r[0] - start, *r[1:]) for r in samples],
            [(r[0] - start, *r[1:]) for r in spectrum],
            dict(stats, t_end_s=stats["t_end_s"] - start))


def make_store(data: Path, cycles: int, tmp: Path) -> int:
    samples, spectrum, stats = one_cycle(tmp)
    period = stats["t_end_s"]
    store = Store(data)
    try:
        run_id = store.create_run("bench: one long channel", "cycling", "bench.yaml",
                                  LNMO_EIS, default_station_text(), None, None)
        store.add_channel(run_id, 1, "mes4", None, "bench")
        for k in range(cycles):
            t0, n, steps = k * period, k + 1, 3 * (k - 1)  # three steps a cycle
            store.add_spectrum(run_id, 1, [(t0 + r[0], n, r[2] + steps, *r[3:])
                                           for r in spectrum])
            store.add_cell_samples(run_id, 1, [(t0 + r[0], r[1], r[2], n, r[4] + steps, *r[5:])
                                               for r in samples])
            store.add_cycle(run_id, 1, n, dict(stats, cycle=n, t_end_s=t0 + period))
        store.flush()
        total = store.last_cell_sample(run_id, 1)
        store.set_status(run_id, "completed", "bench")
    finally:
        store.close()
    assert total is not None
    return run_id


def timed_get(url: str) -> tuple[float, int, dict]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as r:
        body = r.read()
    return time.perf_counter() - t0, len(body), json.loads(body)


def rest(url: str, run_id: int, repeat: int) -> dict:
    base = f"{url}/api/runs/{run_id}/channels/1/samples"
    dec, full = [], []
    for _ in range(repeat):
        s, size, page = timed_get(f"{base}?max_points=6000")
        dec.append((s, size, page["total"], page["rows"]))
        t, size, rows, nxt = 0.0, 0, 0, f"{base}?limit=100000"
        while nxt:
            s, b, page = timed_get(url + nxt if nxt.startswith("/") else nxt)
            t, size, rows, nxt = t + s, size + b, rows + page["rows"], page["next"]
        full.append((t, size, rows))
    return {"samples": dec[0][2], "decimated_rows": dec[0][3],
            "decimated_s": round(statistics.median(d[0] for d in dec), 3),
            "decimated_bytes": dec[0][1],
            "full_s": round(statistics.median(f[0] for f in full), 3),
            "full_bytes": full[0][1], "full_rows": full[0][2]}


def browser(url: str, run_id: int, repeat: int) -> dict | None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if not CHROMIUM.exists():
        return None
    loads, own = [], []
    with sync_playwright() as pw:
        chrome = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=["--no-sandbox", "--disable-gpu"])
        try:
            for _ in range(repeat):
                page = chrome.new_page(viewport={"width": 1400, "height": 900})
                t0 = time.perf_counter()
                page.goto(f"{url}/runs/{run_id}")
                page.wait_for_function(
                    "() => document.querySelector('#detail')?.dataset.history === 'loaded' &&"
                    " +document.querySelector('#vt canvas').dataset.drawn > 0", timeout=120_000)
                loads.append(time.perf_counter() - t0)
                own.append(int(page.get_attribute("#detail", "data-load-ms")))
                samples = int(page.get_attribute("#detail", "data-samples"))
                page.close()
        finally:
            chrome.close()
    return {"page_load_s": round(statistics.median(loads), 3),
            "history_ms": statistics.median(own), "page_samples": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=600)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        run_id = make_store(tmp / "data", args.cycles, tmp)
        made_s = time.perf_counter() - t0
        server = subprocess.Popen([sys.executable, "-m", "lipon_hw.cli", "serve", "--bind",
                                   "127.0.0.1:0", "--data", str(tmp / "data")], cwd=tmp,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            announced = tmp / "data" / "serve.json"
            deadline = time.monotonic() + 30
            while not announced.exists():
                assert server.poll() is None and time.monotonic() < deadline, server.stderr.read()
                time.sleep(0.05)
            url = json.loads(announced.read_text())["url"]
            out = {"cycles": args.cycles, "store_made_s": round(made_s, 1),
                   **rest(url, run_id, args.repeat)}
            out.update(browser(url, run_id, args.repeat) or {"browser": "not measured"})
        finally:
            server.terminate()
            server.wait(30)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
