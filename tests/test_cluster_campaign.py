"""A cell test's channels as shards on a Dask LocalCluster (`lipon_hw.cluster`): the
samples are those of the same campaign on this machine's worker processes, and a worker
killed (SIGKILL) mid-campaign loses and duplicates nothing: its shard is run again on
another worker, from each channel's last step boundary stored."""

from __future__ import annotations

import importlib
import json
import os
import re
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from cluster_hooks import HoldAfter, HoldUntilGo
from stores import committed

from lipon_hw.celltest.groups import split
from lipon_hw.celltest.session import start_cycling
from lipon_hw.cluster.campaign import channel_span
from lipon_hw.cluster.connect import open_cluster
from lipon_hw.cluster.shards import ShardOrder, run_shard
from lipon_hw.errors import InstrumentError
from lipon_hw.store import Store
from lipon_hw.store_cell_blocks import BLOCK_COLUMNS, rows_to_blocks

from recipes import LNMO, LNMO_EIS

CHANNELS = "1-4"
CYCLES = 3
SAMPLE_COLUMNS = "channel, t_s, voltage_V, current_A, cycle, step_count, step_id, step_type"


@pytest.fixture(scope="module")
def cluster():
    with open_cluster("local", 2) as opened:
        opened.client.run(importlib.import_module, "lipon_hw.cluster.shards")  # warm
        yield opened


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The campaign in this process (no cluster; its channels' samples do not depend on
    how they are grouped)."""
    tmp = tmp_path_factory.mktemp("reference")
    result = start_cycling(str(_protocol(tmp)), tmp / "data", workers=1)
    assert result.status == "completed"
    return _samples(tmp / "data" / "lipon.db"), result.summary


def _protocol(tmp: Path) -> Path:
    path = tmp / "protocol.yaml"
    path.write_text(LNMO_EIS.format(channels=CHANNELS, cycles=CYCLES), encoding="utf-8")
    return path


def _samples(db: Path) -> list[tuple]:
    return committed(db, f"SELECT {SAMPLE_COLUMNS} FROM cell_samples ORDER BY channel, t_s")


def test_shards_on_the_cluster_store_the_campaign_one_process_stores(
        cluster, reference, tmp_path):
    result = start_cycling(str(_protocol(tmp_path)), tmp_path / "data", cluster=cluster)
    assert result.status == "completed", result.message
    samples, summary = reference
    assert _samples(tmp_path / "data" / "lipon.db") == samples
    assert [ch["cycles"] for ch in result.summary["channels"]] == [CYCLES] * 4
    # the film figures (impedance fits) were worked out by the shards: as one process does
    assert "film_resistance_ohm" in result.summary["channels"][0]
    assert result.summary == summary


def test_a_worker_killed_mid_campaign_loses_and_duplicates_nothing(cluster, reference,
                                                                   tmp_path, backend):
    """On each store back end (`backend`: SQLite, and a real PostgreSQL server, where the
    shards write through the address the engine's store hands them)."""
    reference, summary = reference
    data = tmp_path / "data"
    db = data / "lipon.db"
    held = tmp_path / "held"
    killed: dict = {}

    def kill_the_holder() -> None:
        """Once a shard holds, its channel's committed samples get some from past its
        last step boundary stored (as a dying attempt may have committed: the re-run
        must forget them), then its worker is killed with no word said."""
        deadline = time.monotonic() + 60
        while not held.exists():
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)
        pid, channel = map(int, held.read_text(encoding="utf-8").split())
        state = committed(db, "SELECT state FROM channels WHERE channel=?", channel)[0][0]
        boundary = json.loads(state)["t_s"]
        stored = {r[0] for r in committed(db, "SELECT t_s FROM cell_samples WHERE channel=?",
                                          channel)}
        fresh = [r[1:] for r in reference if r[0] == channel and r[1] > boundary
                 and r[1] not in stored][:5]
        if backend is None:  # never a second Store on an SQLite file in this process:
            con = sqlite3.connect(db, timeout=30)  # its check of the file's header would
            with con:  # drop the engine's POSIX locks on it (SQLite's own pitfall)
                con.executemany(f"INSERT INTO cell_blocks ({', '.join(BLOCK_COLUMNS)}) VALUES"
                                f" ({','.join('?' * len(BLOCK_COLUMNS))})",
                                list(rows_to_blocks([(1, channel, *r) for r in fresh])))
            con.close()
        else:
            store = Store(data)  # the run's own PostgreSQL store
            try:
                store.add_cell_samples(1, channel, fresh)
                store.flush()
            finally:
                store.close()
        killed.update(pid=pid, channel=channel, injected=len(fresh))
        os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_the_holder, daemon=True)
    killer.start()
    cluster.on_cycle = HoldAfter(str(held), 2)
    try:
        result = start_cycling(str(_protocol(tmp_path)), data, cluster=cluster)
    finally:
        cluster.on_cycle = None
        killer.join(timeout=5)
    assert killed and killed["injected"] > 0, "no worker was killed mid-campaign"
    with pytest.raises(ProcessLookupError):
        os.kill(killed["pid"], 0)  # the worker is gone: its shard ran again elsewhere
    assert result.status == "completed", result.message
    samples = _samples(db)
    assert committed(db, "SELECT channel, t_s FROM cell_samples GROUP BY channel, t_s "
                         "HAVING COUNT(*) > 1") == []
    assert samples == reference  # every sample once: none lost, none written twice
    assert result.summary == summary
    for channel in range(1, 5):
        cycles = [c for (c,) in committed(db, "SELECT cycle FROM cycles WHERE channel=? "
                                              "ORDER BY cycle", channel)]
        assert cycles == list(range(1, len(cycles) + 1)) and len(cycles) >= CYCLES


