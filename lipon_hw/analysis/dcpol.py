"""Electronic conductivity from a DC polarization hold across a blocking cell.

A voltage V held across Cu/LiPON/Cu first charges the double layers (a current decaying
over seconds to minutes) and then settles to the leakage that electrons carry through the
film, I_ss; σ_e = I_ss·t / (V·A).

The steady state is estimated on the tail of the hold (by default its last 90 % in time,
after the fast double-layer charging): I(t) = I_ss + Σ_k a_k·e^{−(t−t0)/τ_k} with zero, one
or two exponentials, the number chosen by the Bayesian information criterion, so a hold
that has flattened gives the plain tail mean and one still relaxing is extrapolated. If
the fit fails or lands outside the range the data allow, the mean of the last tenth of
the hold is used instead (method "tail_mean").
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from lipon_hw.analysis.integrate import as_columns, check_time_order
from lipon_hw.errors import InputError


@dataclass(frozen=True)
class SteadyCurrent:
    """I_ss with how it was found: method "fit" (n_exp exponentials, time constants
    tau_s) or "tail_mean"; rms_rel is the fit's rms residual over |I_ss|."""

    I_ss_A: float
    method: str
    n_exp: int
    tau_s: tuple[float, ...]
    rms_rel: float
    tail_mean_A: float

    def to_dict(self) -> dict:
        return asdict(self)


def electronic_conductivity_S_cm(I_ss_A: float, voltage_V: float, thickness_nm: float,
                                 area_cm2: float) -> float:
    """σ_e = I·t / (V·A); thickness in nm, area in cm²."""
    for name, value in (("voltage_V", voltage_V), ("thickness_nm", thickness_nm),
                        ("area_cm2", area_cm2)):
        if not (math.isfinite(value) and value != 0) or (name != "voltage_V" and value < 0):
            raise InputError(f"electronic conductivity needs a positive {name}, not {value!r}")
    return abs(I_ss_A) * thickness_nm * 1e-7 / (abs(voltage_V) * area_cm2)


def _fit(t: np.ndarray, i: np.ndarray, n_exp: int, scale: float):
    t0, span = t[0], t[-1] - t[0]
    dt_min = max(float(np.min(np.diff(t)[np.diff(t) > 0], initial=span)), span * 1e-6)
    x0 = [float(i[-1]) / scale]
    lo, hi = [-np.inf], [np.inf]
    amp = float(i[0] - i[-1]) / scale
    for k in range(n_exp):
        x0 += [amp / n_exp, math.log10(span / (3.0 * 10 ** k))]
        lo += [-np.inf, math.log10(dt_min)]
        hi += [np.inf, math.log10(10 * span)]
    x0 = np.clip(np.array(x0), np.array(lo) + 1e-12, np.array(hi) - 1e-12)

    def model(x):
        y = np.full(t.shape, x[0])
        for k in range(n_exp):
            y = y + x[1 + 2 * k] * np.exp(-(t - t0) / 10 ** x[2 + 2 * k])
        return y

    from scipy.optimize import least_squares  # here: a run that fits nothing never loads scipy

    res = least_squares(lambda x: model(x) - i / scale, x0, bounds=(lo, hi), x_scale="jac")
    taus = tuple(sorted(float(10 ** res.x[2 + 2 * k]) for k in range(n_exp)))
    return res, float(res.x[0] * scale), taus


def steady_state_current(t_s, current_A, tail_start_fraction: float = 0.1) -> SteadyCurrent:
    """Estimate the steady leakage current of a hold (see the module docstring).
    tail_start_fraction: the fit uses samples after this fraction of the hold's duration."""
    t, i = as_columns("DC polarization", t_s, current_A)
    check_time_order("DC polarization", None, t)
    if not 0 <= tail_start_fraction < 1:
        raise InputError("DC polarization: tail_start_fraction must be in [0, 1)")
    if len(t) < 8 or t[-1] <= t[0]:
        raise InputError("DC polarization: at least 8 samples over a non-zero time are needed")
    dur = t[-1] - t[0]
    last = t >= t[-1] - 0.1 * dur
    tail_mean = float(np.mean(i[last]))
    sel = t >= t[0] + tail_start_fraction * dur
    tt, ii = t[sel], i[sel]
    if len(tt) < 8:
        tt, ii = t[-8:], i[-8:]
    scale = max(float(np.max(np.abs(ii))), 1e-300)
    best = None
    n = len(tt)
    for n_exp in (0, 1, 2):
        if n < 2 * n_exp + 3:
            break
        try:
            res, i_ss, taus = _fit(tt, ii, n_exp, scale)
        except (ValueError, FloatingPointError):
            continue
        rss = float(np.sum(res.fun ** 2)) + 1e-30
        bic = n * math.log(rss / n) + (1 + 2 * n_exp) * math.log(n)
        if best is None or bic < best[0] - 2.0:  # a new term must earn its place
            best = (bic, n_exp, i_ss, taus, math.sqrt(rss / n) * scale)
    lo, hi = float(np.min(i)), float(np.max(i))
    span = hi - lo
    if best is None or not (lo - span <= best[2] <= hi + span) or \
            (np.sign(best[2]) != np.sign(tail_mean) and tail_mean != 0):
        return SteadyCurrent(tail_mean, "tail_mean", 0, (), math.nan, tail_mean)
    _, n_exp, i_ss, taus, rms = best
    return SteadyCurrent(i_ss, "fit", n_exp, taus, rms / max(abs(i_ss), 1e-300), tail_mean)


@dataclass(frozen=True)
class DcPolarization:
    steady: SteadyCurrent
    voltage_V: float
    sigma_e_S_cm: float

    def to_dict(self) -> dict:
        return {**self.steady.to_dict(), "voltage_V": self.voltage_V,
                "sigma_e_S_cm": self.sigma_e_S_cm}


def analyze_dc_polarization(t_s, current_A, voltage_V: float, thickness_nm: float,
                            area_cm2: float, tail_start_fraction: float = 0.1
                            ) -> DcPolarization:
    """Steady current of the hold and the film's electronic conductivity."""
    steady = steady_state_current(t_s, current_A, tail_start_fraction)
    sigma = electronic_conductivity_S_cm(steady.I_ss_A, voltage_V, thickness_nm, area_cm2)
    return DcPolarization(steady, float(voltage_V), sigma)
