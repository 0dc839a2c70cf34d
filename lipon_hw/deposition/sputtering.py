"""Steps of the RF sputter tool: process gas to a pressure, RF ramped and matched,
pre-sputter behind the shutter, and the deposit to a thickness on the QCM.
Generator functions `step(ctx, params, state)` on the engine's clock (see `steps`)."""

from __future__ import annotations

from lipon_hw.deposition.layers import layer_opened, record_layer
from lipon_hw.deposition.recipe import RF, Deposit, Gas, Presputter
from lipon_hw.errors import RunAborted
from lipon_hw.interfaces import Film
from lipon_hw.store_schema import StepFilm

RAMP_TICK_S = 1.0


def monitor_quantity(roles: dict[str, str], name: str) -> str:
    """The name the sampler records a quantity of the tool's thickness monitor under."""
    return f"{roles['thickness_monitor']}.{name}"


def deposit_film(p: Deposit, roles: dict[str, str], loaded: str | None) -> StepFilm:
    """A deposit's film and its readings: the tool's thickness monitor, sampled every
    record period (noisy: no filtered rate); the shutter open for the whole step, except
    while held (a hold closes it)."""
    return StepFilm(p.film, rate=monitor_quantity(roles, "rate_A_s"),
                    thickness=monitor_quantity(roles, "thickness_nm"), shutter=None,
                    target_nm=p.until_thickness_nm, smooth_rate=True)


def gas(ctx, p: Gas, state: dict):
    mfc = ctx.role("gas_flow")
    flow = state.setdefault("flow_sccm", p.n2_sccm)
    mfc.set_flow_sccm(flow)
    ctx.setpoints["flow_sccm"] = flow
    if p.pressure_mtorr is None:
        return
    state.setdefault("t0", ctx.now)
    limit = ctx.station.limit(ctx.roles["gas_flow"], "max_flow_sccm")
    in_band_since = None
    last_trim = ctx.now
    while True:
        yield from ctx.next_sample()
        pressure = ctx.quantity("process_gauge", "pressure_torr") * 1e3
        if abs(pressure - p.pressure_mtorr) <= p.pressure_mtorr * p.tolerance_pct / 100:
            in_band_since = ctx.now if in_band_since is None else in_band_since
            if ctx.now - in_band_since >= p.settle_s:
                return
            continue
        in_band_since = None
        if ctx.now - state["t0"] > p.timeout_min * 60:
            raise RunAborted(f"gas: pressure is {pressure:.2f} mTorr after {p.timeout_min:g} min "
                             f"at {flow:.1f} sccm, outside {p.pressure_mtorr:g} mTorr "
                             f"± {p.tolerance_pct:g} %")
        if ctx.now - last_trim >= max(p.settle_s, 10.0) and pressure > 0:
            # throughput Q = P·S: flow scales with the pressure wanted
            flow = min(flow * p.pressure_mtorr / pressure, limit or float("inf"))
            state["flow_sccm"] = flow
            mfc.set_flow_sccm(flow)
            ctx.setpoints["flow_sccm"] = flow
            last_trim = ctx.now


def rf(ctx, p: RF, state: dict):
    supply = ctx.role("rf_supply")
    if p.regulation:
        supply.set_regulation_mode(p.regulation)
        ctx.setpoints["regulation"] = p.regulation
    yield from ramp_rf(ctx, p.power_W, p.ramp_W_per_s, state)
    if p.power_W > 0:
        yield from wait_for_match(ctx, p.ignite_timeout_s, p.max_reflected_pct)


def ramp_rf(ctx, target_W: float, ramp_W_per_s: float, state: dict, restoring: bool = False):
    """Ramp the RF setpoint to `target_W`; pauses while held, unless it is the hold's own
    restore. Progress (`level_W`) is kept in `state`, so a resumed ramp goes on from there."""
    supply = ctx.role("rf_supply")
    level = state.setdefault("level_W", ctx.setpoints.get("rf_power_W", 0.0)
                             if ctx.setpoints.get("rf_on") else 0.0)
    if target_W > 0 and not ctx.setpoints.get("rf_on"):
        supply.set_power_setpoint_W(level)
        supply.set_output(True)
        ctx.setpoints["rf_on"] = True
    while abs(level - target_W) > 1e-9:
        step = ramp_W_per_s * RAMP_TICK_S
        level = min(target_W, level + step) if target_W > level else max(target_W, level - step)
        supply.set_power_setpoint_W(level)
        state["level_W"] = ctx.setpoints["rf_power_W"] = level
        yield ctx.env.timeout(RAMP_TICK_S)
        while ctx.held and not restoring:
            yield ctx.env.timeout(RAMP_TICK_S)
    supply.set_power_setpoint_W(target_W)
    ctx.setpoints["rf_power_W"] = target_W
    if target_W == 0 and ctx.setpoints.get("rf_on"):
        supply.set_output(False)
        ctx.setpoints["rf_on"] = False


