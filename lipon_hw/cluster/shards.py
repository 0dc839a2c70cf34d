"""One shard of a cell test on a Dask worker: some of the run's channels on a clock of
their own (`celltest.groups.run_group`), written to the run's store — the data
directory's SQLite file, or the PostgreSQL store the run names.

A shard is a task Dask may run twice: when its worker dies, the scheduler gives it to
another. So it never trusts what it was sent but takes its channels up from the store
(`take_up`): a channel that ended (in an earlier attempt) is left alone; any other goes
on from its last step boundary stored, what an attempt wrote after that boundary
forgotten first (`Store.rewind_channel`) — no sample lost, none written twice. The
campaign marked every channel it hands out `running` before the first attempt, so an
ended status can only come from an attempt of this campaign. An earlier attempt may
still be alive (its worker cut off from the scheduler, not from the store) and both hold
the run's worker claim, which is shared: each attempt moves the shard's attempt number
on before it takes its channels up (`Store.take_shard`), and the earlier one's writes are
refused from then on (ShardTakenOver): it stops, its cells off, storing nothing more.

A shard stops early, its channels `interrupted` and its cells off, when the campaign
asks (a Dask `Event`: Ctrl-C or SIGTERM reached the engine) or when its task is no longer
wanted (the engine's client went away); it is asked between stretches of its clock."""

from __future__ import annotations

import dataclasses
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lipon_hw.celltest.channels import ENDED, ChannelState
from lipon_hw.celltest.groups import run_group
from lipon_hw.celltest.plan import load
from lipon_hw.celltest.results import film_figures
from lipon_hw.celltest.session import take_up
from lipon_hw.cluster.live import shard_tap
from lipon_hw.engine import claims
from lipon_hw.engine.operator import OperatorWish
from lipon_hw.engine.ownership import Ownership
from lipon_hw.errors import InputError
from lipon_hw.station import load_station
from lipon_hw.store import DB_NAME, Store

#: how often (wall seconds) a shard asks whether the campaign still wants it
ASK_EVERY_S = 0.5


@dataclass(frozen=True)
class ShardOrder:
    """What a shard is sent: where the run's store is (`store`: a PostgreSQL address, or
    None for the data directory's own SQLite file), which run and channels, the clock.
    `stop`: the name of the campaign's stop event; `on_cycle`: a picklable callable told
    (channel, completed cycles) in the worker; `relay`: where the live view's samples go;
    `epoch`: the driver epoch of the engine that sent it, which its writes keep to
    (`Store.follow`); `shard`: the campaign's name for it, the same for every attempt of
    its task, whose attempt number each attempt moves on (`Store.take_shard`)."""

    data_dir: str
    store: str | None
    run_id: int
    channels: tuple[int, ...]
    seed: int | None
    speed: float | None
    stop: str | None = None
    on_cycle: Callable[[int, int], None] | None = None
    relay: tuple[str, str] | None = None  # the live view's queue and flag (`live`)
    epoch: int | None = None
    shard: str | None = None


def run_shard(order: ShardOrder) -> dict:
    """The shard's channels to their end; what it did, for the campaign's figures."""
    started, cpu0 = time.time(), time.process_time()
    # held while this task writes: a resume of the run waits for it (`claims`)
    workers = claims.run_workers(order.run_id)
    store = open_store(order.data_dir, order.store)  # first: it records a PostgreSQL store
    own = Ownership(order.data_dir, f"a shard of run {order.run_id} (pid {os.getpid()})")
    try:
        own.take([dataclasses.replace(workers, shared=True)])
    except BaseException:
        store.close()
        raise
    store.after_write.append(own.keep)  # the claim still held after a dropped session
    if order.epoch is not None:
        store.follow(order.run_id, order.epoch)
    with own:
        samples = shard_tap(order.relay)
        if samples is not None:
            store.taps.append(samples)
        try:
            ran, interrupted, figures = _run(store, order)
        finally:
            try:
                if samples is not None:
                    samples.close(order.run_id)
            finally:
                store.close()
    return {"channels": ran, "interrupted": interrupted, "figures": figures,
            "pid": os.getpid(),
            "started": started, "ended": time.time(), "cpu_s": time.process_time() - cpu0,
            "peak_rss_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}


def _run(store: Store, order: ShardOrder) -> tuple[list[int], bool, dict[int, dict]]:
    """The channels run, whether the campaign stopped them, and the film figures of those
    that ran to their end (the impedance fits of the run's summary, worked out here so
    that the engine does not fit thousands of spectra one after the other)."""
    if order.shard is not None:  # this attempt's, before its channels are taken up
        store.take_shard(order.run_id, order.shard)
    run = store.run(order.run_id)
    station = load_station(text=run.station_text)
    proto = load(run.sequence_path, station, store, text=run.sequence_text,
                 resuming=order.run_id)  # the run's own picks
    stored = {c.channel: c for c in store.channels(order.run_id)}
    states = {}
    for n in order.channels:
        row = stored[n]
        if row.status in ENDED:  # an earlier attempt of this shard ran it to its end
            continue
        states[n] = take_up(store, order.run_id, n, ChannelState.from_dict(row.state),
                            station.in_process)
    store.flush()
    if not states:
        return [], False, {}
    try:
        run_group(store, order.run_id, proto, station, states, order.seed, order.speed,
                  order.on_cycle, operator=_Asked(store, order))
    except KeyboardInterrupt:  # the campaign stopped: every channel stored interrupted
        return sorted(states), True, {}
    plans = {p.channel: p for p in proto.channels}
    return sorted(states), False, {n: film_figures(store, order.run_id, plans[n])
                                   for n in sorted(states)}


class _Asked:
    """The operator's wish (the store's requests), and the campaign's stop: Ctrl-C for
    this shard's channels, raised where the clock stops between stretches."""

    def __init__(self, store: Store, order: ShardOrder):
        self.wish = OperatorWish(store, order.run_id)
        self.stop = order.stop
        self.asked = time.monotonic()

    def __call__(self) -> str | None:
        if self.stop is not None and time.monotonic() - self.asked >= ASK_EVERY_S:
            self.asked = time.monotonic()
            if _stopped(self.stop):
                raise KeyboardInterrupt
        return self.wish()


def _stopped(event_name: str) -> bool:
    """The campaign set its stop event, or this task is no longer wanted by anyone."""
    import distributed

    try:
        worker = distributed.get_worker()
    except ValueError:  # not on a worker (a test calling run_shard itself)
        return False
    key = worker.get_current_task()
    task = worker.state.tasks.get(key) if key is not None else None
    if task is None or task.state in ("cancelled", "released"):
        return True
    try:
        return distributed.Event(event_name).is_set()
    except Exception:  # noqa: BLE001 - the scheduler is gone: no campaign watches us
        return True


def open_store(data_dir: str, address: str | None) -> Store:
    """The run's store as the engine opened it, whatever the worker's own environment
    says (LIPON_HW_STORE). An SQLite store must be in the worker's view of the data
    directory (a shared file system), never made anew there."""
    if address is None:
        if not (Path(data_dir) / DB_NAME).is_file():
            raise InputError(f"this worker does not see the run's store {data_dir}/{DB_NAME}: "
                             "a cluster beyond this machine needs the data directory on a "
                             "shared file system, or a PostgreSQL store (--store)")
        return Store(data_dir, store="sqlite")
    return Store(data_dir, store=address)


def store_address(store: Store) -> str | None:
    """What a worker must open to reach `store`: its PostgreSQL address, or None (the
    data directory's SQLite file)."""
    location = getattr(store, "location", None)
    return location.target if getattr(location, "is_postgresql", False) else None
