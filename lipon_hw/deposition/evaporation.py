"""Thermal evaporation steps: source selection, preconditioning, rate-controlled
deposition (in the engine or in the deposition controller), source off, tooling
calibration; and the limits an evaporator enforces on its own.

The host loop is a PI(D) on the *relative* rate error acting on the source
current, so one set of gains serves Li at 3.5 Å/s and Au at 1.5 Å/s alike:
the boat's vapour pressure is exponential in temperature, and a relative
error keeps the loop gain roughly constant along that curve. The shutter opens
only once the rate has stayed within tolerance for `stable_s`, and closes on
time: the last sliver is timed from the measured rate rather than waiting for
the next control period.
"""

from __future__ import annotations

from lipon_hw.deposition.layers import layer_opened, record_layer
from lipon_hw.deposition.recipe import CalibrateTooling, Evaporate, Precondition, Source, SourceOff
from lipon_hw.errors import InstrumentError, RunAborted
from lipon_hw.interfaces import Film
from lipon_hw.store_schema import StepFilm

CONTROL_PERIOD_S = 0.5
MAX_SLEW_A_PER_S = 2.0  # protects boats from thermal shock
RAMP_TICK_S = 1.0
EMA_S = 20.0  # memory of the rate/current averages used for a time-power finish
RATE_FILTER_S = 2.0  # the control loop's rate filter: QCM rates carry ~0.05-0.1 Å/s noise

# what the rate loop records every control period (the filtered rate: the host loop's only)
LOOP_RATE, LOOP_FILTERED_RATE = "loop.rate_A_s", "loop.filtered_rate_A_s"
LOOP_THICKNESS, LOOP_CURRENT = "loop.thickness_nm", "loop.current_A"
LOOP_SHUTTER, LOOP_OUTPUT = "loop.shutter_open", "loop.output_pct"


def evaporate_film(p: Evaporate, roles: dict[str, str], loaded: str | None) -> StepFilm:
    """An evaporation's film (the one its tool's source loaded) and its readings: the
    rate loop's, every control period, the shutter among them."""
    return StepFilm(loaded, rate=LOOP_RATE, thickness=LOOP_THICKNESS, shutter=LOOP_SHUTTER,
                    filtered_rate=LOOP_FILTERED_RATE if p.control == "host" else None,
                    current=LOOP_CURRENT, rate_setpoint_A_s=p.rate_A_s,
                    target_nm=p.until_thickness_nm, rate_control=p.control)


def source_film(p: Source) -> str:
    """The film a source step loads: the tool's later evaporations lay it down."""
    return p.film


# --- source selection and film ---------------------------------------------------------
def film_for(ctx, instrument: str, film: str) -> Film:
    """The station's film parameters, with the tooling last calibrated for it, if any."""
    spec = ctx.station.instrument(instrument).films[film]
    tooling = ctx.store.tooling(instrument, film) or spec.tooling_pct
    return Film(film, spec.density_g_cm3, spec.z_ratio, tooling)


def source(ctx, p: Source, state: dict):
    if ctx.setpoints.get("source_on"):
        yield from _ramp_current(ctx, 0.0, 10.0, {})
        ctx.role("source_supply").set_output(False)
        ctx.setpoints["source_on"] = False
    ctx.role("source_selector").select_source(p.boat)
    for role in ("thickness_monitor", "deposition_controller"):
        if role in ctx.roles:
            ctx.role(role).set_film(film_for(ctx, ctx.roles[role], p.film))
    ctx.setpoints.update(boat=p.boat, film=p.film)
    yield ctx.env.timeout(0)


def precondition(ctx, p: Precondition, state: dict):
    """Ramp to the soak current, then soak, with the shutter closed."""
    ctx.role("shutter").close()
    ctx.setpoints["shutter_open"] = False
    check_source_may_run(ctx)
    yield from _ramp_current(ctx, p.ramp_to_A, p.ramp_s, state)
    yield from ctx.sleep(p.soak_s, state, "soak_s")


def source_off(ctx, p: SourceOff, state: dict):
    if ctx.setpoints.get("source_on"):
        yield from _ramp_current(ctx, 0.0, p.ramp_s, state)
    supply = ctx.role("source_supply")
    supply.set_current_A(0.0)
    supply.set_output(False)
    ctx.setpoints.update(source_on=False, source_A=0.0)


