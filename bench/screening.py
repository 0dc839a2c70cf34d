"""Benchmark: screening the shipped 20 × 30 sheet with 1, 8, 32 and 128 probe sites.

Runs `sequences/sheet_screening.yaml` through the full path (lifecycle → prober → stage
and potentiostat drivers → links → emulators → sheet physics → store) in virtual time,
once per site count (the recipe's `prober: sites:` replaced), and prints for each: cells
per hour of prober time, the speedup and efficiency against one site (also over the
site-touchdowns that landed on a cell: a 4 × 8 block tiles 30 columns with 2 sites off
the sheet at every fourth touchdown), the test time per cell (a site's time on a cell, median)
against the physical limit of the recipe's tests (`screening.measure.physical_limit_s`:
settle and OCV, one period of the lowest frequency by multisine, the pulse), their
ratio, the scaling against one site, and the wall time of the simulation itself; then
one JSON line with the same figures. Every count runs on the default station with its
probe card made 8 × 16 sites on 128 channels (the recipe uses a block of it).
`--sweep` also times the impedance by single sines.

    python bench/screening.py [--sites 1,8,32,128] [--sweep]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

from lipon_hw.engine import lifecycle
from lipon_hw.kinds import RunOptions
from lipon_hw.screening.kind import KIND

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "sequences" / "sheet_screening.yaml"
CARDS = {1: (1, 1), 2: (1, 2), 4: (2, 2), 8: (2, 4), 16: (4, 4), 32: (4, 8), 64: (8, 8),
         128: (8, 16)}


def station_128(tmp: str) -> str:
    """The default station with a 128-site card (8 × 16) on 128 potentiostat channels."""
    text = (REPO / "lipon_hw" / "data" / "sim_lab.yaml").read_text(encoding="utf-8")
    for old, new in (("card: {rows: 4, cols: 8,", "card: {rows: 8, cols: 16,"),
                     ('"sim://probe/{1-32}"', '"sim://probe/{1-128}"')):
        if old not in text:
            raise SystemExit(f"the default station no longer holds {old!r}: update the bench")
        text = text.replace(old, new)
    path = Path(tmp) / "station_128.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def once(sites: int, mode: str) -> dict:
    rows, cols = CARDS[sites]
    text = RECIPE.read_text(encoding="utf-8")
    text = re.sub(r"sites: \[\s*\d+\s*,\s*\d+\s*\]", f"sites: [{rows}, {cols}]", text, count=1)
    text = re.sub(r"mode: \w+", f"mode: {mode}", text, count=1)
    with tempfile.TemporaryDirectory() as tmp:
        recipe = Path(tmp) / "sheet.yaml"
        recipe.write_text(text, encoding="utf-8")
        wall = time.perf_counter()
        result = lifecycle.start(KIND, str(recipe), RunOptions(
            str(Path(tmp) / "data"), station_128(tmp), seed=1))
        wall = time.perf_counter() - wall
    s = result.summary
    return {"sites": sites, "mode": mode, "status": result.status,
            "cells": s["cells_screened"], "prober_h": round(result.t_s / 3600, 4),
            "cells_per_hour": round(s["cells_per_hour"], 1),
            "test_time_per_cell_s": round(s["test_time_per_cell_s"], 4),
            "physical_limit_per_cell_s": round(s["physical_limit_per_cell_s"], 4),
            "ratio_to_limit": round(s["test_time_over_limit"], 3),
            "yield": s["yield"], "tester_faults": s["tester_faults"],
            "touchdowns": s["touchdowns"], "site_utilisation": round(s["site_utilisation"], 4),
            "sim_wall_s": round(wall, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", default="1,8,32,128", help="site counts, comma-separated")
    ap.add_argument("--sweep", action="store_true", help="also measure with single sines")
    args = ap.parse_args()
    counts = [int(x) for x in args.sites.split(",")]
    modes = ["multisine", "sweep"] if args.sweep else ["multisine"]
    runs = [once(n, mode) for mode in modes for n in counts]
    for mode in modes:
        base = next((r for r in runs if r["mode"] == mode and r["sites"] == min(counts)), None)
        for r in runs:
            if r["mode"] == mode and base:
                r["speedup"] = round(r["cells_per_hour"] / base["cells_per_hour"], 2)
                r["efficiency"] = round(r["speedup"] / (r["sites"] / base["sites"]), 3)
                # what is left once the sites that fell off the sheet are set apart
                r["efficiency_of_used_sites"] = round(
                    r["efficiency"] / (r["site_utilisation"] / base["site_utilisation"]), 3)
    print(f"{'mode':<10} {'sites':>5} {'cells/h':>9} {'speedup':>8} {'eff.':>6} {'used':>5} "
          f"{'eff/used':>8} {'s/cell':>7} {'limit s':>7} {'ratio':>5} {'wall s':>6}")
    for r in runs:
        print(f"{r['mode']:<10} {r['sites']:>5} {r['cells_per_hour']:>9.0f} "
              f"{r.get('speedup', 0):>8.2f} {r.get('efficiency', 0):>6.2f} "
              f"{r['site_utilisation']:>5.2f} {r.get('efficiency_of_used_sites', 0):>8.2f} "
              f"{r['test_time_per_cell_s']:>7.3f} {r['physical_limit_per_cell_s']:>7.3f} "
              f"{r['ratio_to_limit']:>5.2f} {r['sim_wall_s']:>6.1f}")
    print(json.dumps({"bench": "screening", "runs": runs}))
    return 0 if all(r["status"] == "completed" for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
