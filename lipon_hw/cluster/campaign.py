"""A cell test's channels on a Dask cluster, watched from the run's own process: one
shard (`shards.run_shard`) per group of channels, each a long-lived task with its own
clock writing to the run's store; their progress and alarms read back from the store as
the run goes on, as for the worker processes of `celltest.workers`, and their samples
passed on to the live view through the scheduler (`live`).

A worker that dies takes its shard with it; Dask gives the task to another worker, which
takes the shard's channels up from their last step boundary (`shards`). Ctrl-C or
SIGTERM on the engine sets the campaign's stop event: every shard stops its channels
(`interrupted`, cells off) and the engine waits for them before it ends the run."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict

from lipon_hw.celltest import relay
from lipon_hw.celltest.channels import ChannelState
from lipon_hw.cluster import live
from lipon_hw.cluster.connect import Cluster
from lipon_hw.cluster.shards import ShardOrder, run_shard, store_address
from lipon_hw.engine.lifecycle import unsafe_sentence
from lipon_hw.errors import InstrumentError
from lipon_hw.store import Store

#: wall seconds between two looks at the store while the shards run
WATCH_EVERY_S = 0.5
#: how long the engine waits for stopped shards to disconnect their cells and say so
STOP_WAIT_S = 120.0


def run_shards(cluster: Cluster, store: Store, run_id: int, groups: list[list[int]],
               states: dict[int, ChannelState], seed: int | None, speed: float | None,
               on_cycle=None, poll: Callable[[], None] | None = None) -> list[dict]:
    """Every group as a shard on `cluster`, to their end; what each shard did (its last
    attempt). `on_cycle` (channel, completed cycles) and `poll` (the alarm relay) are
    called each time the watching loop goes round; the cluster's own `on_cycle` travels
    with the shards (`ShardOrder.on_cycle`)."""
    import distributed

    client = cluster.client
    for group in groups:  # what the shards take up; an ended status is from now on theirs
        for n in group:
            st = states[n]
            store.update_channel(run_id, n, "running", "", st.cycle, st.step_count, st.t_s,
                                 asdict(st))
    store.flush()
    token = uuid.uuid4().hex[:12]
    stop = distributed.Event(f"lipon-hw run {run_id} stop {token}", client=client)
    before = set(store.alarms(run_id))
    address = store_address(store)
    inbox_name, flag_name = live.names(run_id, token)
    inbox = live.Inbox(inbox_name, client)
    publishing = live.Flag(flag_name, client, 1 if store.taps else 0)
    submitted = time.time()
    heard: dict[str, float] = {}
    futures = [client.submit(run_shard, ShardOrder(str(store.data_dir), address, run_id,
                                                   tuple(group), seed, speed, stop.name,
                                                   cluster.on_cycle, (inbox_name, flag_name),
                                                   store.epoch(run_id), f"{k + 1} {token}"),
                             key=f"lipon-hw run {run_id} shard {k + 1} of {len(groups)} {token}",
                             pure=False)
               for k, group in enumerate(groups)]
    for future in futures:
        future.add_done_callback(lambda f: heard.setdefault(f.key, time.time()))
    try:
        while not all(f.done() for f in futures):
            with contextlib.suppress(distributed.TimeoutError):
                distributed.wait(futures, timeout=WATCH_EVERY_S)
            relay.pass_on(store, inbox, publishing)
            _look(store, run_id, on_cycle, poll)
        relay.pass_on(store, inbox, publishing)
        _look(store, run_id, on_cycle, poll)
    except BaseException:  # Ctrl-C, SIGTERM, this process failing: no shard runs on
        stop.set()  # unwatched; each disconnects its cells and stores its channels' end
        distributed.wait(futures, timeout=STOP_WAIT_S)
        raise
    cluster.reports = [{**report, "submitted": submitted, "heard": heard.get(f.key)}
                       for report, f in zip(_results(store, run_id, groups, futures, before),
                                            futures, strict=True)]
    return cluster.reports


def _look(store: Store, run_id: int, on_cycle, poll) -> None:
    store.keep_claims()  # this process only watches: its claims kept all the same
    if poll is not None:
        poll()
    if on_cycle:
        for channel, cycle in store.channel_cycles(run_id):
            on_cycle(channel, max(cycle - 1, 0))


def _results(store: Store, run_id: int, groups: list[list[int]], futures: list,
             before: set) -> list[dict]:
    """What the shards returned; a shard that failed (or whose workers kept dying) is an
    alarm, and the run's end in its own words."""
    done, failed = [], []
    for group, future in zip(groups, futures, strict=True):
        if future.status == "finished":
            done.append(future.result())
            continue
        exc = future.exception()
        why = f"{type(exc).__name__}: {exc}" if not str(exc).startswith(type(exc).__name__) \
            else str(exc)
        failed.append(f"the shard of channels {channel_span(group)} ended with {why}")
    for message in failed:
        store.add_alarm(run_id, 0.0, "error", "engine", message)
    if failed:
        unsafe = [a.message for a in store.alarms(run_id)
                  if a not in before and a.reaction == "safe state" and a.severity == "error"]
        raise InstrumentError(unsafe_sentence(unsafe) if unsafe else "; ".join(failed))
    return done


def channel_span(group: list[int], shown: int = 8) -> str:
    """Channels as a person reads them: 1-4, 9 (the first few runs of them)."""
    runs, start = [], None
    ordered = sorted(group)
    for i, n in enumerate(ordered):
        if start is None:
            start = n
        if i + 1 == len(ordered) or ordered[i + 1] != n + 1:
            runs.append(str(start) if start == n else f"{start}-{n}")
            start = None
    more = f" … ({len(ordered)} channels)" if len(runs) > shown else ""
    return ", ".join(runs[:shown]) + more