def _ramp_current(ctx, target_A: float, ramp_s: float, state: dict):
    supply = ctx.role("source_supply")
    start = state.setdefault("ramp_from_A", ctx.setpoints.get("source_A", 0.0)
                             if ctx.setpoints.get("source_on") else 0.0)
    if not ctx.setpoints.get("source_on") and target_A > 0:
        supply.set_current_A(start)
        supply.set_output(True)
        ctx.setpoints["source_on"] = True
    ticks = max(1, round(ramp_s / RAMP_TICK_S)) if ramp_s > 0 else 1
    while state.get("ramp_tick", 0) < ticks:
        state["ramp_tick"] = state.get("ramp_tick", 0) + 1
        tick = state["ramp_tick"]  # the last tick lands on the target itself, never a hair off
        level = target_A if tick == ticks else start + (target_A - start) * tick / ticks
        supply.set_current_A(level)
        ctx.setpoints["source_A"] = level
        if ramp_s > 0:
            yield ctx.env.timeout(RAMP_TICK_S)


# --- rate-controlled deposition -------------------------------------------------------------
def evaporate(ctx, p: Evaporate, state: dict):
    check_source_may_run(ctx)
    if p.control == "controller":
        yield from _controller_loop(ctx, p, state)
    else:
        yield from _host_loop(ctx, p, state)


class _PI:
    """PI(D) on the relative rate error, in amperes; state lives in the step's `state`."""

    def __init__(self, p: Evaporate, state: dict, max_A: float):
        self.p, self.s, self.max_A = p, state, max_A

    def update(self, rate: float, current_A: float) -> float:
        pid, s = self.p.pid, self.s
        error = (self.p.rate_A_s - rate) / self.p.rate_A_s
        derivative = (error - s.get("last_error", error)) / CONTROL_PERIOD_S
        s["last_error"] = error
        integral = s.get("integral", 0.0) + error * CONTROL_PERIOD_S / pid.ti_s
        wanted = s.setdefault("base_A", current_A) + pid.kp_A * (error + integral
                                                                  + pid.td_s * derivative)
        step = MAX_SLEW_A_PER_S * CONTROL_PERIOD_S
        out = min(max(wanted, current_A - step, 0.0), current_A + step, self.max_A)
        if out == wanted:  # no integration while clamped (anti-windup)
            s["integral"] = integral
        return out


def _host_loop(ctx, p: Evaporate, state: dict):
    monitor, supply, shutter = (ctx.role("thickness_monitor"), ctx.role("source_supply"),
                                ctx.role("shutter"))
    max_A = _current_limit(ctx, p)
    pi = _PI(p, state, max_A)
    state.setdefault("t0", ctx.now)
    current = ctx.setpoints.get("source_A", 0.0)
    if not ctx.setpoints.get("source_on"):
        supply.set_output(True)
        ctx.setpoints["source_on"] = True
    while True:
        yield ctx.env.timeout(CONTROL_PERIOD_S)
        try:
            rate = monitor.rate_A_s()
            thickness = monitor.thickness_nm() if state.get("open") else 0.0
            state["last_thickness"] = thickness
        except InstrumentError as exc:
            yield from _crystal_failed(ctx, p, state, str(exc))
            return
        _remember(state, rate, current)
        w = CONTROL_PERIOD_S / RATE_FILTER_S
        filtered = state["filtered"] = state.get("filtered", rate) * (1 - w) + rate * w
        current = pi.update(filtered, current)
        supply.set_current_A(current)
        ctx.setpoints["source_A"] = current
        ctx.record({LOOP_RATE: rate, LOOP_FILTERED_RATE: filtered, LOOP_CURRENT: current,
                    LOOP_THICKNESS: thickness, LOOP_SHUTTER: float(bool(state.get("open")))})
        if ctx.now - state["t0"] > p.max_min * 60:
            raise RunAborted(f"evaporate: {thickness:.1f} of {p.until_thickness_nm:g} nm after "
                             f"{p.max_min:g} min at {rate:.2f} Å/s (setpoint {p.rate_A_s:g})")
        if not state.get("open"):
            if abs(filtered - p.rate_A_s) <= p.rate_A_s * p.tolerance_pct / 100:
                state.setdefault("stable_since", ctx.now)
            else:
                state.pop("stable_since", None)
            if ctx.now - state.get("stable_since", ctx.now) >= p.stable_s:
                monitor.zero()
                shutter.open()
                ctx.setpoints["shutter_open"] = True
                state.update(open=True, t_open=ctx.now)
                layer_opened(ctx, ctx.setpoints.get("film", "?"), state, LOOP_THICKNESS)
            continue
        remaining_s = (p.until_thickness_nm - thickness) * 10 / filtered if filtered > 0 else 1e9
        if remaining_s < CONTROL_PERIOD_S:
            yield ctx.env.timeout(max(0.0, remaining_s))
            break
    _close_layer(ctx, p, state, monitor.thickness_nm())


