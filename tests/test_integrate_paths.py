"""The cycle figures' fast paths (a batch's intervals computed whole, the few that cross
zero current or open a step redone alone; a stream's rows converted in one array) give
what the plain rule gives: every interval split at a zero crossing, then the intervals
that open a step replaced by the new step's first sample over its lead."""

from __future__ import annotations

import numpy as np
import pytest

from lipon_hw.analysis.cycles import CycleAccumulator
from lipon_hw.analysis.integrate import interval_integrals, interval_sums, step_leads
from lipon_hw.errors import InputError


def _product(h, v0, v1, i0, i1):
    return h * (2 * v0 * i0 + v0 * i1 + v1 * i0 + 2 * v1 * i1) / 6.0


def plain_rule(t, v, i, leads=None):
    """Interval by interval, as the module docstring says it."""
    out = np.zeros((4, len(t) - 1))
    for k in range(len(t) - 1):
        dt, v0, v1, i0, i1 = t[k + 1] - t[k], v[k], v[k + 1], i[k], i[k + 1]
        if leads is not None and not np.isnan(leads[k]):
            h = min(dt, leads[k])
            parts = [(i1 > 0, i1 * h, v1 * i1 * h)]
        elif i0 * i1 < 0:
            f = i0 / (i0 - i1)
            vc = v0 + f * (v1 - v0)
            parts = [(i0 > 0, 0.5 * i0 * f * dt, _product(f * dt, v0, vc, i0, 0.0)),
                     (i1 > 0, 0.5 * i1 * (dt - f * dt), _product(dt - f * dt, vc, v1, 0.0, i1))]
        else:
            up = i0 > 0 if i0 != 0 else i1 > 0
            parts = [(up, 0.5 * (i0 + i1) * dt, _product(dt, v0, v1, i0, i1))]
        for up, q, e in parts:
            out[0 if up else 1, k] += q if up else -q
            out[2 if up else 3, k] += e if up else -e
    return out


