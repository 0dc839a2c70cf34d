"""One site's tests on the cell under it, through the potentiostat driver: open-circuit
voltage after a settle, impedance at the recipe's frequencies (all at once by multisine,
or one single sine after another), a short current pulse. Each site is a simpy process;
the sites of a touchdown run side by side, each on its own channel.

What a site reports: the cell's metrics (see `recipe` for their names), whether the probe
made contact (an open contact reads as an impedance above `contact_max_ohm` at the
highest frequency; without impedance, as a pulse that ran its voltage away to a limit
or read more than that; a floating input reads some volts, so a recipe always has one
of the two), and how long the site was busy on the cell. A shorted cell
is a measured cell: it takes the pulse's current at ~0 V. A technique the instrument
could not finish is not a measurement: the site reports no contact, and the prober may
touch down again; one that the instrument ended on an error of its own (`!XXXX`: an
overload, a channel fault) is the channel's failure, an InstrumentError in its words.
"""

from __future__ import annotations

import cmath
import math
from dataclasses import dataclass, field

from lipon_hw import techniques as tq
from lipon_hw.errors import InstrumentError
from lipon_hw.link_health import wire_slack_s
from lipon_hw.screening.recipe import ScreeningPlan, freq_label

#: shortest wait between two polls of a running technique, s of run clock
MIN_POLL_S = 0.01
#: how long past its expected end (plus a tenth of its length) a technique's end may go
#: unseen before the site stops it, s of run clock (at least WIRE_SLACK_WALL_S of wall
#: time on a real-time clock: `wire_slack_s`)
OVERDUE_S = 5.0
#: a pulse that moves the voltage this far to a limit ran away: nothing took its current
RUNAWAY_V = 0.5
#: an open-circuit reading beyond this is a floating input, not a cell (`ranges.VOLTS`)
MAX_CELL_V = 10.0


@dataclass
class SiteResult:
    metrics: dict[str, float] = field(default_factory=dict)
    contact: bool = True
    #: run-clock seconds the site spent measuring the cell (first technique to last end)
    busy_s: float = 0.0
    why: str = ""


def eis_techniques(plan: ScreeningPlan, dc_V: float | None = None) -> list:
    """The impedance techniques of the recipe, at `dc_V` (the OCV just measured: the
    instrument need not measure it again) or, without one, at the open-circuit potential
    the instrument measures first."""
    eis = plan.eis
    amplitude = eis.amplitude_mV * 1e-3
    if eis.mode == "multisine":
        return [tq.MultisineEIS(tuple(eis.frequencies_Hz), amplitude, dc_V)]
    return [tq.EIS(f, f, 1, amplitude, dc_V) for f in eis.frequencies_Hz]


def physical_limit_s(plan: ScreeningPlan) -> float:
    """The least time a site must spend on a cell for the recipe's tests, whatever the
    instrument: the OCV's settle and measuring time, the impedance's physical limit
    (`techniques.eis_physical_limit_s`: one period of the lowest frequency by multisine,
    periods per frequency by a sweep), the pulse."""
    t = 0.0
    if plan.ocv is not None:
        t += plan.ocv.settle_s + plan.ocv.measure_s
    if plan.eis is not None:
        t += sum(tq.eis_physical_limit_s(x) for x in eis_techniques(plan))
    if plan.pulse is not None:
        t += plan.pulse.duration_s
    return t


