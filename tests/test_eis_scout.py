"""The EIS fit's pieces below `fit_spectrum`: the model's residuals and analytic Jacobian
for several parameter vectors at once, and the scouting of the starts with
`lsq.levenberg_marquardt` on every start together."""

from __future__ import annotations

import numpy as np
import pytest
from test_eis_fit_range import noisy_spectrum

from lipon_hw.analysis import eis
from lipon_hw.analysis.lsq import levenberg_marquardt
from lipon_hw.sim.cells.factories import cell_from_spec


def single(p):
    """The residuals and Jacobian at one parameter vector, as scipy asks for them."""
    return ((lambda x: p.residuals_of(x[np.newaxis])[0]),
            (lambda x: p.jacobian_of(x[np.newaxis])[0]))


def scout(p, starts, lo, hi):
    reached = levenberg_marquardt(p.residuals_of, p.jacobian_of, starts, lo, hi,
                                  ftol=eis.SCOUT_FTOL, max_nfev=eis.SCOUT_NFEV)
    return reached.x, reached.cost


def problem(kind: str, temperature_C: int, tail: str | None, n_arcs: int = 2):
    cell = cell_from_spec({"kind": kind, "temperature_C": temperature_C})
    f, z = eis._validate(*noisy_spectrum(cell, 77 + temperature_C), n_arcs)
    w = 2 * np.pi * f
    p = eis._Residuals(w, z, n_arcs, tail)
    lo, hi = eis._bounds(w, z, n_arcs, tail)
    starts = np.clip(np.array(eis._starts(w, z, n_arcs, tail)),
                     lo + 1e-9 * (hi - lo), hi - 1e-9 * (hi - lo))
    return p, lo, hi, starts


TAILS = [("blocking", 25, eis.CPE_TAIL), ("lnmo", 25, eis.DIFFUSION_TAIL),
         ("blocking", 25, None)]


@pytest.mark.parametrize(("kind", "temperature_C", "tail"), TAILS)
def test_many_parameter_vectors_give_what_each_gives_alone(kind, temperature_C, tail):
    p, _, _, starts = problem(kind, temperature_C, tail)
    together_r = p.residuals_of(starts)
    together_j = p.jacobian_of(starts).copy()
    assert together_r.shape == (len(starts), 2 * len(p.zw))
    assert together_j.shape == (len(starts), 2 * len(p.zw), starts.shape[1])
    residuals, jacobian = single(p)
    for k, x in enumerate(starts):
        np.testing.assert_allclose(residuals(x), together_r[k], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(jacobian(x), together_j[k], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(("kind", "temperature_C", "tail"), TAILS)
def test_the_analytic_jacobian_is_the_residuals_slope(kind, temperature_C, tail):
    p, _, _, starts = problem(kind, temperature_C, tail)
    residuals, jacobian = single(p)
    for x in starts[:3]:
        jac = jacobian(x).copy()
        for i in range(len(x)):
            h = 1e-6 * max(1.0, abs(x[i]))
            up, down = x.copy(), x.copy()
            up[i] += h
            down[i] -= h
            slope = (residuals(up) - residuals(down)) / (2 * h)
            scale = np.max(np.abs(slope)) + 1e-12
            assert np.max(np.abs(jac[:, i] - slope)) < 1e-5 * scale, (tail, i)


@pytest.mark.parametrize(("kind", "temperature_C", "tail"), TAILS)
def test_scouting_lowers_every_start_and_stays_inside_the_bounds(kind, temperature_C, tail):
    p, lo, hi, starts = problem(kind, temperature_C, tail)
    r0 = p.residuals_of(starts)
    before = 0.5 * np.sum(r0 * r0, axis=1)
    reached, costs = scout(p, starts.copy(), lo, hi)
    assert np.all((reached >= lo) & (reached <= hi))
    assert np.all(costs <= before)
    assert np.all(costs[before > 1e-6] < 0.5 * before[before > 1e-6])  # not a no-op
    r = p.residuals_of(reached)
    np.testing.assert_allclose(costs, 0.5 * np.sum(r * r, axis=1), rtol=1e-12)


def test_a_parameter_the_data_push_past_its_bound_is_held_at_it():
    """A blocking cell's film arc fitted with α bounded at 0.8 from above: the data want
    more (the simulated arc is near-ideal), so the best scout ends at the bound, and the
    other parameters find their best with α held there, as scipy's bounded solver finds
    them fitted to the end."""
    from scipy.optimize import least_squares

    p, lo, hi, starts = problem("blocking", 25, eis.CPE_TAIL)
    hi = hi.copy()
    hi[3] = 0.8  # the first arc's α
    starts = np.minimum(starts, hi - 1e-9 * (hi - lo))
    reached, costs = scout(p, starts.copy(), lo, hi)
    assert np.all(reached <= hi)
    best = reached[np.argmin(costs)]
    assert best[3] == pytest.approx(0.8, abs=1e-6)
    residuals, jacobian = single(p)
    bounded = min(least_squares(residuals, x, bounds=(lo, hi), x_scale="jac",
                                jac=jacobian).cost for x in starts)
    assert costs.min() < 1.01 * bounded


def test_the_scouts_reach_the_minimum_the_fit_reports():
    """The best scout ends near the minimum the whole fit reports (the scouts stop at a
    loose tolerance; the finalists go on from there)."""
    cell = cell_from_spec({"kind": "lnmo", "temperature_C": 25})
    f, z = noisy_spectrum(cell, 102)
    fit = eis.fit_spectrum(f, z)
    p, lo, hi, starts = problem("lnmo", 25, eis.DIFFUSION_TAIL)
    _, costs = scout(p, starts, lo, hi)
    n_points = len(p.zw)
    assert 2 * costs.min() / (2 * n_points) == pytest.approx(fit.rms_relative ** 2, rel=0.05)


def test_a_spectrum_the_model_cannot_follow_anywhere_is_one_sentence(monkeypatch):
    """Were the model's residuals not finite at every start (they are finite for any
    spectrum `_validate` lets through), the fit says so as bad input, not with a
    traceback from its linear algebra."""
    cell = cell_from_spec({"kind": "lnmo", "temperature_C": 25})
    f, z = noisy_spectrum(cell, 102)
    real = eis._Residuals.residuals_of
    monkeypatch.setattr(eis._Residuals, "residuals_of",
                        lambda self, X: np.full_like(real(self, X), np.nan))
    with pytest.raises(eis.InputError, match="no finite impedance at any starting point"):
        eis.fit_spectrum(f, z)