def wait_for_match(ctx, timeout_s: float, max_reflected_pct: float):
    """Plasma lit and the match tuned: reflected below `max_reflected_pct` of forward."""
    supply = ctx.role("rf_supply")
    t0 = ctx.now
    while True:
        forward, reflected = supply.forward_power_W(), supply.reflected_power_W()
        if forward > 0 and reflected <= forward * max_reflected_pct / 100:
            return
        if ctx.now - t0 >= timeout_s:
            raise RunAborted(f"rf: no matched plasma after {timeout_s:g} s: reflected "
                             f"{reflected:.1f} W of {forward:.1f} W forward (is the pressure "
                             "inside the ignition window?)")
        yield ctx.env.timeout(0.5)


def presputter(ctx, p: Presputter, state: dict):
    ctx.role("shutter").close()
    ctx.setpoints["shutter_open"] = False
    yield from ctx.sleep(p.for_min * 60, state)


def deposit(ctx, p: Deposit, state: dict):
    monitor, shutter = ctx.role("thickness_monitor"), ctx.role("shutter")
    monitor_name = ctx.roles["thickness_monitor"]
    reading = monitor_quantity(ctx.roles, "thickness_nm")
    if not state.get("opened"):
        spec = ctx.station.instrument(monitor_name).films[p.film]
        monitor.set_film(Film(p.film, spec.density_g_cm3, spec.z_ratio, spec.tooling_pct))
        monitor.zero()
        shutter.open()
        ctx.setpoints["shutter_open"] = True
        state.update(opened=True, t_open=ctx.now)
        layer_opened(ctx, p.film, state, reading)
    tick = ctx.recipe.record_every_s
    offset = state.get("offset_nm", 0.0)  # a monitor reset while the host was away
    if p.for_min is not None:
        yield from ctx.sleep(p.for_min * 60, state)
    while p.until_thickness_nm is not None and "over_target_nm" not in state:
        yield from ctx.next_sample()
        state["elapsed_s"] = ctx.now - state["t_open"]
        thickness = ctx.quantity("thickness_monitor", "thickness_nm") + offset
        rate = ctx.quantity("thickness_monitor", "rate_A_s")
        if thickness is None or rate is None:  # a failed crystal: the layer is blind
            why = "; ".join(v for k, v in ctx.refusals.items() if k.startswith(monitor_name))
            raise RunAborted(f"deposit: {monitor_name} gives no thickness or rate "
                             f"({why or 'no reading'}); the layer is stopped")
        if thickness >= p.until_thickness_nm:
            break
        if state["elapsed_s"] > p.max_h * 3600:
            raise RunAborted(f"deposit: {thickness:.1f} nm after {p.max_h:g} h, short of the "
                             f"{p.until_thickness_nm:g} nm asked (rate {rate:.3f} Å/s)")
        if rate > 0:
            # close on time rather than at the next sample: the last sliver is timed
            remaining_s = (p.until_thickness_nm - thickness) * 10 / rate
            if remaining_s < tick:
                yield ctx.env.timeout(remaining_s)
                break
    shutter.close()
    ctx.setpoints["shutter_open"] = False
    measured = monitor.thickness_nm()
    # a layer ended by the resume is the film the monitor counted then (the crystal beside
    # the shutter goes on counting while the process is restored behind it)
    final = state.get("ended_nm", measured + offset)
    seconds = ctx.now - state["t_open"]
    ctx.record({reading: measured})
    ctx.latest[reading] = measured
    # the time the host was away, and a target passed meanwhile, stay with the layer
    facts = {"while_away": state.get("away"), "over_target_nm": state.get("over_target_nm"),
             "monitor_offset_nm": state.get("offset_nm")}
    record_layer(ctx, p.film, final, final * 10 / seconds if seconds > 0 else None,
                 **{k: v for k, v in facts.items() if v is not None})
