"""A poll's samples in columns (a SampleBlock from the MethodSCRIPT driver) take the same
way through a channel as the same samples one by one: the same rows, the same safety
trips (every sample checked), and the charge, slope and cycle figures within float
rounding of the row-by-row arithmetic."""

import math
import random
from types import SimpleNamespace

import pytest

from lipon_hw.analysis.cycles import CycleAccumulator
from lipon_hw.celltest import protocol as pr
from lipon_hw.celltest.step_ends import ChannelTrip, HostEnds, check_safety
from lipon_hw.celltest.taken import check_limits, rows_of
from lipon_hw.readings import Sample, SampleBlock


def _block(rng: random.Random, n: int, nan_at: int | None = None) -> SampleBlock:
    t = [1.0 + 30.0 * k + rng.random() for k in range(n)]
    e = [4.0 + 0.5 * rng.random() for _ in range(n)]
    i = [rng.choice((3e-6, -3e-6, 0.0)) for _ in range(n)]
    if nan_at is not None:
        e[nan_at] = math.nan
    return SampleBlock(t_s=t, E_V=e, I_A=i)


def test_a_block_makes_the_rows_its_samples_make():
    block = _block(random.Random(1), 40)
    rows, columns = rows_of(block, 1000.0, 3, 9, 4, "CC")
    one_by_one, none = rows_of(block.samples(), 1000.0, 3, 9, 4, "CC")
    assert none is None and len(rows) == len(one_by_one) == 40
    for got, want in zip(rows, one_by_one, strict=True):
        assert got[:3] == pytest.approx(want[:3], rel=1e-15) and got[3:] == want[3:]
    assert [r[0] for r in rows] == pytest.approx(columns[0], rel=1e-15)


def test_every_sample_of_a_block_is_checked_against_the_limits():
    """A limit crossed anywhere in a block (a NaN first or not) trips the channel with the
    words the row-by-row check gives, at the same sample."""
    rng = random.Random(2)
    limits = pr.Safety(min_V=3.9, max_V=4.45, max_current_A=2.5e-6)
    trips = 0
    for trial in range(400):
        block = _block(rng, rng.randrange(1, 30), nan_at=0 if trial % 7 == 0 else None)
        rows, columns = rows_of(block, 0.0, 1, 1, 1, "CC")
        for limit in (limits, pr.Safety(min_V=3.0, max_V=6.0),
                      pr.Safety(max_current_A=2.5e-6)):
            try:
                check_safety(5, rows, limit)
                want = None
            except ChannelTrip as exc:
                want = str(exc)
            try:
                check_limits(5, rows, limit, columns)
                got = None
            except ChannelTrip as exc:
                got = str(exc)
            assert got == want
            trips += want is not None
    assert trips > 300


def test_a_steps_ends_and_cycle_figures_from_columns_match_the_rows():
    rng = random.Random(3)
    for _ in range(50):
        block = _block(rng, rng.randrange(9, 60))
        rows, columns = rows_of(block, 500.0, 2, 7, 3, "CC")
        ends = [_ends() for _ in range(2)]
        for end in ends:
            end.last = (499.0, 4.1, 3e-6)
        assert ends[0].take(rows) is None and ends[1].take(rows, columns) is None
        assert ends[1].q == pytest.approx(ends[0].q, rel=1e-12, abs=1e-24)
        assert ends[1].slope == pytest.approx(ends[0].slope, rel=1e-12)
        assert ends[1].last == ends[0].last
        leads = {3: 1.0}
        accs = [CycleAccumulator(), CycleAccumulator()]
        for acc in accs:
            acc.feed_rows([(490.0, 4.0, 3e-6, 1, 6, 2, "CC")], leads)
        a = accs[0].feed_rows(rows, leads) + accs[0].finish()
        b = accs[1].feed_columns(*columns, 2, 7, 3, leads) + accs[1].finish()
        assert [s.cycle for s in a] == [s.cycle for s in b]
        for x, y in zip(a, b, strict=True):
            assert x.charge_Ah == pytest.approx(y.charge_Ah, rel=1e-12, abs=1e-24)
            assert x.discharge_Wh == pytest.approx(y.discharge_Wh, rel=1e-12, abs=1e-24)


def test_a_non_finite_sample_reaches_the_cycle_counter_as_a_row_does():
    rows = [(1.0, 4.0, 1e-6, 1, 1, 0, "CC"), (2.0, math.nan, 1e-6, 1, 1, 0, "CC")]
    columns = ([1.0, 2.0], [4.0, math.nan], [1e-6, 1e-6])
    with pytest.raises(Exception) as by_rows:
        CycleAccumulator().feed_rows(rows, {0: 1.0})
    with pytest.raises(type(by_rows.value)) as by_columns:
        CycleAccumulator().feed_columns(*columns, 1, 1, 0, {0: 1.0})
    assert str(by_columns.value) == str(by_rows.value)


def _ends() -> HostEnds:
    """The ends of a constant current to 5.1 V or 2 h (no capacity or dV/dt end)."""
    until = SimpleNamespace(duration_s=7200.0, capacity_Ah=None, dVdt_mV_h=None,
                            voltage_V=5.1)
    return HostEnds(SimpleNamespace(params=SimpleNamespace(until=until)), None, 0.0)


def test_a_block_joins_samples_of_the_same_fields_only():
    a = SampleBlock(t_s=[1.0, 2.0], E_V=[4.0, 4.1], I_A=[1e-6, 1e-6])
    b = Sample(t_s=3.0, E_V=4.2, I_A=1e-6)
    joined = SampleBlock.join([a, b])
    assert joined.t_s == [1.0, 2.0, 3.0] and len(joined) == 3
    assert joined.samples()[2] == b
    assert SampleBlock.join([a, Sample(f_Hz=1.0, z_re_ohm=1.0, z_im_ohm=-1.0)]) is None
