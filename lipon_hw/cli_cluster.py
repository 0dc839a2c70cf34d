"""The command line's Dask options (`--cluster`, `--cluster-workers`, on `run` and
`resume`) and the cluster a command opens with them (`lipon_hw.cluster.connect`)."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

import click

from lipon_hw.errors import InputError


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