def _times_and_volts(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n sample times (some shared: a step boundary) and voltages."""
    return np.cumsum(rng.choice([0.0, 0.5, 1.0, 30.0], n)), rng.normal(3.5, 0.8, n)


@pytest.mark.parametrize("seed", range(20))
def test_interval_integrals_are_the_plain_rule(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 60))
    t, v = _times_and_volts(rng, n)
    i = rng.choice([-3e-6, -1e-7, 0.0, 2e-7, 3e-6], n) * rng.uniform(0.5, 1.5, n)
    steps = np.cumsum(rng.random(n) < 0.15)
    leads = step_leads(steps, rng.choice([0.25, 1.0, 60.0]))
    for marks in (None, leads):
        got = np.array(interval_integrals(t, v, i, marks))
        assert np.all(got >= 0)
        np.testing.assert_allclose(got, plain_rule(t, v, i, marks), rtol=1e-12, atol=1e-30)


@pytest.mark.parametrize("seed", range(30))
def test_interval_sums_are_the_sums_of_the_plain_rule(seed):
    # one sign (the fast path: charge, or discharge), or both; a first interval that opens
    # a step (its lead shorter or longer than the interval), or not
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 80))
    t, v = _times_and_volts(rng, n)
    sign = (1.0, -1.0, None)[seed % 3]
    i = rng.uniform(1e-7, 3e-6, n) * (sign if sign else rng.choice([-1.0, 0.0, 1.0], n))
    lead = (None, 0.25, 60.0)[(seed // 3) % 3]
    leads = np.full(max(n - 1, 0), np.nan)
    if lead is not None and n > 1:
        leads[0] = lead
    want = plain_rule(t, v, i, leads).sum(axis=1) if n > 1 else np.zeros(4)
    got = interval_sums(t, v, i, lead if n > 1 else None)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-30)
    assert min(got) >= 0


@pytest.mark.parametrize("seed", range(12))
def test_one_current_throughout_is_the_plain_rule(seed):
    # a constant-current step's samples (one current, either sign; times from a run clock
    # already far along, some shared), with and without a first interval opening the step
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 300))
    t, v = _times_and_volts(rng, n)
    t = t + float(rng.choice([0.0, 3.6e6]))
    i = np.full(n, (3e-6, -1.5e-7)[seed % 2])
    lead = (None, 1.0)[(seed // 2) % 2]
    leads = np.full(n - 1, np.nan)
    if lead is not None:
        leads[0] = lead
    got = interval_sums(t, v, i, lead)
    np.testing.assert_allclose(got, plain_rule(t, v, i, leads).sum(axis=1), rtol=1e-12,
                               atol=1e-30)
    assert interval_sums(t, v, i, lead, np.diff(t)) == got


def test_a_steps_columns_must_come_in_time_order():
    acc = CycleAccumulator()
    with pytest.raises(InputError, match="time order"):  # within the batch
        acc.feed_columns([0.0, 2.0, 1.0], [4.0] * 3, [1e-6] * 3, 1, 1, 0)
    acc.feed_columns([5.0, 6.0], [4.0] * 2, [1e-6] * 2, 1, 1, 0)
    with pytest.raises(InputError, match="time order"):  # against the batch before
        acc.feed_columns([5.5, 7.0], [4.0] * 2, [1e-6] * 2, 1, 1, 0)
    assert acc.feed_columns([6.0, 7.0], [4.0] * 2, [1e-6] * 2, 1, 1, 0) == []


def test_a_step_that_opens_across_zero_current_counts_only_its_first_sample():
    # discharge at −1 mA, then the next step's first sample at +2 mA, 1 s lead: no split
    ch, dis, _, _ = interval_integrals([0.0, 10.0], [3.0, 4.2], [-1e-3, 2e-3],
                                       step_leads([1, 2], 1.0))
    assert ch[0] == pytest.approx(2e-3) and dis[0] == 0.0


def _rows(seed: int) -> list[tuple]:
    rng = np.random.default_rng(seed)
    rows, t = [], 0.0
    for step in range(1, 9):
        current = 3e-6 if step % 2 else -3e-6
        for _ in range(int(rng.integers(1, 30))):
            t += float(rng.choice([0.0, 1.0, 30.0]))
            rows.append((t, float(rng.normal(4.0, 0.3)), current * float(rng.uniform(0.5, 1)),
                         1 + (step - 1) // 2, step, step % 2, "CC"))
    return rows


@pytest.mark.parametrize("seed", range(5))
def test_rows_and_columns_give_the_same_cycles(seed):
    rows = _rows(seed)
    by_rows, by_columns = CycleAccumulator(), CycleAccumulator()
    got, want = [], []
    for a, b in ((0, 7), (7, 8), (8, len(rows))):  # batches of several, one, the rest
        batch = rows[a:b]
        got += by_rows.feed_rows(batch, {0: 1.0, 1: 1.0})
        cols = list(zip(*batch, strict=True))
        if cols:
            want += by_columns.feed(*cols[:4], step=cols[4], lead_s={0: 1.0, 1: 1.0},
                                    step_id=cols[5])
    got += by_rows.finish()
    want += by_columns.finish()
    assert [s.cycle for s in got] == [s.cycle for s in want]
    for s, w in zip(got, want, strict=True):
        assert s.charge_Ah == pytest.approx(w.charge_Ah, rel=1e-12)
        assert s.discharge_Wh == pytest.approx(w.discharge_Wh, rel=1e-12)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "x", None])
def test_rows_that_are_not_finite_numbers_are_refused_as_columns_are(bad):
    rows = _rows(0)[:5]
    rows[2] = (rows[2][0], bad, *rows[2][2:])
    refused = []
    for feed in (lambda acc: acc.feed_rows(rows, {0: 1.0, 1: 1.0}),
                 lambda acc: acc.feed(*list(zip(*rows, strict=True))[:4])):
        with pytest.raises((InputError, TypeError, ValueError)) as exc:
            feed(CycleAccumulator())
        refused.append((type(exc.value), str(exc.value)))
    assert refused[0] == refused[1]


@pytest.mark.parametrize("seed", range(6))
def test_a_step_fed_as_columns_gives_the_cycles_the_plain_feed_gives(seed):
    # feed_columns (a step at a time: one cycle, step count and step id) against feed
    # with every sample's cycle and step: with step leads (a new step counts its first
    # sample over its lead) and without (the interval into a new cycle is the old one's)
    rng = np.random.default_rng(seed)
    leads = None if seed % 2 else {0: 1.0, 1: 2.0}
    by_steps, plain = CycleAccumulator(), CycleAccumulator()
    got, want, t = [], [], 0.0
    for step in range(1, 9):
        n = int(rng.integers(1, 30))
        times = t + np.cumsum(rng.choice([0.5, 1.0, 30.0], n))
        t = float(times[-1])
        volts = rng.normal(4.0, 0.3, n)
        sign = 1.0 if step % 2 else -1.0
        currents = sign * rng.uniform(1e-7, 3e-6, n)
        cycle, step_id = 1 + (step - 1) // 2, (step - 1) % 2
        got += by_steps.feed_columns(times.tolist(), volts.tolist(), currents.tolist(),
                                     cycle, step, step_id, leads)
        want += plain.feed(times, volts, currents, [cycle] * n, step=[step] * n,
                           lead_s=leads, step_id=[step_id] * n) if leads else \
            plain.feed(times, volts, currents, [cycle] * n)
    got += by_steps.finish()
    want += plain.finish()
    assert [(s.cycle, s.t_end_s) for s in got] == [(s.cycle, s.t_end_s) for s in want]
    for s, w in zip(got, want, strict=True):
        for name in ("charge_Ah", "discharge_Ah", "charge_Wh", "discharge_Wh"):
            assert getattr(s, name) == pytest.approx(getattr(w, name), rel=1e-12, abs=1e-30)
