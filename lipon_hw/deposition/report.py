"""Per-layer plots of a run: deposition rate and thickness against time.

`write_layer_plots` writes one PNG per step of a run that lays down a film,
`layer-<n>-<material>.png` (n counts those steps of the run from 1). Which steps they are,
their film, and the quantities holding their readings are what the run stored as it
started (`Store.run_steps`; the migration to store layout 4 inferred them for older runs):
nothing here reads a sequence's text or guesses from a step's or a quantity's name. Each
plot has two panels sharing a time axis in minutes from the step start:

- rate: the raw monitor rate (light when a smoother line is drawn over it), the rate
  loop's filtered rate (for a step that records none and whose raw rate is noisy, a
  running mean over about 1/60 of the step), the setpoint dashed when the step has one,
  and the source current on a twin axis when the step records it;
- thickness: the monitor thickness, with the step's target dashed (a deposition
  controller also counts behind the closed shutter: that part is grey).

The interval(s) with the shutter open are shaded on both panels, and interlock or
operator holds are shaded in red. A step that records its shutter has it open while that
reading is 1; a step that records none has it open for the whole step except during holds.

Readings are streamed once through the run, in time order, keeping only the
quantities and time window of the layer being collected, so memory follows one
layer, not the run. Figures are built on matplotlib's Agg canvas without pyplot:
no display is needed and no global figure registry is touched.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lipon_hw.store import Alarm, Layer, StepFilm, Store

DPI = 110
FIGSIZE_IN = (9.0, 6.4)

RAW_COLOUR = "#1f77b4"
RAW_LIGHT = "#9ecae1"
FILTERED_COLOUR = "#08519c"
THICKNESS_COLOUR = "#2ca02c"
CLOSED_COLOUR = "#aaaaaa"
CURRENT_COLOUR = "#d95f02"
TARGET_COLOUR = "#444444"
SHUTTER_COLOUR = "#fff6c8"
HOLD_COLOUR = "#f4a6a6"


@dataclass
class _Layer:
    """One layer step: where to look, and what was collected there."""

    number: int
    step: dict  # the step as it ran: idx, kind, status, times
    film: StepFilm  # what the run stored at its start about the step's film
    material: str
    t0: float
    t1: float
    layer: Layer | None = None  # the film-stack entry the step recorded, if any
    series: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    #: role in the plot (rate, filtered, ...) -> quantity name
    names: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.names = self.film.readings()

    def add(self, name: str, t: float, value: float) -> None:
        for role, quantity in self.names.items():
            if quantity == name:
                ts, vs = self.series.setdefault(role, ([], []))
                ts.append(t)
                vs.append(value)


def write_layer_plots(store: Store, run_id: int, out_dir: Path | str) -> list[Path]:
    """Write one PNG per step of run `run_id` that lays down a film into `out_dir`
    (created if missing); return their paths in step order."""
    run = store.run(run_id)
    layers = _layer_steps(store, run, store.steps(run_id))
    if not layers:
        return []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    holds = _holds(store.alarms(run_id))
    paths = []
    for layer in _collect(store, run_id, layers):
        path = out / f"layer-{layer.number}-{_safe(layer.material)}.png"
        _plot(layer, run_id, run.name, holds, path)
        paths.append(path)
    return paths


def layer_readings(store: Store, run_id: int) -> list[_Layer]:
    """What the plots draw: each step of the run that lays down a film, in step order,
    with its film and the readings of its window by role (`series`: rate, filtered,
    thickness, current, shutter -> times, values)."""
    run = store.run(run_id)
    return list(_collect(store, run_id, _layer_steps(store, run, store.steps(run_id))))


# --- which steps, which quantities --------------------------------------------------
def _layer_steps(store: Store, run, steps: list[dict]) -> list[_Layer]:
    films = {s.idx: s.film for s in store.run_steps(run.id) if s.film is not None}
    stack = [la for la in store.film_stack(run.sample_id) if la.run_id == run.id] \
        if run.sample_id else []
    end_of_run = store.last_reading_t(run.id)
    layers: list[_Layer] = []
    for i, step in enumerate(steps):
        film = films.get(step["idx"])
        if film is None:
            continue
        entry = _next_layer(stack, film.material)
        material = film.material or (entry.material if entry else "layer")
        t0 = step["t_start_s"]
        t1 = step["t_end_s"]
        if t1 is None:  # still running, or the run was killed in this step
            later = [s["t_start_s"] for s in steps[i + 1:]]
            t1 = later[0] if later else max(end_of_run or t0, t0)
        layers.append(_Layer(len(layers) + 1, step, film, str(material), t0, t1, entry))
    return layers


def _next_layer(stack: list[Layer], material: str | None) -> Layer | None:
    """Take the run's next film-stack entry if it is this step's (same material)."""
    if stack and (material is None or stack[0].material == material):
        return stack.pop(0)
    return None


def _holds(alarms: list[Alarm]) -> list[tuple[float, float | None]]:
    """Hold intervals: a `hold` alarm until its source says it cleared (None: never did)."""
    spans: list[tuple[float, float | None]] = []
    open_since: dict[str, float] = {}
    for a in alarms:
        if a.severity == "hold":
            open_since.setdefault(a.source, a.t_s)
        elif a.source in open_since and "cleared" in a.message:
            spans.append((open_since.pop(a.source), a.t_s))
    spans += [(t, None) for t in open_since.values()]
    return sorted(spans, key=lambda s: s[0])


# --- one pass through the readings ---------------------------------------------------
def _collect(store: Store, run_id: int, layers: list[_Layer]) -> Iterable[_Layer]:
    """Yield each layer, in step order, once its window has been read."""
    wanted = sorted({q for la in layers for q in la.names.values()})
    pending = sorted(layers, key=lambda la: la.t0)
    active: list[_Layer] = []
    done: dict[int, _Layer] = {}
    order = [la.number for la in layers]

    def finished(la: _Layer):
        done[la.number] = la
        while order and order[0] in done:
            yield done.pop(order.pop(0))

    if wanted:
        readings = store.readings(run_id, wanted)
        try:
            for t, name, value in readings:
                while pending and pending[0].t0 <= t:
                    active.append(pending.pop(0))
                for la in [la for la in active if t > la.t1]:
                    active.remove(la)
                    yield from finished(la)
                for la in active:
                    la.add(name, t, value)
                if not pending and not active:
                    break
        finally:
            readings.close()
    for la in active + pending:
        yield from finished(la)


# --- drawing ---------------------------------------------------------------------------
def _plot(layer: _Layer, run_id: int, run_name: str,
          holds: list[tuple[float, float | None]], path: Path) -> None:
    film, t0 = layer.film, layer.t0
    span_min = max((layer.t1 - t0) / 60, 1e-3)

    def minutes(ts: list[float]) -> list[float]:
        return [(t - t0) / 60 for t in ts]

    fig = Figure(figsize=FIGSIZE_IN, layout="constrained")
    FigureCanvasAgg(fig)
    ax_rate, ax_thick = fig.subplots(2, 1, sharex=True, height_ratios=(1, 1))
    s = layer.series

    held = [(max(a, t0), min(b if b is not None else layer.t1, layer.t1)) for a, b in holds
            if a <= layer.t1 and (b is None or b >= t0)]
    shutter = _shutter_spans(layer, held)
    for ax in (ax_rate, ax_thick):
        for i, (a, b) in enumerate(shutter):
            ax.axvspan((a - t0) / 60, (b - t0) / 60, color=SHUTTER_COLOUR, zorder=0,
                       label="shutter open" if i == 0 and ax is ax_rate else None)
        for i, (a, b) in enumerate(held):
            ax.axvspan((a - t0) / 60, (b - t0) / 60, color=HOLD_COLOUR, alpha=0.6, zorder=0,
                       label="hold" if i == 0 and ax is ax_rate else None)

    smooth, smooth_label = s.get("filtered"), "rate (filtered)"
    if smooth is None and "rate" in s and film.smooth_rate:
        # e.g. a sputter monitor's rate, sampled every few seconds over hours: too noisy
        mean = _running_mean(*s["rate"], window_s=max(60.0, (layer.t1 - t0) / 60))
        if mean is not None:
            smooth = mean[:2]
            smooth_label = f"rate ({mean[2] / 60:.2g} min running mean)"
    if "rate" in s:
        ax_rate.plot(minutes(s["rate"][0]), s["rate"][1], lw=0.8 if smooth else 1.2,
                     color=RAW_LIGHT if smooth else RAW_COLOUR,
                     label="rate (raw)" if smooth else "rate")
    if smooth:
        ax_rate.plot(minutes(smooth[0]), smooth[1], lw=1.6, color=FILTERED_COLOUR,
                     label=smooth_label)
    setpoint = _number(film.rate_setpoint_A_s)
    if setpoint is not None:
        ax_rate.axhline(setpoint, ls="--", lw=1.2, color=TARGET_COLOUR,
                        label=f"setpoint {setpoint:g} Å/s")
    ax_rate.set_ylabel("rate (Å/s)")
    ax_rate.set_ylim(bottom=min([0.0, *_finite(s.get("rate", ((), ()))[1])]))
    handles = ax_rate.get_legend_handles_labels()[0]
    if "current" in s:
        ax_cur = ax_rate.twinx()
        handles += ax_cur.plot(minutes(s["current"][0]), s["current"][1], lw=1.2,
                               color=CURRENT_COLOUR, label="source current")
        ax_cur.set_ylabel("source current (A)", color=CURRENT_COLOUR)
        ax_cur.tick_params(axis="y", colors=CURRENT_COLOUR)
    if handles:  # above the panel, in one row: inside it would hide the trace
        ax_rate.legend(handles=handles, loc="lower left", bbox_to_anchor=(0, 1.01, 1, 0.1),
                       mode="expand", ncols=len(handles), fontsize="small", frameon=False,
                       handlelength=1.6, borderaxespad=0)
    if "rate" not in s and "filtered" not in s:
        ax_rate.text(0.5, 0.5, "no rate recorded", transform=ax_rate.transAxes,
                     ha="center", va="center", color="grey")

    if "thickness" in s:
        ts, vs = s["thickness"]
        inside = np.array([any(a <= t <= b for a, b in shutter) for t in ts], dtype=bool) \
            if "shutter" in s else np.ones(len(ts), dtype=bool)
        v = np.asarray(vs, dtype=float)
        split = bool((v[~inside] != 0).any())  # a controller counts behind the shutter too
        if split:
            ax_thick.plot(minutes(ts), np.where(inside, np.nan, v), lw=1.2, color=CLOSED_COLOUR,
                          label="crystal, shutter closed")
        ax_thick.plot(minutes(ts), np.where(inside, v, np.nan) if split else v, lw=1.6,
                      color=THICKNESS_COLOUR, label="thickness")
    else:
        ax_thick.text(0.5, 0.5, "no thickness recorded", transform=ax_thick.transAxes,
                      ha="center", va="center", color="grey")
    target = _number(film.target_nm)
    if target is not None:
        ax_thick.axhline(target, ls="--", lw=1.2, color=TARGET_COLOUR,
                         label=f"target {target:g} nm")
    ax_thick.set_ylabel("thickness (nm)")
    ax_thick.set_ylim(bottom=0)
    ax_thick.set_xlabel("time from step start (min)")
    ax_thick.set_xlim(0, span_min)
    if ax_thick.get_legend_handles_labels()[0]:
        ax_thick.legend(loc="upper left", fontsize="small", framealpha=0.85)
    for ax in (ax_rate, ax_thick):
        ax.grid(True, color="#dddddd", lw=0.6)
        ax.set_axisbelow(True)

    fig.suptitle(_title(layer, run_id, run_name, shutter), fontsize="medium")
    fig.savefig(path, dpi=DPI)
    fig.clear()


def _title(layer: _Layer, run_id: int, run_name: str,
           shutter: list[tuple[float, float]]) -> str:
    final, rate = _final_and_rate(layer, shutter)
    head = f"{layer.material}: " + (f"{final:.{1 if final >= 100 else 2}f} nm"
                                    if final is not None else "final thickness unknown")
    head += f", mean rate {rate:.2f} Å/s" if rate is not None else ""
    step = layer.step
    control = layer.film.rate_control
    where = f"run {run_id}, step {step['idx'] + 1} ({step['kind']}"
    where += f", rate loop on the {control})" if control else ")"
    if step["status"] != "done":
        where += f", {step['status']}"
    return f"{head}\n{where} · {run_name}"


def _final_and_rate(layer: _Layer, shutter: list[tuple[float, float]]
                    ) -> tuple[float | None, float | None]:
    """The film stack's figures when the step recorded a layer, else the readings'."""
    entry = layer.layer
    final = _number(entry.thickness_nm) if entry else None
    rate = _number(entry.rate_A_s) if entry else None
    thickness = layer.series.get("thickness")
    if final is None and thickness and thickness[1]:
        final = thickness[1][-1]
    open_s = sum(b - a for a, b in shutter)
    if rate is None and final is not None and open_s > 0:
        rate = final * 10 / open_s
    return final, rate


def _shutter_spans(layer: _Layer, held: list[tuple[float, float]]
                   ) -> list[tuple[float, float]]:
    """Open intervals from the step's shutter reading; a step that records none has its
    shutter open for the whole step except while held (a hold closes it)."""
    if "shutter" not in layer.series:
        if layer.film.shutter is not None:  # recorded, but no reading in the step
            return []
        spans, start = [], layer.t0
        for a, b in held:
            if a > start:
                spans.append((start, a))
            start = max(start, b)
        return spans + ([(start, layer.t1)] if layer.t1 > start else [])
    spans, since = [], None
    for t, v in zip(*layer.series["shutter"], strict=True):
        if v >= 0.5 and since is None:
            since = t
        elif v < 0.5 and since is not None:
            spans.append((since, t))
            since = None
    if since is not None:
        spans.append((since, layer.t1))
    return spans


def _running_mean(ts: list[float], vs: list[float], window_s: float
                  ) -> tuple[list[float], list[float], float] | None:
    """Centred running mean over about `window_s` of samples, for a noisy monitor rate
    that has no filtered companion; None when there are too few samples to smooth."""
    if len(ts) < 20:
        return None
    dt = float(np.median(np.diff(ts)))
    half = int(window_s / dt / 2) if dt > 0 else 0
    if half < 2:
        return None
    v = np.asarray(vs, dtype=float)
    c = np.concatenate(([0.0], np.cumsum(v)))
    i = np.arange(len(v))
    lo, hi = np.maximum(i - half, 0), np.minimum(i + half + 1, len(v))
    return list(ts), list((c[hi] - c[lo]) / (hi - lo)), (2 * half + 1) * dt


def _number(value) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _finite(values) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "layer"
