"""Steps of any vacuum tool: pump down, wait, vent, and moving the sample to another tool.
Generator functions `step(ctx, params, state)` on the engine's clock (see `steps`)."""

from __future__ import annotations

from lipon_hw.deposition.recipe import PumpDown, Transfer, Vent, Wait
from lipon_hw.deposition.sputtering import ramp_rf
from lipon_hw.errors import RunAborted

VENTED_TORR = 500.0


def pump_down(ctx, p: PumpDown, state: dict):
    ctx.role("valves").pump()
    ctx.setpoints["valves"] = "pump"
    yield from _until_pressure(ctx, state, p.timeout_min, lambda torr: torr < p.below_torr,
                               f"pump_down: the chamber is above the {p.below_torr:.1e} Torr "
                               "asked")


def wait(ctx, p: Wait, state: dict):
    yield from ctx.sleep(p.for_min * 60, state)


def vent(ctx, p: Vent, state: dict):
    if ctx.setpoints.get("rf_on"):
        yield from ramp_rf(ctx, 0.0, 10.0, state)
    if "gas_flow" in ctx.roles:
        ctx.role("gas_flow").set_flow_sccm(0.0)
        ctx.setpoints["flow_sccm"] = 0.0
    ctx.role("valves").vent()
    ctx.setpoints["valves"] = "vent"
    yield from _until_pressure(ctx, state, p.timeout_min, lambda torr: torr > VENTED_TORR,
                               f"vent: the chamber is not up to {VENTED_TORR:g} Torr")


def _until_pressure(ctx, state: dict, timeout_min: float, reached, failure: str):
    """Sample until the base gauge's pressure is `reached`; after `timeout_min` the run
    aborts with `failure` and the last reading (or that the gauge gave none)."""
    state.setdefault("t0", ctx.now)
    while True:
        yield from ctx.next_sample()
        pressure = ctx.quantity("base_gauge", "pressure_torr")
        if pressure is not None and reached(pressure):
            return
        if ctx.now - state["t0"] > timeout_min * 60:
            last = "no reading" if pressure is None else f"{pressure:.2e} Torr"
            raise RunAborted(f"{failure} after {timeout_min:g} min ({last})")


def transfer(ctx, p: Transfer, state: dict):
    """The sample leaves for another tool; that tool's process starts from scratch."""
    ctx.setpoints = {}
    ctx.alarm("info", "engine", f"sample moved to the {p.to}")
    yield ctx.env.timeout(0)
