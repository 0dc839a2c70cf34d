"""The cluster a campaign runs on: `--cluster local` (a `distributed.LocalCluster` of
`--cluster-workers` processes, one thread each, started for the command and closed with
it) or `--cluster tcp://HOST:PORT` (a running scheduler; its workers are not ours).

Dask, not a home-made scheduler: it restarts a dead worker (the nanny), reschedules the
tasks that died with it, and reaches a machine room with the same code as a laptop. Each
shard is one long task that holds a simulated clock, so the scheduler decides placement
only (a handful of tasks per run), never the per-sample path."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from lipon_hw.errors import InputError, LiponError
from lipon_hw.extras import needs

#: how long a scheduler's address is given to answer
CONNECT_TIMEOUT_S = 10.0
SCHEMES = ("tcp", "tls", "inproc", "ucx", "ws", "wss")


@dataclass
class Cluster:
    """A connected Dask client (`client`) and, for `--cluster local`, the cluster it
    started. `slots`: the worker threads there are, the default number of shards.
    `on_cycle`: a picklable callable sent with every shard, told (channel, completed
    cycles) in the worker as each cycle ends (None: nothing). `reports`: what each shard
    of the last campaign returned (`shards.run_shard`), with the wall times (time.time)
    it was submitted and its end was heard (`submitted`, `heard`)."""

    spec: str
    client: object
    local: object | None = None
    on_cycle: object | None = None
    reports: list = field(default_factory=list)

    @property
    def slots(self) -> int:
        return max(1, sum(self.client.nthreads().values()))

    @property
    def address(self) -> str:
        return self.client.scheduler.address


def check_spec(spec: str, workers: int | None) -> str:
    """`local` or a scheduler's address, checked before anything starts."""
    text = spec.strip()
    if text == "local":
        return text
    if workers is not None:
        raise InputError(f"--cluster-workers sizes a local cluster; {spec} is a running "
                         "scheduler, whose workers are started where they run")
    parts = urlsplit(text)
    if parts.scheme not in SCHEMES or not parts.netloc:
        raise InputError(f"--cluster {spec!r} is neither `local` nor a Dask scheduler's "
                         "address (tcp://HOST:8786)")
    return text


@contextlib.contextmanager
def open_cluster(spec: str | None, workers: int | None = None) -> Iterator[Cluster | None]:
    """The cluster `spec` names, for the length of the block (None: no cluster, the
    default worker processes). A scheduler that does not answer is one sentence."""
    if spec is None:
        if workers is not None:
            raise InputError("--cluster-workers sizes --cluster local; give --cluster too")
        yield None
        return
    spec = check_spec(spec, workers)
    with needs("cluster", "--cluster"):
        import distributed
    if spec == "local":
        n = workers or os.cpu_count() or 1
        local = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                         dashboard_address=":0", silence_logs=logging.ERROR)
        client = distributed.Client(local)
    else:
        local = None
        try:
            client = distributed.Client(spec, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            raise LiponError(f"the Dask scheduler at {spec} did not answer within "
                             f"{CONNECT_TIMEOUT_S:g} s ({exc})") from None
        try:
            client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError):
            client.close()
            raise LiponError(f"the Dask scheduler at {spec} has no workers (none joined "
                             f"within {CONNECT_TIMEOUT_S:g} s): start some with `dask worker "
                             f"{spec} --nthreads 1`") from None
    cluster = Cluster(spec, client, local)
    try:
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            client.close()
        if local is not None:
            with contextlib.suppress(Exception):
                local.close()
