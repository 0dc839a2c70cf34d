"""Pausing a cell test (issue 10): a paused channel stops its step and leaves the cell at
open circuit, its voltage recorded as a PAUSE step; on continue the cut step goes on with
what is left of its time and its capacity; an abort while paused ends the channel with its
cell off. The operator's wishes come at set virtual times, so every run is the same."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lipon_hw.celltest.all_channels import run_channels
from lipon_hw.celltest.channels import ChannelState
from lipon_hw.celltest.groups import OperatorWish, mount_cells
from lipon_hw.celltest.plan import load
from lipon_hw.engine.lifecycle import make_env
from lipon_hw.station import load_station
from lipon_hw.store import Store

PROTOCOL = """
name: pause test
kind: cycling
potentiostat: mes4
channels: 1
cell: {kind: lnmo, area_cm2: 0.049, capacity_uAh: 1.47}
record: {every_s: 60, every_mV: 5}
safety: {min_V: 2.5, max_V: 5.2}
steps:
  - rest: {until: {time_h: 3}}
  - cc: {current_A: 1.5e-7, until: {capacity_uAh: 0.8, voltage_V: 5.1}}
"""


def run(tmp_path: Path, wishes: list[tuple[float, str]], protocol: str = PROTOCOL):
    """The protocol on the simulated lab, the operator wishing `wishes` from those times."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "pause.yaml"
    path.write_text(protocol, encoding="utf-8")
    station, store = load_station(), Store(tmp_path / "data")
    proto = load(str(path), station, store)
    run_id = store.create_run(proto.name, "cycling", str(path), proto.text, station.text, 1,
                              None)
    store.add_channel(run_id, 1, proto.potentiostat, None, proto.channels[0].program.name)
    env = make_env(station, None, 0.0)
    lab = station.connect(lambda: env.now, seed=1)
    try:
        cells = mount_cells(lab, proto, store, 1, {}, run_id)

        def operator():
            now = [w for t, w in wishes if env.now >= t]
            return now[-1] if now else None

        (channel,) = run_channels(env, store, run_id, proto, lab.instruments["mes4"],
                                  {1: ChannelState()}, cells, realtime=False, operator=operator)
    finally:
        lab.close()
    store.flush()
    return channel, store, run_id


def steps_of(store: Store, run_id: int) -> dict[int, list[tuple]]:
    out: dict[int, list[tuple]] = {}
    for row in store.cell_samples(run_id, 1):
        out.setdefault(row[4], []).append(row)
    return out


def charge_uAh(rows: list[tuple]) -> float:
    t, i = np.array([r[0] for r in rows]), np.array([r[2] for r in rows])
    first = i[0] * 1.0  # the step's first measurement interval (1 s) before its first sample
    return (first + float(np.sum(0.5 * (i[1:] + i[:-1]) * np.diff(t)))) / 3.6e-3


def test_pause_and_continue_finish_each_cut_step_with_what_was_left(tmp_path):
    channel, store, run_id = run(tmp_path, [(3600, "pause"), (10800, "continue"),
                                            (21600, "pause"), (28800, "continue")])
    assert channel.status == "completed", channel.message
    steps = steps_of(store, run_id)
    kinds = [rows[0][6] for _, rows in sorted(steps.items())]
    assert kinds == ["REST", "PAUSE", "REST", "CC_CHG", "PAUSE", "CC_CHG"]
    # the rest lasted its 3 h in two parts; the charge passed its 0.8 µAh in two
    rests = [rows for rows in steps.values() if rows[0][6] == "REST"]
    rested = sum(rows[-1][0] - rows[0][0] + 1.0 for rows in rests)
    assert rested == pytest.approx(3 * 3600, abs=120)
    charges = [rows for rows in steps.values() if rows[0][6] == "CC_CHG"]
    assert sum(charge_uAh(rows) for rows in charges) == pytest.approx(0.8, rel=0.01)
    # paused: no current, the voltage relaxing at open circuit; the cycle is the same one
    pauses = [rows for rows in steps.values() if rows[0][6] == "PAUSE"]
    assert all(r[2] == 0.0 for rows in pauses for r in rows)
    assert {r[3] for rows in steps.values() for r in rows} == {1}
    t = [r[0] for r in store.cell_samples(run_id, 1)]
    assert t == sorted(t)
    messages = [a.message for a in store.alarms(run_id)]
    assert sum(m.startswith("paused at step") for m in messages) == 2
    assert messages.count("continued by the operator") == 2


def test_abort_while_paused_ends_the_channel_with_its_cell_off(tmp_path):
    channel, store, run_id = run(tmp_path, [(3600, "pause"), (7200, "abort")])
    assert channel.status == "aborted"
    kinds = [rows[0][6] for _, rows in sorted(steps_of(store, run_id).items())]
    assert kinds == ["REST", "PAUSE"]
    assert "aborted while paused" in [a.message for a in store.alarms(run_id)]
    assert channel._disconnected


def test_the_operator_wish_is_the_last_toggle_and_abort_wins(tmp_path):
    store = Store(tmp_path / "data")
    run_id = store.create_run("x", "cycling", "x.yaml", "", "", None, None)
    wish = OperatorWish(store, run_id, every_s=0.0)
    assert wish() is None
    store.requests.make(run_id, "pause")
    assert wish() == "pause"
    store.requests.make(run_id, "continue")
    assert wish() == "continue"
    store.requests.make(run_id, "pause")
    store.requests.make(run_id, "abort")
    assert wish() == "abort"