def _remember(state: dict, rate: float, current: float) -> None:
    """Exponential averages of rate and current: what a time-power finish runs on."""
    w = CONTROL_PERIOD_S / EMA_S
    state["ema_rate"] = state.get("ema_rate", rate) * (1 - w) + rate * w
    state["ema_A"] = state.get("ema_A", current) * (1 - w) + current * w


def _close_layer(ctx, p: Evaporate, state: dict, thickness_nm: float, **props) -> None:
    ctx.role("shutter").close()
    ctx.setpoints["shutter_open"] = False
    seconds = ctx.now - state.get("t_open", ctx.now)
    rate = thickness_nm * 10 / seconds if seconds > 0 else None
    ctx.record({LOOP_THICKNESS: thickness_nm})
    record_layer(ctx, ctx.setpoints.get("film", "?"), thickness_nm, rate, control=p.control,
                 **props)


def _crystal_failed(ctx, p: Evaporate, state: dict, why: str):
    """The recipe's declared reaction to a dead crystal, never a silent one."""
    monitor = ctx.roles.get("thickness_monitor") or ctx.roles.get("deposition_controller")
    done = state.get("thickness_at_fail", state.get("last_thickness", 0.0))
    ctx.alarm("error", monitor, f"crystal failed at {done:.2f} of {p.until_thickness_nm:g} nm "
                                f"({why})")
    supply, shutter = ctx.role("source_supply"), ctx.role("shutter")
    rate, amps = state.get("ema_rate", 0.0), state.get("ema_A", 0.0)
    if p.on_crystal_failure == "stop" or not state.get("open") or rate <= 0:
        shutter.close()
        supply.set_current_A(0.0)
        supply.set_output(False)
        ctx.setpoints.update(shutter_open=False, source_on=False, source_A=0.0)
        reason = ("as the recipe says (on_crystal_failure: stop)"
                  if p.on_crystal_failure == "stop" else "before the shutter opened")
        raise RunAborted(f"evaporate: crystal of {monitor} failed at {done:.2f} nm; layer "
                         f"stopped {reason}")
    remaining_s = (p.until_thickness_nm - done) * 10 / rate
    # explicit: a deposition controller that stopped its layer dropped output and shutter
    supply.set_current_A(amps)
    supply.set_output(True)
    shutter.open()
    ctx.setpoints.update(source_A=amps, source_on=True, shutter_open=True)
    ctx.alarm("warning", "engine", f"finishing the layer by time-power: {remaining_s:.1f} s "
                                   f"at {amps:.2f} A (last mean rate {rate:.3f} Å/s)")
    yield ctx.env.timeout(remaining_s)
    _close_layer(ctx, p, state, p.until_thickness_nm, estimated_by="time_power",
                 crystal_failed_at_nm=done)


def _controller_loop(ctx, p: Evaporate, state: dict):
    """The deposition controller runs the PID, the shutter and the stop; the engine
    starts the layer, watches it, and reacts if the crystal dies."""
    ctrl = ctx.role("deposition_controller")
    if not state.get("started"):
        rating = _supply_rating(ctx)
        soak_pct = 100.0 * ctx.setpoints.get("source_A", 0.0) / rating
        # bumpless hand-over: the controller starts from the power the host soaked at
        ctrl.set_preconditioning(soak_pct, 1, 1, soak_pct, 1, 1)
        ctrl.set_rate_control(rate_A_s=p.rate_A_s, final_thickness_nm=p.until_thickness_nm,
                              p_gain=p.controller_pid.p_gain, i_time_s=p.controller_pid.i_time_s,
                              d_time_s=p.controller_pid.d_time_s,
                              max_power_pct=100.0 * _current_limit(ctx, p) / rating,
                              shutter_delay_s=p.stable_s, capture_pct=p.tolerance_pct)
        ctrl.start_layer()
        state.update(started=True, t0=ctx.now)
        ctx.setpoints.update(source_on=True, controller_layer=True)
    while True:
        yield ctx.env.timeout(CONTROL_PERIOD_S)
        if ctrl.crystal_failed():
            ctrl.stop_layer()
            state["open"] = True if state.get("saw_deposit") else state.get("open", False)
            yield from _crystal_failed(ctx, p, state, "the controller reports crystal fail")
            return
        phase, rate = ctrl.phase(), ctrl.rate_A_s()
        thickness = ctrl.thickness_nm()
        state["last_thickness"] = thickness
        amps = ctx.role("source_supply").current_A()
        _remember(state, rate, amps)
        ctx.record({LOOP_RATE: rate, LOOP_CURRENT: amps, LOOP_THICKNESS: thickness,
                    LOOP_OUTPUT: ctrl.output_pct(), LOOP_SHUTTER: float(phase == "deposit")})
        if phase == "deposit" and not state.get("saw_deposit"):
            state.update(saw_deposit=True, open=True, t_open=ctx.now)
            layer_opened(ctx, ctx.setpoints.get("film", "?"), state, LOOP_THICKNESS)
        if state.get("saw_deposit") and phase != "deposit":
            break
        if ctx.now - state["t0"] > p.max_min * 60:
            ctrl.stop_layer()
            raise RunAborted(f"evaporate: the controller is still in {phase!r} after "
                             f"{p.max_min:g} min ({thickness:.1f} nm at {rate:.2f} Å/s)")
    ctx.setpoints.update(controller_layer=False, shutter_open=False)
    ctx.setpoints["source_A"] = ctx.role("source_supply").current_setpoint_A()
    _close_layer(ctx, p, state, ctrl.thickness_nm())


