"""Scale benchmark (issue 15, 4): (a) the 16 × 600 campaign on this machine through the
full path, against the cell model alone; (b) a campaign of many simulated LNMO cells on a
Dask LocalCluster of 1 and of 2 workers; (c) the wall time projected for 100 workers.

(a) is `bench/cycling.py`'s campaign (the shipped thesis protocol, 16 channels × 600
cycles, one worker process per core, SQLite): wall time, CPU per sample of the full path
(the engine and its workers) per core against the cell model alone's, and peak worker
memory at 100 and at 600 cycles (flat in the number of cycles). `--skip-one-machine`
leaves it out.

(b) The shipped thesis protocol (`sequences/lnmo_cycling.yaml`: impedance, two formation
cycles at C/10, then 3 µA cycles; `--short`: the 3 µA cycles alone) cut to `--cycles`,
on `--cells` channels of one
simulated potentiostat (a generated station whose `mes4` is a bank of that many cells),
run through the full path (`lipon-hw run --cluster local`: engine, shards, driver, links,
emulator, cells, store). Per worker count: samples/s, channel-hours per wall second,
per-worker efficiency (the 2-worker rate per worker over the 1-worker rate), scheduler
overhead per task (from submission to the shard's start, plus from its end to the engine
hearing of it; and a batch of empty tasks for Dask's own cost), peak memory per worker
(each shard's worker process, `ru_maxrss`) and of the engine (which also holds the local
scheduler). Every channel's samples are checked to be there once (no (channel, t_s) twice).

(c) From (b): wall time on 100 workers, assuming each worker keeps the per-worker rate
measured at 2 workers (shards share nothing but the store), plus what a shard costs
before its first sample (the station loaded, the bank's cells built) — and a store that
takes 100 workers' samples (PostgreSQL; one SQLite file is a single writer).

    python bench/scale.py [--cells 10000] [--cycles 50] [--short] [--workers 1,2]
                          [--shards N] [--store URL] [--skip-one-machine]

`--shards N` splits the bank into N shards (default: one per worker): a shard's memory
grows with its channels, and more shards than workers queue on them.

`--store postgresql://…` puts the runs in a PostgreSQL store (the `pgstore` back end);
default: each run's data directory's SQLite file. Prints figures, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = ROOT / "sequences" / "lnmo_cycling.yaml"
STATION = ROOT / "lipon_hw" / "data" / "sim_lab.yaml"
#: 100 workers, the projection's
PROJECTED_WORKERS = 100
#: empty tasks timed for Dask's own cost per task
EMPTY_TASKS = 200


def files(cells: int, cycles: int, directory: Path, short: bool = False
          ) -> tuple[Path, Path]:
    """The station with its potentiostat a bank of `cells` LNMO cells, and the protocol
    on all of them for `cycles` cycles (`short`: its 3 µA cycles only, no impedance step
    and no formation cycles)."""
    station = yaml.safe_load(STATION.read_text(encoding="utf-8"))
    mes4 = station["instruments"]["mes4"]
    mes4["address"] = f"sim://mes4/{{1-{cells}}}"
    mes4["sim"]["cells"] = {f"1-{cells}": {"kind": "lnmo"}}
    station_path = directory / "station.yaml"
    station_path.write_text(yaml.safe_dump(station, sort_keys=False), encoding="utf-8")
    proto = yaml.safe_load(PROTOCOL.read_text(encoding="utf-8"))
    proto["channels"] = f"1-{cells}"
    proto["termination"]["cycles"] = cycles
    if short:
        steps = proto["steps"]
        proto["steps"] = steps[steps.index({"tag": "cycle"}):]
        proto["termination"]["reference_cycle"] = 1
        proto["name"] += " (3 µA cycles only)"
    for step in proto["steps"]:
        if "loop" in step and step["loop"]["to"] == "cycle":
            step["loop"]["times"] = cycles if short else max(1, cycles - 2)
    proto_path = directory / f"lnmo_{cells}x{cycles}.yaml"
    proto_path.write_text(yaml.safe_dump(proto, sort_keys=False), encoding="utf-8")
    return station_path, proto_path


def _noop(i: int) -> int:
    return i


def empty_task_s(client) -> float:
    """Wall seconds per empty task, submitted and gathered as one batch."""
    t = time.perf_counter()
    client.gather(client.map(_noop, range(EMPTY_TASKS), pure=False))
    return (time.perf_counter() - t) / EMPTY_TASKS


def campaign(workers: int, cells: int, cycles: int, store: str | None, tmp: Path,
             short: bool = False, shards: int | None = None) -> dict:
    """One campaign on a LocalCluster of `workers` processes, in this process."""
    from lipon_hw.celltest.session import start_cycling
    from lipon_hw.cluster.connect import open_cluster
    from lipon_hw.store import Store

    directory = tmp / f"w{workers}"
    directory.mkdir()
    station, proto = files(cells, cycles, directory, short)
    data = directory / "data"
    if store is not None:
        os.environ["LIPON_HW_STORE"] = store  # the pgstore back end reads it (--store)
    t0 = time.perf_counter()
    with open_cluster("local", workers) as cluster:
        up_s = time.perf_counter() - t0
        cluster.client.run(__import__, "lipon_hw.cluster.shards")
        per_empty = empty_task_s(cluster.client)
        load0, began = os.getloadavg()[0], time.time()
        wall = time.perf_counter()
        result = start_cycling(str(proto), data, station_path=str(station), cluster=cluster,
                               workers=shards)
        wall = time.perf_counter() - wall
        finished = time.time()
        reports = cluster.reports
    looked = Store(data, read_only=True)
    try:
        samples, twice, with_samples = looked.sample_census(result.run_id)
        channel_s = sum(c.t_s for c in looked.channels(result.run_id))
    finally:
        looked.close()
    done = [ch["cycles"] for ch in result.summary["channels"]]
    shard_s = [r["ended"] - r["started"] for r in reports]
    overhead = [(r["started"] - r["submitted"]) + (r["heard"] - r["ended"]) for r in reports]
    return {"workers": workers, "status": result.status, "wall_s": wall,
            "cluster_start_s": up_s, "samples": samples, "samples_per_s": samples / wall,
            "samples_twice": twice, "cells_with_samples": with_samples,
            "channel_h": channel_s / 3600,
            "channel_h_per_wall_s": channel_s / 3600 / wall,
            "cycles_min": min(done), "cycles_max": max(done), "shards": len(reports),
            "shard_wall_s": shard_s, "shard_cpu_s": [r["cpu_s"] for r in reports],
            "engine_before_shards_s": min(r["submitted"] for r in reports) - began,
            "engine_after_shards_s": finished - max(r["heard"] for r in reports),
            "cpu_s_per_1k_samples": sum(r["cpu_s"] for r in reports) / samples * 1e3,
            "load_average": [round(load0, 2), round(os.getloadavg()[0], 2)],
            "scheduler_overhead_per_task_s": sum(overhead) / len(overhead),
            "empty_task_s": per_empty,
            "peak_worker_MB": max(r["peak_rss_MB"] for r in reports),
            "engine_peak_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}


def on_this_machine(cycles: int = 600, channels: int = 16, short: int = 100) -> dict:
    """(a): `bench/cycling.py`'s campaign through the full path, and the cell model alone."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import cycling

    alone = cycling.cell_alone(cycles, channels)
    with tempfile.TemporaryDirectory() as tmp:
        before = cycling.full_path(short, channels, None, Path(tmp))
        full = cycling.full_path(cycles, channels, None, Path(tmp))
    per_core = full["cpu_us_per_sample"] / alone["cpu_us_per_sample"]
    print(f"(a) {channels} channels × {cycles} cycles on this machine ({os.cpu_count()} "
          f"cores): {full['status']} in {full['wall_s']:.1f} s wall, {full['samples']} samples;"
          f" per core the full path {full['cpu_us_per_sample']:.2f} µs CPU per sample, the "
          f"cell model alone {alone['cpu_us_per_sample']:.2f}: {per_core:.2f}×; peak worker "
          f"{before['workers_MB']:.0f} MB after {short} cycles, {full['workers_MB']:.0f} MB "
          f"after {cycles}")
    return {"channels": channels, "cycles": cycles, "status": full["status"],
            "wall_s": round(full["wall_s"], 2), "samples": full["samples"],
            "full_cpu_us_per_sample": round(full["cpu_us_per_sample"], 2),
            "alone_cpu_us_per_sample": round(alone["cpu_us_per_sample"], 2),
            "per_core_ratio": round(per_core, 2),
            "peak_worker_MB": {str(short): round(before["workers_MB"], 1),
                               str(cycles): round(full["workers_MB"], 1)}}