def test_a_shard_run_again_while_its_first_attempt_lives_keeps_every_sample_once(
        cluster, reference, tmp_path):
    """Dask may run a shard's task again while its first attempt still lives (its worker
    cut off from the scheduler, not from the store); both hold the run's shared worker
    claim and follow its driver epoch. Here the first attempt holds at cycle 2 while a
    second attempt of the same shard (its very order, sent as Dask would send it) takes
    the shard up and runs it to its end; then the first goes on, and its next write is
    refused (ShardTakenOver). Every sample is there once, as one process stores them, and
    the campaign ends saying which shard and why."""
    reference, _summary = reference
    data = tmp_path / "data"
    db = data / "lipon.db"
    held, go = tmp_path / "held", tmp_path / "go"
    again: dict = {}

    def run_it_again() -> None:
        try:
            deadline = time.monotonic() + 60
            while not held.exists():
                if time.monotonic() > deadline:
                    return
                time.sleep(0.02)
            channel = int(held.read_text(encoding="utf-8").split()[1])
            processing = cluster.client.processing()  # worker → keys of its tasks
            shards = [(worker, re.fullmatch(r"lipon-hw run 1 shard (\d+) of (\d+) (\w+)",
                                            str(key)))
                      for worker, keys in processing.items() for key in keys]
            holder, k, n, token = next(
                (worker, int(m[1]), int(m[2]), m[3]) for worker, m in shards
                if m and channel in split([1, 2, 3, 4], int(m[2]))[int(m[1]) - 1])
            seed = committed(db, "SELECT seed FROM runs WHERE id = 1")[0][0]
            order = ShardOrder(str(data), None, 1, tuple(split([1, 2, 3, 4], n)[k - 1]),
                               seed, None, f"lipon-hw run 1 stop {token}", epoch=1,
                               shard=f"{k} {token}")
            again["channels"] = list(order.channels)
            # on another worker: the holder's one thread is the held attempt's
            others = [worker for worker in processing if worker != holder]
            again["report"] = cluster.client.submit(
                run_shard, order, pure=False, key=f"again {token}", workers=others,
                allow_other_workers=False).result(timeout=120)
        finally:
            go.touch()

    second = threading.Thread(target=run_it_again, daemon=True)
    second.start()
    cluster.on_cycle = HoldUntilGo(str(held), str(go), 2)
    try:
        with pytest.raises(InstrumentError) as stopped:
            start_cycling(str(_protocol(tmp_path)), data, cluster=cluster)
    finally:
        cluster.on_cycle = None
        second.join(timeout=5)
    assert again.get("report"), "no second attempt ran"
    assert again["report"]["channels"] == again["channels"]
    shard = channel_span(again["channels"])
    assert re.fullmatch(rf"the shard of channels {shard} ended with ShardTakenOver: shard "
                        rf"\d \w+ of run 1 was taken up again by another attempt in the "
                        rf"store .+ \(attempt 2, this one 1\), so this attempt stores "
                        rf"nothing more of it", str(stopped.value)), str(stopped.value)
    assert committed(db, "SELECT channel, t_s FROM cell_samples GROUP BY channel, t_s "
                         "HAVING COUNT(*) > 1") == []
    assert _samples(db) == reference  # every sample once: the second attempt's
    assert committed(db, "SELECT DISTINCT status FROM channels") == [("completed",)]


def _sweep(tmp_path: Path, cluster, times: str, speed: float | None = None) -> list[dict]:
    """A sweep of the short LNMO protocol over its loop count, on the cluster."""
    from lipon_hw.celltest.kind import KIND
    from lipon_hw.cluster import sweep as sw
    from lipon_hw.station import load_station

    protocol = tmp_path / "protocol.yaml"
    protocol.write_text(LNMO.format(channels="1", cycles=1), encoding="utf-8")
    station = load_station(None)
    planned = sw.plan(KIND, str(protocol), sw.parse_vary([f"times={times}"]), station, None)
    todo = sw.orders(planned, str(tmp_path / "data"), None, station.text, None, speed, 1,
                     own_labs=True)
    Store(tmp_path / "data").close()  # made once, before the variants, as `lipon-hw sweep` does
    return sw.run_on(cluster, todo, lambda _outcome: None)