def _supply_rating(ctx) -> float:
    inst = ctx.roles["source_supply"]
    return ctx.station.instrument(inst).limits.get("rated_current_A", 200.0)


def _current_limit(ctx, p: Evaporate) -> float:
    station_limit = ctx.station.limit(ctx.roles["source_supply"], "max_current_A")
    limits = [x for x in (p.max_current_A, station_limit) if x is not None]
    return min(limits) if limits else _supply_rating(ctx)


# --- tooling -------------------------------------------------------------------------
def calibrate_tooling(ctx, p: CalibrateTooling, state: dict):
    inst = ctx.roles["thickness_monitor"]
    sample = ctx.recipe.sample
    layers = [la for la in (ctx.store.film_stack(sample.id) if sample else [])
              if la.material == p.film]
    if not layers:
        raise RunAborted(f"calibrate_tooling: no {p.film} layer on the sample to measure")
    read_nm = layers[-1].thickness_nm
    measured = p.measured_nm
    if measured is None:  # the lab's own profilometer: the simulated lab's true film
        truth = ctx.engine.lab.film_truth
        measured = truth.thickness_nm(p.film) if truth is not None else None
        if measured is None:
            raise RunAborted(f"calibrate_tooling: this lab cannot measure the {p.film} layer; "
                             "give the profilometer's reading as measured_nm")
    old = film_for(ctx, inst, p.film).tooling_pct
    new = old * measured / read_nm
    ctx.store.set_tooling(inst, p.film, new, ctx.run_id)
    ctx.alarm("info", inst, f"tooling for {p.film}: {old:.1f} % → {new:.1f} % (monitor read "
                            f"{read_nm:.2f} nm, reference {measured:.2f} nm)")
    if ctx.setpoints.get("film") == p.film:
        ctx.role("thickness_monitor").set_film(film_for(ctx, inst, p.film))
    yield ctx.env.timeout(0)


# --- limits the tool enforces by itself -----------------------------------------------------
def check_source_may_run(ctx) -> None:
    """No source power above the station's base-pressure limit."""
    roles = ctx.roles
    inst = roles.get("source_supply")
    limit = ctx.station.limit(inst, "max_pressure_torr") if inst else None
    if limit is None or "base_gauge" not in roles:
        return
    pressure = ctx.role("base_gauge").pressure_torr()
    if pressure > limit:
        raise RunAborted(f"{inst}: the chamber is at {pressure:.2e} Torr, above the "
                         f"{limit:.1e} Torr the station allows for source power")


def check_tool_limits(ctx) -> None:
    """Checked at every sample: pressure while a source is powered; LiPON's temperature."""
    roles, station = ctx.roles, ctx.station
    supply = roles.get("source_supply")
    if supply:
        limit = station.limit(supply, "max_pressure_torr")
        current = ctx.quantity("source_supply", "current_A") or 0.0
        pressure = ctx.quantity("base_gauge", "pressure_torr") if "base_gauge" in roles else None
        if limit is not None and pressure is not None and current > 0.5 and pressure > limit:
            raise RunAborted(f"{supply} is powered ({current:.1f} A) while the chamber is at "
                             f"{pressure:.2e} Torr, above its limit of {limit:.1e} Torr")
    thermometer = roles.get("substrate_thermometer")
    if thermometer:
        limit = station.limit(thermometer, "lipon_max_C")
        temperature = ctx.quantity("substrate_thermometer", "temperature_C")
        sample = ctx.sample_id  # the run's: its stack says whether it carries LiPON
        if limit is not None and temperature is not None and temperature > limit and sample \
                and any(la.material == "LiPON" for la in ctx.store.film_stack(sample)):
            raise RunAborted(f"{thermometer}: sample {sample} carries LiPON and is at "
                             f"{temperature:.0f} °C, above its {limit:g} °C limit")
