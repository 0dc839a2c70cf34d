"""A poll's block of samples (columns) on the host: a limit, a step end or a cycle's end
met inside a block is met at that very sample — as if the samples had come one by one —
and the block reaches the store as the same rows, in order, without a row made per
sample until the store writes them."""

import math
import random
import sqlite3
from types import SimpleNamespace

import numpy as np
import pytest

from lipon_hw.analysis.cycles import CycleAccumulator
from lipon_hw.celltest import protocol as pr
from lipon_hw.celltest.cycle_counter import CycleCounter
from lipon_hw.celltest.step_ends import ChannelTrip, HostEnds
from lipon_hw.celltest.taken import Taken, check_limits, rows_of
from lipon_hw.readings import SampleBlock
from lipon_hw.store import Store

T0 = 1000.0  # the step's start on the run clock
N = 40


def _block(crossing_at: int | None = None, n: int = N) -> SampleBlock:
    """Voltages rising from 4.0 V by 10 mV a sample, 30 s apart; from `crossing_at` on,
    above 5.0 V (the limit below)."""
    t = [30.0 * (k + 1) for k in range(n)]
    e = [4.0 + 0.01 * k + (1.2 if crossing_at is not None and k >= crossing_at else 0.0)
         for k in range(n)]
    return SampleBlock(t_s=t, E_V=e, I_A=[3e-6] * n)


@pytest.mark.parametrize("k", [0, 1, 17, N - 2, N - 1])
def test_a_limit_crossed_inside_a_block_trips_at_that_sample(k):
    block = _block(crossing_at=k)
    rows, columns = rows_of(block, T0, 3, 9, 4, "CC")
    with pytest.raises(ChannelTrip) as trip:
        check_limits(2, rows, pr.Safety(min_V=3.0, max_V=5.0), columns)
    v = 4.0 + 0.01 * k + 1.2
    assert str(trip.value) == (f"channel 2: {v:.3f} V is above max_V 5 V at t = "
                               f"{T0 + 30.0 * (k + 1):.0f} s")
    check_limits(2, rows, pr.Safety(min_V=3.0, max_V=6.0), columns)  # none crossed
    assert [rows[j] for j in (k, -1, 0)] == [list(rows)[j] for j in (k, -1, 0)]


@pytest.mark.parametrize("k", [3, 9, 30])
def test_a_current_past_its_limit_inside_a_block_trips_at_that_sample(k):
    block = _block()
    block.I_A[k] = -2e-5
    rows, columns = rows_of(block, T0, 1, 1, 0, "CC")
    with pytest.raises(ChannelTrip, match=rf"\|-2e-05\| A is above max_current_A 1e-05 A "
                                          rf"at t = {T0 + 30.0 * (k + 1):.0f} s"):
        check_limits(1, rows, pr.Safety(max_current_A=1e-5), columns)


def _ends(capacity_Ah=None, dVdt_mV_h=None) -> HostEnds:
    until = SimpleNamespace(duration_s=None, capacity_Ah=capacity_Ah, capacity_uAh=None,
                            dVdt_mV_h=dVdt_mV_h, voltage_V=None)
    return HostEnds(SimpleNamespace(params=SimpleNamespace(until=until)), None, T0)


@pytest.mark.parametrize("n, k", [(5, 2), (8, 7), (40, 0), (40, 23), (100, 98)])
def test_a_capacity_end_inside_a_block_ends_at_that_sample(n, k):
    """The charge passed reaches the step's capacity at sample k of the poll (30 s of
    3 uA a sample after the first): the step ends there, its last sample that one."""
    rows, columns = rows_of(_block(n=n), T0, 1, 1, 0, "CC")
    q_per_sample = 3e-6 * 30.0 / 3600
    ends = _ends(capacity_Ah=(k + 0.5) * q_per_sample)
    ends.last = (T0, 4.0, 3e-6)  # the step's sample before this poll
    outcome = ends.take(rows, columns)
    assert outcome is not None and outcome.end == "capacity_mAh"
    assert ends.last == tuple(columns[c][k] for c in range(3))
    assert ends.q == pytest.approx((k + 1) * q_per_sample, rel=1e-12)


