"""Charge and energy between consecutive samples, split into charging and discharging parts.

Between two samples the voltage and the current are taken as linear in time (the trapezoid
rule for charge). When the current changes sign inside an interval, the interval is split
at the zero crossing, so a charge→discharge turn never cancels charge against discharge.
Energy is the exact integral of the product of the two linear interpolants, so charging
energy is always the energy that flowed while the current was positive (whatever the sign
of the voltage, e.g. a plating cell below 0 V).

Between two steps the cell is at open circuit: a technique ends with the cell off and the
next one switches it on, and its first sample comes one measurement interval later. So an
interval that opens a new step is not a trapezoid from the old step's last current: it
carries the new step's first sample (current and voltage) over at most its lead — that
step's measurement interval — and nothing before (`step_leads`). Without step
information every interval is a trapezoid.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from lipon_hw.errors import InputError


def _product_integral(h, v0, v1, i0, i1):
    """∫ V·I dt over an interval of length h where V and I are linear."""
    return h * (2 * v0 * i0 + v0 * i1 + v1 * i0 + 2 * v1 * i1) / 6.0


def step_leads(step_count, leads, step_id=None) -> np.ndarray:
    """Per interval between n samples (n−1 values): NaN inside a step; where the interval
    opens a new step (the step count changes), the new step's lead in seconds. `leads` is
    one number, a value per sample, or a mapping step id → seconds (then `step_id` gives
    each sample's step id); it is looked up only where a step opens."""
    steps = np.asarray(step_count)
    out = np.full(max(len(steps) - 1, 0), np.nan)
    opens = np.flatnonzero(steps[1:] != steps[:-1])
    if len(opens) == 0:
        return out
    if isinstance(leads, Mapping):
        ids = np.asarray(step_id)[opens + 1]
        try:
            out[opens] = [leads[k.item() if hasattr(k, "item") else k] for k in ids]
        except KeyError as exc:
            raise InputError(f"step id {exc.args[0]!r} has no measurement interval") from None
    else:
        out[opens] = np.broadcast_to(np.asarray(leads, dtype=float), steps.shape)[opens + 1]
    return out


def interval_integrals(t_s, voltage_V, current_A, leads=None):
    """For n samples, four arrays of n−1 interval contributions:
    (charge_As, discharge_As, charge_Ws, discharge_Ws), all ≥ 0. leads (from `step_leads`)
    marks the intervals that open a step; those carry the new step's first sample over
    min(interval, lead) instead of a trapezoid."""
    t = np.asarray(t_s, dtype=float)
    v = np.asarray(voltage_V, dtype=float)
    i = np.asarray(current_A, dtype=float)
    dt = np.diff(t)
    v0, v1, i0, i1 = v[:-1], v[1:], i[:-1], i[1:]
    # part a's sign is i0's (or, with i0 == 0, i1's); part b's is i1's
    pos_a = np.where(i0 != 0, i0 > 0, i1 > 0)
    # every interval as a whole (part b is nothing: + 0.0, the same floats as the split
    # form adds); then those that cross zero current are split, but for the ones that open
    # a step, which the step's first sample replaces (few: a step's current keeps its sign)
    q_a = 0.5 * (i0 + i1) * dt
    e_a = _product_integral(dt, v0, v1, i0, i1)
    charge_As = np.where(pos_a, q_a, 0.0) + 0.0
    discharge_As = -(np.where(pos_a, 0.0, q_a) + 0.0)
    charge_Ws = np.where(pos_a, e_a, 0.0) + 0.0
    discharge_Ws = -(np.where(pos_a, 0.0, e_a) + 0.0)
    crossing = (i0 * i1) < 0
    opens = None
    if leads is not None:
        leads = np.asarray(leads, dtype=float)
        opens = np.flatnonzero(~np.isnan(leads))
        crossing[opens] = False
    crosses = np.flatnonzero(crossing)
    if len(crosses):
        split = _split_at_zero(dt[crosses], v0[crosses], v1[crosses], i0[crosses],
                               i1[crosses], pos_a[crosses])
        for whole, part in zip((charge_As, discharge_As, charge_Ws, discharge_Ws), split,
                               strict=True):
            whole[crosses] = part
    if opens is not None and len(opens):
        h = np.minimum(dt[opens], leads[opens])
        i_open = i1[opens]
        q, e, up = i_open * h, v1[opens] * i_open * h, i_open > 0
        charge_As[opens] = np.where(up, q, 0.0)
        discharge_As[opens] = np.where(up, 0.0, -q)
        charge_Ws[opens] = np.where(up, e, 0.0)
        discharge_Ws[opens] = np.where(up, 0.0, -e)
    return charge_As, discharge_As, charge_Ws, discharge_Ws


def interval_sums(t, v, i, lead: float | None = None, dt=None) -> list[float]:
    """The sums of `interval_integrals`' four arrays over n samples (1-D float arrays):
    [charge_As, discharge_As, charge_Ws, discharge_Ws]; `lead`: the first interval opens a
    step with that lead (None: it does not); `dt`: np.diff(t), if the caller has it. The
    same figures to rounding (the order of the additions may differ). A batch whose
    current keeps one strict sign (a step's samples, as a channel hands them over) costs
    two products and two sums instead of the arrays of every part; one current throughout
    (a constant-current step's) a sum of the voltages' trapezoids: the charge is that
    current times the time, the energy it times ∫V dt."""
    sums = [0.0, 0.0, 0.0, 0.0]
    if len(t) < 2:
        return sums
    if dt is None:
        dt = np.diff(t)
    if lead is not None:  # the new step's first sample over its lead, as `interval_integrals`
        h = min(float(dt[0]), lead)
        i_open = float(i[1])
        q, e = i_open * h, float(v[1]) * i_open * h
        if i_open > 0:
            sums[0], sums[2] = q, e
        else:
            sums[1], sums[3] = -q, -e
        t, v, i, dt = t[1:], v[1:], i[1:], dt[1:]
        if len(t) < 2:
            return sums
    low, high = float(i.min()), float(i.max())
    if low > 0 or high < 0:
        if low == high:  # Σ i·dt and Σ i·(v0 + v1)/2·dt with one i
            q = low * float(t[-1] - t[0])
            e = 0.5 * low * float(np.dot(v[:-1] + v[1:], dt))
        else:
            i0, i1 = i[:-1], i[1:]
            q = float((0.5 * (i0 + i1) * dt).sum())
            e = float(_product_integral(dt, v[:-1], v[1:], i0, i1).sum())
        if low > 0:
            sums[0] += q
            sums[2] += e
        else:
            sums[1] -= q
            sums[3] -= e
        return sums
    for k, part in enumerate(interval_integrals(t, v, i)):
        sums[k] += float(part.sum())
    return sums


def _split_at_zero(dt, v0, v1, i0, i1, pos_a):
    """The four contributions of intervals that all cross zero current, each split at the
    crossing: part a (to the crossing) with i0's sign, part b with i1's."""
    f = i0 / (i0 - i1)  # the fraction of the interval before the crossing
    h_a = f * dt
    h_b = dt - h_a
    vc = v0 + f * (v1 - v0)
    q_a = 0.5 * (i0 + 0.0) * h_a
    e_a = _product_integral(h_a, v0, vc, i0, 0.0)
    q_b = 0.5 * i1 * h_b
    e_b = _product_integral(h_b, vc, v1, 0.0, i1)
    pos_b = i1 > 0
    charge_As = np.where(pos_a, q_a, 0.0) + np.where(pos_b, q_b, 0.0)
    discharge_As = -(np.where(pos_a, 0.0, q_a) + np.where(pos_b, 0.0, q_b))
    charge_Ws = np.where(pos_a, e_a, 0.0) + np.where(pos_b, e_b, 0.0)
    discharge_Ws = -(np.where(pos_a, 0.0, e_a) + np.where(pos_b, 0.0, e_b))
    return charge_As, discharge_As, charge_Ws, discharge_Ws


def as_columns(name: str, *columns) -> list[np.ndarray]:
    """Columns of one batch as 1-D float arrays of equal length; InputError otherwise."""
    out = []
    for col in columns:
        a = np.atleast_1d(np.asarray(col, dtype=float))
        if a.ndim != 1:
            raise InputError(f"{name}: each column must be one-dimensional")
        out.append(a)
    n = {len(a) for a in out}
    if len(n) > 1:
        raise InputError(f"{name}: the columns have different lengths {sorted(n)}")
    for a in out:
        if not np.all(np.isfinite(a)):
            raise InputError(f"{name}: the samples contain a NaN or infinite value")
    return out


def check_time_order(name: str, t_prev: float | None, t: np.ndarray, dt=None) -> None:
    """Samples must come in time order (equal times are allowed: a step boundary); `dt`:
    np.diff(t), if the caller has it."""
    if len(t) == 0:
        return
    if ((np.diff(t) if dt is None else dt) < 0).any() or (t_prev is not None and
                                                        t[0] < t_prev):
        raise InputError(f"{name}: samples must come in time order, but time goes back")