def measure_site(env, pstat, channel: int, plan: ScreeningPlan):
    """simpy process: the recipe's tests on the cell under `channel`; returns SiteResult."""
    out = SiteResult()
    t0 = env.now
    if plan.ocv is not None:
        ocv = plan.ocv
        samples = yield from _run(env, pstat, channel, tq.OCV(
            ocv.settle_s + ocv.measure_s, interval_s=max(0.01, min(0.1, ocv.measure_s / 5))),
            ocv.settle_s + ocv.measure_s)
        start = samples[0].t_s if samples and samples[0].t_s is not None else 0.0
        window = [s.E_V for s in samples if s.E_V is not None and s.t_s is not None
                  and s.t_s - start >= ocv.settle_s - 1e-9]
        if window and all(math.isfinite(v) and abs(v) <= MAX_CELL_V for v in window):
            out.metrics["ocv_V"] = sum(window) / len(window)
        else:  # a floating input reads at the rails, or nothing
            out.contact, out.why = False, "no open-circuit voltage read (probe floating)"
    if plan.eis is not None and out.contact:
        spectrum = []
        for technique in eis_techniques(plan, out.metrics.get("ocv_V")):
            samples = yield from _run(env, pstat, channel, technique,
                                      tq.eis_physical_limit_s(technique))
            spectrum += [s for s in samples if s.f_Hz is not None]
        _impedance_metrics(out, spectrum, plan)
    if plan.pulse is not None and out.contact:
        _pulse = plan.pulse
        current = _pulse.current_uA * 1e-6
        samples = yield from _run(env, pstat, channel, tq.ConstantCurrent(
            current, _pulse.duration_s, v_max_V=_pulse.max_V, v_min_V=_pulse.min_V,
            interval_s=max(0.001, _pulse.duration_s / 10)), _pulse.duration_s)
        volts = [s.E_V for s in samples if s.E_V is not None]
        before = out.metrics.get("ocv_V")
        if volts and before is not None:
            out.metrics["r_dc_ohm"] = abs((volts[-1] - before) / current)
            # a shorted cell sits at its limit from the start; a floating probe runs to it
            ran_away = min(abs(volts[-1] - _pulse.max_V), abs(volts[-1] - _pulse.min_V)) \
                < 1e-3 and abs(volts[-1] - before) > RUNAWAY_V
            if plan.eis is None and (ran_away or out.metrics["r_dc_ohm"] >
                                     plan.contact_max_ohm):
                out.contact, out.why = False, "the pulse could not pass its current"
        elif plan.eis is None:
            out.contact, out.why = False, "no pulse read"
    out.busy_s = env.now - t0
    return out


def _impedance_metrics(out: SiteResult, spectrum: list, plan: ScreeningPlan) -> None:
    wanted = plan.eis.frequencies_Hz
    if len(spectrum) < len(wanted):
        out.contact, out.why = False, f"{len(spectrum)} of {len(wanted)} impedance points read"
        return
    by_f = {}
    for f in wanted:  # each requested frequency: the nearest point measured (multisine
        s = min(spectrum, key=lambda x: abs(math.log(x.f_Hz / f)))  # rounds to harmonics)
        by_f[f] = complex(s.z_re_ohm, s.z_im_ohm)
    if not all(cmath.isfinite(z) for z in by_f.values()):
        out.contact, out.why = False, "an impedance point is not a number"
        return
    for f, z in by_f.items():
        out.metrics[f"z_{freq_label(f)}Hz_ohm"] = abs(z)
        out.metrics[f"phase_{freq_label(f)}Hz_deg"] = math.degrees(cmath.phase(z))
    high, low = by_f[max(wanted)], by_f[min(wanted)]
    out.metrics["r_hf_ohm"] = high.real
    if len(wanted) > 1:
        out.metrics["r_arc_ohm"] = low.real - high.real
    if abs(high) > plan.contact_max_ohm:
        out.contact = False
        out.why = f"|Z| {abs(high):.3g} Ω at {max(wanted):g} Hz: no contact"


def _run(env, pstat, channel: int, technique, expected_s: float):
    """Start `technique` on the channel and collect its samples until it ends: the first
    poll when it should have ended, then every tenth of that. An end not seen OVERDUE_S
    after it was due (plus a tenth: lost on the wire while the link was silent, or a hung
    channel) is asked for by stopping the technique (`Z`), and the measurement is the
    channel's failure; a link lost meanwhile is the site's to ride out."""
    run = pstat.start(channel, technique)
    samples = list(run.poll())
    wait = max(MIN_POLL_S, expected_s)
    overdue_s = wire_slack_s(env, OVERDUE_S)
    due = env.now + 1.1 * expected_s + overdue_s
    while not run.finished:
        yield env.timeout(wait)
        samples += run.poll()
        wait = max(MIN_POLL_S, expected_s / 10)
        if not run.finished and env.now > due:
            pstat.stop(channel)
            raise InstrumentError(f"{pstat.name} channel {channel}: its "
                                  f"{type(technique).__name__} had not ended {overdue_s:g} s "
                                  "after it was due (its end lost on the wire, or the channel "
                                  "hung): stopped")
    error = getattr(run, "error", None)
    if error is not None:
        raise InstrumentError(f"{pstat.name} channel {channel} ended its "
                              f"{type(technique).__name__} with {error}")
    return samples