@pytest.mark.parametrize("n, k", [(6, 3), (40, 21)])
def test_a_dvdt_end_inside_a_block_ends_at_that_sample(n, k):
    """The voltage stops rising at sample k: dV/dt falls below the end there."""
    block = _block(n=n)
    block.E_V[k:] = [block.E_V[k - 1]] * (n - k)
    rows, columns = rows_of(block, T0, 1, 1, 0, "CC")
    ends = _ends(dVdt_mV_h=1.0)
    outcome = ends.take(rows, columns)
    assert outcome is not None and outcome.end == "dVdt_mV_h"
    assert ends.last[0] == columns[0][k]


@pytest.mark.parametrize("n", [9, 63, 300])
def test_a_blocks_charge_and_slope_are_the_rows(n):
    """Without a capacity or dV/dt end a block's charge is summed from its columns:
    within rounding of the rows taken one by one."""
    rng = random.Random(n)
    block = SampleBlock(t_s=sorted(rng.uniform(0, 9000) for _ in range(n)),
                        E_V=[4 + rng.random() for _ in range(n)],
                        I_A=[rng.choice((3e-6, -3e-6)) * rng.random() for _ in range(n)])
    rows, columns = rows_of(block, T0, 1, 1, 0, "CC")
    by_rows, by_columns = _ends(), _ends()
    for ends in (by_rows, by_columns):
        ends.q, ends.last = 2e-9, (T0 - 1.0, 4.0, 1e-6)
    assert by_rows.take(list(rows)) is None and by_columns.take(rows, columns) is None
    assert by_columns.q == pytest.approx(by_rows.q, rel=1e-13)
    assert by_columns.slope == pytest.approx(by_rows.slope, rel=1e-13)
    assert by_columns.last == by_rows.last


def test_a_cycle_closes_at_the_first_sample_of_the_block_that_opens_it():
    """Steps fed as Taken columns close each cycle at the first sample of the next
    cycle's first step, with the figures the same rows fed one poll at a time give; a
    step opening counts its first sample over the step's lead only."""
    leads = {0: 1.0, 1: 1.0}
    by_columns = CycleCounter(CycleAccumulator(), 1, leads=leads)
    by_rows = CycleCounter(CycleAccumulator(), 1, leads=leads)
    closed_c, closed_r, firsts = [], [], {}
    t, step_count = 0.0, 0
    for cycle in (1, 2, 3):
        for step_id, current in ((0, 3e-6), (1, -3e-6)):
            step_count += 1
            taken = Taken()
            for size in (1, 12, 3, 70):  # polls of a step
                block = SampleBlock(t_s=[t + 30.0 * (j + 1) for j in range(size)],
                                    E_V=[4.0 + 0.001 * j for j in range(size)],
                                    I_A=[current] * size)
                t += 30.0 * size + 5.0
                rows, columns = rows_of(block, 0.0, cycle, step_count, step_id, "CC")
                firsts.setdefault(cycle, columns[0][0])
                taken.add(rows, columns)
                closed_r += by_rows.add(list(rows))
            closed_c += taken.feed(by_columns)
    closed_c += by_columns.finish()
    closed_r += by_rows.finish()
    assert [s.cycle for s in closed_c] == [1, 2, 3]
    assert [s.t_end_s for s in closed_c[:2]] == [firsts[2], firsts[3]]
    for a, b in zip(closed_c, closed_r, strict=True):
        assert a.t_end_s == b.t_end_s
        for name in ("charge_Ah", "discharge_Ah", "charge_Wh", "discharge_Wh"):
            assert getattr(a, name) == pytest.approx(getattr(b, name), rel=1e-12)
    # 86 samples a step, 35 s between polls; the joins between steps count 1 s (the lead)
    # of the new step's first current, not a trapezoid: cycle 2 charges over the join that
    # opens it, cycle 1 (no sample before it) does not
    span = 30.0 * 85 + 15.0
    assert closed_c[0].charge_Ah == pytest.approx(3e-6 * span / 3600, rel=1e-9)
    assert closed_c[1].charge_Ah == pytest.approx(3e-6 * (span + 1.0) / 3600, rel=1e-9)
    assert closed_c[0].discharge_Ah == pytest.approx(3e-6 * (span + 1.0) / 3600, rel=1e-9)