def setup_cost_s(cells: int, tmp: Path) -> float:
    """What a shard pays before its first sample: the bank's station loaded and its
    cells built (measured once, in this process)."""
    from lipon_hw.station import load_station

    station, _ = files(cells, 3, tmp)
    t = time.perf_counter()
    lab = load_station(str(station)).connect(lambda: 0.0, seed=1)
    lab.close()
    return time.perf_counter() - t


def project(runs: list[dict], cells: int, cycles: int, setup_s: float) -> dict:
    """(c): 100 workers at the per-worker rate of the largest cluster measured."""
    last = max(runs, key=lambda r: r["workers"])
    per_worker_ch_h_per_s = last["channel_h_per_wall_s"] / last["workers"]
    work_ch_h = last["channel_h"]
    wall = setup_s + work_ch_h / (per_worker_ch_h_per_s * PROJECTED_WORKERS) \
        + last["scheduler_overhead_per_task_s"]
    return {"workers": PROJECTED_WORKERS, "cells": cells, "cycles": cycles,
            "wall_s": wall, "setup_s": setup_s,
            "store_samples_per_s_needed": last["samples_per_s"] / last["workers"]
            * PROJECTED_WORKERS,
            "assumption": f"each of {PROJECTED_WORKERS} workers keeps the per-worker rate "
                          f"measured at {last['workers']} ({per_worker_ch_h_per_s:.0f} "
                          "channel-h per wall s), one shard each, plus a shard's setup "
                          "(station loaded, bank's cells built) and one task's scheduler "
                          "overhead; the store takes every worker's samples at that rate "
                          "(PostgreSQL: one SQLite file is one writer)"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=10_000)
    ap.add_argument("--cycles", type=int, default=50)
    ap.add_argument("--workers", default="1,2", help="worker counts, comma-separated")
    ap.add_argument("--store", help="postgresql://… (default: SQLite in each data directory)")
    ap.add_argument("--short", action="store_true",
                    help="the protocol's 3 µA cycles only (no impedance, no formation)")
    ap.add_argument("--shards", type=int, default=None,
                    help="shards the bank is split into (default: one per worker)")
    ap.add_argument("--skip-one-machine", action="store_true",
                    help="leave out (a), the 16 × 600 campaign on this machine")
    args = ap.parse_args()
    one_machine = None if args.skip_one_machine else on_this_machine()
    counts = [int(w) for w in args.workers.split(",")]
    if args.store is not None:
        try:
            import lipon_hw.store_location  # noqa: F401 - the PostgreSQL back end
        except ModuleNotFoundError:
            ap.error("--store: this tree's store has no PostgreSQL back end yet (pgstore)")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        setup_s = setup_cost_s(args.cells, Path(tmp))
        print(f"a shard's setup (station of {args.cells} cells loaded, cells built): "
              f"{setup_s:.1f} s")
        for workers in counts:
            run = campaign(workers, args.cells, args.cycles, args.store, Path(tmp), args.short,
                           args.shards)
            runs.append(run)
            print(f"{workers} worker{'s' * (workers > 1)}: {run['status']} in "
                  f"{run['wall_s']:.1f} s; {run['samples']} samples ({run['samples_per_s']:.0f}"
                  f"/s, {run['samples_twice']} twice), {run['channel_h']:.0f} channel-h "
                  f"({run['channel_h_per_wall_s']:.0f}/s); cycles {run['cycles_min']}–"
                  f"{run['cycles_max']}; scheduler {run['scheduler_overhead_per_task_s']:.3f} "
                  f"s per shard (empty task {run['empty_task_s'] * 1e3:.1f} ms); peak "
                  f"worker {run['peak_worker_MB']:.0f} MB, engine {run['engine_peak_MB']:.0f} "
                  "MB")
    base = runs[0]["samples_per_s"] / runs[0]["workers"]
    for run in runs:  # by wall time (what a loaded machine gives), and by CPU per sample
        run["per_worker_efficiency"] = run["samples_per_s"] / run["workers"] / base
        run["per_worker_cpu_efficiency"] = runs[0]["cpu_s_per_1k_samples"] / \
            run["cpu_s_per_1k_samples"]
    projection = project(runs, args.cells, args.cycles, setup_s)
    print("per-worker efficiency (wall; CPU per sample): " + ", ".join(
        f"{r['workers']}: {r['per_worker_efficiency']:.2f}; {r['per_worker_cpu_efficiency']:.2f}"
        for r in runs))
    print("engine before the shards / after them: " + ", ".join(
        f"{r['workers']}: {r['engine_before_shards_s']:.1f} / {r['engine_after_shards_s']:.1f} s"
        for r in runs))
    print(f"projected on {PROJECTED_WORKERS} workers: {projection['wall_s']:.0f} s "
          f"({projection['assumption']})")
    print(json.dumps({"bench": "scale", "cells": args.cells, "cycles": args.cycles,
                      "protocol": "3 µA cycles only" if args.short else "thesis",
                      "store": "postgresql" if args.store else "sqlite",
                      "one_machine": one_machine,
                      "cluster": [_rounded(r) for r in runs], "projected": _rounded(projection)}))
    ok = all(r["status"] == "completed" and r["samples_twice"] == 0
             and r["cells_with_samples"] == args.cells for r in runs)
    ok = ok and (one_machine is None or one_machine["status"] == "completed")
    return 0 if ok else 1


def _rounded(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, float):
            out[k] = round(v, 4)
        elif isinstance(v, list):
            out[k] = [round(x, 3) if isinstance(x, float) else x for x in v]
        else:
            out[k] = v
    return out


if __name__ == "__main__":
    sys.exit(main())
