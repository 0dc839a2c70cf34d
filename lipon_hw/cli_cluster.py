"""The command line's Dask options (`--cluster`, `--cluster-workers`, on `run`, `resume`
and `sweep`), the cluster a command opens with them (`lipon_hw.cluster.connect`), and
`lipon-hw sweep` (`lipon_hw.cluster.sweep`)."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

import click

from lipon_hw.cli_options import (
    SEED,
    SPEED,
    data_option,
    json_option,
    reports_errors,
    shipped_sequence,
)
from lipon_hw.errors import InputError, StoreUnusable


def cluster_options(fn):
    fn = click.option("--cluster-workers", type=click.IntRange(min=1),
                      help="With --cluster local: its worker processes, one thread each "
                           "(default: one per core).")(fn)
    return click.option("--cluster", "cluster", metavar="local|tcp://HOST:PORT",
                        help="Spread a cell test's channels (a sweep's runs) over a Dask "
                             "cluster: `local` starts one on this machine, an address "
                             "joins a running scheduler. --workers then sets the shards "
                             "(default: one per worker thread).")(fn)


@contextlib.contextmanager
def on_cluster(kind, spec: str | None, workers: int | None) -> Iterator[object | None]:
    """The cluster the command asked for, for the length of the block (None without
    --cluster). A kind that cannot spread over one refuses it before anything starts.
    A local cluster's processes ignore Ctrl-C: the engine stops their shards itself (each
    disconnects its cells and stores its channels' end), as it stops its own workers."""
    if spec is not None and kind is not None and not kind.spreads_on_cluster:
        raise InputError(f"--cluster spreads a cell test's channels or a sweep's runs; a "
                         f"{kind.name} run is driven by one engine (use `lipon-hw sweep` "
                         "for its variants)")
    from lipon_hw.cluster.connect import open_cluster

    with contextlib.ExitStack() as stack:
        with _ctrl_c_ignored_by_children(spec == "local"):
            cluster = stack.enter_context(open_cluster(spec, workers))
        yield cluster


@contextlib.contextmanager
def _ctrl_c_ignored_by_children(ignored: bool) -> Iterator[None]:
    """SIGINT ignored while the processes are started (they keep it ignored)."""
    old = signal.signal(signal.SIGINT, signal.SIG_IGN) if ignored else None
    try:
        yield
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old)


@click.command(name="sweep")
@click.argument("sequence", type=click.Path(dir_okay=False), callback=shipped_sequence)
@click.option("--vary", "vary", multiple=True, metavar="KEY=V1,V2,…",
              help="Values of one key, each a run; several --vary make their product. KEY: "
                   "a name (the first place the file sets it, e.g. power_W) or a path as "
                   "errors name it (steps[5].rf.power_W).")
@click.option("--vary-file", type=click.Path(dir_okay=False),
              help="A sweep file, `vary: {KEY: [values…], …}`, instead of or beside --vary.")
@click.option("--station", "station_path", type=click.Path(dir_okay=False),
              help="Station file (default: the built-in simulated lab).")
@data_option
@click.option("--seed", type=SEED, help="Seed of the simulated lab, every variant's.")
@click.option("--speed", type=SPEED, help="As for `run`.")
@click.option("--workers", type=click.IntRange(min=1),
              help="Cell tests without --cluster: each run's processes (as for `run`).")
@cluster_options
@json_option
@reports_errors
def sweep(sequence, vary, vary_file, station_path, data_dir, seed, speed, workers, cluster,
          cluster_workers, as_json) -> None:
    """Run SEQUENCE once per combination of the --vary values, each a run of its own:
    one after the other, or side by side on a Dask cluster (--cluster). Every variant is
    checked before any runs."""
    import json

    from lipon_hw.cli import _stop_on_sigterm
    from lipon_hw.cluster import sweep as sw
    from lipon_hw.kinds import for_sequence
    from lipon_hw.station import load_station
    from lipon_hw.store import Store
    from lipon_hw.store_location import resolve

    kind = for_sequence(sequence)
    varied = sw.parse_vary(list(vary))
    if vary_file is not None:
        for key, values in sw.vary_file(vary_file).items():
            if key in varied:
                raise InputError(f"--vary {key} is also in {vary_file}; give it once")
            varied[key] = values
    station = load_station(station_path)
    if cluster is not None and not station.in_process:
        raise InputError("--cluster runs a sweep's variants side by side, each on a "
                         "simulated lab of its own; real instruments run one variant at a "
                         "time: drop --cluster")
    location = resolve(data_dir)  # --store, LIPON_HW_STORE, or what the directory holds
    address = location.target if location.is_postgresql else None
    try:
        store = Store(data_dir, read_only=True) if sw.has_store(data_dir) else None
    except StoreUnusable:
        if not location.is_postgresql:
            raise
        store = None  # a PostgreSQL store not made yet: it holds nothing to check against
    try:  # checked against what the store holds (samples), nothing written before all pass
        planned = sw.plan(kind, sequence, varied, station, store)
    finally:
        if store is not None:
            store.close()
    Store(data_dir, store=address or "sqlite").close()  # made once, before the variants
    if not as_json:
        for target in planned.targets:
            click.echo(f"{target.key}: {sequence}:{target.line}: {target.field}", err=True)
        click.echo(f"{len(planned.variants)} runs of {sequence}"
                   + (f" on {cluster}" if cluster else ""), err=True)
    todo = sw.orders(planned, data_dir, address, station.text, seed, speed,
                     1 if cluster else workers, own_labs=cluster is not None)

    def heard(outcome: dict) -> None:
        if not as_json:
            run = f"run {outcome['run_id']}" if outcome["run_id"] is not None else "no run"
            click.echo(f"variant {outcome['variant']} ({outcome['values']}): {run} "
                       f"{outcome['status']}: {outcome['message']}")

    with _stop_on_sigterm(), on_cluster(None, cluster, cluster_workers) as on:
        done = sw.run_on(on, todo, heard) if on is not None else sw.run_here(todo, heard)
    if as_json:
        click.echo(json.dumps({"sweep": todo[0].sweep, "runs": done}))
    if any(o["status"] != "completed" for o in done):
        raise SystemExit(1)


def register(main) -> None:
    main.add_command(sweep)