def test_a_step_of_blocks_and_rows_feeds_the_counter_as_rows():
    """A step whose polls came as columns, then as Samples, then as columns again: the
    cycle counter gets every sample, in order."""
    polls = [_block(n=9), _block(n=2).samples(), _block(n=12)]
    t, taken, every = 0.0, Taken(), []
    for poll in polls:
        rows, columns = rows_of(poll, t, 2, 5, 1, "CC")
        t += 1000.0
        taken.add(rows, columns)
        every += list(rows)
    assert taken.columns is None and taken.rows == every
    fed, by_rows = CycleCounter(leads={1: 1.0}), CycleCounter(leads={1: 1.0})
    taken.feed(fed)
    by_rows.add(every)
    assert fed.state() == by_rows.state()


@pytest.mark.parametrize("as_array", [True, False])
def test_a_block_makes_rows_of_python_floats_and_columns_of_arrays(as_array):
    # a driver's columns as arrays (the MethodSCRIPT driver's) or lists (another's)
    column = np.array if as_array else list
    block = SampleBlock(t_s=column([1.0, 2.0]), E_V=column([4.0, 4.1]), I_A=None)
    rows, columns = rows_of(block, 10.0, 1, 2, 3, "REST")
    assert list(rows) == [(11.0, 4.0, 0.0, 1, 2, 3, "REST"), (12.0, 4.1, 0.0, 1, 2, 3, "REST")]
    assert all(type(v) is float for row in rows for v in row[:3])
    assert type(rows[-1][0]) is float and rows[-1][:3] == (12.0, 4.1, 0.0)
    assert all(isinstance(c, np.ndarray) and c.dtype == float for c in columns)
    last = block.sample(1)
    assert (type(last.t_s), type(last.E_V), last.I_A) == (float, float, None)
    assert [type(v) for s in block.samples() for v in (s.t_s, s.E_V)] == [float] * 4


def test_blocks_reach_the_store_as_the_same_rows_in_order(tmp_path, backend):
    """Blocks and rows interleaved, a non-finite value in a block (left out, one alarm)
    and a flush the lock refuses (nothing lost): the rows stored are those the samples
    make one by one; a tap hears each block's rows."""
    store = Store(tmp_path / "data", flush_every_s=1e9)
    heard = []
    store.taps.append(SimpleNamespace(cell_samples=lambda *args: heard.append(args)))
    run_id = store.create_run("blocks", "cycling", "x.yaml", "", "", None, None)
    store.add_channel(run_id, 1, "mes4", None, "p")
    store.add_channel(run_id, 2, "mes4", None, "p")
    want = []
    for k, channel in enumerate((1, 2, 1)):
        block = _block(n=5 + k)
        if k == 2:
            block.E_V[3] = math.nan
        rows, columns = rows_of(block, 100.0 * k, 1, k + 1, 0, "CC")
        store.add_cell_columns(run_id, channel, *columns, 1, k + 1, 0, "CC")
        rows = [r for r in rows if math.isfinite(r[1])]
        want += [(channel, *r) for r in rows]
        assert heard[-1][:2] == (run_id, channel)
        assert list(heard[-1][2]) == [(run_id, channel, *r) for r in rows]
        store.add_cell_samples(run_id, 2, [(500.0 + k, 3.9, 1e-6, 1, 9, 1, "REST")])
        want.append((2, 500.0 + k, 3.9, 1e-6, 1, 9, 1, "REST"))
    assert list(store._pending_cells) == [(run_id, *w) for w in want]  # in order
    assert len(store._pending_cells) == len(want)
    if backend is None:  # another process's write lock: the flush is refused, then done
        other = sqlite3.connect(tmp_path / "data" / "lipon.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        assert store.try_flush(wait_s=0.05) is False
        other.execute("ROLLBACK")
        other.close()
        assert len(store._pending_cells) == len(want)
    store.flush()
    assert len(store._pending_cells) == 0
    got = [(ch, *r) for ch in (1, 2) for r in store.cell_samples(run_id, ch)]
    assert sorted(got, key=lambda r: (r[0], r[1])) == sorted(want, key=lambda r: (r[0], r[1]))
    assert len(store.alarms(run_id)) == 1
    store.close()
