"""`lipon_hw.analysis.lsq.levenberg_marquardt` on textbook problems, against scipy's
bounded least squares (`scipy.optimize.least_squares`, trust-region reflective) as the
independent reference: the same minima, bounds kept, a bound the minimum presses on
reported, and what it says when it cannot converge."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import least_squares

from lipon_hw.analysis.lsq import levenberg_marquardt


def rosenbrock_residuals(xs):
    """Rosenbrock's function as two residuals, 10(y − x²) and 1 − x: minimum at (1, 1)."""
    x, y = xs[:, 0], xs[:, 1]
    return np.stack([10.0 * (y - x * x), 1.0 - x], axis=1)


def rosenbrock_jacobian(xs):
    x = xs[:, 0]
    jac = np.zeros((len(xs), 2, 2))
    jac[:, 0, 0] = -20.0 * x
    jac[:, 0, 1] = 10.0
    jac[:, 1, 0] = -1.0
    return jac


T = np.linspace(0.0, 4.0, 40)
TRUE = np.array([2.5, 1.3, 0.4])  # amplitude, rate, offset
NOISE = np.random.default_rng(5).normal(0.0, 0.01, len(T))
Y = TRUE[0] * np.exp(-TRUE[1] * T) + TRUE[2] + NOISE


def decay_residuals(xs):
    return xs[:, 0:1] * np.exp(-xs[:, 1:2] * T) + xs[:, 2:3] - Y


def decay_jacobian(xs):
    e = np.exp(-xs[:, 1:2] * T)
    return np.stack([e, -xs[:, 0:1] * T * e, np.ones_like(e)], axis=2)


def one(fun, jac):
    return (lambda x: fun(x[np.newaxis])[0]), (lambda x: jac(x[np.newaxis])[0])


STARTS = np.array([[-1.2, 1.0], [0.0, 0.0], [2.0, -1.0], [-0.5, 3.0]])
LO, HI = np.array([-3.0, -3.0]), np.array([3.0, 3.0])


def test_every_start_reaches_the_minimum_scipy_reaches():
    reached = levenberg_marquardt(rosenbrock_residuals, rosenbrock_jacobian, STARTS, LO, HI)
    f, j = one(rosenbrock_residuals, rosenbrock_jacobian)
    for k, x0 in enumerate(STARTS):
        ref = least_squares(f, x0, jac=j, bounds=(LO, HI), x_scale="jac")
        np.testing.assert_allclose(reached.x[k], ref.x, atol=1e-6)
        np.testing.assert_allclose(reached.x[k], [1.0, 1.0], atol=1e-6)
    assert reached.converged.all()
    assert not reached.at_bound.any()
    np.testing.assert_allclose(reached.fun, rosenbrock_residuals(reached.x))
    np.testing.assert_allclose(reached.jac, rosenbrock_jacobian(reached.x))


def test_a_noisy_fit_gives_scipys_parameters_and_cost():
    starts = np.array([[1.0, 0.5, 0.0], [5.0, 3.0, 1.0], [0.5, 0.1, -1.0]])
    lo, hi = np.array([0.0, 0.0, -5.0]), np.array([10.0, 10.0, 5.0])
    reached = levenberg_marquardt(decay_residuals, decay_jacobian, starts, lo, hi)
    f, j = one(decay_residuals, decay_jacobian)
    ref = least_squares(f, starts[0], jac=j, bounds=(lo, hi), x_scale="jac")
    for k in range(len(starts)):
        np.testing.assert_allclose(reached.x[k], ref.x, rtol=1e-6)
        assert reached.cost[k] == pytest.approx(ref.cost, rel=1e-9)
    np.testing.assert_allclose(reached.x[0], TRUE, rtol=0.05)


def test_a_minimum_on_a_bound_is_found_and_reported_there():
    """The rate held below 1.0 (the data want 1.3): the fit ends at the bound, the others
    at their best for it, as scipy finds; the rate is reported at its bound, no other."""
    starts = np.array([[1.0, 0.5, 0.0], [3.0, 0.2, 1.0]])
    lo, hi = np.array([0.0, 0.0, -5.0]), np.array([10.0, 1.0, 5.0])
    reached = levenberg_marquardt(decay_residuals, decay_jacobian, starts, lo, hi)
    f, j = one(decay_residuals, decay_jacobian)
    ref = least_squares(f, starts[0], jac=j, bounds=(lo, hi), x_scale="jac")
    assert ref.active_mask.tolist() == [0, 1, 0]
    for k in range(len(starts)):
        np.testing.assert_allclose(reached.x[k], ref.x, rtol=1e-6)
        assert reached.at_bound[k].tolist() == [False, True, False]
        assert reached.cost[k] == pytest.approx(ref.cost, rel=1e-8)
    assert np.all((reached.x >= lo) & (reached.x <= hi))


def test_an_evaluation_budget_too_small_is_said_not_converged():
    reached = levenberg_marquardt(rosenbrock_residuals, rosenbrock_jacobian, STARTS[:1],
                                  LO, HI, max_nfev=8)
    assert reached.nfev == 8
    assert not reached.converged[0]
    r0 = rosenbrock_residuals(STARTS[:1])
    assert reached.cost[0] < 0.5 * float(np.sum(r0 * r0))  # but it went downhill


def test_a_start_the_model_cannot_evaluate_stays_with_an_infinite_cost():
    def residuals(xs):
        out = rosenbrock_residuals(xs)
        out[xs[:, 0] < -2.9] = np.nan
        return out

    starts = np.array([[-3.0, 1.0], [0.0, 0.0]])
    reached = levenberg_marquardt(residuals, rosenbrock_jacobian, starts, LO, HI)
    assert reached.cost[0] == np.inf and reached.x[0, 0] < -2.9
    np.testing.assert_allclose(reached.x[1], [1.0, 1.0], atol=1e-6)


def test_a_linear_problem_stops_as_soon_as_a_step_no_longer_lowers_the_cost():
    """A straight line through noisy points: the first step lands on the minimum (up to
    the small damping), the next lowers the cost by less than ftol: done, within a few
    evaluations, not after the damping has grown to its limit."""
    y = 0.7 * T - 0.2 + NOISE
    design = np.stack([T, np.ones_like(T)], axis=1)

    def residuals(xs):
        return xs @ design.T - y

    def jacobian(xs):
        return np.broadcast_to(design, (len(xs), *design.shape))

    reached = levenberg_marquardt(residuals, jacobian, np.array([[0.0, 0.0], [5.0, 5.0]]),
                                  np.array([-10.0, -10.0]), np.array([10.0, 10.0]))
    exact = np.linalg.lstsq(design, y, rcond=None)[0]
    np.testing.assert_allclose(reached.x, [exact, exact], rtol=1e-7)
    assert reached.converged.all()
    assert reached.nfev <= 5