def test_a_sweeps_variants_run_side_by_side_each_on_a_lab_of_its_own(cluster, tmp_path):
    done = _sweep(tmp_path, cluster, "1,2")
    assert sorted((o["variant"], o["status"]) for o in done) == [(1, "completed"),
                                                                 (2, "completed")], done
    db = tmp_path / "data" / "lipon.db"
    runs = dict(committed(db, "SELECT id, station_text FROM runs"))
    for outcome in done:
        assert f"sim://v{outcome['variant']}/mes4/" in runs[outcome["run_id"]]
        cycles = committed(db, "SELECT MAX(cycle) FROM cycles WHERE run_id=?",
                           outcome["run_id"])[0][0]
        assert cycles == outcome["variant"]  # times=1 and times=2


def test_a_variant_whose_worker_dies_is_resumed_as_the_same_run(cluster, tmp_path):
    from lipon_hw.engine import claims
    from lipon_hw.engine.ownership import held_by

    data = tmp_path / "data"
    db = data / "lipon.db"
    killed: list[int] = []

    def kill_a_running_variant() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rows = committed(db, "SELECT DISTINCT run_id FROM cell_samples", while_made=True)
            holder = held_by(data, claims.run(rows[0][0])) if rows else None
            if holder is not None:
                killed.append(int(holder.rsplit("pid ", 1)[1].rstrip(")")))
                os.kill(killed[0], signal.SIGKILL)
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_a_running_variant, daemon=True)
    killer.start()
    # on a real-time clock (3000 x), so the moment to kill comes before the run ends
    done = _sweep(tmp_path, cluster, "2", speed=3000)
    killer.join(timeout=5)
    assert killed, "no variant's worker was killed"
    assert [(o["variant"], o["run_id"], o["status"]) for o in done] == [(1, 1, "completed")]
    assert committed(db, "SELECT COUNT(*) FROM runs")[0][0] == 1  # resumed, not run anew
    assert committed(db, "SELECT COUNT(*) FROM alarms WHERE reaction='resume'")[0][0] == 1
    assert committed(db, "SELECT run_id, channel, t_s FROM cell_samples GROUP BY run_id, "
                         "channel, t_s HAVING COUNT(*) > 1") == []


class _Watcher:
    """A live view's tap on the engine's store: what it is told of samples and cycles."""

    def __init__(self):
        self.samples: list[tuple] = []
        self.cycles: list[tuple] = []
        self.gaps = 0

    def cell_samples(self, _run_id, channel, rows) -> None:
        self.samples.extend((channel, r[2]) for r in rows)  # (run, channel, t_s, V, I, …)

    def cycle(self, _run_id, channel, cycle, _stats) -> None:
        self.cycles.append((channel, cycle))

    def lost(self, *_args) -> None:  # batches dropped on the way (a full queue)
        self.gaps += 1

    def close(self) -> None: ...

    def __getattr__(self, _event):  # readings, alarm, step, status, spectrum: not counted
        return lambda *_args, **_kwargs: None


def test_the_shards_samples_reach_the_engines_live_view(cluster, reference, tmp_path,
                                                       monkeypatch):
    from lipon_hw.engine import publish

    watcher = _Watcher()

    def follow(store, _run_id, watch_s=None):
        store.taps.append(watcher)
        return watcher

    monkeypatch.setattr(publish, "follow", follow)
    result = start_cycling(str(_protocol(tmp_path)), tmp_path / "data", cluster=cluster)
    assert result.status == "completed"
    stored = [(r[0], r[1]) for r in reference[0]]
    assert watcher.samples and set(watcher.samples) <= set(stored)
    if not watcher.gaps:  # nothing dropped on the way: every sample came live, once
        assert sorted(watcher.samples) == stored
    assert sorted(set(watcher.cycles)) == [(ch, c) for ch in range(1, 5)
                                           for c in range(1, CYCLES + 1)]


def test_a_shard_that_could_not_disconnect_its_cell_ends_the_run_not_made_safe(cluster,
                                                                              tmp_path):
    """As with the channels in this process or in worker processes (`test_cell_exits`):
    channel 2's link drops for good mid-campaign (the simulated lab's `link_drop`), so the
    shard that runs it cannot disconnect its cell. The run must not end `completed`: it
    ends failed, saying which cell was not made safe, and channel 1's shard completes."""
    from faulty import CELL_2_NOT_SAFE, lost_cell_campaign

    protocol, station = lost_cell_campaign(tmp_path)
    with pytest.raises(InstrumentError, match=CELL_2_NOT_SAFE):
        start_cycling(protocol, tmp_path / "data", station, cluster=cluster)
    db = tmp_path / "data" / "lipon.db"
    (status, message), = committed(db, "SELECT status, message FROM runs")
    assert status == "failed" and message.startswith("the hardware was NOT all made safe"), \
        message
    channels = dict(committed(db, "SELECT channel, status FROM channels"))
    assert channels[1] == "completed", channels
