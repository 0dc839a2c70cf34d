"""Benchmark: the shipped 1 µm LiPON recipe on the simulated sputter tool, end to end.

Runs `sequences/lipon_rf_sputter.yaml` through the full path (engine → drivers →
links → emulators → physics → store) in virtual time and prints wall time, process
hours per wall second, readings per second, peak resident memory and the database
size, then one JSON line with the same figures.
"""

from __future__ import annotations

import json
import resource
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from lipon_hw.deposition.session import start_run

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    recipe = REPO / "sequences" / "lipon_rf_sputter.yaml"
    with tempfile.TemporaryDirectory() as data:
        wall = time.perf_counter()
        result = start_run(str(recipe), data)
        wall = time.perf_counter() - wall
        peak_MB = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        db = Path(data) / "lipon.db"
        with sqlite3.connect(db) as con:
            readings = con.execute("SELECT COUNT(*) FROM readings").fetchone()[0]
        db_mb = sum(p.stat().st_size for p in Path(data).iterdir()) / 1e6
    figures = {
        "bench": "sputter_run", "status": result.status,
        "thickness_nm": round(result.summary["thickness_nm"], 2),
        "process_h": round(result.t_s / 3600, 3), "wall_s": round(wall, 3),
        "process_h_per_wall_s": round(result.t_s / 3600 / wall, 2),
        "readings": readings, "readings_per_s": round(readings / wall),
        "peak_rss_MB": round(peak_MB, 1), "database_MB": round(db_mb, 2),
    }
    print(f"1 µm LiPON: {figures['thickness_nm']} nm, {figures['process_h']} h of process "
          f"in {figures['wall_s']} s wall ({figures['process_h_per_wall_s']} h/s)")
    print(f"{readings} readings ({figures['readings_per_s']}/s), peak resident memory "
          f"{figures['peak_rss_MB']} MB, database {figures['database_MB']} MB")
    print(json.dumps(figures))
    return 0 if result.status == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
