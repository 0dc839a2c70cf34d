"""Cell-test figures as PNG files: voltage against capacity for a few cycles, discharge
capacity and coulombic efficiency against cycle, and Nyquist plots with their fit.

Figures are drawn on matplotlib's Agg canvas without pyplot: no display is needed and no
global figure registry is touched. Each function writes one PNG and returns its path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from lipon_hw.analysis.cycles import CycleStats
from lipon_hw.analysis.eis import EisFit
from lipon_hw.analysis.integrate import as_columns, interval_integrals, step_leads
from lipon_hw.errors import InputError

DPI = 120
CAPACITY_COLOUR = "#1f4e9a"
CE_COLOUR = "#c0392b"


def _figure(width_in: float = 7.0, height_in: float = 4.8) -> Figure:
    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    fig.clear()
    return path


def _capacity_unit(max_Ah: float) -> tuple[float, str]:
    """A scale that keeps thin-film capacities readable."""
    return (1e6, "µAh") if max_Ah < 1e-3 else (1e3, "mAh")


def select_cycles(cycles: Sequence[int], max_cycles: int = 6) -> list[int]:
    """Up to max_cycles cycle numbers spread evenly from the first to the last."""
    uniq = sorted(set(int(c) for c in cycles))
    if len(uniq) <= max_cycles:
        return uniq
    idx = np.unique(np.round(np.linspace(0, len(uniq) - 1, max_cycles)).astype(int))
    return [uniq[k] for k in idx]


def plot_voltage_capacity(t_s, voltage_V, current_A, cycle, path: Path | str,
                          cycles: Iterable[int] | None = None, max_cycles: int = 6,
                          title: str = "", step=None, lead_s=None, step_id=None) -> Path:
    """Voltage against the capacity charged (or discharged) since each half cycle began,
    for the chosen cycles (default: up to max_cycles spread over the test), coloured by
    cycle number. step (per sample: the step count) and lead_s (as `integrate.step_leads`
    takes it, with step_id for a mapping) keep the open circuit between steps out of the
    capacity, as the cycle figures do."""
    t, v, i, c = as_columns("voltage–capacity plot", t_s, voltage_V, current_A, cycle)
    joins = None
    if step is not None and lead_s is not None:
        (st,) = as_columns("voltage–capacity plot", step)
        ids = None if step_id is None else np.asarray(step_id)
        per_sample = not isinstance(lead_s, Mapping) and np.ndim(lead_s) > 0
        lead = np.asarray(lead_s, dtype=float) if per_sample else lead_s
    if len(t) < 2:
        raise InputError("voltage–capacity plot: at least two samples are needed")
    chosen = select_cycles(c.astype(int), max_cycles) if cycles is None else \
        sorted(set(int(x) for x in cycles))
    curves = []
    for n in chosen:
        sel = c == n
        if sel.sum() < 2:
            continue
        tc, vc, ic = t[sel], v[sel], i[sel]
        if step is not None and lead_s is not None:
            joins = step_leads(st[sel], lead[sel] if per_sample else lead,
                               None if ids is None else ids[sel])
        ch, dis, _, _ = interval_integrals(tc, vc, ic, joins)
        q_ch = np.concatenate(([0.0], np.cumsum(ch))) / 3600
        q_dis = np.concatenate(([0.0], np.cumsum(dis))) / 3600
        curves.append((n, vc, ic, q_ch, q_dis))
    if not curves:
        raise InputError("voltage–capacity plot: none of the chosen cycles has two samples")
    scale, unit = _capacity_unit(max(max(x[3].max(), x[4].max()) for x in curves))
    fig = _figure()
    ax = fig.add_subplot()
    cmap = colormaps["viridis"]
    lo, hi = curves[0][0], curves[-1][0]
    for n, vc, ic, q_ch, q_dis in curves:
        colour = cmap(0.0 if hi == lo else (n - lo) / (hi - lo) * 0.9)
        charging = ic > 0
        discharging = ic < 0
        ax.plot(scale * np.where(charging, q_ch, np.nan), np.where(charging, vc, np.nan),
                color=colour, lw=1.4, label=f"cycle {n}")
        ax.plot(scale * np.where(discharging, q_dis, np.nan),
                np.where(discharging, vc, np.nan), color=colour, lw=1.4, ls="--")
    ax.set_xlabel(f"capacity ({unit}); solid: charge, dashed: discharge")
    ax.set_ylabel("voltage (V)")
    ax.grid(True, color="#dddddd", lw=0.6)
    ax.legend(fontsize="small", framealpha=0.85)
    if title:
        ax.set_title(title, fontsize="medium")
    return _save(fig, path)


def plot_capacity_ce(stats: Iterable[CycleStats], path: Path | str, title: str = "") -> Path:
    """Discharge capacity (left axis) and coulombic efficiency in % (right axis) per cycle."""
    rows = [(s.cycle, s.discharge_Ah, s.coulombic_efficiency) for s in stats]
    if not rows:
        raise InputError("capacity plot: there are no cycles to plot")
    n = np.array([r[0] for r in rows])
    q = np.array([r[1] for r in rows])
    ce = np.array([np.nan if r[2] is None else 100 * r[2] for r in rows])
    scale, unit = _capacity_unit(float(np.max(q)))
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot(n, scale * q, "o-", ms=3, lw=1.2, color=CAPACITY_COLOUR)
    ax.set_xlabel("cycle")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"discharge capacity ({unit})", color=CAPACITY_COLOUR)
    ax.set_ylim(bottom=0, top=1.1 * scale * float(np.max(q)) or 1.0)
    ax.grid(True, color="#dddddd", lw=0.6)
    ax_ce = ax.twinx()
    ax_ce.plot(n, ce, "s-", ms=3, lw=1.0, color=CE_COLOUR)
    ax_ce.set_ylabel("coulombic efficiency (%)", color=CE_COLOUR)
    # the percentages themselves on the axis, never an offset (+9.99e1) to add mentally
    ax_ce.ticklabel_format(axis="y", useOffset=False, style="plain")
    if title:
        ax.set_title(title, fontsize="medium")
    return _save(fig, path)


def plot_nyquist(f_Hz, z_ohm, path: Path | str, fit: EisFit | None = None,
                 zoom_ohm: float | None = None, title: str = "") -> Path:
    """−Z'' against Z' on equal axes, −Z'' up; the fit as a line over the measured range.
    zoom_ohm limits both axes; with a fit and no zoom the view stops at 1.6× the fit's
    R0 + ΣR, so the arcs stay visible next to a blocking electrode's tail."""
    f = np.asarray(f_Hz, dtype=float).ravel()
    z = np.asarray(z_ohm, dtype=complex).ravel()
    if len(f) == 0 or len(f) != len(z):
        raise InputError("Nyquist plot: give as many impedances as frequencies (at least one)")
    fig = _figure(6.4, 6.0)
    ax = fig.add_subplot()
    ax.plot(z.real, -z.imag, "o", ms=3.5, color=CAPACITY_COLOUR, label="measured")
    if fit is not None:
        fd = np.logspace(np.log10(f.max()), np.log10(f.min()), 400)
        zf = fit.impedance(fd)
        label = (f"fit (film R = {fit.film_resistance_ohm:.4g} Ω "
                 f"± {fit.film_R_rel_uncertainty:.1%})" if fit.film_resolved
                 else "fit (film arc not resolved)")
        ax.plot(zf.real, -zf.imag, "-", lw=1.4, color=CE_COLOUR, label=label)
        if zoom_ohm is None and fit.tail is not None:
            zoom_ohm = 1.6 * (fit.R0_ohm + sum(a.R_ohm for a in fit.arcs))
    if zoom_ohm is not None:
        ax.set_xlim(0, zoom_ohm)
        ax.set_ylim(0, zoom_ohm)
    ax.set_aspect("equal", adjustable="box" if zoom_ohm is not None else "datalim")
    ax.set_xlabel("Z' (Ω)")
    ax.set_ylabel("−Z'' (Ω)")
    ax.grid(True, color="#dddddd", lw=0.6)
    ax.legend(fontsize="small", loc="upper left")
    if title:
        ax.set_title(title, fontsize="medium")
    return _save(fig, path)
