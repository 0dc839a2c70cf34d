"""Cycling benchmark: the thesis LNMO protocol on 16 channels, 600 cycles, recorded every
30 s or 5 mV.

Full path: `sequences/lnmo_cycling.yaml` through the engine (worker processes, SQLite
store), the MethodSCRIPT driver, its Links, the MultiEmStat4 emulator and the simulated
cells. Cell alone: the same cells under the same currents and limits, with the same
record rule, computed by the cell model without any instrument (no EIS), in one process.
The full path also runs a shorter campaign first, so peak memory at 100 and at 600
cycles can be compared.

Per core: the machine may be shared, so the comparison is made in CPU time, not wall
time. The full path's CPU time is the campaign process's (the engine: its watch loop,
the summary, the plots) plus its worker processes' (RUSAGE_CHILDREN, each worker's own
process time summed; the plots are drawn by the engine, not by the helper `lipon-hw run`
starts, whose memory would be taken for a worker's); divided by the samples stored, it
is what one core spends per sample, to set against the cell model alone's CPU time per
sample in one process (`per_core_ratio`), and against the cell model run on every core
at once, its channels shared as the workers share them (`per_core_ratio_every_core_busy`:
cores that share caches and memory bandwidth are each slower when all are busy). The
wall-time ratio of the old report (two workers against one process) is kept as
`wall_ratio`, and `wall_ratio_per_core` is it times the workers. Beside the whole
campaign's figure, what a sample costs beyond what any campaign costs once (the workers'
start and imports, the impedance spectra and their fits, the summary): the long
campaign's CPU less the short one's (`--short`), over the samples it has more
(`marginal_cpu_us_per_sample`), against the same of the cell model alone
(`per_core_ratio_marginal`).

    python bench/cycling.py [--cycles 600] [--channels 16] [--workers N] [--repeat N]

`--repeat N` runs the cell model alone and the full campaign (and the short one) N times
each (alternately)
and reports the medians: the median CPU time per sample of each, and the run of median
wall time (each run's wall and CPU figures are in the JSON too).

Prints figures, then one JSON line holding them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from lipon_hw.celltest.groups import split
from lipon_hw.celltest.session import start_cycling
from lipon_hw.sim.cells.factories import cell_from_films, default_layers
from lipon_hw.sim.recording import record_constant_current

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = ROOT / "sequences" / "lnmo_cycling.yaml"


def protocol(cycles: int, channels: int, directory: Path) -> Path:
    """The shipped protocol with its campaign length and channel count changed."""
    data = yaml.safe_load(PROTOCOL.read_text(encoding="utf-8"))
    data["channels"] = f"1-{channels}"
    data["termination"]["cycles"] = cycles
    for step in data["steps"]:
        if "loop" in step and step["loop"]["to"] == "cycle":
            step["loop"]["times"] = max(1, cycles - 2)
    path = directory / f"lnmo_{cycles}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def peak_rss_MB() -> dict:
    kb = 1024.0  # ru_maxrss is in kB on Linux
    return {"engine_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / kb,
            "workers_MB": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / kb}


def cpu_s(who: int) -> float:
    """User + system CPU seconds of this process (RUSAGE_SELF) or of its children that
    have ended (RUSAGE_CHILDREN: each worker's process time, summed)."""
    use = resource.getrusage(who)
    return use.ru_utime + use.ru_stime


def full_path(cycles: int, channels: int, workers: int | None, directory: Path) -> dict:
    """One campaign in a fresh interpreter and a data directory of its own, so its peak
    memory (engine and workers) and its samples are its own (a repeat in the same data
    directory counted both runs' samples, halving the figures per sample)."""
    data = directory / f"data_{cycles}_{len(list(directory.glob(f'data_{cycles}_*')))}"
    args = [sys.executable, __file__, "--campaign", str(protocol(cycles, channels, directory)),
            str(data)] + ([str(workers)] if workers else [])
    proc = subprocess.run(args, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def campaign(path: str, data: Path, workers: int | None) -> dict:
    engine0, workers0 = cpu_s(resource.RUSAGE_SELF), cpu_s(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    result = start_cycling(path, data, workers=workers)
    wall = time.perf_counter() - wall
    engine_cpu = cpu_s(resource.RUSAGE_SELF) - engine0
    workers_cpu = cpu_s(resource.RUSAGE_CHILDREN) - workers0
    con = sqlite3.connect(data / "lipon.db")
    # a block is what one poll brought of one step (a poll of a cycle run as one program
    # brings a block of each step it finds)
    samples, blocks = con.execute("SELECT SUM(n), COUNT(*) FROM cell_blocks").fetchone()
    con.close()
    db_MB = (data / "lipon.db").stat().st_size / 1e6
    channel_h = sum(ch["t_s"] for ch in _channels(data, result.run_id)) / 3600
    done = [ch["cycles"] for ch in result.summary["channels"]]
    ce = [ch["mean_coulombic_efficiency"] for ch in result.summary["channels"]]
    return {"status": result.status, "wall_s": wall, "campaign_h": result.t_s / 3600,
            "channel_h": channel_h, "channel_h_per_wall_s": channel_h / wall,
            "samples": samples, "samples_per_s": samples / wall, "db_MB": db_MB,
            "cell_blocks": blocks,
            "engine_cpu_s": engine_cpu, "workers_cpu_s": workers_cpu,
            "cpu_s": engine_cpu + workers_cpu,
            "cpu_us_per_sample": (engine_cpu + workers_cpu) / samples * 1e6,
            "workers_cpu_us_per_sample": workers_cpu / samples * 1e6,
            "cycles_min": min(done), "cycles_max": max(done),
            "mean_ce_min": min(ce), **peak_rss_MB()}


def _channels(data: Path, run_id: int) -> list[dict]:
    con = sqlite3.connect(data / "lipon.db")
    rows = con.execute("SELECT channel, t_s FROM channels WHERE run_id=?", (run_id,)).fetchall()
    con.close()
    return [{"channel": c, "t_s": t} for c, t in rows]


def cell_alone(cycles: int, channels: int, seed: int = 1,
               which: list[int] | None = None) -> dict:
    """The protocol's constant-current steps on the cells themselves (channels 1 …
    `channels`, or those in `which`)."""
    spec = yaml.safe_load(PROTOCOL.read_text(encoding="utf-8"))
    record = spec["record"]
    dt, dV = record["every_s"], record["every_mV"] * 1e-3
    formation = [(1.5e-7, 15 * 3600)] * 2
    fast = [(3.0e-6, 2 * 3600)] * max(1, cycles - 2)
    wall, cpu = time.perf_counter(), time.process_time()
    samples, channel_s = 0, 0.0
    for ch in which or range(1, channels + 1):
        cell = cell_from_films("lnmo", default_layers("lnmo"), 0.049,
                               rng=np.random.default_rng([seed, ch]))
        t = 0.0
        for current, max_s in formation + fast:
            for signed, v_min, v_max in ((current, None, 5.1), (-current, 3.5, None)):
                rec = record_constant_current(cell, t, signed, v_min, v_max, 1.0, dt, dV, max_s)
                samples += len(rec.t_s)
                t += float(rec.t_s[-1]) if len(rec.t_s) else max_s
        channel_s += t
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {"wall_s": wall, "cpu_s": cpu, "channel_h": channel_s / 3600,
            "channel_h_per_wall_s": channel_s / 3600 / wall, "samples": samples,
            "samples_per_s": samples / wall, "cpu_us_per_sample": cpu / samples * 1e6,
            "peak_MB": kb}


def cell_alone_on_every_core(cycles: int, channels: int, workers: int) -> dict:
    """The cell model alone, its channels shared as the full path shares them among
    `workers` processes running at once: what a core spends per sample of the model when
    every core is busy (cores share caches and memory bandwidth)."""
    import multiprocessing

    groups = split(list(range(1, channels + 1)), workers)  # as the engine shares them
    with multiprocessing.get_context("spawn").Pool(len(groups)) as pool:
        parts = pool.starmap(cell_alone, [(cycles, channels, 1, g) for g in groups])
    samples, cpu = sum(p["samples"] for p in parts), sum(p["cpu_s"] for p in parts)
    return {"workers": workers, "samples": samples, "cpu_s": cpu,
            "wall_s": max(p["wall_s"] for p in parts), "cpu_us_per_sample": cpu / samples * 1e6}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=600)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--short", type=int, default=100, help="cycles of the memory comparison run")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each; medians reported")
    ap.add_argument("--campaign", nargs="+", help=argparse.SUPPRESS)  # PATH DATA [WORKERS]
    args = ap.parse_args()
    if args.campaign:
        path, data, *workers = args.campaign
        print(json.dumps(campaign(path, Path(data), int(workers[0]) if workers else None)))
        return 0

    repeat = max(1, args.repeat)
    workers = args.workers or os.cpu_count() or 1
    alone = cell_alone(args.cycles, args.channels)
    print(f"cell model alone: {alone['samples']} samples, {alone['channel_h']:.0f} channel-h in "
          f"{alone['wall_s']:.1f} s wall, {alone['cpu_s']:.1f} s CPU "
          f"({alone['cpu_us_per_sample']:.2f} µs CPU per sample), peak {alone['peak_MB']:.0f} MB")
    every_core = cell_alone_on_every_core(args.cycles, args.channels, workers)
    print(f"cell model alone on {workers} cores at once: {every_core['cpu_s']:.1f} s CPU "
          f"({every_core['cpu_us_per_sample']:.2f} µs CPU per sample)")
    with tempfile.TemporaryDirectory() as tmp:
        short = full_path(args.short, args.channels, args.workers, Path(tmp))
        print(f"full path, {args.short} cycles: {short['wall_s']:.1f} s wall, "
              f"{short['cpu_us_per_sample']:.2f} µs CPU per sample; peak engine "
              f"{short['engine_MB']:.0f} MB, workers {short['workers_MB']:.0f} MB")
        fulls = [full_path(args.cycles, args.channels, args.workers, Path(tmp))]
        alones, shorts = [alone], [short]
        short_alones = [cell_alone(args.short, args.channels)]
        for _ in range(repeat - 1):
            alones.append(cell_alone(args.cycles, args.channels))
            fulls.append(full_path(args.cycles, args.channels, args.workers, Path(tmp)))
            shorts.append(full_path(args.short, args.channels, args.workers, Path(tmp)))
            short_alones.append(cell_alone(args.short, args.channels))
    full, alone = _median_run(fulls), _median_run(alones)
    full_us = _median([f["cpu_us_per_sample"] for f in fulls])
    workers_us = _median([f["workers_cpu_us_per_sample"] for f in fulls])
    alone_us = _median([a["cpu_us_per_sample"] for a in alones])
    print(f"full path, {args.channels} channels × {args.cycles} cycles: {full['status']} in "
          f"{full['wall_s']:.1f} s wall; {full['campaign_h']:.0f} h of campaign "
          f"({full['campaign_h'] / full['wall_s']:.0f} simulated h per wall s, "
          f"{full['channel_h_per_wall_s']:.0f} channel-h/s); {full['samples']} samples "
          f"({full['samples_per_s']:.0f}/s, {full['cell_blocks']} blocks: a poll's samples "
          "of a step), "
          f"database {full['db_MB']:.0f} MB; cycles "
          f"{full['cycles_min']}–{full['cycles_max']}, mean CE ≥ {full['mean_ce_min']:.5f}")
    print(f"CPU: engine {full['engine_cpu_s']:.1f} s, {workers} workers "
          f"{full['workers_cpu_s']:.1f} s in all")
    print(f"peak memory: engine {full['engine_MB']:.0f} MB, each worker ≤ "
          f"{full['workers_MB']:.0f} MB (after {args.short} cycles: {short['workers_MB']:.0f} MB)")
    per_core = full_us / alone_us
    busy_us = every_core["cpu_us_per_sample"]
    print(f"per core: the full path {full_us:.2f} µs CPU per sample (its workers "
          f"{workers_us:.2f}), the cell model alone {alone_us:.2f}: {per_core:.2f}×; "
          f"with every core busy for both, {full_us / busy_us:.2f}×")
    # what a sample costs beyond what every campaign costs once (the workers' start and
    # imports, the impedance spectra and their fits, the summary; the formation cycles
    # both have): the long campaign's CPU less the short one's, over the samples it has
    # more; the same for the cell model alone (the same cycles: only fast ones differ)
    marginal_us = _marginal_us(fulls, shorts)
    alone_marginal_us = _marginal_us(alones, short_alones)
    print(f"beyond what a campaign of {args.short} cycles costs (workers' start, imports, "
          f"spectra, fits, summary, formation): {marginal_us:.2f} µs CPU per sample, the "
          f"cell model alone {alone_marginal_us:.2f}: {marginal_us / alone_marginal_us:.2f}×")
    wall_ratio = alone["samples_per_s"] / full["samples_per_s"]
    print(f"wall: full path ({workers} workers) / cell alone (one process): {wall_ratio:.2f}× "
          f"the time per sample, {wall_ratio * workers:.2f}× per core")
    print(json.dumps({"bench": "cycling", "channels": args.channels, "cycles": args.cycles,
                      "workers": workers, "full_path": _rounded(full),
                      "short_run": _rounded(short), "cell_alone": _rounded(alone),
                      "full_cpu_us_per_sample": round(full_us, 3),
                      "workers_cpu_us_per_sample": round(workers_us, 3),
                      "alone_cpu_us_per_sample": round(alone_us, 3),
                      "per_core_ratio": round(per_core, 2),
                      "marginal_cpu_us_per_sample": round(marginal_us, 3),
                      "alone_marginal_cpu_us_per_sample": round(alone_marginal_us, 3),
                      "per_core_ratio_marginal": round(marginal_us / alone_marginal_us, 2),
                      "short_cpu_s_each": [round(s["cpu_s"], 3) for s in shorts],
                      "alone_every_core_cpu_us_per_sample": round(busy_us, 3),
                      "per_core_ratio_every_core_busy": round(full_us / busy_us, 2),
                      "wall_ratio": round(wall_ratio, 2),
                      "wall_ratio_per_core": round(wall_ratio * workers, 2),
                      "peak_worker_MB": {str(args.short): round(short["workers_MB"], 1),
                                         str(args.cycles): round(full["workers_MB"], 1)},
                      "runs": repeat, "full_wall_s_each": [round(f["wall_s"], 3) for f in fulls],
                      "full_cpu_s_each": [round(f["cpu_s"], 3) for f in fulls],
                      "alone_wall_s_each": [round(a["wall_s"], 3) for a in alones],
                      "alone_cpu_s_each": [round(a["cpu_s"], 3) for a in alones]}))
    return 0 if all(f["status"] == "completed" for f in fulls) else 1


def _marginal_us(longs: list[dict], shorts: list[dict]) -> float:
    """CPU µs per sample of the long runs beyond the short ones (medians of each)."""
    extra_cpu = _median([r["cpu_s"] for r in longs]) - _median([r["cpu_s"] for r in shorts])
    return extra_cpu / (longs[0]["samples"] - shorts[0]["samples"]) * 1e6


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])


def _median_run(runs: list[dict]) -> dict:
    """The run of median wall time (the lower middle one of an even count)."""
    ordered = sorted(runs, key=lambda r: r["wall_s"])
    return ordered[(len(ordered) - 1) // 2]


def _rounded(d: dict) -> dict:
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in d.items()}


if __name__ == "__main__":
    sys.exit(main())
