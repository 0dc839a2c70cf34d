"""Deposition steps: the registry of step kinds, the checks made at every sample, and
holding and restoring the process.

A step is a generator function `step(ctx, params, state)` on the engine's clock, in the
module of its tool: `chamber_steps` (pump down, wait, vent, transfer), `sputtering`,
`evaporation`. Each step keeps what it must remember across a crash in `state`
(checkpointed with it), so a resumed step continues rather than starts over: a deposit
that already zeroed the monitor and opened the shutter does not do so again.
`ctx.setpoints` is the process as commanded (valves, flow, RF, shutter); a resume
re-establishes it before the interrupted step continues.
"""

from __future__ import annotations

from lipon_hw.deposition import chamber_steps, evaporation, sputtering
from lipon_hw.deposition.sputtering import ramp_rf, wait_for_match

STEPS = {"pump_down": chamber_steps.pump_down, "gas": sputtering.gas, "rf": sputtering.rf,
         "presputter": sputtering.presputter, "deposit": sputtering.deposit,
         "wait": chamber_steps.wait, "vent": chamber_steps.vent,
         "transfer": chamber_steps.transfer, "source": evaporation.source,
         "precondition": evaporation.precondition, "evaporate": evaporation.evaporate,
         "source_off": evaporation.source_off,
         "calibrate_tooling": evaporation.calibrate_tooling}

#: checked at every sample of every run, whatever the step (a tool's own limits)
SAMPLE_CHECKS = (evaporation.check_tool_limits,)


# --- holds and resumes ----------------------------------------------------------------
def safe_hold(ctx) -> None:
    """Stop growing film without losing the process: shutter closed, RF (or source) off."""
    roles = ctx.roles
    if "shutter" in roles:
        ctx.role("shutter").close()
    if "rf_supply" in roles and ctx.setpoints.get("rf_on"):
        ctx.role("rf_supply").set_output(False)
    if "source_supply" in roles and ctx.setpoints.get("source_on"):
        ctx.role("source_supply").set_output(False)


def resume_after_hold(ctx):
    yield from _restore_rf_and_shutter(ctx)


def restore_process(ctx):
    """Re-establish the commanded process after a crash: valves, gas, RF (ramped), shutter."""
    sp = ctx.setpoints
    roles = ctx.roles
    if "valves" in roles and sp.get("valves"):
        getattr(ctx.role("valves"), sp["valves"])()
    if "gas_flow" in roles and "flow_sccm" in sp:
        ctx.role("gas_flow").set_flow_sccm(sp["flow_sccm"])
    ctx.engine.notify("resume: process setpoints restored")
    yield from _restore_rf_and_shutter(ctx)


def _restore_rf_and_shutter(ctx):
    sp = ctx.setpoints
    roles = ctx.roles
    if "shutter" in roles:
        ctx.role("shutter").close()
    if "rf_supply" in roles and sp.get("rf_on"):
        supply = ctx.role("rf_supply")
        if sp.get("regulation"):
            supply.set_regulation_mode(sp["regulation"])
        target = sp.get("rf_power_W", 0.0)
        level = supply.forward_power_W() if supply.status().output_on else 0.0
        sp["rf_on"] = level > 0
        yield from ramp_rf(ctx, target, 5.0, {"level_W": min(level, target)}, restoring=True)
        yield from wait_for_match(ctx, 10.0, 5.0)
    if "source_supply" in roles and sp.get("source_on"):
        supply = ctx.role("source_supply")
        supply.set_current_A(sp.get("source_A", 0.0))
        supply.set_output(True)
    if "shutter" in roles and sp.get("shutter_open"):
        ctx.role("shutter").open()
