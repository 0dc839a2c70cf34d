"""Benchmark: the shipped 1 µm LiPON recipe on the simulated sputter tool, end to end.

Runs `sequences/lipon_rf_sputter.yaml` through the full path (engine → drivers →
links → emulators → physics → store) in virtual time and prints wall and CPU time,
process hours per wall second, readings per second and the cost of one reading, peak
resident memory and the database size, then one JSON line with the same figures.
The run is started as `lipon-hw run` starts it: its plots are drawn by a helper process
readied while the run goes (`lipon_hw.engine.plot_helper`); `--plots-here` draws them in
this process instead (the import of matplotlib then on the run's own core). `--repeat N`
runs it N times in this process and reports medians (with `--plots-here`, the first run
alone pays for importing matplotlib). CPU time (this process's and its children's: the
plot helper) is the figure to compare on a shared machine, wall time the one a user
waits.

`--thickness-nm T` deposits T nm instead of 1000 (a temporary copy of the recipe, its
`max_h` scaled with it): `--thickness-nm 3650` is the 22 h deposition of PHYSICS.md §1.

    python bench/sputter_run.py [--repeat N] [--thickness-nm T] [--plots-here]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from lipon_hw.deposition.kind import KIND
from lipon_hw.engine import lifecycle
from lipon_hw.kinds import RunOptions

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "sequences" / "lipon_rf_sputter.yaml"
#: the shipped recipe's deposit step, and the hours it allows per µm
DEPOSIT = re.compile(r"deposit: \{film: LiPON, until_thickness_nm: 1000, max_h: 8\}")
MAX_H_PER_UM = 8.0


def recipe_text(thickness_nm: float | None) -> str:
    """The shipped recipe, or a copy depositing `thickness_nm` with `max_h` scaled."""
    text = RECIPE.read_text(encoding="utf-8")
    if thickness_nm is None:
        return text
    max_h = max(MAX_H_PER_UM, math.ceil(MAX_H_PER_UM * thickness_nm / 1000))
    text, found = DEPOSIT.subn(f"deposit: {{film: LiPON, until_thickness_nm: {thickness_nm:g}, "
                               f"max_h: {max_h:g}}}", text)
    if found != 1:
        sys.exit(f"{RECIPE}: its deposit step is not the one this benchmark knows "
                 "(until_thickness_nm: 1000, max_h: 8)")
    return text


def cpu_s() -> float:
    """CPU seconds of this process and of its children that have ended (the plot helper)."""
    return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


def once(text: str, plots_here: bool) -> dict:
    """One run of the recipe in a fresh data directory: its figures."""
    with tempfile.TemporaryDirectory() as data:
        recipe = Path(data) / RECIPE.name
        recipe.write_text(text, encoding="utf-8")
        options = RunOptions(str(Path(data) / "store"), plot_helper=not plots_here)
        wall, cpu = time.perf_counter(), cpu_s()
        result = lifecycle.start(KIND, str(recipe), options)
        wall, cpu = time.perf_counter() - wall, cpu_s() - cpu
        db = Path(data) / "store" / "lipon.db"
        with sqlite3.connect(db) as con:
            readings = con.execute("SELECT COUNT(*) FROM readings").fetchone()[0]
            instants = con.execute("SELECT COUNT(DISTINCT t_s) FROM readings").fetchone()[0]
        db_mb = sum(p.stat().st_size for p in (Path(data) / "store").iterdir()) / 1e6
    return {"status": result.status, "thickness_nm": round(result.summary["thickness_nm"], 2),
            "process_h": round(result.t_s / 3600, 3), "wall_s": round(wall, 3),
            "cpu_s": round(cpu, 3), "readings": readings, "samples": instants,
            "database_MB": round(db_mb, 2), "plots": len(result.plots)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1, help="runs; medians are reported")
    ap.add_argument("--thickness-nm", type=float, default=None,
                    help="LiPON to deposit (default: the recipe's 1000 nm)")
    ap.add_argument("--plots-here", action="store_true",
                    help="draw the plots in this process, not in a helper readied meanwhile")
    args = ap.parse_args()
    if args.thickness_nm is not None and not 1 <= args.thickness_nm <= 20000:
        ap.error("--thickness-nm must be within 1–20000")
    text = recipe_text(args.thickness_nm)
    runs = [once(text, args.plots_here) for _ in range(max(1, args.repeat))]
    wall = statistics.median(r["wall_s"] for r in runs)
    cpu = statistics.median(r["cpu_s"] for r in runs)
    peak_MB = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    last = runs[-1]
    figures = {
        "bench": "sputter_run", "status": last["status"],
        "thickness_nm": last["thickness_nm"], "process_h": last["process_h"],
        "wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "runs": len(runs),
        "wall_s_each": [r["wall_s"] for r in runs], "cpu_s_each": [r["cpu_s"] for r in runs],
        "process_h_per_wall_s": round(last["process_h"] / wall, 2),
        "readings": last["readings"], "samples": last["samples"],
        "readings_per_s": round(last["readings"] / wall),
        "us_per_reading_wall": round(wall / last["readings"] * 1e6, 1),
        "us_per_reading_cpu": round(cpu / last["readings"] * 1e6, 1),
        "peak_rss_MB": round(peak_MB, 1), "database_MB": last["database_MB"],
        "plots": last["plots"], "plots_drawn_by": "this process" if args.plots_here else
        "a helper process (if the run lasted over 1 s with a core idle)",
    }
    median = f", medians of {len(runs)} runs" if len(runs) > 1 else ""
    print(f"LiPON: {figures['thickness_nm']} nm, {figures['process_h']} h of process "
          f"in {figures['wall_s']} s wall, {figures['cpu_s']} s CPU "
          f"({figures['process_h_per_wall_s']} h/s){median}")
    print(f"{figures['readings']} readings at {figures['samples']} instants "
          f"({figures['us_per_reading_wall']} µs wall, {figures['us_per_reading_cpu']} µs CPU "
          f"each), peak resident memory {figures['peak_rss_MB']} MB, "
          f"database {figures['database_MB']} MB")
    print(json.dumps(figures))
    return 0 if all(r["status"] == "completed" and r["plots"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
