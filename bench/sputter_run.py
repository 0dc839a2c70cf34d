"""Benchmark: the shipped 1 µm LiPON recipe on the simulated sputter tool, end to end.

Runs `sequences/lipon_rf_sputter.yaml` through the full path (engine → drivers →
links → emulators → physics → store) in virtual time and prints wall time, process
hours per wall second, readings per second, peak resident memory and the database
size, then one JSON line with the same figures. `--repeat N` runs it N times and reports
the median wall time (and the CPU time of each run, less sensitive to a busy machine).

    python bench/sputter_run.py [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from lipon_hw.deposition.session import start_run

REPO = Path(__file__).resolve().parent.parent


def once() -> dict:
    """One run of the recipe in a fresh data directory: its figures."""
    recipe = REPO / "sequences" / "lipon_rf_sputter.yaml"
    with tempfile.TemporaryDirectory() as data:
        wall, cpu = time.perf_counter(), time.process_time()
        result = start_run(str(recipe), data)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        db = Path(data) / "lipon.db"
        with sqlite3.connect(db) as con:
            readings = con.execute("SELECT COUNT(*) FROM readings").fetchone()[0]
        db_mb = sum(p.stat().st_size for p in Path(data).iterdir()) / 1e6
    return {"status": result.status, "thickness_nm": round(result.summary["thickness_nm"], 2),
            "process_h": round(result.t_s / 3600, 3), "wall_s": round(wall, 3),
            "cpu_s": round(cpu, 3), "readings": readings, "database_MB": round(db_mb, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1, help="runs; the median is reported")
    args = ap.parse_args()
    runs = [once() for _ in range(max(1, args.repeat))]
    wall = statistics.median(r["wall_s"] for r in runs)
    peak_MB = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    last = runs[-1]
    figures = {
        "bench": "sputter_run", "status": last["status"],
        "thickness_nm": last["thickness_nm"], "process_h": last["process_h"],
        "wall_s": round(wall, 3), "runs": len(runs),
        "wall_s_each": [r["wall_s"] for r in runs], "cpu_s_each": [r["cpu_s"] for r in runs],
        "process_h_per_wall_s": round(last["process_h"] / wall, 2),
        "readings": last["readings"], "readings_per_s": round(last["readings"] / wall),
        "peak_rss_MB": round(peak_MB, 1), "database_MB": last["database_MB"],
    }
    print(f"1 µm LiPON: {figures['thickness_nm']} nm, {figures['process_h']} h of process "
          f"in {figures['wall_s']} s wall ({figures['process_h_per_wall_s']} h/s)"
          + (f", median of {len(runs)} runs" if len(runs) > 1 else ""))
    print(f"{figures['readings']} readings ({figures['readings_per_s']}/s), peak resident "
          f"memory {figures['peak_rss_MB']} MB, database {figures['database_MB']} MB")
    print(json.dumps(figures))
    return 0 if all(r["status"] == "completed" for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
